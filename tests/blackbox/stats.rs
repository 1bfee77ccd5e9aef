//! `GET /api/stats`, `/api/stats/series`, `/api/stats/top-users` and
//! `/api/stats/export`: the
//! figures of a window, read from roll-ups written with known figures and
//! times, so every number can be checked. How settled jobs and idle runners
//! reach the roll-ups is in `cost` and `lifecycle_aws`.

use std::sync::Arc;

use chrono::Duration as Span;
use pacer_shared::clock::ManualClock;
use pacer_shared::domain::cost::{JobTimings, JobUsage, Price, PriceSource, RunnerCost};
use pacer_shared::domain::usage::{Contribution, Histogram, IDLE, UsageDims, UsageFigures};
use pacer_shared::domain::{JobState, Time};
use pacer_shared::http::{AppState, app};
use pacer_shared::service::Ports;
use pacer_shared::store::conformance;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::local_ports;

fn dims(pool: &str, repo: &str, sender: &str, market: &str, conclusion: &str) -> UsageDims {
    UsageDims {
        project_id: "prj_stats".into(),
        pool_id: pool.into(),
        repo: repo.into(),
        sender: sender.into(),
        market: market.into(),
        conclusion: conclusion.into(),
    }
}

/// A settled job: 600 s of job and 120 s of overhead at $0.0816/h, and a
/// wait of `waited_ms` for its runner.
fn settled(id: &str, at: Time, dims: UsageDims, waited_ms: u64) -> Contribution {
    let mut figures = UsageFigures {
        jobs: 1,
        succeeded: u64::from(dims.conclusion == "success"),
        failed: u64::from(dims.conclusion == "failure"),
        job_seconds: 600,
        overhead_seconds: 120,
        job_micro_usd: 13_600,
        overhead_micro_usd: 2_720,
        ..UsageFigures::default()
    };
    figures.queued_to_in_progress.record(waited_ms);
    figures.queued_to_launched.record(1_000);
    figures.launched_to_registered.record(40_000);
    Contribution {
        id: format!("job:{id}"),
        at,
        dims,
        figures,
    }
}

struct Fixture {
    ports: Ports,
    now: Time,
    _dir: tempfile::TempDir,
}

/// Within the last day: alice's success in pool A (waited 10 s), bob's
/// failure in pool A (30 s), alice's success in pool B (120 s), carol's job
/// in pool B with no price (5 minutes), an idle hour of pool A; and two
/// days ago, one more of alice's. One job is running now.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, _) = local_ports(dir.path());
    let now: Time = "2026-03-10T12:30:00Z".parse().unwrap();
    ports.clock = Arc::new(ManualClock::new(now));
    let hours = |h: i64| now - Span::hours(h);
    let mut unpriced = settled(
        "5",
        hours(4),
        dims("pool_b", "acme/lib", "carol", "on-demand", "success"),
        5_000,
    );
    unpriced.figures.job_seconds = 240;
    unpriced.figures.overhead_seconds = 60;
    unpriced.figures.unpriced_seconds = 300;
    unpriced.figures.job_micro_usd = 0;
    unpriced.figures.overhead_micro_usd = 0;
    let idle = Contribution {
        id: "runner:idle".into(),
        at: hours(1),
        dims: dims("pool_a", "", "", "spot", IDLE),
        figures: UsageFigures {
            idle_seconds: 3_600,
            idle_micro_usd: 3_298,
            ..UsageFigures::default()
        },
    };
    for c in [
        settled(
            "1",
            hours(1),
            dims("pool_a", "acme/app", "alice", "spot", "success"),
            10_000,
        ),
        settled(
            "2",
            hours(2),
            dims("pool_a", "acme/app", "bob", "on-demand", "failure"),
            30_000,
        ),
        settled(
            "3",
            hours(3),
            dims("pool_b", "acme/lib", "alice", "spot", "success"),
            120_000,
        ),
        unpriced,
        idle,
        settled(
            "7",
            now - Span::days(2),
            dims("pool_a", "acme/app", "alice", "spot", "success"),
            10_000,
        ),
    ] {
        assert!(ports.store.add_usage(&c).await.unwrap());
    }
    let mut running = conformance::job(8, "acme/app", hours(1));
    running.state = JobState::Running;
    ports.store.insert_job(&running).await.unwrap();
    Fixture {
        ports,
        now,
        _dir: dir,
    }
}

