//! `GET /api/stats`, `/api/stats/series`, `/api/stats/top-users` and
//! `/api/stats/export`: what jobs and runners cost and how long jobs waited
//! over a window, from the usage roll-ups (docs/cost.md) — one read per
//! bucket in the window, never a walk through its jobs — plus the jobs in
//! flight now. Only the export lists jobs, a page of answers at a time.
//!
//! A window is widened to whole hours (the roll-ups' finest bucket): whole
//! UTC days inside it are read from the day buckets, the hours at its edges
//! from the hour buckets. The answer says which hours it covers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DurationRound, TimeDelta};
use serde::Serialize;

use super::{Ports, ServiceError, ServiceResult};
use crate::domain::cost::MicroUsd;
use crate::domain::usage::{Histogram, Period, UsageBucket, UsageFigures};
use crate::domain::{Job, JobState, Time};
use crate::store::{JobFilter, PageRequest, all_pages};

/// The longest window one call may cover.
pub const MAX_WINDOW_DAYS: i64 = 400;

/// The most users `top-users` lists.
pub const MAX_TOP_USERS: u32 = 100;

/// How a window's figures are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Project,
    Pool,
    Repo,
    Sender,
    Day,
    Market,
}

impl GroupBy {
    pub const NAMES: &'static str = "project, pool, repo, sender, day, market";

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "project" => Some(Self::Project),
            "pool" => Some(Self::Pool),
            "repo" => Some(Self::Repo),
            "sender" => Some(Self::Sender),
            "day" => Some(Self::Day),
            "market" => Some(Self::Market),
            _ => None,
        }
    }

    fn key(self, bucket: &UsageBucket) -> String {
        let d = &bucket.dims;
        match self {
            GroupBy::Project => d.project_id.clone(),
            GroupBy::Pool => d.pool_id.clone(),
            GroupBy::Repo => d.repo.clone(),
            GroupBy::Sender => d.sender.clone(),
            GroupBy::Day => bucket.start.format("%Y-%m-%d").to_string(),
            GroupBy::Market => d.market.clone(),
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

/// Percentiles of one duration, in milliseconds: the upper bound of the
/// histogram bucket each falls in; `null` without a value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Percentiles {
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

impl Percentiles {
    fn of(h: &Histogram) -> Self {
        Self {
            p50_ms: h.percentile_ms(50.0),
            p95_ms: h.percentile_ms(95.0),
            p99_ms: h.percentile_ms(99.0),
        }
    }
}

/// Where the money went, in micro-dollars; minutes without a price are in
/// no figure here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct CostSplit {
    pub job_micro_usd: MicroUsd,
    pub overhead_micro_usd: MicroUsd,
    pub idle_micro_usd: MicroUsd,
    pub total_micro_usd: MicroUsd,
}

/// The figures of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Group {
    /// A project or pool id, `owner/name`, a sender, `YYYY-MM-DD` or a
    /// market; `all` for the total. Empty for runners that ran no job (by
    /// repo or sender) or jobs no runner of pacer's ran (by market).
    pub key: String,
    /// What a person reads: the project's or pool's name, else the key.
    pub name: String,
    /// Jobs settled in the window (final, their runner ended).
    pub jobs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub runner_minutes: f64,
    /// Runner minutes without a known price: in `runner_minutes`, not in `cost`.
    pub unpriced_minutes: f64,
    pub cost: CostSplit,
    /// Queued to the launch of its runner: pacer's own latency.
    pub queued_to_launched: Percentiles,
    /// Launch to registration: boot.
    pub launched_to_registered: Percentiles,
    /// Queued to `in_progress`: what a developer waits.
    pub queued_to_in_progress: Percentiles,
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
    /// The window as asked for.
    pub from: Time,
    pub to: Time,
    /// The whole hours the figures cover: the window, widened.
    pub covered_from: Time,
    pub covered_to: Time,
    pub group_by: GroupBy,
    pub in_flight: InFlight,
    pub total: Group,
    /// By key; the heaviest first is the caller's sort to make.
    pub buckets: Vec<Group>,
}

