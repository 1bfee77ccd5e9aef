//! The simulated fleet against a stub of pacer's callbacks and webhook
//! endpoint (a tiny axum server on 127.0.0.1 that records every request).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::*;
use crate::config::Secret;
use crate::domain::{Pool, PoolSpec};
use crate::fleet::{Fleet, JobRef, LaunchRequest, RunnerCallback};
use crate::github::offline::OfflineGitHub;
use crate::github::webhook::{WorkflowJobEvent, verify_signature};
use crate::github::{GitHub, JitRequest, RunnerTarget};
use crate::host::simulation::{OfflineGitHubPart, workflow_job_payload};

const TOKEN: &str = "cb-token.for-one-runner";
const SECRET: &str = "webhook-secret";

#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// pacer as far as a simulated runner can tell: the three callbacks and
/// the webhook endpoint, recording what they receive.
struct StubPacer {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl StubPacer {
    async fn start(register_status: StatusCode, jit: String) -> StubPacer {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = Arc::clone(&recorded);
            let jit = jit.clone();
            async move {
                let path = uri.path().to_string();
                recorded.lock().unwrap().push(Call { path: path.clone(), headers, body });
                let reply: Response = match path.as_str() {
                    "/api/runner/register" if register_status.is_success() => axum::Json(json!({
                        "encoded_jit_config": jit, "runner_name": "pacer-sim-1", "runner_version": "2.328.0",
                        "download_url": "https://example.invalid/runner.tar.gz"
                    }))
                    .into_response(),
                    "/api/runner/register" => register_status.into_response(),
                    "/api/webhook" => StatusCode::ACCEPTED.into_response(),
                    _ => StatusCode::OK.into_response(),
                };
                reply
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .await
                .unwrap();
        });
        StubPacer {
            url,
            calls,
            stop: Some(stop),
            server,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.path).collect()
    }