async fn get_raw(ports: &Ports, uri: &str) -> (u16, axum::http::HeaderMap, String) {
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
    let headers = res.headers().clone();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn get(ports: &Ports, uri: &str) -> (u16, Value) {
    let (status, _, body) = get_raw(ports, uri).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The item of `body[list]` whose `field` is `value`.
fn find<'a>(body: &'a Value, list: &str, field: &str, value: &str) -> &'a Value {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item[field] == value)
        .unwrap_or_else(|| panic!("no {list} item with {field} {value}: {body}"))
}

fn bucket<'a>(stats: &'a Value, key: &str) -> &'a Value {
    find(stats, "buckets", "key", key)
}

/// What the histogram reads for these waits at the `p`th percentile.
fn percentile(waits: &[u64], p: f64) -> Value {
    let mut h = Histogram::default();
    for &w in waits {
        h.record(w);
    }
    json!(h.percentile_ms(p))
}

#[tokio::test]
async fn the_last_day_by_pool_adds_up_cost_minutes_and_waits() {
    let f = fixture().await;
    let (status, stats) = get(&f.ports, "/api/stats?group_by=pool").await;
    assert_eq!(status, 200, "{stats}");

    let total = &stats["total"];
    assert_eq!(
        (
            total["jobs"].clone(),
            total["succeeded"].clone(),
            total["failed"].clone()
        ),
        (json!(4), json!(3), json!(1)),
        "the two-day-old job is outside the window: {total}"
    );
    assert_eq!(
        total["cost"],
        json!({"job_micro_usd": 40_800, "overhead_micro_usd": 8_160, "idle_micro_usd": 3_298,
               "total_micro_usd": 52_258}),
        "three priced jobs and the idle hour; the unpriced job costs nothing it did not"
    );
    // 3 × 12 minutes, 5 unpriced, 60 idle.
    assert_eq!(total["runner_minutes"], 101.0);
    assert_eq!(total["unpriced_minutes"], 5.0);
    let waits = [10_000, 30_000, 120_000, 5_000];
    assert_eq!(
        total["queued_to_in_progress"]["p50_ms"],
        percentile(&waits, 50.0)
    );
    assert_eq!(
        total["queued_to_in_progress"]["p95_ms"],
        percentile(&waits, 95.0)
    );
    assert_eq!(
        total["queued_to_in_progress"]["p99_ms"],
        percentile(&waits, 99.0)
    );
    assert_eq!(
        total["launched_to_registered"]["p50_ms"],
        percentile(&[40_000], 50.0)
    );

    let a = bucket(&stats, "pool_a");
    assert_eq!(a["jobs"], 2);
    assert_eq!(a["cost"]["total_micro_usd"], 2 * 16_320 + 3_298);
    assert_eq!(a["cost"]["idle_micro_usd"], 3_298);
    assert_eq!(
        a["queued_to_in_progress"]["p50_ms"],
        percentile(&[10_000, 30_000], 50.0)
    );
    let b = bucket(&stats, "pool_b");
    assert_eq!(
        (b["jobs"].clone(), b["unpriced_minutes"].clone()),
        (json!(2), json!(5.0))
    );
    assert_eq!(
        stats["in_flight"],
        json!({"queued": 0, "claimed": 0, "starting": 0, "running": 1})
    );
    assert_eq!(stats["group_by"], "pool");
    // The day before now, widened to whole hours.
    assert_eq!(stats["covered_from"], "2026-03-09T12:00:00Z");
    assert_eq!(stats["covered_to"], "2026-03-10T13:00:00Z");
}