/// One GitHub sender's share.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TopUser {
    pub sender: String,
    pub jobs: u64,
    pub runner_minutes: f64,
    pub cost_micro_usd: MicroUsd,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TopUsers {
    pub from: Time,
    pub to: Time,
    pub covered_from: Time,
    pub covered_to: Time,
    /// By cost, then runner minutes, then jobs, the most first.
    pub users: Vec<TopUser>,
}

/// The window a query asks for: `to` defaults to now, `from` to a day before
/// `to`. Refusals name the parameter.
pub fn window(now: Time, from: Option<Time>, to: Option<Time>) -> ServiceResult<(Time, Time)> {
    let to = to.unwrap_or(now);
    // A `to` at the very start of time has no day before it: subtracting
    // would panic, and a panic aborts the release build.
    let from = match from {
        Some(from) => from,
        None => to.checked_sub_signed(TimeDelta::hours(24)).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "query parameter to ({to}) leaves no room for the day before it; give from as well"
            ))
        })?,
    };
    if from >= to {
        return Err(ServiceError::BadRequest(format!(
            "query parameter from ({from}) must be before to ({to})"
        )));
    }
    if to - from > TimeDelta::days(MAX_WINDOW_DAYS) {
        return Err(ServiceError::BadRequest(format!(
            "query parameters from and to: the window from {from} to {to} is longer than {MAX_WINDOW_DAYS} days"
        )));
    }
    Ok((from, to))
}

/// `t` rounded down or up to a whole `span`; `t` itself at the edges of time.
fn floor(t: Time, span: TimeDelta) -> Time {
    t.duration_trunc(span).unwrap_or(t)
}

fn ceil(t: Time, span: TimeDelta) -> Time {
    let down = floor(t, span);
    if down == t {
        t
    } else {
        down.checked_add_signed(span).unwrap_or(t)
    }
}

/// A span of time, `[from, to)`.
type Span = (Time, Time);

/// One read of the roll-ups: the buckets of a period starting in a span.
type Read = (Period, Time, Time);

/// The reads that cover `[from, to)` widened to whole hours: day buckets
/// for the whole days inside, hour buckets for the edges.
fn plan(from: Time, to: Time) -> (Span, Vec<Read>) {
    let (hour, day) = (TimeDelta::hours(1), TimeDelta::days(1));
    let (from, to) = (floor(from, hour), ceil(to, hour));
    let (days_from, days_to) = (ceil(from, day), floor(to, day));
    let reads = if days_from < days_to {
        vec![
            (Period::Hour, from, days_from),
            (Period::Day, days_from, days_to),
            (Period::Hour, days_to, to),
        ]
    } else {
        vec![(Period::Hour, from, to)]
    };
    let reads = reads.into_iter().filter(|(_, a, b)| a < b).collect();
    ((from, to), reads)
}

/// Every bucket the widened window covers.
async fn buckets(
    ports: &Ports,
    from: Time,
    to: Time,
) -> ServiceResult<((Time, Time), Vec<UsageBucket>)> {
    let (covered, reads) = plan(from, to);
    let mut found = Vec::new();
    for (period, a, b) in reads {
        found.extend(ports.store.usage_buckets(period, a, b).await?);
    }
    Ok((covered, found))
}

fn minutes(seconds: u64) -> f64 {
    (seconds as f64 / 60.0 * 100.0).round() / 100.0
}

