//! The built Lambda binaries, end to end, under a minimal Lambda Runtime
//! API: the stub hands each function the event AWS would, and records what
//! the function answers. Configuration comes only from `PACER_*` variables,
//! and the secrets are `ssm:` / `secretsmanager:` references resolved from
//! moto at the cold start, as in AWS.
//!
//! The binaries are built by `make test` (`cargo build --workspace --bins`)
//! beside the `pacer` binary. The stub and the deployment live in
//! `pacer-test-support`: the bench measures cold starts with them.

use std::path::PathBuf;

use pacer_shared::config::Function;
use pacer_test_support::events::{github_delivery, http_event, scheduled_event, sqs_record};
use pacer_test_support::lambda_runtime::{Deployment, Outcome, Running, RuntimeApi, lambda_env};
use serde_json::{Value, json};

use crate::support::WEBHOOK_SECRET;

/// A Lambda binary built beside `pacer` (same profile, same directory).
fn function_binary(name: &str) -> PathBuf {
    let pacer = PathBuf::from(env!("CARGO_BIN_EXE_pacer"));
    let path = pacer.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the Lambda binaries first with `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

fn spawn(name: &str, env: &[(String, String)]) -> Running {
    Running::spawn(&function_binary(name), env)
}

fn signed_ping(secret: &str) -> Value {
    let body = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string();
    let signature = pacer_shared::github::webhook::sign(secret.as_bytes(), body.as_bytes());
    github_delivery("ping", &body, &signature, "192.0.2.44")
}

fn status_and_body(outcome: &Outcome) -> (u64, Value) {
    let Outcome::Response(answer) = outcome else {
        panic!("the function failed the invocation: {outcome:?}")
    };
    let body = answer["body"].as_str().unwrap_or_default();
    (
        answer["statusCode"].as_u64().unwrap_or_default(),
        serde_json::from_str(body).unwrap_or(json!(body)),
    )
}

#[tokio::test]
async fn the_webhook_binary_resolves_its_secret_from_ssm_and_answers_api_gateway() {
    let deployment = Deployment::start(WEBHOOK_SECRET).await;
    let runtime = RuntimeApi::start().await;
    let _function = spawn(
        "webhook",
        &lambda_env(
            &runtime,
            "webhook",
            &deployment.config_for(Function::Webhook),
        ),
    );

    // The signature checks out only if the secret came from SSM.
    let (status, body) = status_and_body(&runtime.invoke(signed_ping(WEBHOOK_SECRET)).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"], "ping");

    let (status, body) = status_and_body(&runtime.invoke(signed_ping("not-the-secret")).await);
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.to_string().contains(WEBHOOK_SECRET),
        "the secret never appears in an answer"
    );
    assert!(runtime.init_errors().is_empty());
}

#[tokio::test]
async fn each_other_binary_boots_and_answers_its_own_event() {
    let deployment = Deployment::start(WEBHOOK_SECRET).await;

    let runtime = RuntimeApi::start().await;
    let _api = spawn(
        "api",
        &lambda_env(&runtime, "api", &deployment.config_for(Function::Api)),
    );
    let health = runtime
        .invoke(http_event("GET", "/healthz", json!({}), None, "192.0.2.44"))
        .await;
    assert_eq!(status_and_body(&health), (200, json!("ok")));
    let (status, body) = status_and_body(
        &runtime
            .invoke(http_event(
                "GET",
                "/api/projects",
                json!({}),
                None,
                "192.0.2.44",
            ))
            .await,
    );
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthorized")),
        "the console API wants a session"
    );

    let runtime = RuntimeApi::start().await;
    let _runner = spawn(
        "runner",
        &lambda_env(&runtime, "runner", &deployment.config_for(Function::Runner)),
    );
    let (status, _) = status_and_body(
        &runtime
            .invoke(http_event(
                "POST",
                "/api/runner/complete",
                json!({}),
                None,
                "192.0.2.44",
            ))
            .await,
    );
    assert_eq!(status, 401, "a callback without a token is refused");

    let runtime = RuntimeApi::start().await;
    let _orchestrator = spawn(
        "orchestrator",
        &lambda_env(
            &runtime,
            "orchestrator",
            &deployment.config_for(Function::Orchestrator),
        ),
    );
    let batch = json!({"Records": [sqs_record("m-1", "r-1", "not a job id", json!({"ApproximateReceiveCount": "1"}))]});
    let Outcome::Response(answer) = runtime.invoke(batch).await else {
        panic!("the batch failed")
    };
    assert_eq!(
        answer["batchItemFailures"],
        json!([]),
        "a malformed message is dropped, not retried: {answer}"
    );

    let runtime = RuntimeApi::start().await;
    let _reaper = spawn(
        "reaper",
        &lambda_env(&runtime, "reaper", &deployment.config_for(Function::Reaper)),
    );
    let Outcome::Response(answer) = runtime.invoke(scheduled_event()).await else {
        panic!("the pass failed")
    };
    assert_eq!(answer["actions"], 0, "{answer}");
    drop(deployment.moto);
}

#[tokio::test]
async fn a_function_with_a_bad_setting_stops_at_boot_naming_the_variable() {
    let runtime = RuntimeApi::start().await;
    let env = lambda_env(
        &runtime,
        "webhook",
        &[("PACER_DATABASE_ENGINE", "postgres".into())],
    );
    let (ok, printed) = spawn("webhook", &env).finished().await;
    assert!(!ok, "the process fails");
    assert!(printed.contains("PACER_DATABASE_ENGINE"), "{printed}");
}

/// The webhook function on DynamoDB and SQS, killed at `failpoint` while it
/// takes in a queued job: after it, GitHub counts the delivery failed and
/// redelivers it to a fresh function, and whatever had landed, the job
/// runs exactly once.
async fn a_webhook_function_killed_at(failpoint: &str) {
    use std::sync::Arc;
    use std::time::Duration;

    use pacer_shared::queue::Queue as _;
    use pacer_shared::queue::sqs::SqsQueue;
    use pacer_shared::service::Ports;
    use pacer_shared::service::dispatch::{Dispatched, dispatch};
    use pacer_shared::store::dynamodb::DynamoStore;
    use pacer_shared::store::{JobStore as _, PageRequest, RunnerStore as _};
    use pacer_test_support::lambda_runtime::TABLE;

    // Given a deployment serving acme/app, and a delivery of its job 61
    let deployment = Deployment::start(WEBHOOK_SECRET).await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&deployment.sdk),
        TABLE.into(),
    ));
    crate::support::seed_acme(&*store, 5, chrono::Utc::now()).await;
    let body = serde_json::to_string(&crate::support::queued_payload(
        61,
        "acme/app",
        &["self-hosted", "linux"],
    ))
    .unwrap();
    let signature = pacer_shared::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    let delivery = github_delivery("workflow_job", &body, &signature, "192.0.2.44");
    let config = deployment.config_for(Function::Webhook);

    // When the function dies at the failpoint
    let runtime = RuntimeApi::start().await;
    let mut env = lambda_env(&runtime, "webhook", &config);
    env.push(("PACER_FAILPOINTS".into(), failpoint.into()));
    let mut dying = spawn("webhook", &env);
    let id = runtime.queue(delivery.clone());
    let mut status = None;
    for _ in 0..600 {
        status = dying.exited();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let status = status.expect("the function died at the failpoint");
    assert!(!status.success(), "{status:?}");
    assert!(
        runtime.answer(&id, Duration::ZERO).await.is_none(),
        "GitHub got no answer"
    );

    // And GitHub redelivers to a fresh function
    let runtime = RuntimeApi::start().await;
    let _fresh = spawn("webhook", &lambda_env(&runtime, "webhook", &config));
    let (status, answer) = status_and_body(&runtime.invoke(delivery).await);
    assert_eq!(status, 202, "{answer}");

    // Then the orchestrator, given every hint on the queue, launches once
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&deployment.sdk),
        deployment.queue_url.clone(),
    ));
    let ports = Ports {
        store: store.clone(),
        queue: queue.clone(),
        ..crate::support::local_ports(dir.path()).0
    };
    let mut outcomes = Vec::new();
    loop {
        let batch = queue.receive(10, Duration::from_millis(10)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for hint in batch {
            outcomes.push(dispatch(&ports, &hint.job_id).await.unwrap());
            queue.ack(&hint).await.unwrap();
        }
    }
    let launched = outcomes
        .iter()
        .filter(|o| matches!(o, Dispatched::Launched { .. }))
        .count();
    assert_eq!(launched, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Dispatched::Launched { .. } | Dispatched::NotStored | Dispatched::NotNeeded(_)
        )),
        "{outcomes:?}"
    );
    let job = store.job_by_github_id(61).await.unwrap().expect("one job");
    assert_eq!(job.attempts, 1, "{job:?}");
    let runners = store
        .list_runners(&Default::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(runners.items.len(), 1, "{runners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_function_killed_once_its_job_is_stored_loses_nothing_on_dynamodb() {
    a_webhook_function_killed_at("after_job_insert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_function_killed_once_its_hint_is_sent_loses_nothing_on_dynamodb() {
    a_webhook_function_killed_at("after_hint_sent").await;
}
