//! The built Lambda binaries, end to end, under a minimal Lambda Runtime
//! API: the stub hands each function the event AWS would, and records what
//! the function answers. Configuration comes only from `PACER_*` variables,
//! and the secrets are `ssm:` / `secretsmanager:` references resolved from
//! moto at the cold start, as in AWS.
//!
//! The binaries are built by `make test` (`cargo build --workspace --bins`)
//! beside the `pacer` binary; the bench measures cold starts with the same stub.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::lambda_handlers::{http_event, sqs_record};
use crate::moto::Moto;
use crate::process::free_port;
use crate::support::WEBHOOK_SECRET;

/// What the stub saw a function do with one invocation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Response(Value),
    Error(Value),
}

#[derive(Default)]
struct Shared {
    pending: Mutex<VecDeque<(String, Value)>>,
    outcomes: Mutex<Vec<(String, Outcome)>>,
    init_errors: Mutex<Vec<Value>>,
    event_ready: Notify,
    outcome_ready: Notify,
}

/// The Runtime API (`/2018-06-01/runtime/…`) on a free loopback port;
/// stopped on drop.
pub(crate) struct RuntimeApi {
    pub(crate) addr: String,
    shared: Arc<Shared>,
    next_id: Mutex<u64>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub(crate) async fn start() -> RuntimeApi {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the runtime stub");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        RuntimeApi { addr: format!("127.0.0.1:{port}"), shared, next_id: Mutex::new(0), server }
    }