fn group(key: String, name: String, f: &UsageFigures) -> Group {
    Group {
        key,
        name,
        jobs: f.jobs,
        succeeded: f.succeeded,
        failed: f.failed,
        runner_minutes: minutes(f.job_seconds + f.overhead_seconds + f.idle_seconds),
        unpriced_minutes: minutes(f.unpriced_seconds),
        cost: CostSplit {
            job_micro_usd: f.job_micro_usd,
            overhead_micro_usd: f.overhead_micro_usd,
            idle_micro_usd: f.idle_micro_usd,
            total_micro_usd: f.total_micro_usd(),
        },
        queued_to_launched: Percentiles::of(&f.queued_to_launched),
        launched_to_registered: Percentiles::of(&f.launched_to_registered),
        queued_to_in_progress: Percentiles::of(&f.queued_to_in_progress),
    }
}

/// The figures for `query`'s window.
pub async fn compute(ports: &Ports, query: &StatsQuery) -> ServiceResult<Stats> {
    let (from, to) = window(ports.clock.now(), query.from, query.to)?;
    let ((covered_from, covered_to), found) = buckets(ports, from, to).await?;
    let mut total = UsageFigures::default();
    let mut groups: BTreeMap<String, UsageFigures> = BTreeMap::new();
    for b in &found {
        total.merge(&b.figures);
        groups
            .entry(query.group_by.key(b))
            .or_default()
            .merge(&b.figures);
    }
    let names = names(ports, query.group_by).await?;
    Ok(Stats {
        from,
        to,
        covered_from,
        covered_to,
        group_by: query.group_by,
        in_flight: in_flight(ports).await?,
        total: group("all".into(), "all".into(), &total),
        buckets: groups
            .into_iter()
            .map(|(key, f)| {
                let name = names.get(&key).cloned().unwrap_or_else(|| key.clone());
                group(key, name, &f)
            })
            .collect(),
    })
}

/// How long one point of a series spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Hour,
    Day,
}

impl Step {
    /// The longest window an hourly series may cover: a month of points.
    pub const MAX_HOURLY_DAYS: i64 = 31;
    /// Windows up to this long get hourly points unless the caller asks.
    const DEFAULT_HOURLY_DAYS: i64 = 2;

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    fn span(self) -> TimeDelta {
        match self {
            Step::Hour => TimeDelta::hours(1),
            Step::Day => TimeDelta::days(1),
        }
    }
}

/// What a series call asks for.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub from: Option<Time>,
    pub to: Option<Time>,
    /// `None`: hourly for a window up to two days, else daily.
    pub step: Option<Step>,
    /// Which figure splits each point's cost; never `day`.
    pub split_by: GroupBy,
}

/// One line or stack of a series: a key of `split_by` and its display name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SeriesKey {
    pub key: String,
    pub name: String,
}

/// One step of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SeriesPoint {
    /// The start of the step (UTC).
    pub start: Time,
    /// Every figure of the step, its key `all`.
    pub total: Group,
    /// Total micro-dollars by key of `split_by`; keys without figures in
    /// this step are left out.
    pub by: BTreeMap<String, MicroUsd>,
}

/// The figures of a window step by step, for charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct StatsSeries {
    pub from: Time,
    pub to: Time,
    pub covered_from: Time,
    pub covered_to: Time,
    pub step: Step,
    pub split_by: GroupBy,
    /// Every key with figures in the window, the most costly first.
    pub series: Vec<SeriesKey>,
    /// One per step from the step holding `covered_from` to `covered_to`,
    /// empty steps included.
    pub points: Vec<SeriesPoint>,
}

