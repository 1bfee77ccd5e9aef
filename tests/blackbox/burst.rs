//! Issue 4's burst: 1,000 jobs across three pools on the simulated fleet,
//! with 5% of launches refused, converge — every job ends `completed` or
//! `failed` with a reason, no runner is launched twice, no pool ever runs
//! more than its `max_runners`, and counters and instances are back to 0.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use pacer_shared::config::Secret;
use pacer_shared::domain::{Job, JobState, Runner, RunnerState, peak_overlap};
use pacer_shared::fleet::Fleet as _;
use pacer_shared::fleet::simulated::{SimulatedFleet, SimulatedSettings};
use pacer_shared::service::reaper::reconcile;
use pacer_shared::store::{
    AuditFilter, JobFilter, PageRequest, RunnerFilter, every_job, every_runner,
};
use serde_json::json;

use crate::support::{LocalPacer, WEBHOOK_SECRET, local_ports, queued_payload};

const JOBS: i64 = 1000;
const MAX_RUNNERS: u32 = 50;
/// One pool per architecture; a job asks for one of them.
const ARCHES: [&str; 3] = ["x64", "arm64", "riscv"];
const FAILURE_RATE: f64 = 0.05;
/// Webhook deliveries in flight at once.
const SENDERS: usize = 32;

/// pacer on the embedded adapters with a simulated fleet that boots in a
/// few milliseconds, runs each job for a few more, and refuses 5% of
/// launches (every 20th) as out of capacity.
async fn pacer_with_a_faulty_fleet() -> LocalPacer {
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, _) = local_ports(dir.path());
    let fleet = Arc::new(SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_millis(5),
        job_time: Duration::from_millis(20),
        deployment: "pacer".into(),
        github: Some(std::sync::Arc::new(
            pacer_shared::host::simulation::OfflineGitHubPart::new(Secret::new(WEBHOOK_SECRET)),
        )),
        pickup_delay: Duration::from_millis(5),
        register_tries: 5,
        retry_delay: Duration::from_millis(50),
        launch_failure_rate: FAILURE_RATE,
        bootstrap_failure_rate: 0.0,
    }));
    ports.fleet = fleet.clone();
    LocalPacer::serve(ports, fleet, dir).await
}

/// Project `acme` bound to `acme/app` with one pool per architecture, each
/// of `MAX_RUNNERS`; returns pool ids by architecture.
async fn seed_three_pools(pacer: &LocalPacer) -> BTreeMap<&'static str, String> {
    let (s, project) = pacer.post("/api/projects", json!({"name": "acme"})).await;
    assert_eq!(s, 201, "{project}");
    let project = project["id"].as_str().unwrap().to_string();
    let mut pools = BTreeMap::new();
    for arch in ARCHES {
        let mut body = crate::api_crud::pool_body(&project, &format!("linux-{arch}"));
        body["labels"] = json!(["linux", arch]);
        body["max_runners"] = MAX_RUNNERS.into();
        let (s, pool) = pacer.post("/api/pools", body).await;
        assert_eq!(s, 201, "{pool}");
        pools.insert(arch, pool["id"].as_str().unwrap().to_string());
    }
    let (s, binding) = pacer
        .post(
            "/api/repos",
            json!({"repo": "acme/app", "project_id": project}),
        )
        .await;
    assert_eq!(s, 201, "{binding}");
    pools
}

async fn all_jobs(pacer: &LocalPacer) -> Vec<Job> {
    every_job(pacer.ports.store.as_ref(), &JobFilter::default())
        .await
        .unwrap()
}

async fn all_runners(pacer: &LocalPacer) -> Vec<Runner> {
    every_runner(pacer.ports.store.as_ref(), &RunnerFilter::default())
        .await
        .unwrap()
}