#[tokio::test]
async fn grouping_by_sender_market_repo_and_day_keys_buckets_by_their_value() {
    let f = fixture().await;
    let (_, by_sender) = get(&f.ports, "/api/stats?group_by=sender").await;
    assert_eq!(bucket(&by_sender, "alice")["jobs"], 2);
    assert_eq!(bucket(&by_sender, "bob")["failed"], 1);
    assert_eq!(
        bucket(&by_sender, "")["cost"]["idle_micro_usd"],
        3_298,
        "idle runners have no sender"
    );
    let (_, by_market) = get(&f.ports, "/api/stats?group_by=market").await;
    assert_eq!(bucket(&by_market, "spot")["jobs"], 2);
    assert_eq!(bucket(&by_market, "on-demand")["jobs"], 2);
    let (_, by_repo) = get(&f.ports, "/api/stats?group_by=repo").await;
    assert_eq!(bucket(&by_repo, "acme/app")["jobs"], 2);
    assert_eq!(bucket(&by_repo, "acme/lib")["jobs"], 2);

    let from = (f.now - Span::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, by_day) = get(&f.ports, &format!("/api/stats?group_by=day&from={from}")).await;
    assert_eq!(status, 200, "{by_day}");
    assert_eq!(
        by_day["total"]["jobs"], 5,
        "a three-day window holds the old job too"
    );
    assert_eq!(bucket(&by_day, "2026-03-08")["succeeded"], 1);
    assert_eq!(bucket(&by_day, "2026-03-10")["jobs"], 4);
}

fn point<'a>(series: &'a Value, start: &str) -> &'a Value {
    find(series, "points", "start", start)
}