/// The figures of `query`'s window, one point per step.
pub async fn series(ports: &Ports, query: &SeriesQuery) -> ServiceResult<StatsSeries> {
    if query.split_by == GroupBy::Day {
        return Err(ServiceError::BadRequest(
            "query parameter split_by: day is not a split; give project, pool, repo, sender or market"
                .into(),
        ));
    }
    let (from, to) = window(ports.clock.now(), query.from, query.to)?;
    let hourly_limit = TimeDelta::days(Step::MAX_HOURLY_DAYS);
    let step = match query.step {
        Some(Step::Hour) if to - from > hourly_limit => {
            return Err(ServiceError::BadRequest(format!(
                "query parameter step: hour covers at most {} days; ask for step=day",
                Step::MAX_HOURLY_DAYS
            )));
        }
        Some(step) => step,
        None if to - from <= TimeDelta::days(Step::DEFAULT_HOURLY_DAYS) => Step::Hour,
        None => Step::Day,
    };
    let ((covered_from, covered_to), found) = match step {
        // Hourly points need every hour bucket, days included.
        Step::Hour => {
            let hour = TimeDelta::hours(1);
            let (a, b) = (floor(from, hour), ceil(to, hour));
            ((a, b), ports.store.usage_buckets(Period::Hour, a, b).await?)
        }
        Step::Day => buckets(ports, from, to).await?,
    };
    let span = step.span();
    let mut points: BTreeMap<Time, (UsageFigures, BTreeMap<String, MicroUsd>)> = BTreeMap::new();
    let mut t = floor(covered_from, span);
    while t < covered_to {
        points.insert(t, Default::default());
        match t.checked_add_signed(span) {
            Some(next) => t = next,
            None => break,
        }
    }
    let mut totals: HashMap<String, MicroUsd> = HashMap::new();
    for b in &found {
        let key = query.split_by.key(b);
        let cost = b.figures.total_micro_usd();
        let (figures, by) = points.entry(floor(b.start, span)).or_default();
        figures.merge(&b.figures);
        let add = |slot: &mut MicroUsd| *slot = slot.saturating_add(cost);
        add(by.entry(key.clone()).or_default());
        add(totals.entry(key).or_default());
    }
    let names = names(ports, query.split_by).await?;
    let mut keys: Vec<(String, MicroUsd)> = totals.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(StatsSeries {
        from,
        to,
        covered_from,
        covered_to,
        step,
        split_by: query.split_by,
        series: keys
            .into_iter()
            .map(|(key, _)| SeriesKey {
                name: names.get(&key).cloned().unwrap_or_else(|| key.clone()),
                key,
            })
            .collect(),
        points: points
            .into_iter()
            .map(|(start, (figures, by))| SeriesPoint {
                start,
                total: group("all".into(), "all".into(), &figures),
                by,
            })
            .collect(),
    })
}

/// The GitHub senders whose jobs cost the most in the window.
pub async fn top_users(
    ports: &Ports,
    from: Option<Time>,
    to: Option<Time>,
    limit: u32,
) -> ServiceResult<TopUsers> {
    let (from, to) = window(ports.clock.now(), from, to)?;
    let ((covered_from, covered_to), found) = buckets(ports, from, to).await?;
    let mut by_sender: HashMap<&str, UsageFigures> = HashMap::new();
    for b in found.iter().filter(|b| !b.dims.sender.is_empty()) {
        by_sender
            .entry(b.dims.sender.as_str())
            .or_default()
            .merge(&b.figures);
    }
    let mut users: Vec<TopUser> = by_sender
        .into_iter()
        .map(|(sender, f)| TopUser {
            sender: sender.to_string(),
            jobs: f.jobs,
            runner_minutes: minutes(f.job_seconds + f.overhead_seconds + f.idle_seconds),
            cost_micro_usd: f.total_micro_usd(),
        })
        .collect();
    users.sort_by(|a, b| {
        (b.cost_micro_usd, b.runner_minutes, b.jobs)
            .partial_cmp(&(a.cost_micro_usd, a.runner_minutes, a.jobs))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.sender.cmp(&b.sender))
    });
    users.truncate(limit.clamp(1, MAX_TOP_USERS) as usize);
    Ok(TopUsers {
        from,
        to,
        covered_from,
        covered_to,
        users,
    })
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
        _ => HashMap::new(),
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

/// The header of `/api/stats/export`: one row per job.
pub const EXPORT_COLUMNS: [&str; 20] = [
    "job_id",
    "github_job_id",
    "repo",
    "sender",
    "project_id",
    "pool_id",
    "state",
    "conclusion",
    "instance_type",
    "market",
    "availability_zone",
    "queued_to_launched_ms",
    "launched_to_registered_ms",
    "queued_to_in_progress_ms",
    "runner_minutes",
    "job_usd",
    "overhead_usd",
    "idle_usd",
    "total_usd",
    "price_source",
];

