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
