//! `GET /api/stats`: the figures of a window, computed from jobs and
//! runners written with known times, so every number can be checked.

use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use pacer_shared::clock::ManualClock;
use pacer_shared::domain::{
    IdKind, IdSource, Job, JobState, Runner, RunnerState, Time, Transition, TransitionCause, Ulids,
};
use pacer_shared::http::{AppState, app};
use pacer_shared::service::Ports;
use pacer_shared::store::conformance;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::local_ports;

/// A job of `repo` in `pool` that arrived at `at` and went through
/// `steps` (state, seconds after arrival).
fn job(github_job_id: i64, repo: &str, pool: &str, at: Time, steps: &[(JobState, i64)]) -> Job {
    let mut job = conformance::job(github_job_id, repo, at);
    job.project_id = Some("prj_stats".into());
    job.pool_id = Some(pool.into());
    for (state, after) in steps {
        job.transitions.push(Transition {
            state: *state,
            at: at + Span::seconds(*after),
            cause: TransitionCause::Webhook,
            note: None,
        });
        job.state = *state;
    }
    job
}

/// A runner of `pool` that ran `job`, created at `at` and ended `lived`
/// seconds later (or still live when `None`).
fn runner(pool: &str, job: &Job, at: Time, lived: Option<i64>) -> Runner {
    Runner {
        id: Ulids::default().new_id(IdKind::Runner, at),
        pool_id: pool.into(),
        project_id: "prj_stats".into(),
        job_id: Some(job.id.clone()),
        name: format!("pacer-{}", job.github_job_id),
        state: if lived.is_some() {
            RunnerState::Done
        } else {
            RunnerState::Busy
        },
        instance_id: None,
        instance_type: Some("m7g.large".into()),
        availability_zone: None,
        market: Some("on-demand".into()),
        price: None,
        volume_micro_usd_per_hour: 0,
        github_runner_id: None,
        callback_token_id: None,
        error_tail: None,
        job_ended_at: None,
        registered_at: None,
        ran_job_id: None,
        job_started_at: None,
        cost: None,
        created_at: at,
        updated_at: at + Span::seconds(lived.unwrap_or(0)),
        version: 0,
    }
}

struct Fixture {
    ports: Ports,
    now: Time,
    _dir: tempfile::TempDir,
}

/// Two hours ago and on: four jobs in pool A (queue times 10, 30, 120 s and
/// one that never ran), one in pool B still running, one unmatched, and one
/// from two days ago that no 24-hour window holds.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, _) = local_ports(dir.path());
    let now = Utc::now();
    ports.clock = Arc::new(ManualClock::new(now));
    let t0 = now - Span::hours(2);
    use JobState::*;
    let jobs = [
        job(
            1,
            "acme/app",
            "pool_a",
            t0,
            &[(Claimed, 1), (Starting, 2), (Running, 10), (Completed, 70)],
        ),
        job(
            2,
            "acme/app",
            "pool_a",
            t0 + Span::seconds(5),
            &[(Claimed, 1), (Running, 30), (Completed, 90)],
        ),
        job(
            3,
            "acme/lib",
            "pool_a",
            t0 + Span::seconds(6),
            &[(Claimed, 1), (Running, 120), (Completed, 200)],
        ),
        job(
            4,
            "acme/lib",
            "pool_a",
            t0 + Span::seconds(7),
            &[(Claimed, 1), (Failed, 60)],
        ),
        job(
            5,
            "acme/app",
            "pool_b",
            t0 + Span::seconds(8),
            &[(Claimed, 1), (Running, 20)],
        ),
        job(
            7,
            "acme/app",
            "pool_a",
            now - Span::days(2),
            &[(Running, 5), (Completed, 60)],
        ),
    ];
    let mut unmatched = conformance::job(6, "acme/app", t0 + Span::seconds(9));
    unmatched.state = Unmatched;
    for j in jobs.iter().chain([&unmatched]) {
        ports.store.insert_job(j).await.unwrap();
    }
    // Runner minutes: 60 s + 120 s in pool A; pool B's runner is live, so
    // it counts until now (2 h minus 8 s).
    ports
        .store
        .insert_runner(&runner("pool_a", &jobs[0], t0, Some(60)))
        .await
        .unwrap();
    ports
        .store
        .insert_runner(&runner(
            "pool_a",
            &jobs[1],
            t0 + Span::seconds(5),
            Some(120),
        ))
        .await
        .unwrap();
    ports
        .store
        .insert_runner(&runner("pool_b", &jobs[4], t0 + Span::seconds(8), None))
        .await
        .unwrap();
    Fixture {
        ports,
        now,
        _dir: dir,
    }
}