/// Micro-dollars as a decimal dollar amount, exactly: `550` is `0.000550`.
fn usd(micro: MicroUsd) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// Rows one export answer holds unless asked for fewer: a few megabytes,
/// within what a Lambda function may return.
pub const EXPORT_ROWS: u32 = 10_000;

/// The most rows one export answer holds.
pub const MAX_EXPORT_ROWS: u32 = 20_000;

/// Runner lookups in flight at once while a page of rows is written.
const EXPORT_LOOKUPS: usize = 8;

/// One answer of `/api/stats/export`: a whole CSV (header and rows), and
/// where the next one starts when the window holds more jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPage {
    /// The window as asked for, for the next answer's link.
    pub from: Time,
    pub to: Time,
    pub csv: String,
    pub next_cursor: Option<String>,
}

/// The CSV of the jobs that arrived in the window, settled or not (an
/// unsettled job's figures are empty), oldest first: at most `rows` of them
/// after `cursor`, read a store page at a time, so a long window is fetched
/// answer by answer and never held whole.
pub async fn export(
    ports: &Ports,
    from: Option<Time>,
    to: Option<Time>,
    cursor: Option<String>,
    rows: u32,
) -> ServiceResult<ExportPage> {
    let (from, to) = window(ports.clock.now(), from, to)?;
    let filter = JobFilter {
        from: Some(from),
        to: Some(to),
        oldest_first: true,
        ..JobFilter::default()
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(EXPORT_COLUMNS).map_err(csv_failed)?;
    let rows = rows.clamp(1, MAX_EXPORT_ROWS);
    let mut written = 0u32;
    let mut next = cursor;
    loop {
        let page = ports
            .store
            .list_jobs(
                &filter,
                &PageRequest {
                    limit: (rows - written).min(PageRequest::MAX_LIMIT),
                    cursor: next.take(),
                },
            )
            .await?;
        let runners = runners_of(ports, &page.items).await?;
        for job in &page.items {
            let runner = job
                .usage
                .as_ref()
                .and_then(|u| u.runner_id.as_deref())
                .and_then(|id| runners.get(id));
            out.write_record(export_row(job, runner))
                .map_err(csv_failed)?;
        }
        written += page.items.len() as u32;
        next = page.next_cursor;
        if next.is_none() || written >= rows {
            break;
        }
    }
    let bytes = out
        .into_inner()
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("writing the CSV export: {e}")))?;
    let csv = String::from_utf8(bytes)
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("the CSV export is not UTF-8: {e}")))?;
    Ok(ExportPage {
        from,
        to,
        csv,
        next_cursor: next,
    })
}

fn csv_failed(e: csv::Error) -> ServiceError {
    ServiceError::Internal(anyhow::Error::new(e).context("writing the CSV export"))
}

/// The runners that ran a page's settled jobs, by id, looked up a few at a
/// time.
async fn runners_of(
    ports: &Ports,
    jobs: &[Job],
) -> ServiceResult<HashMap<String, crate::domain::Runner>> {
    use futures::StreamExt as _;
    let ids: std::collections::BTreeSet<String> = jobs
        .iter()
        .filter_map(|j| j.usage.as_ref()?.runner_id.clone())
        .collect();
    let store = &ports.store;
    let found: Vec<_> = futures::stream::iter(ids)
        .map(|id| async move { store.get_runner(&id).await })
        .buffer_unordered(EXPORT_LOOKUPS)
        .collect()
        .await;
    let mut runners = HashMap::new();
    for runner in found {
        if let Some(r) = runner? {
            runners.insert(r.id.clone(), r);
        }
    }
    Ok(runners)
}