    /// Waits (bounded) until a request to `path` has arrived.
    async fn wait_for(&self, path: &str) -> Call {
        for _ in 0..400 {
            if let Some(c) = self.calls().into_iter().find(|c| c.path == path) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no request to {path}; got {:?}", self.paths());
    }

    async fn stop(mut self) {
        self.stop.take().map(|s| s.send(()));
        self.server.await.unwrap();
    }
}

async fn offline_jit() -> String {
    let target = RunnerTarget::Repo(crate::domain::RepoName::parse("acme/app").unwrap());
    let req = JitRequest {
        name: "pacer-sim-1".into(),
        runner_group_id: 1,
        labels: vec!["self-hosted".into(), "linux".into()],
        work_folder: None,
    };
    OfflineGitHub::new("latest")
        .generate_jit_config(1, &target, &req)
        .await
        .unwrap()
        .encoded_jit_config
}

fn settings() -> SimulatedSettings {
    SimulatedSettings {
        boot_delay: Duration::from_millis(10),
        job_time: Duration::from_millis(30),
        deployment: "test".into(),
        github: Some(Arc::new(OfflineGitHubPart::new(Secret::new(SECRET)))),
        pickup_delay: Duration::from_millis(10),
        register_tries: 2,
        retry_delay: Duration::from_millis(10),
        launch_failure_rate: 0.0,
        bootstrap_failure_rate: 0.0,
    }
}

fn pool() -> Pool {
    let spec = PoolSpec::parse(
        json!({"project_id": "prj_1", "name": "linux", "labels": ["linux"], "instance_types": ["m7g.large"],
               "subnets": ["subnet-0abc1234"], "ami": "ami-0123456789abcdef0"})
        .as_object()
        .unwrap()
        .clone(),
    )
    .unwrap();
    Pool {
        id: "pool_1".into(),
        spec,
        active_runners: 0,
        degraded: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

fn request(runner_id: &str, pacer_url: &str) -> LaunchRequest {
    LaunchRequest {
        pool: pool(),
        runner_id: runner_id.into(),
        runner_name: "pacer-sim-1".into(),
        job: Some(JobRef {
            id: "job_1".into(),
            github_job_id: 4242,
            run_id: 77,
            repo: "acme/app".into(),
            labels: vec!["self-hosted".into(), "linux".into()],
            installation_id: Some(1),
        }),
        callback: RunnerCallback {
            url: pacer_url.into(),
            token: Secret::new(TOKEN),
        },
        attempt: 0,
        first_launch: false,
    }
}

async fn wait_until_no_instances(fleet: &SimulatedFleet) {
    for _ in 0..400 {
        if fleet.list_instances().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the simulated instance never terminated");
}

#[tokio::test]
async fn an_instance_registers_plays_github_completes_and_terminates() {
    // Given pacer (a stub) whose address the fleet learns after binding,
    // while the user data names an address where nothing listens
    let pacer = StubPacer::start(StatusCode::OK, offline_jit().await).await;
    let fleet = SimulatedFleet::new(settings());
    fleet.set_pacer_url(&pacer.url);

    // When a runner is launched for a job
    let launched = fleet
        .launch(&request("run_1", "http://127.0.0.1:1"))
        .await
        .unwrap();
    assert!(launched.instance_id.starts_with("i-sim"));

    // Then it registers with its token, GitHub reports the job in progress
    // and completed on it, and it reports completion
    pacer.wait_for("/api/runner/complete").await;
    let calls = pacer.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/runner/register",
            "/api/webhook",
            "/api/webhook",
            "/api/runner/complete"
        ]
    );

    let register = &calls[0];
    assert_eq!(
        register.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(register.json(), json!({"os": "linux", "arch": "x64"}));

    for (call, action) in [(&calls[1], "in_progress"), (&calls[2], "completed")] {
        assert_eq!(call.header("x-github-event"), Some("workflow_job"));
        verify_signature(
            &[SECRET.as_bytes()],
            &call.body,
            call.header("x-hub-signature-256"),
        )
        .expect("a correctly signed delivery");
        let event: WorkflowJobEvent =
            serde_json::from_slice(&call.body).expect("pacer's webhook parser reads it");
        assert_eq!(event.action.as_str(), action);
        assert_eq!(event.workflow_job.id, 4242);
        assert_eq!(
            event.workflow_job.runner_name.as_deref(),
            Some("pacer-sim-1")
        );
        assert_eq!(event.repository.full_name, "acme/app");
    }
    assert_eq!(calls[2].json()["workflow_job"]["conclusion"], "success");
    assert_eq!(
        calls[3].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // And the instance is gone, and counted
    wait_until_no_instances(&fleet).await;
    let c = fleet.counters();
    assert_eq!(
        (
            c.launched,
            c.live,
            c.peak_live,
            c.registered,
            c.completed,
            c.failed
        ),
        (1, 0, 1, 1, 1, 0)
    );
    pacer.stop().await;
}

#[tokio::test]
async fn a_runner_is_one_instance_and_terminate_stops_it_before_it_boots() {
    // Given an instance that takes an hour to boot
    let pacer = StubPacer::start(StatusCode::OK, offline_jit().await).await;
    let fleet = SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_secs(3600),
        ..settings()
    });

    // When the same runner is launched twice
    let first = fleet.launch(&request("run_1", &pacer.url)).await.unwrap();
    let second = fleet.launch(&request("run_1", &pacer.url)).await.unwrap();

    // Then there is one pending instance, found by its runner
    assert_eq!(first, second);
    let listed = fleet.list_instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "pending");
    let found = fleet.instance_for_runner("run_1").await.unwrap().unwrap();
    assert_eq!(
        (found.instance_id.as_str(), found.pool_id.as_deref()),
        (first.instance_id.as_str(), Some("pool_1"))
    );

    // When it is terminated (twice: the second is a no-op)
    fleet.terminate(&first.instance_id).await.unwrap();
    fleet.terminate(&first.instance_id).await.unwrap();

    // Then it is gone and never called pacer
    assert!(fleet.list_instances().await.unwrap().is_empty());
    assert!(fleet.instance_for_runner("run_1").await.unwrap().is_none());
    assert!(pacer.paths().is_empty());
    let c = fleet.counters();
    assert_eq!((c.launched, c.live, c.peak_live), (1, 0, 1));
    pacer.stop().await;
}

#[tokio::test]
async fn a_register_that_keeps_failing_is_reported_with_a_log_tail_but_no_token() {
    // Given pacer answering register with 500 every time
    let pacer = StubPacer::start(StatusCode::INTERNAL_SERVER_ERROR, String::new()).await;
    let fleet = SimulatedFleet::new(settings());

    // When a runner is launched
    fleet.launch(&request("run_1", &pacer.url)).await.unwrap();

    // Then it retries, reports the failure to /error, and terminates
    let error = pacer.wait_for("/api/runner/error").await;
    let tail = error.json()["log_tail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(tail.contains("gave up after 2 attempts"), "{tail}");
    assert!(!tail.contains(TOKEN));
    assert_eq!(
        pacer
            .paths()
            .iter()
            .filter(|p| *p == "/api/runner/register")
            .count(),
        2
    );
    wait_until_no_instances(&fleet).await;
    assert_eq!(fleet.counters().failed, 1);
    assert!(!pacer.paths().contains(&"/api/runner/complete".to_string()));
    pacer.stop().await;
}

#[tokio::test]
async fn without_a_webhook_secret_the_runner_completes_without_playing_github() {
    let pacer = StubPacer::start(StatusCode::OK, offline_jit().await).await;
    let fleet = SimulatedFleet::new(SimulatedSettings {
        github: None,
        ..settings()
    });

    fleet.launch(&request("run_1", &pacer.url)).await.unwrap();

    pacer.wait_for("/api/runner/complete").await;
    assert_eq!(
        pacer.paths(),
        ["/api/runner/register", "/api/runner/complete"]
    );
    pacer.stop().await;
}

#[test]
fn the_webhook_payload_has_githubs_shape() {
    let job = request("run_1", "http://x").job.unwrap();
    let runner = RunnerIdentity {
        id: 9,
        name: "pacer-sim-1".into(),
    };
    let p = workflow_job_payload(&job, &runner, "in_progress", chrono::Utc::now());
    assert_eq!(p["workflow_job"]["status"], "in_progress");
    assert_eq!(p["workflow_job"]["conclusion"], Value::Null);
    assert_eq!(p["workflow_job"]["runner_id"], 9);
    assert_eq!(p["workflow_job"]["labels"], json!(["self-hosted", "linux"]));
    assert_eq!(p["repository"]["owner"]["login"], "acme");
    assert_eq!(p["repository"]["name"], "app");
    assert_eq!(p["installation"]["id"], 1);
    assert_eq!(p["sender"]["login"], "pacer-simulator");
}

#[test]
fn injected_failures_follow_a_fixed_schedule_of_exactly_the_rate() {
    let failing = |rate: f64, n: u64| {
        (1..=n)
            .filter(|i| injected_failure(*i, rate))
            .collect::<Vec<_>>()
    };

    // 5%: every 20th launch, exactly 50 in 1,000
    let five = failing(0.05, 1000);
    assert_eq!(five.len(), 50);
    assert!(five.iter().all(|n| n % 20 == 0), "{five:?}");

    // Never, always, and what is not a rate
    assert!(failing(0.0, 1000).is_empty());
    assert_eq!(failing(1.0, 1000).len(), 1000);
    assert!(failing(f64::NAN, 100).is_empty());
    assert!(failing(-0.5, 100).is_empty());
    assert_eq!(failing(7.0, 100).len(), 100);

    // Any first N launches hold floor(N·rate) failures, whatever the rate
    for n in [1, 2, 3, 10, 99, 1000, 12345] {
        assert_eq!(
            failing(0.3, n).len() as u64,
            n * 3 / 10,
            "{n} launches at 30%"
        );
        assert_eq!(failing(0.05, n).len() as u64, n / 20, "{n} launches at 5%");
    }
    assert!(!injected_failure(0, 1.0), "launches count from 1");
}

#[tokio::test]
async fn a_fleet_with_a_failure_rate_refuses_launches_as_no_capacity_and_starts_nothing_for_them() {
    // Given a fleet failing 1 launch in 4, whose instances take an hour to boot
    let fleet = SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_secs(3600),
        launch_failure_rate: 0.25,
        ..settings()
    });

