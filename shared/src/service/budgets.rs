//! Monthly budgets (docs/cost.md, "Budgets"): what each budget in the
//! configuration has spent this UTC month, the lines it crossed, and whether
//! it holds launches.
//!
//! The reaper counts every budget's spend once a pass from the month's day
//! roll-ups (one read per day, whatever the jobs) and keeps it in the store
//! beside the lines crossed, each marked once a month with an audit entry
//! and a log line. The orchestrator reads that kept spend before it launches
//! for a pool an enforced budget covers: one read, no roll-ups. So a budget
//! is at most one reaper pass behind the month's settled cost, and runners
//! still running count when they end.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::json;

use super::audit::record;
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::domain::budget::{
    Budget, BudgetLine, BudgetScope, BudgetStanding, BudgetStatus, month_bounds, month_of,
};
use crate::domain::cost::MicroUsd;
use crate::domain::usage::Period;
use crate::domain::{Pool, Project, Time};
use crate::store::all_pages;

fn budgets_caller() -> Caller {
    Caller::system("budgets")
}

/// One budget as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct BudgetView {
    pub name: String,
    pub scope: BudgetScope,
    /// Whether a project or pool of the scope's name exists; a budget that
    /// names none counts nothing.
    pub found: bool,
    pub monthly_micro_usd: MicroUsd,
    pub warn_percent: u8,
    pub warn_micro_usd: MicroUsd,
    pub enforce: bool,
    /// As last counted by the reaper; 0 before its first count this month.
    pub spent_micro_usd: MicroUsd,
    pub counted_at: Option<Time>,
    pub status: BudgetStatus,
    /// When the spend crossed the warning line and the budget this month.
    pub warned_at: Option<Time>,
    pub exceeded_at: Option<Time>,
}

/// `GET /api/budgets`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Budgets {
    /// The UTC month, `YYYY-MM`.
    pub month: String,
    pub budgets: Vec<BudgetView>,
}

/// Projects by id and pools with their project's name: what scopes are
/// matched against.
struct Names {
    projects: HashMap<String, String>,
    pools: Vec<(Pool, String)>,
}

impl Names {
    async fn read(ports: &Ports) -> ServiceResult<Self> {
        let projects: HashMap<String, String> = all_pages!(|p| ports.store.list_projects(p))
            .into_iter()
            .map(|p: Project| (p.id, p.spec.name.to_string()))
            .collect();
        let pools = all_pages!(|p| ports.store.list_pools(None, p))
            .into_iter()
            .filter_map(|pool: Pool| {
                let project = projects.get(&pool.spec.project_id)?.clone();
                Some((pool, project))
            })
            .collect();
        Ok(Self { projects, pools })
    }

    /// The ids of the project or pool `scope` names: what its spend is
    /// counted over (`by_project` says which of a bucket's dims to match).
    fn ids(&self, scope: &BudgetScope) -> (bool, HashSet<String>) {
        match scope {
            BudgetScope::Project { project } => (
                true,
                self.projects
                    .iter()
                    .filter(|(_, name)| name.eq_ignore_ascii_case(project))
                    .map(|(id, _)| id.clone())
                    .collect(),
            ),
            BudgetScope::Pool { .. } => (false, self.pools_of(scope).collect()),
        }
    }

    /// The pools `scope` covers.
    fn pools_of<'a>(&'a self, scope: &'a BudgetScope) -> impl Iterator<Item = String> + 'a {
        self.pools
            .iter()
            .filter(|(pool, project)| scope.covers(project, &pool.spec.name))
            .map(|(pool, _)| pool.id.clone())
    }
}

/// What one budget's count found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub budget: String,
    pub spent_micro_usd: MicroUsd,
    pub status: BudgetStatus,
}

/// What a reaper pass's count found: each budget, and the pools held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Count {
    pub budgets: Vec<Counted>,
    /// Pools an enforced, spent budget covers: nothing launches for them.
    pub held_pools: HashSet<String>,
}

/// Counts every budget's spend this month, keeps it, and marks (audits and
/// logs) each line crossed for the first time this month.
pub async fn count(ports: &Ports) -> ServiceResult<Count> {
    let budgets = &ports.settings.budgets;
    if budgets.is_empty() {
        return Ok(Count::default());
    }
    let now = ports.clock.now();
    let month = month_of(now);
    let (start, next) = month_bounds(now)
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no month holds {now}")))?;
    let buckets = ports.store.usage_buckets(Period::Day, start, next).await?;
    let names = Names::read(ports).await?;
    let mut count = Count::default();
    for budget in budgets {
        let (by_project, ids) = names.ids(&budget.scope);
        let spent = buckets
            .iter()
            .filter(|b| {
                let id = if by_project {
                    &b.dims.project_id
                } else {
                    &b.dims.pool_id
                };
                ids.contains(id)
            })
            .fold(0, |sum: MicroUsd, b| {
                sum.saturating_add(b.figures.total_micro_usd())
            });
        ports
            .store
            .put_budget_spend(&month, &budget.name, spent, now)
            .await?;
        if spent >= budget.warn_micro_usd() {
            crossed(ports, budget, &month, BudgetLine::Warning, spent).await?;
        }
        if spent >= budget.monthly_micro_usd {
            crossed(ports, budget, &month, BudgetLine::Exceeded, spent).await?;
        }
        let status = budget.status(spent);
        if status == BudgetStatus::Held {
            count.held_pools.extend(names.pools_of(&budget.scope));
        }
        count.budgets.push(Counted {
            budget: budget.name.clone(),
            spent_micro_usd: spent,
            status,
        });
    }
    Ok(count)
}