/// One job's row, in [`EXPORT_COLUMNS`] order.
fn export_row(job: &Job, runner: Option<&crate::domain::Runner>) -> [String; 20] {
    let usage = job.usage.as_ref();
    let cost = usage.and_then(|u| u.cost);
    let timings = usage.map(|u| u.timings).unwrap_or_default();
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    let number = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let money = |v: Option<MicroUsd>| v.map(usd).unwrap_or_default();
    [
        job.id.clone(),
        job.github_job_id.to_string(),
        job.repo.clone(),
        text(job.sender.as_deref()),
        text(job.project_id.as_deref()),
        text(job.pool_id.as_deref()),
        job.state.to_string(),
        text(job.conclusion.as_deref()),
        text(runner.and_then(|r| r.instance_type.as_deref())),
        text(runner.and_then(|r| r.market.as_deref())),
        text(runner.and_then(|r| r.availability_zone.as_deref())),
        number(timings.queued_to_launched_ms),
        number(timings.launched_to_registered_ms),
        number(timings.queued_to_in_progress_ms),
        cost.map(|c| minutes(c.seconds()).to_string())
            .unwrap_or_default(),
        money(cost.and_then(|c| c.job_micro_usd)),
        money(cost.and_then(|c| c.overhead_micro_usd)),
        money(cost.and_then(|c| c.idle_micro_usd)),
        money(cost.and_then(|c| c.total_micro_usd)),
        cost.map(|c| c.source.as_str().to_string())
            .unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Time {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_reads_days_inside_and_hours_at_its_edges() {
        let (covered, reads) = plan(at("2026-03-01T10:30:00Z"), at("2026-03-04T02:10:00Z"));
        assert_eq!(
            covered,
            (at("2026-03-01T10:00:00Z"), at("2026-03-04T03:00:00Z"))
        );
        assert_eq!(
            reads,
            [
                (
                    Period::Hour,
                    at("2026-03-01T10:00:00Z"),
                    at("2026-03-02T00:00:00Z")
                ),
                (
                    Period::Day,
                    at("2026-03-02T00:00:00Z"),
                    at("2026-03-04T00:00:00Z")
                ),
                (
                    Period::Hour,
                    at("2026-03-04T00:00:00Z"),
                    at("2026-03-04T03:00:00Z")
                ),
            ]
        );
        // Within a day: hours only; on day bounds: days only.
        let (_, short) = plan(at("2026-03-01T10:30:00Z"), at("2026-03-01T11:30:00Z"));
        assert_eq!(
            short,
            [(
                Period::Hour,
                at("2026-03-01T10:00:00Z"),
                at("2026-03-01T12:00:00Z")
            )]
        );
        let (_, whole) = plan(at("2026-03-01T00:00:00Z"), at("2026-03-31T00:00:00Z"));
        assert_eq!(
            whole,
            [(
                Period::Day,
                at("2026-03-01T00:00:00Z"),
                at("2026-03-31T00:00:00Z")
            )]
        );
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
        assert_eq!(
            window(now, None, Some(now)).unwrap(),
            (now - TimeDelta::hours(24), now),
            "the default window is the day before"
        );
        // The edges of time widen to themselves instead of panicking.
        let latest: Time = "+262142-12-31T23:59:59Z".parse().unwrap();
        let _ = plan(latest - TimeDelta::hours(3), latest);
        let _ = plan(earliest, earliest + TimeDelta::hours(3));
    }

    #[test]
    fn group_by_accepts_only_the_documented_names() {
        for name in GroupBy::NAMES.split(", ") {
            assert!(GroupBy::parse(name).is_some(), "{name}");
        }
        assert_eq!(GroupBy::parse("Pool"), None);
        assert_eq!(GroupBy::parse("week"), None);
    }

    #[test]
    fn micro_dollars_are_written_as_exact_dollars() {
        assert_eq!(usd(550), "0.000550");
        assert_eq!(usd(12_345_678), "12.345678");
        assert_eq!(usd(0), "0.000000");
    }
}
