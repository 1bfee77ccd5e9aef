//! `GET /api/stats`: jobs, runner-minutes and queue-time percentiles over a
//! time window, per project, pool, repo or day, plus the jobs in flight now.
//!
//! Figures are computed from the store's records on each call: jobs created
//! in the window, and the runners created in it (attributed to the job each
//! one ran, or to its pool when that job is outside the window).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Ports, ServiceError, ServiceResult};
use crate::domain::{Job, JobState, Runner, Time};
use crate::store::{JobFilter, Pages, RunnerFilter, all_pages};

/// The longest window one call may cover.
pub const MAX_WINDOW_DAYS: i64 = 400;

/// How a window's figures are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Project,
    Pool,
    Repo,
    Day,
}

impl GroupBy {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "project" => Some(Self::Project),
            "pool" => Some(Self::Pool),
            "repo" => Some(Self::Repo),
            "day" => Some(Self::Day),
            _ => None,
        }
    }
}

/// What a stats call asks for; `from`/`to` default to the last 24 hours.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub from: Option<Time>,
    pub to: Option<Time>,
    pub group_by: GroupBy,
}

/// The figures of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Bucket {
    /// A project or pool id, `owner/name`, or `YYYY-MM-DD`; `all` for the total.
    pub key: String,
    /// What a person reads: the project's or pool's name, else the key.
    pub name: String,
    pub jobs: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub unmatched: u64,
    pub runner_minutes: f64,
    /// From `queued` to the first `running`, over the jobs that ran.
    pub queue_p50_seconds: Option<f64>,
    pub queue_p95_seconds: Option<f64>,
}

/// Jobs not yet final, by state, whenever they were created.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct InFlight {
    pub queued: u64,
    pub claimed: u64,
    pub starting: u64,
    pub running: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Stats {
    pub from: Time,
    pub to: Time,
    pub group_by: GroupBy,
    pub in_flight: InFlight,
    pub total: Bucket,
    pub buckets: Vec<Bucket>,
}

/// Figures gathered for one bucket before the percentiles are taken.
#[derive(Default)]
struct Tally {
    name: Option<String>,
    jobs: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    unmatched: u64,
    runner_seconds: f64,
    queue_seconds: Vec<f64>,
}

impl Tally {
    fn add_job(&mut self, job: &Job) {
        self.jobs += 1;
        match job.state {
            JobState::Completed => self.completed += 1,
            JobState::Failed => self.failed += 1,
            JobState::Cancelled => self.cancelled += 1,
            JobState::Unmatched => self.unmatched += 1,
            _ => {}
        }
        if let Some(wait) = queue_time(job) {
            self.queue_seconds.push(wait);
        }
    }

    fn finish(mut self, key: String) -> Bucket {
        self.queue_seconds.sort_by(f64::total_cmp);
        Bucket {
            name: self.name.unwrap_or_else(|| key.clone()),
            key,
            jobs: self.jobs,
            completed: self.completed,
            failed: self.failed,
            cancelled: self.cancelled,
            unmatched: self.unmatched,
            runner_minutes: (self.runner_seconds / 60.0 * 100.0).round() / 100.0,
            queue_p50_seconds: percentile(&self.queue_seconds, 50.0),
            queue_p95_seconds: percentile(&self.queue_seconds, 95.0),
        }
    }
}

