//! `budgets:`, checked and turned into domain budgets once, at load. Each refusal names the
//! entry's key (`budgets[2].monthly_usd`), so an operator finds the line to fix.

use super::error::ConfigError;
use super::sections::BudgetConfig;
use crate::domain::budget::{Budget, BudgetScope, MAX_MONTHLY_USD, monthly_micro_usd};
use crate::domain::project::parse_name;

fn invalid(index: usize, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("budgets[{index}].{field}"), message)
}

/// Checks every entry, in order; the first broken one is the error.
pub(super) fn budgets(written: &[BudgetConfig]) -> Result<Vec<Budget>, ConfigError> {
    let mut budgets: Vec<Budget> = Vec::with_capacity(written.len());
    for (index, entry) in written.iter().enumerate() {
        let budget = budget(index, entry)?;
        if let Some(first) = budgets
            .iter()
            .position(|b| b.name.eq_ignore_ascii_case(&budget.name))
        {
            return Err(invalid(
                index,
                "name",
                format!(
                    "{:?} is already the name of budgets[{first}]; each budget needs its own, since the audit log and the console name budgets by it",
                    budget.name
                ),
            ));
        }
        budgets.push(budget);
    }
    Ok(budgets)
}

fn budget(index: usize, entry: &BudgetConfig) -> Result<Budget, ConfigError> {
    let name =
        parse_name("name", entry.name.trim()).map_err(|e| invalid(index, "name", e.message))?;
    let scope = match (&entry.project, &entry.pool) {
        (Some(project), None) => BudgetScope::Project {
            project: parse_name("project", project.trim()).map_err(|e| {
                invalid(
                    index,
                    "project",
                    format!("is a project's name, which {}", e.message),
                )
            })?,
        },
        (None, Some(pool)) => {
            let refuse = |why: &str| {
                invalid(
                    index,
                    "pool",
                    format!("must be written project/pool, both by name: {why}"),
                )
            };
            let (project, pool) = pool
                .trim()
                .split_once('/')
                .ok_or_else(|| refuse("there is no '/'"))?;
            let project = parse_name("project", project)
                .map_err(|e| refuse(&format!("the project {}", e.message)))?;
            let pool =
                parse_name("pool", pool).map_err(|e| refuse(&format!("the pool {}", e.message)))?;
            BudgetScope::Pool { project, pool }
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                index,
                "pool",
                "and project are both set: a budget covers a whole project or one of its pools, so give one",
            ));
        }
        (None, None) => {
            return Err(invalid(
                index,
                "project",
                "is missing: give the project it covers (project: NAME) or one pool (pool: PROJECT/POOL)",
            ));
        }
    };
    let monthly_micro_usd = monthly_micro_usd(entry.monthly_usd).ok_or_else(|| {
        invalid(
            index,
            "monthly_usd",
            format!(
                "must be USD a month, above 0 and at most {MAX_MONTHLY_USD} (got {})",
                entry.monthly_usd
            ),
        )
    })?;
    let warn_percent = u8::try_from(entry.warn_percent)
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| {
            invalid(
                index,
                "warn_percent",
                format!(
                    "must be a share of the budget from 1 to 100 (got {})",
                    entry.warn_percent
                ),
            )
        })?;
    Ok(Budget {
        name,
        scope,
        monthly_micro_usd,
        warn_percent,
        enforce: entry.enforce,
    })
}