    // When 8 runners are launched
    let mut refused = Vec::new();
    for n in 1..=8 {
        match fleet
            .launch(&request(&format!("run_{n}"), "http://127.0.0.1:1"))
            .await
        {
            Ok(_) => {}
            Err(FleetError::NoCapacity(reason)) => {
                assert!(reason.contains("injected"), "{reason}");
                refused.push(n);
            }
            Err(other) => panic!("launch {n}: {other}"),
        }
    }

    // Then the 4th and the 8th are refused, and have no instance
    assert_eq!(refused, [4, 8]);
    assert!(fleet.instance_for_runner("run_4").await.unwrap().is_none());
    assert!(fleet.instance_for_runner("run_8").await.unwrap().is_none());
    assert_eq!(fleet.list_instances().await.unwrap().len(), 6);
    let c = fleet.counters();
    assert_eq!((c.launched, c.launch_failures, c.live), (6, 2, 6));

    // And a repeated launch of a runner that has its instance neither fails
    // nor moves the schedule: the next new launch (the 9th) succeeds
    fleet
        .launch(&request("run_1", "http://127.0.0.1:1"))
        .await
        .expect("the same instance again");
    fleet
        .launch(&request("run_9", "http://127.0.0.1:1"))
        .await
        .expect("the 9th launch");
    let c = fleet.counters();
    assert_eq!((c.launched, c.launch_failures), (7, 2));

