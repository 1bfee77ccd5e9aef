//! What runners cost and how long jobs waited, against the real parts: EC2
//! on moto (spot prices from its price history; its Pricing API answers 500,
//! so on-demand has no price), the fake GitHub, and a clock the test moves,
//! so every figure is known to the micro-dollar. The happy path, GitHub's
//! `completed` before the runner's end, is in `lifecycle_aws`.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::{Clock as _, ManualClock};
use pacer_shared::domain::usage::IDLE;
use pacer_shared::fleet::simulated::RunnerIdentity;
use pacer_shared::fleet::{JobRef, user_data};
use pacer_shared::host::simulation::workflow_job_payload;
use serde_json::{Value, json};

use crate::lifecycle_aws::{
    Backend, World, seed, seed_with_market, usage_around, user_data_of, world_with_clock,
};
use crate::reaper::{launched, register};

async fn world() -> (World, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    (
        world_with_clock(Backend::Sqlite, clock.clone()).await,
        clock,
    )
}

/// GitHub's `action` delivery for the job `github_job_id`, run by the
/// runner `job` shows (`None`: by no runner).
fn progress(github_job_id: i64, job: &Value, github_runner: Option<i64>, action: &str) -> Value {
    let job_ref = JobRef {
        id: job["id"].as_str().unwrap().into(),
        github_job_id,
        run_id: github_job_id / 2 + 1,
        repo: "acme/app".into(),
        labels: vec!["self-hosted".into()],
        installation_id: Some(77),
    };
    let me = RunnerIdentity {
        id: github_runner.unwrap_or(0),
        name: job["runner"]["name"].as_str().unwrap().into(),
    };
    let mut payload = workflow_job_payload(&job_ref, &me, action, chrono::Utc::now());
    if github_runner.is_none() {
        let wj = &mut payload["workflow_job"];
        wj["runner_id"] = Value::Null;
        wj["runner_name"] = Value::Null;
        wj["conclusion"] = json!("cancelled");
    }
    payload
}

/// Sends a `workflow_job` delivery, which pacer takes.
async fn deliver(w: &World, payload: Value) {
    let (status, body) = w.pacer.webhook("workflow_job", &payload).await;
    assert_eq!(status, 200, "{body}");
}

async fn complete(w: &World, job: &Value) {
    let instance = job["runner"]["instance_id"].as_str().unwrap();
    let token = user_data::parse(&user_data_of(&w.aws, instance).await)
        .unwrap()
        .token;
    let res = w
        .pacer
        .http
        .post(format!("{}/api/runner/complete", w.pacer.base))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_ends_before_githubs_completed_settles_its_job_when_it_arrives() {
    let (w, clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await; // on-demand: moto has no Pricing API
    let (job_id, job) = launched(&w, 9401).await;
    assert_eq!(job["runner"]["price"], Value::Null, "no on-demand price");
    clock.advance(Duration::from_secs(30));
    let github_runner = register(&w, &job).await;
    clock.advance(Duration::from_secs(15));
    deliver(&w, progress(9401, &job, Some(github_runner), "in_progress")).await;
    clock.advance(Duration::from_secs(300));

    // The runner ends first: GitHub has not said the job is over.
    complete(&w, &job).await;
    let path = format!("/api/jobs/{job_id}");
    let (_, job) = w.pacer.get(&path).await;
    assert_eq!(job["runner"]["state"], "done");
    let cost = json!({
        "source": "unknown", "micro_usd_per_hour": null,
        "job_seconds": 300, "overhead_seconds": 45, "idle_seconds": 0,
        "job_micro_usd": null, "overhead_micro_usd": null, "idle_micro_usd": null,
        "total_micro_usd": null,
    });
    assert_eq!(
        job["runner"]["cost"], cost,
        "minutes without a price, and no cost made up: the job ran until the runner ended"
    );
    assert_eq!(job["usage"], Value::Null, "the job is still running");

    clock.advance(Duration::from_secs(5));
    deliver(&w, progress(9401, &job, Some(github_runner), "completed")).await;
    let (_, job) = w.pacer.get(&path).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["usage"]["cost"], cost, "settled by GitHub's news");
    assert_eq!(
        job["usage"]["timings"],
        json!({"queued_to_launched_ms": 0, "launched_to_registered_ms": 30_000,
               "queued_to_in_progress_ms": 45_000})
    );

    // A redelivered completion changes nothing.
    deliver(&w, progress(9401, &job, Some(github_runner), "completed")).await;
    assert_eq!(w.pacer.get(&path).await.1["usage"], job["usage"]);
    let days = usage_around(&w.pacer, clock.now()).await;
    assert_eq!(days.len(), 1);
    let f = &days[0].figures;
    assert_eq!(
        (
            f.jobs,
            f.job_seconds,
            f.overhead_seconds,
            f.unpriced_seconds,
            f.total_micro_usd()
        ),
        (1, 300, 45, 345, 0),
        "counted once, its minutes without a price apart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_job_was_cancelled_before_it_ran_is_idle_and_the_job_costs_nothing() {
    let (w, clock) = world().await;
    seed_with_market(&w.aws, &w.pacer, 2, "spot").await;
    let (job_id, job) = launched(&w, 9402).await;
    let runner_id = job["runner"]["id"].as_str().unwrap().to_string();
    clock.advance(Duration::from_secs(20));
    register(&w, &job).await;

    // Cancelled on GitHub before any runner took it.
    clock.advance(Duration::from_secs(100));
    deliver(&w, progress(9402, &job, None, "completed")).await;
    let path = format!("/api/jobs/{job_id}");
    let (_, job) = w.pacer.get(&path).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["conclusion"], "cancelled");
    assert_eq!(
        job["usage"],
        json!({"runner_id": null, "cost": null,
               "timings": {"queued_to_launched_ms": 0, "launched_to_registered_ms": null,
                           "queued_to_in_progress_ms": null}}),
        "no runner ran it: settled at once, with nothing to pay for"
    );

    // The runner it was launched for is terminated an hour after its launch:
    // all of its life was idle, at spot ($0.00001/h) plus its volume.
    clock.advance(Duration::from_secs(3600 - 120));
    let (s, body) = w
        .pacer
        .post(&format!("/api/runners/{runner_id}/terminate"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    let (_, runner) = w.pacer.get(&format!("/api/runners/{runner_id}")).await;
    assert_eq!(runner["state"], "reaped", "{runner}");
    assert_eq!(
        runner["cost"],
        json!({"source": "spot-history", "micro_usd_per_hour": 3_298,
               "job_seconds": 0, "overhead_seconds": 0, "idle_seconds": 3600,
               "job_micro_usd": 0, "overhead_micro_usd": 0, "idle_micro_usd": 3_298,
               "total_micro_usd": 3_298})
    );
    assert_eq!(
        w.pacer.get(&path).await.1["usage"],
        job["usage"],
        "an idle runner's cost is not the job's"
    );
    // The roll-ups: the cancelled job, and the idle hour of its pool.
    let days = usage_around(&w.pacer, clock.now()).await;
    let by_conclusion = |c: &str| {
        days.iter()
            .find(|b| b.dims.conclusion == c)
            .map(|b| b.figures.clone())
            .unwrap_or_else(|| panic!("no {c} bucket in {days:?}"))
    };
    let cancelled = by_conclusion("cancelled");
    assert_eq!((cancelled.jobs, cancelled.total_micro_usd()), (1, 0));
    let idle = by_conclusion(IDLE);
    assert_eq!(
        (idle.jobs, idle.idle_seconds, idle.idle_micro_usd),
        (0, 3600, 3_298)
    );
    assert_eq!(days.len(), 2);
}
