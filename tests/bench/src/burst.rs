//! Issue 8, parts 4 and 5: a burst of queued jobs across three pools on the
//! simulated fleet with instant boot, served as `pacer serve` serves it
//! (HTTP on loopback, the local orchestrator, the simulated runners calling
//! back over HTTP and playing GitHub's `in_progress`/`completed` webhooks).
//! The reaper does not run: nothing here needs repairing, and its passes
//! would blur the calls each job costs.
//!
//! While the burst runs the bench reads only the fleet's in-memory
//! counters, never the store, so the adapters' call counters hold the
//! burst's calls alone. Afterwards the store tells when each job was
//! launched and completed (its recorded transitions), which runners ran,
//! and whether any job was lost or launched twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt as _;
use pacer_shared::calls::Calls;
use pacer_shared::domain::{JobState, Time, peak_overlap};
use pacer_shared::github::webhook::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use pacer_shared::store::{JobFilter, RunnerFilter, every_job, every_runner};

use crate::deployment::{Deployment, REPO, WEBHOOK_SECRET, instant_fleet};
use crate::measure::{half_range, median};
use crate::payload::{Deliveries, queued_example};
use crate::{Budget, Figure, Sizes};

/// Webhook deliveries in flight at once, as GitHub's would be in a burst.
const SENDERS: usize = 16;

/// What one burst showed.
struct Round {
    accepted: f64,
    all_launched: f64,
    all_completed: f64,
    /// The most runners live at once, per pool name.
    peaks: Vec<(String, usize)>,
    lost: usize,
    launched_twice: usize,
    completed: usize,
    calls: Calls,
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let deliveries = Deliveries::new(queued_example()?, REPO, WEBHOOK_SECRET);
    let mut rounds = Vec::new();
    for _ in 0..sizes.burst_rounds {
        rounds.push(round(sizes, &deliveries).await?);
    }
    Ok(figures(sizes, &rounds))
}

async fn round(sizes: &Sizes, deliveries: &Deliveries) -> anyhow::Result<Round> {
    let jobs = sizes.burst_jobs;
    let deployment = Deployment::embedded(instant_fleet(), sizes.burst_max_runners).await?;
    let served = deployment.serve().await?;
    let bodies: Vec<_> = (0..jobs)
        .map(|n| deliveries.queued(5_000_000 + n as i64, &Deployment::labels(n)))
        .collect();
    let http = reqwest::Client::new();

    let before = deployment.calls();
    let started = Instant::now();
    let started_at = chrono::Utc::now();

    // GitHub delivers the burst; the bench waits for the runners to finish.
    let url = format!("{}/api/webhook", served.base);
    let sender = tokio::spawn(async move {
        let answers: Vec<reqwest::Result<reqwest::StatusCode>> = futures::stream::iter(bodies)
            .map(|d| {
                let request = http
                    .post(&url)
                    .header(EVENT_HEADER, "workflow_job")
                    .header(DELIVERY_HEADER, "bench")
                    .header(SIGNATURE_HEADER, d.signature)
                    .header("content-type", "application/json")
                    .body(d.body);
                async move { request.send().await.map(|r| r.status()) }
            })
            .buffer_unordered(SENDERS)
            .collect()
            .await;
        (answers, started.elapsed())
    });
    let deadline = started + sizes.burst_timeout;
    while deployment.fleet.counters().completed < jobs as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let calls = deployment.calls() - before;
    let (answers, accepted) = sender.await.context("the webhook sender")?;
    for answer in answers {
        let status = answer.context("delivering a webhook")?;
        ensure!(status == 202, "a queued webhook was answered {status}");
    }
    // Let the last runners' callbacks settle before the server stops.
    served.stop().await?;

    let store = deployment.ports.store.as_ref();
    let recorded = every_job(store, &JobFilter::default()).await?;
    let runners = every_runner(store, &RunnerFilter::default()).await?;
    let since_start = |at: Time| (at - started_at).to_std().unwrap_or_default().as_secs_f64();
    let first = |job: &pacer_shared::domain::Job, state: JobState| {
        job.transitions
            .iter()
            .find(|t| t.state == state)
            .map(|t| since_start(t.at))
    };
    let launched_at: Vec<f64> = recorded
        .iter()
        .filter_map(|j| first(j, JobState::Starting))
        .collect();
    let completed_at: Vec<f64> = recorded
        .iter()
        .filter_map(|j| first(j, JobState::Completed))
        .collect();
    let completed = recorded
        .iter()
        .filter(|j| j.state == JobState::Completed)
        .count();

    let mut runners_per_job: HashMap<&str, usize> = HashMap::new();
    for r in &runners {
        if let Some(job) = r.job_id.as_deref() {
            *runners_per_job.entry(job).or_default() += 1;
        }
    }
    // A job with two runner records, or an instance beyond one per record.
    let extra_instances =
        (deployment.fleet.counters().launched as usize).saturating_sub(runners.len());
    let launched_twice = runners_per_job.values().filter(|n| **n > 1).count() + extra_instances;

    let peaks = deployment
        .pools
        .iter()
        .map(|p| {
            (
                p.spec.name.clone(),
                peak_overlap(runners.iter().filter(|r| r.pool_id == p.id)),
            )
        })
        .collect();
    let latest = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(Round {
        accepted: accepted.as_secs_f64(),
        all_launched: latest(&launched_at),
        all_completed: latest(&completed_at),
        peaks,
        lost: jobs - completed.min(jobs),
        launched_twice,
        completed,
        calls,
    })
}