    // And a refused runner launched again gets an instance then (the
    // schedule is per launch, not per runner)
    fleet
        .launch(&request("run_4", "http://127.0.0.1:1"))
        .await
        .expect("the 10th launch");
    fleet
        .launch(&request("run_11", "http://127.0.0.1:1"))
        .await
        .expect("the 11th launch");
    assert!(
        fleet
            .launch(&request("run_12", "http://127.0.0.1:1"))
            .await
            .is_err(),
        "the 12th launch"
    );

    for instance in fleet.list_instances().await.unwrap() {
        fleet.terminate(&instance.instance_id).await.unwrap();
    }
    assert_eq!(fleet.counters().live, 0);
}

#[tokio::test]
async fn a_fleet_without_a_failure_rate_never_refuses() {
    let fleet = SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_secs(3600),
        ..settings()
    });
    for n in 1..=40 {
        fleet
            .launch(&request(&format!("run_{n}"), "http://127.0.0.1:1"))
            .await
            .unwrap();
    }
    let c = fleet.counters();
    assert_eq!((c.launched, c.launch_failures), (40, 0));
    for instance in fleet.list_instances().await.unwrap() {
        fleet.terminate(&instance.instance_id).await.unwrap();
    }
}

#[tokio::test]
async fn with_a_bootstrap_failure_rate_every_second_instance_reports_its_log_tail_and_never_registers()
 {
    // Given a fleet whose bootstraps fail half the time (the 2nd, 4th, …)
    let pacer = StubPacer::start(StatusCode::OK, offline_jit().await).await;
    let fleet = SimulatedFleet::new(SimulatedSettings {
        bootstrap_failure_rate: 0.5,
        ..settings()
    });
    fleet.set_pacer_url(&pacer.url);

    // When two runners boot, one after the other
    fleet
        .launch(&request("run_1", "http://127.0.0.1:1"))
        .await
        .unwrap();
    pacer.wait_for("/api/runner/complete").await;
    wait_until_no_instances(&fleet).await;
    fleet
        .launch(&request("run_2", "http://127.0.0.1:1"))
        .await
        .unwrap();

    // Then the second reports an error, with the script's tail and its token,
    // before it ever registers, and terminates
    let error = pacer.wait_for("/api/runner/error").await;
    assert_eq!(
        error.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let tail = error.json()["log_tail"].as_str().unwrap().to_string();
    assert!(
        tail.contains("FAILED: simulated bootstrap failure"),
        "{tail}"
    );
    assert!(!tail.contains(TOKEN), "the tail never holds the token");
    wait_until_no_instances(&fleet).await;
    let registers = pacer
        .paths()
        .iter()
        .filter(|p| *p == "/api/runner/register")
        .count();
    assert_eq!(registers, 1, "only the first instance registered");
    let c = fleet.counters();
    assert_eq!(
        (c.launched, c.registered, c.completed, c.failed),
        (2, 1, 1, 1)
    );
    pacer.stop().await;
}