#[tokio::test]
async fn a_series_has_a_point_per_hour_split_by_pool_that_adds_up_to_the_window() {
    let f = fixture().await;
    let (status, series) = get(&f.ports, "/api/stats/series").await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(
        (series["step"].clone(), series["split_by"].clone()),
        (json!("hour"), json!("pool")),
        "a day is shown by the hour, by pool, unless asked otherwise"
    );
    let points = series["points"].as_array().unwrap();
    assert_eq!(
        points.len(),
        25,
        "every hour from 12:00 yesterday to 13:00 today, empty ones too"
    );
    assert_eq!(points[0]["start"], "2026-03-09T12:00:00Z");
    assert_eq!(points[24]["start"], "2026-03-10T12:00:00Z");
    assert_eq!(points[0]["total"]["jobs"], 0);
    assert_eq!(points[0]["by"], json!({}));

    let eleven = point(&series, "2026-03-10T11:00:00Z");
    assert_eq!(eleven["total"]["jobs"], 1);
    assert_eq!(
        eleven["by"],
        json!({"pool_a": 16_320 + 3_298}),
        "alice's job and the idle hour"
    );
    assert_eq!(
        point(&series, "2026-03-10T09:00:00Z")["by"],
        json!({"pool_b": 16_320})
    );
    assert_eq!(
        point(&series, "2026-03-10T08:00:00Z")["by"],
        json!({"pool_b": 0}),
        "an unpriced job is in its pool's series at no cost"
    );
    assert_eq!(
        point(&series, "2026-03-10T10:00:00Z")["total"]["queued_to_in_progress"]["p50_ms"],
        percentile(&[30_000], 50.0)
    );
    assert_eq!(
        series["series"],
        json!([{"key": "pool_a", "name": "pool_a"}, {"key": "pool_b", "name": "pool_b"}]),
        "the costlier pool first; ids without a pool of that name read as themselves"
    );

    // The points add up to what /api/stats says of the same window.
    let (_, stats) = get(&f.ports, "/api/stats").await;
    let sum =
        |field: &dyn Fn(&Value) -> u64| points.iter().map(|p| field(&p["total"])).sum::<u64>();
    assert_eq!(
        sum(&|t| t["jobs"].as_u64().unwrap()),
        stats["total"]["jobs"].as_u64().unwrap()
    );
    assert_eq!(
        sum(&|t| t["cost"]["total_micro_usd"].as_u64().unwrap()),
        stats["total"]["cost"]["total_micro_usd"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn a_longer_series_is_daily_and_splits_by_what_is_asked() {
    let f = fixture().await;
    let from = (f.now - Span::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, daily) = get(
        &f.ports,
        &format!("/api/stats/series?from={from}&split_by=sender"),
    )
    .await;
    assert_eq!(status, 200, "{daily}");
    assert_eq!(daily["step"], "day", "three days are shown by the day");
    let starts: Vec<&str> = daily["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-03-07T00:00:00Z",
            "2026-03-08T00:00:00Z",
            "2026-03-09T00:00:00Z",
            "2026-03-10T00:00:00Z"
        ]
    );
    assert_eq!(
        point(&daily, "2026-03-08T00:00:00Z")["by"],
        json!({"alice": 16_320})
    );
    let today = point(&daily, "2026-03-10T00:00:00Z");
    assert_eq!(today["total"]["jobs"], 4);
    assert_eq!(
        today["by"],
        json!({"alice": 2 * 16_320, "bob": 16_320, "carol": 0, "": 3_298}),
        "the idle runner is nobody's"
    );
    let (status, hourly) = get(
        &f.ports,
        &format!("/api/stats/series?from={from}&step=hour&split_by=market"),
    )
    .await;
    assert_eq!(status, 200, "{hourly}");
    assert_eq!(hourly["points"].as_array().unwrap().len(), 3 * 24 + 1);
    assert_eq!(
        point(&hourly, "2026-03-08T12:00:00Z")["by"],
        json!({"spot": 16_320})
    );
}

#[tokio::test]
async fn top_users_are_the_senders_by_cost_with_their_minutes_and_jobs() {
    let f = fixture().await;
    let (status, top) = get(&f.ports, "/api/stats/top-users").await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(
        top["users"],
        json!([
            {"sender": "alice", "jobs": 2, "runner_minutes": 24.0, "cost_micro_usd": 32_640},
            {"sender": "bob", "jobs": 1, "runner_minutes": 12.0, "cost_micro_usd": 16_320},
            {"sender": "carol", "jobs": 1, "runner_minutes": 5.0, "cost_micro_usd": 0},
        ]),
        "idle runners are nobody's"
    );
    let (_, two) = get(&f.ports, "/api/stats/top-users?limit=2").await;
    assert_eq!(two["users"].as_array().unwrap().len(), 2);
    for limit in ["0", "101", "-1", "many"] {
        let (status, body) = get(&f.ports, &format!("/api/stats/top-users?limit={limit}")).await;
        assert_eq!(status, 400, "{limit}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("limit"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_export_has_a_row_per_job_with_its_runner_and_cost() {
    let f = fixture().await;
    let t = f.now - Span::hours(1);
    let t0 = conformance::t0();
    let pool = conformance::pool("prj_stats", "linux", 2, t0);
    let mut runner = conformance::runner(&pool, "i-0abc", t);
    runner.market = Some("spot".into());
    let cost = RunnerCost::of(
        runner.lifetime(t + Span::seconds(720)),
        Some(Price {
            micro_usd_per_hour: 81_600,
            source: PriceSource::SpotHistory,
        }),
        0,
    );
    runner.cost = Some(cost);
    f.ports.store.insert_runner(&runner).await.unwrap();
    let mut done = conformance::job(11, "acme/app", t);
    done.state = JobState::Completed;
    done.conclusion = Some("success".into());
    done.sender = Some("alice,\"the\" admin".into()); // quoted as CSV must
    done.usage = Some(JobUsage {
        runner_id: Some(runner.id.clone()),
        timings: JobTimings {
            queued_to_launched_ms: Some(1_000),
            launched_to_registered_ms: Some(40_000),
            queued_to_in_progress_ms: Some(45_000),
        },
        cost: Some(cost),
    });
    f.ports.store.insert_job(&done).await.unwrap();

    let (status, headers, csv) = get_raw(&f.ports, "/api/stats/export?format=csv").await;
    assert_eq!(status, 200, "{csv}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(headers.get("link").is_none(), "one answer holds it all");
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(
        records.len(),
        2,
        "the running job and the completed one: {csv}"
    );
    let row = records
        .iter()
        .find(|r| r.get(0) == Some(done.id.as_str()))
        .unwrap();
    let field = |name: &str| {
        row.get(header.iter().position(|h| h == name).unwrap())
            .unwrap()
    };
    assert_eq!(field("github_job_id"), "11");
    assert_eq!(field("sender"), "alice,\"the\" admin");
    assert_eq!(field("instance_type"), "m7g.large");
    assert_eq!(field("market"), "spot");
    assert_eq!(field("availability_zone"), "us-east-1a");
    assert_eq!(field("queued_to_in_progress_ms"), "45000");
    assert_eq!(field("runner_minutes"), "12");
    // 720 s at $0.0816/h: $0.01632, all of it idle (no job was recorded on the runner).
    assert_eq!(field("total_usd"), "0.016320");
    assert_eq!(field("price_source"), "spot-history");
    let running = records
        .iter()
        .find(|r| r.get(0) != Some(done.id.as_str()))
        .unwrap();
    assert_eq!(
        running.get(header.iter().position(|h| h == "total_usd").unwrap()),
        Some("")
    );
}

/// The ids in a CSV answer, and its link to the next answer.
fn export_answer(headers: &axum::http::HeaderMap, csv: &str) -> (Vec<String>, Option<String>) {
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        rows.headers().unwrap().get(0),
        Some("job_id"),
        "every answer is a whole CSV"
    );
    let ids = rows
        .records()
        .map(|r| r.unwrap().get(0).unwrap().to_string())
        .collect();
    let next = headers.get("link").map(|link| {
        let link = link.to_str().unwrap();
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        link.trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string()
    });
    (ids, next)
}

#[tokio::test]
async fn a_long_export_comes_in_answers_linked_one_to_the_next() {
    let f = fixture().await;
    let mut all = vec![];
    for n in 0..6 {
        let job = conformance::job(100 + n, "acme/app", f.now - Span::minutes(50 - n));
        f.ports.store.insert_job(&job).await.unwrap();
        all.push(job.id);
    }
    let running = f.ports.store.job_by_github_id(8).await.unwrap().unwrap();
    all.insert(0, running.id);

    let mut seen = vec![];
    let mut uri = Some("/api/stats/export?format=csv&limit=3".to_string());
    let mut answers = 0;
    while let Some(next) = uri.take() {
        let (status, headers, csv) = get_raw(&f.ports, &next).await;
        assert_eq!(status, 200, "{next}: {csv}");
        let (ids, link) = export_answer(&headers, &csv);
        assert!(ids.len() <= 3, "{next}: {ids:?}");
        seen.extend(ids);
        uri = link;
        answers += 1;
        assert!(answers <= 3, "the links end");
    }
    assert_eq!(answers, 3, "seven jobs, three a time");
    assert_eq!(seen, all, "each job once, oldest first");

    for limit in ["0", "20001", "-2", "all"] {
        let (status, body) = get(&f.ports, &format!("/api/stats/export?limit={limit}")).await;
        assert_eq!(status, 400, "{limit}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("limit"),
            "{body}"
        );
    }
    let (status, _) = get(&f.ports, "/api/stats/export?cursor=not-a-cursor").await;
    assert_eq!(status, 400, "a cursor pacer did not write is refused");
}

#[tokio::test]
async fn a_bad_window_grouping_or_format_is_refused_naming_the_parameter() {
    let f = fixture().await;
    for (uri, parameter) in [
        ("/api/stats?group_by=week", "group_by"),
        (
            "/api/stats?from=2026-11-22T10:00:00Z&to=2026-11-22T09:00:00Z",
            "from",
        ),
        (
            "/api/stats?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from and to",
        ),
        (
            "/api/stats/top-users?from=2026-11-22T10:00:00Z&to=2026-11-22T10:00:00Z",
            "from",
        ),
        ("/api/stats/export?format=xlsx", "format"),
        ("/api/stats/series?step=week", "step"),
        ("/api/stats/series?split_by=day", "split_by"),
        ("/api/stats/series?split_by=colour", "split_by"),
        (
            "/api/stats/series?step=hour&from=2026-01-01T00:00:00Z&to=2026-02-15T00:00:00Z",
            "step",
        ),
        (
            "/api/stats/export?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from and to",
        ),
    ] {
        let (status, body) = get(&f.ports, uri).await;
        assert_eq!(status, 400, "{uri}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["message"].as_str().unwrap().contains(parameter),
            "{uri}: {body}"
        );
    }
    let (status, body) = get(&f.ports, "/api/stats?group_by=week").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("project, pool, repo, sender, day, market"),
        "{status} {body}"
    );
    for uri in [
        "/api/stats?from=yesterday",
        "/api/stats/top-users?since=1",
        "/api/stats/export?to=soon",
    ] {
        assert_eq!(get(&f.ports, uri).await.0, 400, "{uri}");
    }
}