/// Marks `line` crossed; the first time this month, audits and logs it.
async fn crossed(
    ports: &Ports,
    budget: &Budget,
    month: &str,
    line: BudgetLine,
    spent: MicroUsd,
) -> ServiceResult<()> {
    let now = ports.clock.now();
    if !ports
        .store
        .mark_budget_line(month, &budget.name, line, now)
        .await?
    {
        return Ok(());
    }
    let action = format!("budget.{}", line.as_str());
    let holds = line == BudgetLine::Exceeded && budget.enforce;
    tracing::warn!(
        action = %action,
        budget = %budget.name,
        scope = %budget.scope,
        month,
        spent_usd = %usd(spent),
        monthly_usd = %usd(budget.monthly_micro_usd),
        holds_launches = holds,
        "budget {}: {} of {} spent in {month}{}",
        line.as_str(),
        usd(spent),
        usd(budget.monthly_micro_usd),
        if holds { "; launches for it are held until the month ends or the budget is raised" } else { "" },
    );
    record(
        ports,
        &budgets_caller(),
        &action,
        Some(&budget.name),
        json!({
            "month": month,
            "scope": budget.scope.to_string(),
            "spent_micro_usd": spent,
            "monthly_micro_usd": budget.monthly_micro_usd,
            "warn_percent": budget.warn_percent,
            "enforce": budget.enforce,
        }),
    )
    .await
}

/// Micro-dollars as dollars, for people: to the cent from a dollar up, to
/// a hundredth of a cent below (as the console shows money).
fn usd(micro: MicroUsd) -> String {
    let (places, unit) = if micro < 1_000_000 {
        (4, 100)
    } else {
        (2, 10_000)
    };
    let units = micro.saturating_add(unit / 2) / unit;
    let per_dollar = 1_000_000 / unit;
    format!(
        "${}.{:0places$}",
        units / per_dollar,
        units % per_dollar,
        places = places
    )
}

/// Why nothing may launch for `pool` now: the first enforced budget over it
/// whose kept spend has reached its amount; `None` when launches may go on.
/// Reads nothing unless an enforced budget is configured.
pub async fn hold(ports: &Ports, pool: &Pool) -> ServiceResult<Option<String>> {
    let enforced: Vec<&Budget> = ports
        .settings
        .budgets
        .iter()
        .filter(|b| b.enforce)
        .collect();
    if enforced.is_empty() {
        return Ok(None);
    }
    let Some(project) = ports.store.get_project(&pool.spec.project_id).await? else {
        return Ok(None);
    };
    let covering: Vec<&Budget> = enforced
        .into_iter()
        .filter(|b| b.scope.covers(&project.spec.name, &pool.spec.name))
        .collect();
    if covering.is_empty() {
        return Ok(None);
    }
    let month = month_of(ports.clock.now());
    let standings = ports.store.budget_standings(&month).await?;
    Ok(covering.into_iter().find_map(|budget| {
        let spent = standings
            .iter()
            .find(|s| s.budget == budget.name)?
            .spent_micro_usd;
        (spent >= budget.monthly_micro_usd).then(|| hold_note(budget, &month))
    }))
}

/// The note a held job's timeline shows. The same for every job and every
/// pass of one budget's hold, so a job is told once.
pub fn hold_note(budget: &Budget, month: &str) -> String {
    format!(
        "held by budget {}: {month}'s spend for {} reached its {} (enforce is on); launches resume when the month ends or the budget is raised",
        budget.name,
        budget.scope,
        usd(budget.monthly_micro_usd)
    )
}

/// Every configured budget with this month's kept standing.
pub async fn list(ports: &Ports) -> ServiceResult<Budgets> {
    let month = month_of(ports.clock.now());
    let budgets = &ports.settings.budgets;
    let (standings, names) = if budgets.is_empty() {
        (Vec::new(), None)
    } else {
        (
            ports.store.budget_standings(&month).await?,
            Some(Names::read(ports).await?),
        )
    };
    let views = budgets
        .iter()
        .map(|budget| {
            let standing = standings.iter().find(|s| s.budget == budget.name);
            let spent = standing.map_or(0, |s| s.spent_micro_usd);
            let field = |f: fn(&BudgetStanding) -> Option<Time>| standing.and_then(f);
            BudgetView {
                name: budget.name.clone(),
                scope: budget.scope.clone(),
                found: names
                    .as_ref()
                    .is_some_and(|n| !n.ids(&budget.scope).1.is_empty()),
                monthly_micro_usd: budget.monthly_micro_usd,
                warn_percent: budget.warn_percent,
                warn_micro_usd: budget.warn_micro_usd(),
                enforce: budget.enforce,
                spent_micro_usd: spent,
                counted_at: field(|s| s.counted_at),
                status: budget.status(spent),
                warned_at: field(|s| s.warned_at),
                exceeded_at: field(|s| s.exceeded_at),
            }
        })
        .collect();
    Ok(Budgets {
        month,
        budgets: views,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_rounded_as_the_console_rounds_them() {
        assert_eq!(usd(0), "$0.0000");
        assert_eq!(usd(49), "$0.0000");
        assert_eq!(usd(50), "$0.0001");
        assert_eq!(usd(999_949), "$0.9999");
        assert_eq!(usd(1_004_999), "$1.00");
        assert_eq!(usd(1_005_000), "$1.01");
        assert_eq!(usd(500_000_000), "$500.00");
        assert_eq!(usd(MicroUsd::MAX), usd(MicroUsd::MAX - 1), "no overflow");
    }
}
