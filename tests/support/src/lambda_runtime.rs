//! The built Lambda binaries under a minimal Lambda Runtime API: the stub
//! hands a function the events AWS would and records what it answers, and
//! when. [`Deployment`] is what the functions run against: DynamoDB, SQS,
//! SSM and Secrets Manager on one moto, and the `PACER_*` configuration that
//! points at them, secrets as `ssm:` / `secretsmanager:` references resolved
//! at the cold start, as in AWS.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, Lines};
use tokio::process::ChildStdout;
use tokio::sync::Notify;

use crate::free_port;
use crate::moto::Moto;

/// What the stub saw a function do with one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error(Value),
}

/// An invocation's outcome and when the stub received it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: Outcome,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<VecDeque<(String, Value)>>,
    answers: Mutex<Vec<(String, Answer)>>,
    init_errors: Mutex<Vec<Value>>,
    event_ready: Notify,
    answer_ready: Notify,
}

/// The Runtime API (`/2018-06-01/runtime/…`) on a free loopback port;
/// stopped on drop.
pub struct RuntimeApi {
    /// `127.0.0.1:PORT`, for `AWS_LAMBDA_RUNTIME_API`.
    pub addr: String,
    shared: Arc<Shared>,
    next_id: Mutex<u64>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the runtime stub");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        RuntimeApi {
            addr: format!("127.0.0.1:{port}"),
            shared,
            next_id: Mutex::new(0),
            server,
        }
    }

    /// Queues `event` for the function's next `/invocation/next`; returns
    /// its request id.
    pub fn queue(&self, event: Value) -> String {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("req-{n:04}")
        };
        self.shared
            .pending
            .lock()
            .unwrap()
            .push_back((id.clone(), event));
        self.shared.event_ready.notify_one();
        id
    }

    /// The function's answer to request `id`, once it came (`None` if it
    /// did not within `within`).
    pub async fn answer(&self, id: &str, within: Duration) -> Option<Answer> {
        let wait = async {
            loop {
                let notified = self.shared.answer_ready.notified();
                let found = {
                    let answers = self.shared.answers.lock().unwrap();
                    answers
                        .iter()
                        .find(|(i, _)| i == id)
                        .map(|(_, a)| a.clone())
                };
                if let Some(answer) = found {
                    return answer;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.ok()
    }

    /// Queues `event` and waits for the function's answer (bounded: 60 s).
    pub async fn invoke(&self, event: Value) -> Outcome {
        let id = self.queue(event);
        self.answer(&id, Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("no answer to {id} within 60 s"))
            .outcome
    }

    /// What functions reported to `/init/error`.
    pub fn init_errors(&self) -> Vec<Value> {
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
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:pacer-test"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            .parse()
            .unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    (StatusCode::OK, headers, event.to_string()).into_response()
}

fn record(shared: &Shared, id: String, outcome: Outcome) -> StatusCode {
    let at = Instant::now();
    shared
        .answers
        .lock()
        .unwrap()
        .push((id, Answer { outcome, at }));
    shared.answer_ready.notify_waiters();
    StatusCode::ACCEPTED
}

fn json_or_null(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

async fn respond(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    record(&shared, id, Outcome::Response(json_or_null(&body)))
}

async fn fail(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    record(&shared, id, Outcome::Error(json_or_null(&body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared.init_errors.lock().unwrap().push(json_or_null(&body));
    StatusCode::ACCEPTED
}

/// The environment Lambda gives a function, plus pacer's configuration.
pub fn lambda_env(
    runtime: &RuntimeApi,
    function: &str,
    pacer: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime.addr.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("pacer-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/pacer-{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/22/[$LATEST]0123456789abcdef".into(),
        ),
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

/// A function process under the stub, with nothing but `env`; killed on
/// drop.
pub struct Running {
    child: tokio::process::Child,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Running {
    pub fn spawn(binary: &Path, env: &[(String, String)]) -> Running {
        let mut child = tokio::process::Command::new(binary)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        Running {
            child,
            stdout,
            tail: Arc::default(),
        }
    }

    /// The most memory the process has held resident so far (Linux's
    /// `VmHWM`), in bytes; `None` once it has exited or off Linux.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }

    /// The first line the function prints on stdout from now on that
    /// contains `needle` (its JSON log lines go there); `None` if it ends
    /// or `within` passes first.
    pub async fn stdout_line(&mut self, needle: &str, within: Duration) -> Option<String> {
        let lines = self.stdout.as_mut()?;
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        };
        tokio::time::timeout(within, find).await.ok().flatten()
    }

    /// Reads what the process prints from now on, so a long run never
    /// blocks it on a full pipe, keeping its last lines for
    /// [`Running::printed_tail`].
    pub fn keep_tail(&mut self) {
        const KEPT: usize = 40;
        let tail = self.tail.clone();
        let keep = move |line: String| {
            let mut tail = tail.lock().unwrap();
            if tail.len() == KEPT {
                tail.pop_front();
            }
            tail.push_back(line);
        };
        if let Some(mut lines) = self.stdout.take() {
            let keep = keep.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    keep(line);
                }
            });
        }
        if let Some(stderr) = self.child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    keep(line);
                }
            });
        }
    }

    /// The last lines printed since [`Running::keep_tail`].
    pub fn printed_tail(&self) -> String {
        let tail = self.tail.lock().unwrap();
        tail.iter().fold(String::new(), |out, l| out + l + "\n")
    }

    /// Whether the process has ended already, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to end by itself (bounded: 30 s) and returns
    /// its exit success and everything it printed.
    pub async fn finished(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the function exits")
            .unwrap();
        let mut out = String::new();
        if let Some(mut lines) = self.stdout.take() {
            while let Ok(Some(line)) = lines.next_line().await {
                out.push_str(&line);
                out.push('\n');
            }
        }
        if let Some(mut stderr) = self.child.stderr.take() {
            read_into(&mut stderr, &mut out).await;
        }
        (status.success(), out)
    }
}

async fn read_into(pipe: &mut (impl AsyncRead + Unpin), out: &mut String) {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes).await;
    out.push_str(&String::from_utf8_lossy(&bytes));
}