async fn get(ports: &Ports, uri: &str) -> (u16, Value) {
    let state = AppState {
        ports: ports.clone(),
        trusted_proxies: Arc::new(vec![]),
        auth: None,
        sso: None,
        console: None,
        workload: None,
    };
    let res = app(state)
        .oneshot(
            axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn bucket<'a>(stats: &'a Value, key: &str) -> &'a Value {
    stats["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == key)
        .unwrap_or_else(|| panic!("no bucket {key}: {stats}"))
}

#[tokio::test]
async fn the_last_day_by_pool_counts_jobs_queue_times_and_runner_minutes() {
    let f = fixture().await;
    let (status, stats) = get(&f.ports, "/api/stats?group_by=pool").await;
    assert_eq!(status, 200, "{stats}");

    let total = &stats["total"];
    assert_eq!(
        total["jobs"], 6,
        "the two-day-old job is outside the window: {total}"
    );
    assert_eq!(
        (
            total["completed"].clone(),
            total["failed"].clone(),
            total["unmatched"].clone()
        ),
        (json!(3), json!(1), json!(1))
    );
    // Queue times 10, 30, 120 and 20 s: nearest-rank p50 is 20, p95 is 120.
    assert_eq!(total["queue_p50_seconds"], 20.0);
    assert_eq!(total["queue_p95_seconds"], 120.0);

    let a = bucket(&stats, "pool_a");
    assert_eq!(a["jobs"], 4);
    assert_eq!(a["queue_p50_seconds"], 30.0);
    assert_eq!(a["runner_minutes"], 3.0, "60 s + 120 s");
    let b = bucket(&stats, "pool_b");
    let live_minutes =
        (f.now - (f.now - Span::hours(2) + Span::seconds(8))).num_seconds() as f64 / 60.0;
    assert_eq!(
        b["runner_minutes"],
        (live_minutes * 100.0).round() / 100.0,
        "a live runner counts until now"
    );
    assert_eq!(
        stats["in_flight"],
        json!({"queued": 0, "claimed": 0, "starting": 0, "running": 1})
    );
    assert_eq!(stats["group_by"], "pool");
}

#[tokio::test]
async fn grouping_by_repo_and_day_keys_buckets_by_name_and_date() {
    let f = fixture().await;
    let (_, by_repo) = get(&f.ports, "/api/stats?group_by=repo").await;
    assert_eq!(bucket(&by_repo, "acme/app")["jobs"], 4);
    assert_eq!(bucket(&by_repo, "acme/lib")["jobs"], 2);

    let from = (f.now - Span::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, by_day) = get(&f.ports, &format!("/api/stats?group_by=day&from={from}")).await;
    assert_eq!(status, 200, "{by_day}");
    assert_eq!(
        by_day["total"]["jobs"], 7,
        "a three-day window holds the old job too"
    );
    let old_day = (f.now - Span::days(2)).format("%Y-%m-%d").to_string();
    assert_eq!(bucket(&by_day, &old_day)["completed"], 1);
}

#[tokio::test]
async fn a_bad_window_or_grouping_is_refused_with_what_to_fix() {
    let f = fixture().await;
    let (status, body) = get(&f.ports, "/api/stats?group_by=week").await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("project, pool, repo, day"),
        "{body}"
    );

    let (status, body) = get(
        &f.ports,
        "/api/stats?from=2026-11-22T10:00:00Z&to=2026-11-22T09:00:00Z",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("before"),
        "{body}"
    );

    let (status, _) = get(&f.ports, "/api/stats?from=yesterday").await;
    assert_eq!(status, 400);
    let (status, _) = get(
        &f.ports,
        "/api/stats?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(status, 400, "windows over 400 days are refused");
}