fn settled(job: &Job) -> bool {
    matches!(job.state, JobState::Completed | JobState::Failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_job_burst_with_five_percent_failed_launches_converges() {
    // Given pacer with three pools of 50 on a fleet refusing 5% of launches
    let pacer = pacer_with_a_faulty_fleet().await;
    let pools = seed_three_pools(&pacer).await;
    let started = std::time::Instant::now();

    // When 1,000 queued jobs arrive at once, spread over the three pools
    let answers: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..JOBS)
        .map(|n| {
            let arch = ARCHES[n as usize % ARCHES.len()];
            let payload = queued_payload(100_000 + n, "acme/app", &["self-hosted", "linux", arch]);
            let pacer = &pacer;
            async move { pacer.webhook("workflow_job", &payload).await }
        })
        .buffer_unordered(SENDERS)
        .collect()
        .await;
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
    }
    let sent = started.elapsed();

    // Then (with the reaper passing now and then, as its timer would) every
    // job ends completed or failed. Nothing leaks capacity here, so the
    // reaper must repair nothing (checked below).
    let mut jobs = Vec::new();
    let mut reaped: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..1200 {
        jobs = all_jobs(&pacer).await;
        if jobs.len() == JOBS as usize && jobs.iter().all(settled) {
            break;
        }
        if round % 4 == 3 {
            // A pass that lost a race is retried at the next, as the timer's is.
            match reconcile(&pacer.ports).await {
                Ok(report) => {
                    for a in report.actions {
                        if a.action != "reaper.ghost" {
                            eprintln!("burst: {} {}: {}", a.action, a.target, a.reason);
                        }
                        *reaped.entry(a.action).or_default() += 1;
                    }
                }
                Err(e) => eprintln!("burst: a reaper pass failed: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_after = started.elapsed();
    assert_eq!(
        reaped.get("reaper.capacity_repaired"),
        None,
        "nothing leaked, so nothing needed repairing: {reaped:?}"
    );
    let by_state = jobs
        .iter()
        .fold(BTreeMap::<String, usize>::new(), |mut m, j| {
            *m.entry(j.state.to_string()).or_default() += 1;
            m
        });
    assert_eq!(
        jobs.len(),
        JOBS as usize,
        "one job per delivery: {by_state:?}"
    );
    assert!(
        jobs.iter().all(settled),
        "every job completed or failed: {by_state:?}"
    );
    for job in jobs.iter().filter(|j| j.state == JobState::Failed) {
        assert!(
            job.failure_reason
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty()),
            "a failed job says why: {job:?}"
        );
    }
    for job in jobs.iter().filter(|j| j.state == JobState::Completed) {
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{job:?}");
    }

    // And the pools' counters and the fleet's instances drain to 0
    let mut drained = false;
    for _ in 0..400 {
        let mut counters = Vec::new();
        for id in pools.values() {
            counters.push(
                pacer
                    .ports
                    .store
                    .get_pool(id)
                    .await
                    .unwrap()
                    .unwrap()
                    .active_runners,
            );
        }
        if counters.iter().all(|c| *c == 0) && pacer.fleet.counters().live == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fleet = pacer.fleet.counters();
    assert!(drained, "capacity and instances back to 0: {fleet:?}");
    assert!(
        pacer.fleet.list_instances().await.unwrap().is_empty(),
        "no live simulated instance"
    );

    // And every runner record was launched once: it either got an instance
    // that ran to done, or its launch was refused and it got none
    let runners = all_runners(&pacer).await;
    let mut per_job: HashMap<&str, Vec<&Runner>> = HashMap::new();
    let mut done_without_instance_id = Vec::new();
    for r in &runners {
        match r.state {
            RunnerState::Done if r.instance_id.is_none() => {
                done_without_instance_id.push(r.id.as_str())
            }
            RunnerState::Done => {}
            RunnerState::Failed => {
                let refused = r
                    .error_tail
                    .as_deref()
                    .is_some_and(|t| t.starts_with("launch failed"));
                assert!(
                    refused && r.instance_id.is_none(),
                    "only refused launches failed: {r:?}"
                );
            }
            other => panic!("runner {} ended {other}: {r:?}", r.id),
        }
        per_job
            .entry(r.job_id.as_deref().expect("launched for a job"))
            .or_default()
            .push(r);
    }
    let ran = runners
        .iter()
        .filter(|r| r.state == RunnerState::Done)
        .count() as u64;
    assert_eq!(
        fleet.launched, ran,
        "one instance per runner that ran: {fleet:?}"
    );
    assert_eq!(
        fleet.launched + fleet.launch_failures,
        runners.len() as u64,
        "one launch per runner record: {fleet:?}"
    );
    assert!(
        fleet.launch_failures >= (JOBS as f64 * FAILURE_RATE) as u64,
        "the faults were injected: {fleet:?}"
    );
    // Runner writes are conditional on the version read: no writer erases
    // the launch facts another recorded.
    assert!(
        done_without_instance_id.is_empty(),
        "{} runners done without their instance id, e.g. {:?}",
        done_without_instance_id.len(),
        done_without_instance_id.first()
    );

    // And every refused launch is in the audit trail
    let filter = AuditFilter {
        action: Some("job.launch_failed".into()),
        ..Default::default()
    };
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    let mut audited = 0u64;
    loop {
        let listed = pacer.ports.store.list_audit(&filter, &page).await.unwrap();
        audited += listed.items.len() as u64;
        match listed.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        audited, fleet.launch_failures,
        "one job.launch_failed per refused launch"
    );

    // And each job's attempts are its launches: one runner per attempt,
    // never two for one, and a completed job ran on exactly one instance
    let mut attempts_total = 0u64;
    for job in &jobs {
        let mine = per_job.get(job.id.as_str()).map_or(&[][..], Vec::as_slice);
        let ran = mine.iter().filter(|r| r.state == RunnerState::Done).count();
        attempts_total += u64::from(job.attempts);
        match job.state {
            JobState::Completed => {
                assert_eq!(ran, 1, "a completed job ran on one instance: {job:?}");
                assert_eq!(
                    job.attempts as usize,
                    mine.len(),
                    "one runner per attempt: {job:?}"
                );
            }
            _ => {
                assert_eq!(ran, 0, "a job that failed never got an instance: {job:?}");
                // Every launch was refused, the last one counted like the rest.
                assert_eq!(job.attempts as usize, mine.len(), "{job:?} {mine:?}");
            }
        }
    }
    assert_eq!(
        fleet.launched + fleet.launch_failures,
        attempts_total,
        "launches = attempts: {fleet:?}"
    );

    // And no pool ever had more than max_runners live runners
    for (arch, pool_id) in &pools {
        let peak = peak_overlap(runners.iter().filter(|r| &r.pool_id == pool_id));
        assert!(
            peak <= MAX_RUNNERS as usize,
            "pool {arch}: {peak} runners live at once, max_runners {MAX_RUNNERS}"
        );
        assert!(peak > 1, "pool {arch} ran runners side by side ({peak})");
    }

    // And a reaper pass finds nothing to repair: no orphan, no stuck job, no
    // drifted counter — only the registrations of finished runners, which
    // the offline GitHub keeps (GitHub drops an ephemeral runner after its
    // job); a second pass finds nothing at all
    let report = reconcile(&pacer.ports).await.expect("a reaper pass");
    let ghosts = report.count("reaper.ghost");
    assert_eq!(report.actions.len(), ghosts, "{report:?}");
    assert!(report.deferred.is_empty(), "{report:?}");
    let report = reconcile(&pacer.ports).await.expect("a second reaper pass");
    assert!(
        report.actions.is_empty() && report.deferred.is_empty(),
        "{report:?}"
    );

    eprintln!(
        "burst: {JOBS} jobs sent in {sent:?}, settled in {settled_after:?}: {by_state:?}; fleet {fleet:?}; \
         {} runners; reaper during the burst {reaped:?}, {ghosts} leftover registrations removed at the end",
        runners.len()
    );
}