/// The DynamoDB table the functions use.
pub const TABLE: &str = "pacer-fn";

/// moto with the table, the queue and the secrets the functions read, and
/// the `PACER_*` configuration pointing at them.
pub struct Deployment {
    pub moto: Moto,
    pub sdk: aws_config::SdkConfig,
    pub queue_url: String,
    pub config: Vec<(&'static str, String)>,
}

impl Deployment {
    /// Everything in place, with `webhook_secret` in SSM as GitHub's
    /// webhook secret.
    pub async fn start(webhook_secret: &str) -> Deployment {
        pacer_shared::http_client::install_crypto_provider();
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let store = pacer_shared::store::dynamodb::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            TABLE.into(),
        );
        store.create_table().await.unwrap();
        let queue_url = aws_sdk_sqs::Client::new(&sdk)
            .create_queue()
            .queue_name("pacer-jobs")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let ssm = aws_sdk_ssm::Client::new(&sdk);
        for (name, value) in [
            ("/pacer/test/webhook-secret", webhook_secret),
            (
                "/pacer/test/callback-secret",
                "callback-hmac-secret-from-ssm-0123456789",
            ),
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
            ("PACER_DATABASE_TABLE", TABLE.into()),
            ("PACER_QUEUE_ENGINE", "sqs".into()),
            ("PACER_QUEUE_URL", queue_url.clone()),
            ("PACER_FLEET_ENGINE", "ec2".into()),
            ("PACER_GITHUB_DISABLED", "true".into()),
            (
                "PACER_SERVER_PUBLIC_URL",
                "https://abc123.execute-api.us-east-1.amazonaws.com".into(),
            ),
            (
                "PACER_GITHUB_WEBHOOK_SECRET",
                "ssm:/pacer/test/webhook-secret".into(),
            ),
            (
                "PACER_GITHUB_CALLBACK_HMAC_SECRET",
                "ssm:/pacer/test/callback-secret".into(),
            ),
            (
                "PACER_AUTH_JWT_SECRET",
                format!("secretsmanager:{}", jwt.arn().unwrap()),
            ),
            ("PACER_LOGGING_LEVEL", "info".into()),
        ];
        Deployment {
            moto,
            sdk,
            queue_url,
            config,
        }
    }

    /// The configuration without the secrets `function` does not need, as the
    /// template gives each function only its own.
    pub fn config_for(
        &self,
        function: pacer_shared::config::Function,
    ) -> Vec<(&'static str, String)> {
        let needed = function.secret_env_vars();
        let all = pacer_shared::config::Function::Serve.secret_env_vars();
        let unneeded = |var: &str| all.iter().any(|v| v == var) && !needed.iter().any(|v| v == var);
        self.config
            .iter()
            .filter(|(var, _)| !unneeded(var))
            .cloned()
            .collect()
    }
}