/// Seconds from a job's arrival to its first `running`, if it ran.
pub fn queue_time(job: &Job) -> Option<f64> {
    let started = job
        .transitions
        .iter()
        .find(|t| t.state == JobState::Running)?;
    Some(((started.at - job.created_at).num_milliseconds().max(0)) as f64 / 1000.0)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The figures for `query`'s window.
/// The window a query asks for: `to` defaults to now, `from` to a day before `to`.
fn window(now: Time, from: Option<Time>, to: Option<Time>) -> ServiceResult<(Time, Time)> {
    let to = to.unwrap_or(now);
    // A `to` at the very start of time has no day before it: subtracting
    // would panic, and a panic aborts the release build.
    let from = match from {
        Some(from) => from,
        None => to.checked_sub_signed(chrono::Duration::hours(24)).ok_or_else(|| {
            ServiceError::BadRequest(format!("query parameter to ({to}) leaves no room for the day before it; give from as well"))
        })?,
    };
    if from >= to {
        return Err(ServiceError::BadRequest(format!(
            "query parameter from ({from}) must be before to ({to})"
        )));
    }
    if to - from > chrono::Duration::days(MAX_WINDOW_DAYS) {
        return Err(ServiceError::BadRequest(format!(
            "the window from {from} to {to} is longer than {MAX_WINDOW_DAYS} days"
        )));
    }
    Ok((from, to))
}

pub async fn compute(ports: &Ports, query: &StatsQuery) -> ServiceResult<Stats> {
    let now = ports.clock.now();
    let (from, to) = window(now, query.from, query.to)?;

    let window = JobFilter {
        from: Some(from),
        to: Some(to),
        ..JobFilter::default()
    };
    let jobs: Vec<Job> = all_pages!(|p| ports.store.list_jobs(&window, p));
    let runners = runners_created_between(ports, from, to).await?;
    let names = names(ports, query.group_by).await?;

    let mut total = Tally::default();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    for job in &jobs {
        total.add_job(job);
        if let Some(key) = job_key(job, query.group_by) {
            tallies.entry(key).or_default().add_job(job);
        }
    }
    for runner in &runners {
        let seconds = runner_seconds(runner, now);
        total.runner_seconds += seconds;
        let job = runner
            .job_id
            .as_deref()
            .and_then(|id| by_id.get(id).copied());
        if let Some(key) = runner_key(runner, job, query.group_by) {
            tallies.entry(key).or_default().runner_seconds += seconds;
        }
    }

    let buckets = tallies
        .into_iter()
        .map(|(key, mut tally)| {
            tally.name = names.get(&key).cloned();
            tally.finish(key)
        })
        .collect();
    Ok(Stats {
        from,
        to,
        group_by: query.group_by,
        in_flight: in_flight(ports).await?,
        total: total.finish("all".into()),
        buckets,
    })
}

fn job_key(job: &Job, group_by: GroupBy) -> Option<String> {
    match group_by {
        GroupBy::Project => job.project_id.clone(),
        GroupBy::Pool => job.pool_id.clone(),
        GroupBy::Repo => Some(job.repo.to_lowercase()),
        GroupBy::Day => Some(day(job.created_at)),
    }
}

/// A runner counts where the job it ran counts; without that job (it is
/// outside the window, or the runner never got one), by its own pool,
/// project or day.
fn runner_key(runner: &Runner, job: Option<&Job>, group_by: GroupBy) -> Option<String> {
    match (group_by, job) {
        (_, Some(job)) => job_key(job, group_by),
        (GroupBy::Project, None) => Some(runner.project_id.clone()),
        (GroupBy::Pool, None) => Some(runner.pool_id.clone()),
        (GroupBy::Repo, None) => None,
        (GroupBy::Day, None) => Some(day(runner.created_at)),
    }
}

fn day(t: Time) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// How long a runner has lived: until its last change once it ended.
fn runner_seconds(runner: &Runner, now: Time) -> f64 {
    let end = if runner.state.is_live() {
        now
    } else {
        runner.updated_at
    };
    ((end - runner.created_at).num_milliseconds().max(0)) as f64 / 1000.0
}

/// Runners list newest first, so the walk stops at the first one created
/// before `from`.
async fn runners_created_between(
    ports: &Ports,
    from: Time,
    to: Time,
) -> ServiceResult<Vec<Runner>> {
    let every = RunnerFilter::default();
    let mut found = Vec::new();
    let mut pages = Pages::start();
    while let Some(page) = pages.next_request() {
        for runner in pages.items(ports.store.list_runners(&every, &page).await?) {
            if runner.created_at < from {
                return Ok(found);
            }
            if runner.created_at < to {
                found.push(runner);
            }
        }
    }
    Ok(found)
}

/// Display names of the projects or pools a grouping keys by id.
async fn names(ports: &Ports, group_by: GroupBy) -> ServiceResult<HashMap<String, String>> {
    Ok(match group_by {
        GroupBy::Project => all_pages!(|p| ports.store.list_projects(p))
            .into_iter()
            .map(|p| (p.id, p.spec.name.to_string()))
            .collect(),
        GroupBy::Pool => all_pages!(|p| ports.store.list_pools(None, p))
            .into_iter()
            .map(|p| (p.id, p.spec.name.to_string()))
            .collect(),
        GroupBy::Repo | GroupBy::Day => HashMap::new(),
    })
}

async fn in_flight(ports: &Ports) -> ServiceResult<InFlight> {
    let mut counts = InFlight::default();
    for (state, slot) in [
        (JobState::Queued, &mut counts.queued),
        (JobState::Claimed, &mut counts.claimed),
        (JobState::Starting, &mut counts.starting),
        (JobState::Running, &mut counts.running),
    ] {
        let filter = JobFilter {
            state: Some(state),
            ..JobFilter::default()
        };
        *slot = all_pages!(|p| ports.store.list_jobs(&filter, p)).len() as u64;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(10.0));
        assert_eq!(percentile(&values, 95.0), Some(19.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_to_at_the_start_of_time_is_refused_not_a_panic() {
        let earliest: Time = "-262143-01-01T00:00:00Z".parse().unwrap();
        let now = chrono::Utc::now();
        let refused = window(now, None, Some(earliest)).unwrap_err();
        assert!(
            matches!(refused, ServiceError::BadRequest(ref m) if m.contains("give from as well")),
            "{refused:?}"
        );
        let day_before = window(now, None, Some(now)).unwrap();
        assert_eq!(
            day_before,
            (now - chrono::Duration::hours(24), now),
            "the default window is unchanged"
        );
    }

    #[test]
    fn group_by_accepts_only_the_documented_names() {
        assert_eq!(GroupBy::parse("pool"), Some(GroupBy::Pool));
        assert_eq!(GroupBy::parse("Pool"), None);
        assert_eq!(GroupBy::parse("week"), None);
    }
}
