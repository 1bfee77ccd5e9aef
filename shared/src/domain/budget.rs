//! Monthly budgets: a cap on what a project's or a pool's runners may cost
//! in a UTC calendar month, a warning line below it, and whether reaching
//! the cap stops launches. See docs/cost.md, "Budgets".
//!
//! What a budget has spent is the cost of the month's usage roll-ups whose
//! project or pool it covers: settled jobs and idle runners, counted when
//! they end, so a runner still running is not in it yet.

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::Time;
use super::cost::MicroUsd;

/// What a budget covers: every pool of a project, or one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BudgetScope {
    /// A project, by name.
    Project { project: String },
    /// One pool, by its project's name and its own.
    Pool { project: String, pool: String },
}

impl BudgetScope {
    /// Whether the pool `pool` of the project `project` (both by name) is
    /// covered. Names compare as pacer stores them: case-insensitively.
    pub fn covers(&self, project: &str, pool: &str) -> bool {
        match self {
            BudgetScope::Project { project: p } => p.eq_ignore_ascii_case(project),
            BudgetScope::Pool {
                project: p,
                pool: q,
            } => p.eq_ignore_ascii_case(project) && q.eq_ignore_ascii_case(pool),
        }
    }
}

impl std::fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetScope::Project { project } => write!(f, "project {project}"),
            BudgetScope::Pool { project, pool } => write!(f, "pool {project}/{pool}"),
        }
    }
}

/// One entry of `budgets:`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub name: String,
    pub scope: BudgetScope,
    pub monthly_micro_usd: MicroUsd,
    /// 1 to 100: the share of the budget at which pacer warns.
    pub warn_percent: u8,
    /// Stop launching for what the budget covers once it is spent.
    pub enforce: bool,
}

impl Budget {
    /// The spend at which the warning line is crossed.
    pub fn warn_micro_usd(&self) -> MicroUsd {
        let exact = u128::from(self.monthly_micro_usd) * u128::from(self.warn_percent);
        MicroUsd::try_from(exact.div_ceil(100)).unwrap_or(MicroUsd::MAX)
    }

    /// Where `spent` stands against the budget.
    pub fn status(&self, spent: MicroUsd) -> BudgetStatus {
        if spent >= self.monthly_micro_usd {
            if self.enforce {
                BudgetStatus::Held
            } else {
                BudgetStatus::Exceeded
            }
        } else if spent >= self.warn_micro_usd() {
            BudgetStatus::Warning
        } else {
            BudgetStatus::Ok
        }
    }
}

/// Where a budget stands this month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum BudgetStatus {
    /// Below the warning line.
    Ok,
    /// At or past the warning line, below the budget.
    Warning,
    /// At or past the budget; launches go on (`enforce` is off).
    Exceeded,
    /// At or past the budget with `enforce` on: nothing it covers launches.
    Held,
}

/// A line a budget's spend can cross, at most once a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetLine {
    Warning,
    Exceeded,
}

impl BudgetLine {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetLine::Warning => "warning",
            BudgetLine::Exceeded => "exceeded",
        }
    }
}

/// What the store keeps of a budget in one month: its spend as last
/// counted, and when it crossed each line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStanding {
    /// `YYYY-MM`.
    pub month: String,
    pub budget: String,
    pub spent_micro_usd: MicroUsd,
    /// When the spend was counted; `None` when only a line was marked.
    pub counted_at: Option<Time>,
    pub warned_at: Option<Time>,
    pub exceeded_at: Option<Time>,
}

/// The UTC month `t` falls in, as `YYYY-MM`.
pub fn month_of(t: Time) -> String {
    t.format("%Y-%m").to_string()
}

/// The start of the UTC month `t` falls in and of the month after; `None`
/// at the very ends of time.
pub fn month_bounds(t: Time) -> Option<(Time, Time)> {
    let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?;
    let next = first.checked_add_months(chrono::Months::new(1))?;
    let at = |d: NaiveDate| Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    Some((at(first)?, at(next)?))
}

/// The largest monthly budget pacer takes, in USD.
pub const MAX_MONTHLY_USD: f64 = 1_000_000_000.0;

/// A monthly amount in USD as written to whole micro-dollars; `None` unless
/// it is finite, above zero and at most [`MAX_MONTHLY_USD`].
pub fn monthly_micro_usd(usd: f64) -> Option<MicroUsd> {
    (usd.is_finite() && usd > 0.0 && usd <= MAX_MONTHLY_USD)
        .then(|| (usd * 1_000_000.0).round() as MicroUsd)
        .filter(|&m| m > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(usd: u64, warn: u8, enforce: bool) -> Budget {
        Budget {
            name: "b".into(),
            scope: BudgetScope::Project {
                project: "acme".into(),
            },
            monthly_micro_usd: usd * 1_000_000,
            warn_percent: warn,
            enforce,
        }
    }

    #[test]
    fn spend_is_ok_then_warning_then_over_or_held() {
        let b = budget(100, 80, false);
        assert_eq!(b.warn_micro_usd(), 80_000_000);
        assert_eq!(b.status(79_999_999), BudgetStatus::Ok);
        assert_eq!(b.status(80_000_000), BudgetStatus::Warning);
        assert_eq!(b.status(99_999_999), BudgetStatus::Warning);
        assert_eq!(b.status(100_000_000), BudgetStatus::Exceeded);
        assert_eq!(
            budget(100, 80, true).status(100_000_000),
            BudgetStatus::Held
        );
        // A warning line at 100% is the budget itself.
        assert_eq!(budget(100, 100, false).status(99_999_999), BudgetStatus::Ok);
        // A third of a micro-dollar rounds the line up, never below the share.
        let odd = Budget {
            monthly_micro_usd: 10,
            ..budget(0, 33, false)
        };
        assert_eq!(odd.warn_micro_usd(), 4);
    }

    #[test]
    fn a_scope_covers_its_pools_by_name_in_any_case() {
        let project = BudgetScope::Project {
            project: "Acme".into(),
        };
        assert!(project.covers("acme", "linux"));
        assert!(!project.covers("other", "linux"));
        let pool = BudgetScope::Pool {
            project: "acme".into(),
            pool: "linux".into(),
        };
        assert!(pool.covers("ACME", "Linux"));
        assert!(!pool.covers("acme", "arm"));
        assert_eq!(pool.to_string(), "pool acme/linux");
    }

    #[test]
    fn months_are_utc_calendar_months() {
        let t: Time = "2026-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(month_of(t), "2026-12");
        assert_eq!(
            month_bounds(t),
            Some((
                "2026-12-01T00:00:00Z".parse().unwrap(),
                "2027-01-01T00:00:00Z".parse().unwrap()
            ))
        );
        let leap: Time = "2028-02-29T12:00:00Z".parse().unwrap();
        assert_eq!(
            month_bounds(leap).unwrap().1,
            "2028-03-01T00:00:00Z".parse::<Time>().unwrap()
        );
        let end: Time = "+262142-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(month_bounds(end), None, "no month after the last");
    }

    #[test]
    fn monthly_amounts_are_positive_and_bounded() {
        assert_eq!(monthly_micro_usd(500.0), Some(500_000_000));
        assert_eq!(monthly_micro_usd(0.25), Some(250_000));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e9, 1e-9] {
            assert_eq!(monthly_micro_usd(bad), None, "{bad}");
        }
    }
}