fn figures(sizes: &Sizes, rounds: &[Round]) -> Vec<Figure> {
    let jobs = sizes.burst_jobs;
    let max = sizes.burst_max_runners;
    let n = rounds.len();
    let each = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let timed = |name: &str, values: Vec<f64>, note: String| {
        Figure::new(name, median(&values), "s")
            .spread(half_range(&values))
            .note(note)
    };
    let mut out = vec![
        timed(
            "burst.accepted",
            each(&|r| r.accepted),
            format!(
                "{jobs} queued webhooks over HTTP, {SENDERS} at a time, all answered 202 (median of {n})"
            ),
        ),
        timed(
            "burst.all_launched",
            each(&|r| r.all_launched),
            format!("until every job had a launched runner (3 pools of {max}; median of {n})"),
        )
        .budget(Budget::at_most(10.0, "whole burst dispatched in seconds")),
        timed(
            "burst.all_completed",
            each(&|r| r.all_completed),
            format!("until every job was completed (median of {n})"),
        ),
    ];
    let pools: Vec<&String> = rounds
        .first()
        .map(|r| r.peaks.iter().map(|(p, _)| p).collect())
        .unwrap_or_default();
    for pool in pools {
        let worst = rounds
            .iter()
            .filter_map(|r| r.peaks.iter().find(|(p, _)| p == pool).map(|(_, v)| *v))
            .max()
            .unwrap_or(0);
        out.push(
            Figure::new(format!("burst.peak_live.{pool}"), worst as f64, "runners")
                .note(format!(
                    "most runners live at once in the pool (worst of {n})"
                ))
                .budget(Budget::at_most(
                    f64::from(max),
                    format!("never above max_runners = {max}"),
                )),
        );
    }
    let worst = |f: &dyn Fn(&Round) -> usize| rounds.iter().map(f).max().unwrap_or(0) as f64;
    out.push(
        Figure::new("burst.lost", worst(&|r| r.lost), "jobs")
            .note(format!(
                "jobs not completed when the burst ended (worst of {n})"
            ))
            .budget(Budget::at_most(0.0, "0: every job launched")),
    );
    out.push(
        Figure::new("burst.launched_twice", worst(&|r| r.launched_twice), "jobs")
            .note(format!(
                "jobs with more than one runner or instance (worst of {n})"
            ))
            .budget(Budget::at_most(0.0, "0: launched exactly once")),
    );

    // Part 5: the calls each completed job cost, from the adapters' counters.
    let per_job = |pick: Pick| -> Vec<f64> {
        rounds
            .iter()
            .map(|r| pick(&r.calls) as f64 / r.completed.max(1) as f64)
            .collect()
    };
    type Pick = fn(&Calls) -> u64;
    let kinds: [(&str, Pick, &str); 9] = [
        (
            "store_reads",
            |c| c.store_reads,
            "SQLite reads (one per trip to the connection)",
        ),
        (
            "store_writes",
            |c| c.store_writes,
            "SQLite writes, conditional ones included",
        ),
        ("queue_sends", |c| c.queue_sends, "messages enqueued"),
        (
            "queue_receives",
            |c| c.queue_receives,
            "receive calls (one may bring up to 10 messages)",
        ),
        (
            "queue_deletes",
            |c| c.queue_deletes,
            "messages acknowledged",
        ),
        (
            "queue_requeues",
            |c| c.queue_requeues,
            "messages handed back for later",
        ),
        (
            "ec2",
            |c| c.fleet,
            "fleet calls (EC2 requests in production)",
        ),
        (
            "github",
            |c| c.github,
            "GitHub API calls (offline GitHub; installation tokens cached)",
        ),
        ("total", |c| c.total(), "every call above"),
    ];
    for (name, pick, what) in kinds {
        let values = per_job(pick);
        out.push(
            Figure::new(format!("calls.{name}"), median(&values), "per job")
                .spread(half_range(&values))
                .note(format!("{what}, per completed job of the burst")),
        );
    }
    let store = per_job(|c| c.store_reads + c.store_writes);
    out.push(
        Figure::new("calls.store", median(&store), "per job")
            .spread(half_range(&store))
            .budget(Budget::at_most(
                19.5,
                "half the 39 store requests a job cost before (26 reads, 13 writes)",
            ))
            .note("store reads and writes together, per completed job of the burst (on DynamoDB, finding a job by GitHub id and a runner by name are two requests each: 4 more)"),
    );
    out
}