    /// Queues `event` and waits for the function's answer (bounded: 60 s).
    pub(crate) async fn invoke(&self, event: Value) -> Outcome {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("req-{n:04}")
        };
        self.shared.pending.lock().unwrap().push_back((id.clone(), event));
        self.shared.event_ready.notify_one();
        let wait = async {
            loop {
                let notified = self.shared.outcome_ready.notified();
                if let Some((_, outcome)) = self.shared.outcomes.lock().unwrap().iter().find(|(i, _)| *i == id) {
                    return outcome.clone();
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait).await.unwrap_or_else(|_| panic!("no answer to {id} within 60 s"))
    }

    pub(crate) fn init_errors(&self) -> Vec<Value> {
        self.shared.init_errors.lock().unwrap().clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let (id, event) = loop {
        let notified = shared.event_ready.notified();
        if let Some(found) = shared.pending.lock().unwrap().pop_front() {
            break found;
        }
        notified.await;
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    headers.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:pacer-test".parse().unwrap(),
    );
    headers.insert("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    (StatusCode::OK, headers, event.to_string()).into_response()
}

fn record(shared: &Shared, id: String, outcome: Outcome) -> StatusCode {
    shared.outcomes.lock().unwrap().push((id, outcome));
    shared.outcome_ready.notify_waiters();
    StatusCode::ACCEPTED
}

async fn respond(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&shared, id, Outcome::Response(serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn fail(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&shared, id, Outcome::Error(serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared.init_errors.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::ACCEPTED
}

/// A Lambda binary built beside `pacer` (same profile, same directory).
pub(crate) fn function_binary(name: &str) -> PathBuf {
    let pacer = PathBuf::from(env!("CARGO_BIN_EXE_pacer"));
    let path = pacer.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the Lambda binaries first with `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// The environment Lambda gives a function, plus pacer's configuration.
pub(crate) fn lambda_env(runtime: &RuntimeApi, function: &str, pacer: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime.addr.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("pacer-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/pacer-{function}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/22/[$LATEST]0123456789abcdef".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(pacer.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// A function process under the stub; killed on drop.
pub(crate) struct Running {
    child: tokio::process::Child,
}

impl Running {
    pub(crate) fn spawn(name: &str, env: &[(String, String)]) -> Running {
        let child = tokio::process::Command::new(function_binary(name))
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running { child }
    }

    /// Waits for the process to end by itself (bounded: 30 s) and returns
    /// its exit success and everything it printed.
    async fn finished(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("the function exits").unwrap();
        let mut out = String::new();
        for pipe in [self.child.stdout.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                     self.child.stderr.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>)]
            .into_iter()
            .flatten()
        {
            let mut pipe = pipe;
            tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut out).await.unwrap();
        }
        (status.success(), out)
    }
}

/// moto with the table, the queue and the secrets the functions read, and
/// the `PACER_*` configuration pointing at them.
struct Deployment {
    moto: Moto,
    config: Vec<(&'static str, String)>,
}

impl Deployment {
    async fn start() -> Deployment {
        pacer_shared::server::install_crypto_provider();
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let store = pacer_shared::store::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "pacer-fn".into());
        store.create_table().await.unwrap();
        let queue_url =
            aws_sdk_sqs::Client::new(&sdk).create_queue().queue_name("pacer-jobs").send().await.unwrap().queue_url.unwrap();
        let ssm = aws_sdk_ssm::Client::new(&sdk);
        for (name, value) in [
            ("/pacer/test/webhook-secret", WEBHOOK_SECRET),
            ("/pacer/test/callback-secret", "callback-hmac-secret-from-ssm-0123456789"),
        ] {
            ssm.put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .send()
                .await
                .unwrap();
        }
        let jwt = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name("pacer/test/jwt")
            .secret_string("jwt-secret-from-secrets-manager-0123456789")
            .send()
            .await
            .unwrap();
        let config = vec![
            ("PACER_AWS_REGION", "us-east-1".to_string()),
            ("PACER_AWS_ENDPOINT_URL", moto.endpoint.clone()),
            ("PACER_DATABASE_ENGINE", "dynamodb".into()),
            ("PACER_DATABASE_TABLE", "pacer-fn".into()),
            ("PACER_QUEUE_ENGINE", "sqs".into()),
            ("PACER_QUEUE_URL", queue_url),
            ("PACER_FLEET_ENGINE", "ec2".into()),
            ("PACER_GITHUB_DISABLED", "true".into()),
            ("PACER_SERVER_PUBLIC_URL", "https://abc123.execute-api.us-east-1.amazonaws.com".into()),
            ("PACER_GITHUB_WEBHOOK_SECRET", "ssm:/pacer/test/webhook-secret".into()),
            ("PACER_GITHUB_CALLBACK_HMAC_SECRET", "ssm:/pacer/test/callback-secret".into()),
            ("PACER_AUTH_JWT_SECRET", format!("secretsmanager:{}", jwt.arn().unwrap())),
            ("PACER_LOGGING_LEVEL", "info".into()),
        ];
        Deployment { moto, config }
    }
}

fn signed_ping(secret: &str) -> Value {
    let body = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string();
    let signature = pacer_shared::github::webhook::sign(secret.as_bytes(), body.as_bytes());
    let headers = json!({"content-type": "application/json", "x-github-event": "ping",
        "x-github-delivery": "d1", "x-hub-signature-256": signature});
    http_event("POST", "/api/webhook", headers, Some(&body), "192.0.2.44")
}

fn status_and_body(outcome: &Outcome) -> (u64, Value) {
    let Outcome::Response(answer) = outcome else { panic!("the function failed the invocation: {outcome:?}") };
    let body = answer["body"].as_str().unwrap_or_default();
    (answer["statusCode"].as_u64().unwrap_or_default(), serde_json::from_str(body).unwrap_or(json!(body)))
}

#[tokio::test]
async fn the_webhook_binary_resolves_its_secret_from_ssm_and_answers_api_gateway() {
    let deployment = Deployment::start().await;
    let runtime = RuntimeApi::start().await;
    let _function = Running::spawn("webhook", &lambda_env(&runtime, "webhook", &deployment.config));

    // The signature checks out only if the secret came from SSM.
    let (status, body) = status_and_body(&runtime.invoke(signed_ping(WEBHOOK_SECRET)).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"], "ping");

    let (status, body) = status_and_body(&runtime.invoke(signed_ping("not-the-secret")).await);
    assert_eq!(status, 401, "{body}");
    assert!(!body.to_string().contains(WEBHOOK_SECRET), "the secret never appears in an answer");
    assert!(runtime.init_errors().is_empty());
}

#[tokio::test]
async fn each_other_binary_boots_and_answers_its_own_event() {
    let deployment = Deployment::start().await;

    let runtime = RuntimeApi::start().await;
    let _api = Running::spawn("api", &lambda_env(&runtime, "api", &deployment.config));
    let health = runtime.invoke(http_event("GET", "/healthz", json!({}), None, "192.0.2.44")).await;
    assert_eq!(status_and_body(&health), (200, json!("ok")));
    let (status, body) = status_and_body(&runtime.invoke(http_event("GET", "/api/projects", json!({}), None, "192.0.2.44")).await);
    assert_eq!((status, body["error"].clone()), (401, json!("unauthorized")), "the console API wants a session");

    let runtime = RuntimeApi::start().await;
    let _runner = Running::spawn("runner", &lambda_env(&runtime, "runner", &deployment.config));
    let (status, _) = status_and_body(&runtime.invoke(http_event("POST", "/api/runner/complete", json!({}), None, "192.0.2.44")).await);
    assert_eq!(status, 401, "a callback without a token is refused");

    let runtime = RuntimeApi::start().await;
    let _orchestrator = Running::spawn("orchestrator", &lambda_env(&runtime, "orchestrator", &deployment.config));
    let batch = json!({"Records": [sqs_record("m-1", "r-1", "not a job id", json!({"ApproximateReceiveCount": "1"}))]});
    let Outcome::Response(answer) = runtime.invoke(batch).await else { panic!("the batch failed") };
    assert_eq!(answer["batchItemFailures"], json!([]), "a malformed message is dropped, not retried: {answer}");

    let runtime = RuntimeApi::start().await;
    let _reaper = Running::spawn("reaper", &lambda_env(&runtime, "reaper", &deployment.config));
    let scheduled = json!({"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-22T12:00:00Z", "region": "us-east-1", "resources": [], "detail": {}});
    let Outcome::Response(answer) = runtime.invoke(scheduled).await else { panic!("the pass failed") };
    assert_eq!(answer["actions"], 0, "{answer}");
    drop(deployment.moto);
}

#[tokio::test]
async fn a_function_with_a_bad_setting_stops_at_boot_naming_the_variable() {
    let runtime = RuntimeApi::start().await;
    let env = lambda_env(&runtime, "webhook", &[("PACER_DATABASE_ENGINE", "postgres".into())]);
    let (ok, printed) = Running::spawn("webhook", &env).finished().await;
    assert!(!ok, "the process fails");
    assert!(printed.contains("PACER_DATABASE_ENGINE"), "{printed}");
}
