//! Issue 17: `GET /api/stats` over 90 days of usage roll-ups holding 10,000
//! jobs a day, on SQLite. The roll-ups are written through the store's own
//! `add_usage`, one contribution per day and (pool, repository, sender,
//! market, conclusion) carrying that group's share of the day's jobs: the
//! buckets are exactly those 10,000 single jobs a day would make. Then the
//! stats use case reads the 90-day window by pool, and the figures say how
//! long it took and how many store reads and buckets one call cost.

use std::time::Instant;

use anyhow::ensure;
use pacer_shared::domain::usage::{Contribution, Period, UsageDims, UsageFigures};
use pacer_shared::service::stats::{self, GroupBy, StatsQuery};

use crate::deployment::{Deployment, instant_fleet};
use crate::measure::{Samples, micros};
use crate::{Figure, Sizes};

pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let deployment = Deployment::embedded(instant_fleet(), 10).await?;
    let ports = &deployment.ports;
    let now = ports.clock.now();
    let groups = sizes.stats_groups_per_day;
    let share = (sizes.stats_jobs_per_day / groups).max(1) as u64;
    let started = Instant::now();
    for day in 0..sizes.stats_days {
        let at = now - chrono::Duration::days(day as i64) - chrono::Duration::minutes(5);
        for g in 0..groups {
            let pool = &deployment.pools[g % deployment.pools.len()];
            let mut figures = UsageFigures {
                jobs: share,
                succeeded: share,
                job_seconds: share * 600,
                overhead_seconds: share * 90,
                job_micro_usd: share * 13_600,
                overhead_micro_usd: share * 2_040,
                ..UsageFigures::default()
            };
            for n in 0..share.min(50) {
                figures.queued_to_in_progress.record(1_000 * (n + 1));
            }
            let contribution = Contribution {
                id: format!("bench:{day}:{g}"),
                at,
                dims: UsageDims {
                    project_id: pool.spec.project_id.clone(),
                    pool_id: pool.id.clone(),
                    repo: format!("acme/repo-{}", g % 40),
                    sender: format!("dev-{}", g % 97),
                    market: if g % 2 == 0 { "spot" } else { "on-demand" }.into(),
                    conclusion: "success".into(),
                },
                figures,
            };
            ensure!(ports.store.add_usage(&contribution).await?, "added twice");
        }
    }
    let seeded = started.elapsed();

    let query = StatsQuery {
        from: Some(now - chrono::Duration::days(sizes.stats_days as i64)),
        to: Some(now),
        group_by: GroupBy::Pool,
    };
    let before = deployment.calls();
    let mut samples = Samples::with_capacity(sizes.stats_calls);
    let mut jobs = 0;
    for _ in 0..sizes.stats_calls {
        let t = Instant::now();
        let answer = stats::compute(ports, &query).await?;
        samples.push(t.elapsed());
        jobs = answer.total.jobs;
    }
    let calls = deployment.calls() - before;
    let expected = share * (groups * sizes.stats_days) as u64;
    ensure!(
        jobs == expected,
        "the window holds {jobs} jobs, not {expected}"
    );
    let buckets = ports
        .store
        .usage_buckets(
            Period::Day,
            now - chrono::Duration::days(sizes.stats_days as i64 + 1),
            now,
        )
        .await?
        .len();
    let per_call = |n: u64| n as f64 / sizes.stats_calls.max(1) as f64;
    Ok(vec![
        Figure::new("stats.90d.p50", micros(samples.percentile(50.0)) / 1000.0, "ms")
            .note(format!("GET /api/stats by pool over {} days of roll-ups, {jobs} jobs", sizes.stats_days)),
        Figure::new("stats.90d.p99", micros(samples.percentile(99.0)) / 1000.0, "ms"),
        Figure::new("stats.90d.store_reads", per_call(calls.store_reads), "reads")
            .note("store trips per call: the roll-ups of the window, the jobs in flight, the pools' names"),
        Figure::new("stats.day_buckets", buckets as f64, "buckets")
            .note("day buckets in the window; a call reads each once, never a job"),
        Figure::new("stats.seed", seeded.as_secs_f64(), "s")
            .note("writing the roll-ups through add_usage, one contribution per day and group"),
    ])
}
