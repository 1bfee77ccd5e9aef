//! `infra/self-service/pacer-runner.sh`, the machine side of self-service
//! runners, run for real with bash against pacer stood up as
//! `self_service.rs` does (workload tokens from the test IdP, GitHub played
//! by the OpenAPI-checked fake). The machine's actions/runner is a fake
//! `run.sh` that records how it was started (arguments, environment,
//! stdin); its tokens come from a token command handing out, once each,
//! tokens the test minted, or from a stand-in for GitHub Actions' ID token
//! endpoint. Nothing is ever downloaded: every test either installs the
//! fake runner or forbids downloads.
//!
//! Waits are on events (a FIFO the fake runner writes, a proxy holding an
//! answer), never on time; the timeouts only keep a broken script from
//! hanging the suite.

use std::collections::HashMap;
use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use pacer_shared::domain::self_service::{SecurityEventKind, SelfRunnerStatus};
use pacer_test_support::loopback::Loopback;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use crate::fake_github::{FakeRunner, FakeTarget};
use crate::self_service::{AUDIENCE, ORG, World, world};

const SCRIPT: &str = "infra/self-service/pacer-runner.sh";
/// Long enough for any honest run; only a hung script meets it.
const HANG: Duration = Duration::from_secs(120);

fn script_path() -> PathBuf {
    pacer_test_support::in_repo(SCRIPT)
}

/// The machine an owner runs the script on: a runner directory, a token
/// command with its supply of tokens.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        std::fs::create_dir_all(dir.path().join("used")).unwrap();
        let command = dir.path().join("next-token.sh");
        std::fs::write(
            &command,
            "#!/bin/sh\n\
             # Hands out the next token the test minted, each once.\n\
             dir=\"$(dirname \"$0\")\"\n\
             for f in \"$dir\"/tokens/*; do\n\
             \x20 [ -e \"$f\" ] || break\n\
             \x20 mv \"$f\" \"$dir/used/\" && cat \"$dir/used/${f##*/}\"\n\
             \x20 exit 0\n\
             done\n\
             echo 'no tokens left' >&2\n\
             exit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o755)).unwrap();
        Machine { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn runner_dir(&self) -> PathBuf {
        self.path("actions-runner")
    }

    fn token_command(&self) -> String {
        self.path("next-token.sh").display().to_string()
    }

    /// Tokens for the token command, handed out in this order.
    fn give_tokens(&self, tokens: &[String]) {
        let already = std::fs::read_dir(self.path("tokens")).unwrap().count()
            + std::fs::read_dir(self.path("used")).unwrap().count();
        for (i, token) in tokens.iter().enumerate() {
            let name = format!("{:04}", already + i);
            std::fs::write(self.path("tokens").join(name), token).unwrap();
        }
    }

    /// The tokens the token command handed out, in order.
    fn tokens_used(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(self.path("used"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// A fake actions/runner: `run.sh` records its arguments (one a line),
    /// its environment, its stdin and every configuration it was given in
    /// its environment (`configs.txt`, one a line, across runs), then runs
    /// `then`.
    fn install_fake_runner(&self, then: &str) {
        let dir = self.runner_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let run_sh = dir.join("run.sh");
        std::fs::write(
            &run_sh,
            format!(
                "#!/bin/sh\n\
                 here=\"$(pwd)\"\n\
                 for arg in \"$@\"; do printf '%s\\n' \"$arg\"; done > \"$here/args.txt\"\n\
                 env > \"$here/env.txt\"\n\
                 cat > \"$here/stdin.txt\"\n\
                 printf '%s\\n' \"${{ACTIONS_RUNNER_INPUT_JITCONFIG:-}}\" >> \"$here/configs.txt\"\n\
                 {then}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&run_sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A FIFO in the runner directory the fake runner can write to, and
    /// the test's end of it (opened read-write: it never reads EOF).
    fn fifo(&self, name: &str) -> tokio::net::unix::pipe::Receiver {
        let path = self.runner_dir().join(name);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo");
        tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .unwrap()
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.runner_dir().join(name)).ok()
    }

    /// run.sh's arguments, if it ran.
    fn runner_args(&self) -> Option<Vec<String>> {
        Some(self.read("args.txt")?.lines().map(str::to_string).collect())
    }

    /// run.sh's environment, if it ran.
    fn runner_env(&self) -> Option<HashMap<String, String>> {
        Some(
            self.read("env.txt")?
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The configuration of each run, in order, as run.sh's environment held it.
    fn configs_run(&self) -> Vec<String> {
        self.read("configs.txt")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The script, with only the environment given here (and PATH): what
    /// the test process has (a CI job's ACTIONS_* say) never leaks in.
    fn start(&self, pacer_url: &str, env: &[(&str, &str)]) -> Running {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(script_path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("PACER_URL", pacer_url)
            .env("PACER_TOKEN_COMMAND", self.token_command())
            .env("PACER_RUNNER_DIR", self.runner_dir())
            .env("PACER_RUNNER_DOWNLOAD", "0")
            .env("PACER_ONCE", "1")
            .env("PACER_RETRY_DELAY", "0")
            .env("PACER_TRIES", "3")
            .env("PACER_CURL_TIMEOUT", "30")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Running::spawn(cmd)
    }

    async fn run(&self, pacer_url: &str, env: &[(&str, &str)]) -> Finished {
        self.start(pacer_url, env).finish().await
    }
}

/// The script, running; its output is read as it comes.
struct Running {
    child: tokio::process::Child,
    stdout: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn printed(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Running {
    fn spawn(mut cmd: tokio::process::Command) -> Running {
        let mut child = cmd.spawn().expect("bash runs");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stdout = tokio::spawn(async move {
            let mut s = String::new();
            out.read_to_string(&mut s).await.unwrap();
            s
        });
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            err.read_to_string(&mut s).await.unwrap();
            s
        });
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Sends the script (only the script's own process) a signal.
    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the script is running");
        let sent = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// Waits for a line on `fifo`, failing if the script ends first.
    async fn until_line(&mut self, fifo: &mut tokio::net::unix::pipe::Receiver, what: &str) {
        let mut buf = [0u8; 64];
        let waited = tokio::time::timeout(HANG, async {
            tokio::select! {
                n = fifo.read(&mut buf) => { n.unwrap(); None }
                status = self.child.wait() => Some(status),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: the script hung"));
        if let Some(status) = waited {
            let stderr = std::mem::replace(&mut self.stderr, tokio::spawn(async { String::new() }))
                .await
                .unwrap();
            panic!("the script ended ({status:?}) before {what}:\n{stderr}");
        }
    }

    async fn finish(mut self) -> Finished {
        let status = tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the script finishes")
            .unwrap();
        Finished {
            code: status.code(),
            stdout: self.stdout.await.unwrap(),
            stderr: self.stderr.await.unwrap(),
        }
    }
}

/// The runner name the script asked for, before pacer's prefix: the base,
/// six hex digits, a counter.
fn assert_named(name: &str, prefix_and_base: &str, counter: usize) {
    let rest = name
        .strip_prefix(prefix_and_base)
        .and_then(|r| r.strip_prefix('-'))
        .unwrap_or_else(|| panic!("{name} does not start with {prefix_and_base}-"));
    let (random, n) = rest.split_once('-').unwrap_or_else(|| panic!("{name}"));
    assert!(
        random.len() == 6 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(n, counter.to_string(), "{name}");
}

fn assert_no_secrets(printed: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "the script printed a secret:\n{printed}"
        );
    }
}

fn sorted(labels: &[String]) -> Vec<String> {
    let mut labels = labels.to_vec();
    labels.sort();
    labels
}

async fn runner_status(w: &World, name: &str) -> SelfRunnerStatus {
    w.pacer
        .ports
        .store
        .get_self_runner(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("pacer has no runner {name}"))
        .status
}

fn tokens(w: &World, n: usize) -> Vec<String> {
    (0..n).map(|_| w.token()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_runs_with_exactly_the_configuration_pacer_issued_then_its_runner_is_deleted() {
    // Given pacer, and a machine with a runner and three tokens
    let w = world().await;
    let m = Machine::new();
    m.install_fake_runner("exit 0");
    let minted = tokens(&w, 3);
    m.give_tokens(&minted);

    // When the script serves one job
    let out = m
        .run(
            &w.pacer.base,
            &[
                ("PACER_LABELS", " gpu, cuda-12 ,"),
                ("PACER_RUNNER_NAME", "build-box"),
                ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "/opt/hooks/started.sh"),
            ],
        )
        .await;
    assert_eq!(out.code, Some(0), "{}", out.printed());

    // Then GitHub registered one runner, in the identity's org, with the
    // labels asked for and the policy's
    let registered = w.github.jit_registered();
    assert_eq!(registered.len(), 1, "{}", out.printed());
    let runner: &FakeRunner = &registered[0];
    assert_eq!(runner.target, FakeTarget::org(ORG));
    assert_eq!(
        sorted(&runner.labels),
        ["cuda-12", "gpu", "on-prem", "self-hosted"]
    );
    assert_named(&runner.name, "ci-build-box", 1);

    // run.sh got exactly the configuration pacer issued for it, in its
    // environment and nowhere on its command line or stdin
    let env = m.runner_env().expect("run.sh ran");
    assert_eq!(
        env.get("ACTIONS_RUNNER_INPUT_JITCONFIG"),
        Some(&runner.encoded_jit_config)
    );
    assert_eq!(m.runner_args(), Some(vec![]));
    assert_eq!(m.read("stdin.txt").as_deref(), Some(""));
    // without the script's settings, but with the runner's own
    assert!(!env.contains_key("PACER_TOKEN_COMMAND"), "{env:?}");
    assert!(!env.contains_key("PACER_URL"), "{env:?}");
    assert_eq!(
        env.get("ACTIONS_RUNNER_HOOK_JOB_STARTED")
            .map(String::as_str),
        Some("/opt/hooks/started.sh")
    );

    // The spent runner was deleted, in pacer and on GitHub
    assert_eq!(
        runner_status(&w, &runner.name).await,
        SelfRunnerStatus::Deleted
    );
    assert!(w.github.runner(runner.id).is_none());
    // with one token a request: provision, delete
    assert_eq!(m.tokens_used(), minted[..2]);

    // and the script printed neither a token nor the configuration
    let mut secrets = minted.clone();
    secrets.push(runner.encoded_jit_config.clone());
    assert_no_secrets(&out.printed(), &secrets);
    assert!(
        out.stderr
            .contains(&format!("provisioned runner {}", runner.name)),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_goes_on_the_command_line_only_when_asked() {
    let w = world().await;
    let m = Machine::new();
    m.install_fake_runner("exit 0");
    m.give_tokens(&tokens(&w, 2));

    let out = m
        .run(
            &w.pacer.base,
            &[("PACER_LABELS", "gpu"), ("PACER_JITCONFIG_VIA", "argv")],
        )
        .await;
    assert_eq!(out.code, Some(0), "{}", out.printed());

    let registered = w.github.jit_registered();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        m.runner_args(),
        Some(vec![
            "--jitconfig".to_string(),
            registered[0].encoded_jit_config.clone()
        ])
    );
    let env = m.runner_env().unwrap();
    assert!(!env.contains_key("ACTIONS_RUNNER_INPUT_JITCONFIG"));
    assert_no_secrets(&out.printed(), &[registered[0].encoded_jit_config.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_outside_the_policy_stops_the_script_with_pacers_message_and_no_runner_starts() {
    // What pacer says of the label, asked directly
    let w = world().await;
    let (status, body) = w.provision(&w.token(), "probe", &["windows"]).await;
    assert_eq!(status, 403, "{body}");
    let message = body["message"].as_str().unwrap().to_string();

    let m = Machine::new();
    m.install_fake_runner("exit 0");
    m.give_tokens(&tokens(&w, 3));

    let out = m
        .run(&w.pacer.base, &[("PACER_LABELS", "gpu,windows")])
        .await;

    assert_eq!(out.code, Some(1), "{}", out.printed());
    assert!(out.stderr.contains("HTTP 403"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&message),
        "pacer's message {message:?} in:\n{}",
        out.stderr
    );
    assert_eq!(m.runner_args(), None, "run.sh never ran");
    assert!(w.github.jit_registered().is_empty());
    assert_eq!(m.tokens_used().len(), 1, "a refusal is not retried");
    assert_eq!(w.events(SecurityEventKind::LabelPolicy).await.len(), 2);
}

/// A request for a token: its `Authorization` header and its query.
type TokenRequest = (Option<String>, Option<String>);

/// GitHub Actions' ID token endpoint for one job: it wants the job's
/// request token as a bearer, and answers `{"count", "value"}` with a fresh
/// token from the test IdP each time.
struct ActionsTokens {
    url: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    server: Loopback,
}

const REQUEST_TOKEN: &str = "actions-request-token-SECRET-0123456789";

impl ActionsTokens {
    async fn start(world: Arc<World>) -> ActionsTokens {
        let bound = Loopback::bind().await;
        let url = format!("{}/_apis/idtoken?api-version=2.0", bound.url);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let app = axum::Router::new().route(
            "/_apis/idtoken",
            axum::routing::get(move |uri: Uri, headers: HeaderMap| {
                let (world, seen) = (Arc::clone(&world), Arc::clone(&seen));
                async move {
                    let authorization = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    seen.lock()
                        .unwrap()
                        .push((authorization.clone(), uri.query().map(str::to_string)));
                    if authorization.as_deref() != Some(&format!("bearer {REQUEST_TOKEN}")) {
                        return (StatusCode::UNAUTHORIZED, "bad request token").into_response();
                    }
                    let token = world.token();
                    axum::Json(json!({"count": token.len(), "value": token})).into_response()
                }
            }),
        );
        let server = bound.serve(app);
        ActionsTokens {
            url,
            requests,
            server,
        }
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_github_actions_each_request_gets_a_fresh_token_for_pacers_audience() {
    let w = Arc::new(world().await);
    let actions = ActionsTokens::start(Arc::clone(&w)).await;
    let m = Machine::new();
    m.install_fake_runner("exit 0");

    let settings = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", actions.url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN),
        ("PACER_AUDIENCE", AUDIENCE),
        ("PACER_LABELS", "gpu"),
        // No token command: the job's endpoint is the source.
        ("PACER_TOKEN_COMMAND", ""),
    ];
    let out = m.run(&w.pacer.base, &settings).await;
    assert_eq!(out.code, Some(0), "{}", out.printed());

    // Two requests to pacer (provision, delete), two tokens, each asked
    // with the job's request token, for pacer's audience, the endpoint's
    // own query kept
    let requests = actions.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (authorization, query) in &requests {
        assert_eq!(
            authorization.as_deref(),
            Some(format!("bearer {REQUEST_TOKEN}").as_str())
        );
        assert_eq!(
            query.as_deref(),
            Some(format!("api-version=2.0&audience={AUDIENCE}").as_str())
        );
    }
    let registered = w.github.jit_registered();
    assert_eq!(registered.len(), 1);
    let env = m.runner_env().unwrap();
    assert_eq!(
        env.get("ACTIONS_RUNNER_INPUT_JITCONFIG"),
        Some(&registered[0].encoded_jit_config)
    );
    // The job's credentials stay out of the runner, and out of the output
    assert!(
        !env.contains_key("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
            && !env.contains_key("ACTIONS_ID_TOKEN_REQUEST_URL"),
        "{env:?}"
    );
    assert_no_secrets(
        &out.printed(),
        &[
            REQUEST_TOKEN.to_string(),
            registered[0].encoded_jit_config.clone(),
        ],
    );
    assert_eq!(
        runner_status(&w, &registered[0].name).await,
        SelfRunnerStatus::Deleted
    );
    actions.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_loop_every_job_gets_a_new_runner_and_sigterm_stops_the_one_at_work_and_deletes_it() {
    // Given an identity allowed two live runners, and a runner that serves
    // two jobs and, at the third, says so and works until stopped
    let w = world().await;
    let m = Machine::new();
    m.install_fake_runner(
        "n=$(wc -l < \"$here/configs.txt\")\n\
         [ \"$n\" -lt 3 ] && exit 0\n\
         sleep 600 &\n\
         sleeper=$!\n\
         trap 'kill $sleeper; echo stopped > \"$here/stopped.txt\"; exit 143' TERM\n\
         echo working > \"$here/working.fifo\"\n\
         wait $sleeper",
    );
    let mut working = m.fifo("working.fifo");
    let minted = tokens(&w, 8);
    m.give_tokens(&minted);

    // When the script loops
    let mut script = m.start(
        &w.pacer.base,
        &[("PACER_ONCE", "0"), ("PACER_RUNNER_NAME", "loop")],
    );
    script.until_line(&mut working, "the third job").await;
    script.signal("TERM");
    let out = script.finish().await;

    // Then it stopped as SIGTERM asks, after stopping the runner
    assert_eq!(out.code, Some(143), "{}", out.printed());
    assert_eq!(m.read("stopped.txt").as_deref(), Some("stopped\n"));
    // Three runners, one a job, each under a new name, each given its own
    // configuration: the spent ones were deleted, so a limit of two never
    // stopped the third
    let registered = w.github.jit_registered();
    assert_eq!(registered.len(), 3, "{}", out.printed());
    for (i, runner) in registered.iter().enumerate() {
        assert_named(&runner.name, "ci-loop", i + 1);
        assert_eq!(
            runner_status(&w, &runner.name).await,
            SelfRunnerStatus::Deleted,
            "{}",
            runner.name
        );
        assert!(w.github.runner(runner.id).is_none());
    }
    let issued: Vec<String> = registered
        .iter()
        .map(|r| r.encoded_jit_config.clone())
        .collect();
    assert_eq!(m.configs_run(), issued);
    assert!(w.events(SecurityEventKind::OverLimit).await.is_empty());
    // Provision and delete for each: six tokens, each once
    assert_eq!(m.tokens_used(), minted[..6]);
    let mut secrets = minted.clone();
    secrets.extend(issued);
    assert_no_secrets(&out.printed(), &secrets);
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Value,
    status: u16,
}

struct ProxyState {
    pacer: String,
    http: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
    /// Provisions to answer 503 without asking pacer.
    unavailable: AtomicUsize,
    /// Hold pacer's answer to the next provision: say so, wait for the go.
    hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// pacer behind a proxy on 127.0.0.1: it records every request, can answer
/// provisions 503 itself (a load balancer while pacer restarts), and can
/// hold pacer's answer to a provision until the test lets it go.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    server: Loopback,
}

impl Proxy {
    async fn start(pacer: &str) -> Proxy {
        let bound = Loopback::bind().await;
        let url = bound.url.clone();
        let state = Arc::new(ProxyState {
            pacer: pacer.to_string(),
            http: reqwest::Client::new(),
            seen: Mutex::new(Vec::new()),
            unavailable: AtomicUsize::new(0),
            hold: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let server = bound.serve(app);
        Proxy { url, state, server }
    }

    /// Holds pacer's answer to the next provision: the first receiver
    /// fires when pacer has answered, the sender lets the answer go.
    fn hold_next_provision(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (held, on_held) = oneshot::channel();
        let (release, on_release) = oneshot::channel();
        *self.state.hold.lock().unwrap() = Some((held, on_release));
        (on_held, release)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn routes(&self) -> Vec<(String, String, u16)> {
        self.seen()
            .into_iter()
            .map(|s| (s.method, s.path, s.status))
            .collect()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

async fn forward(
    State(p): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let record = |status: u16| Seen {
        method: method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    };
    let provision = path == "/api/v1/runners/provision";
    if provision
        && p.unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        p.seen.lock().unwrap().push(record(503));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "unavailable", "message": "pacer is restarting"})),
        )
            .into_response();
    }
    let target = format!(
        "{}{}",
        p.pacer,
        uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
    );
    let mut request = p.http.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
        target,
    );
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = request.body(body.to_vec()).send().await.unwrap();
    let status = answer.status().as_u16();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap();
    p.seen.lock().unwrap().push(record(status));
    if provision {
        let hold = p.hold.lock().unwrap().take();
        if let Some((held, release)) = hold {
            held.send(()).ok();
            release.await.ok();
        }
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), bytes).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_provisioning_deletes_the_runner_that_never_ran() {
    // Given pacer's answer to the provision held on its way back
    let w = world().await;
    let proxy = Proxy::start(&w.pacer.base).await;
    let (held, release) = proxy.hold_next_provision();
    let m = Machine::new();
    m.install_fake_runner("exit 0");
    let minted = tokens(&w, 3);
    m.give_tokens(&minted);

    // When SIGTERM arrives while the request is in flight
    let script = m.start(&proxy.url, &[("PACER_LABELS", "gpu")]);
    tokio::time::timeout(HANG, held)
        .await
        .expect("the script provisions")
        .unwrap();
    script.signal("TERM");
    release.send(()).unwrap();
    let out = script.finish().await;

    // Then the script learnt the runner's name from the answer, never
    // started it, and deleted it with a fresh token
    assert_eq!(out.code, Some(143), "{}", out.printed());
    assert_eq!(m.runner_args(), None, "run.sh never ran");
    let registered = w.github.jit_registered();
    assert_eq!(registered.len(), 1);
    let name = &registered[0].name;
    assert_eq!(
        proxy.routes(),
        [
            (
                "POST".to_string(),
                "/api/v1/runners/provision".to_string(),
                201
            ),
            ("DELETE".to_string(), format!("/api/v1/runners/{name}"), 200),
        ]
    );
    assert_eq!(runner_status(&w, name).await, SelfRunnerStatus::Deleted);
    assert!(w.github.runner(registered[0].id).is_none());
    assert_eq!(m.tokens_used(), minted[..2]);
    assert!(
        out.stderr.contains(&format!("not starting runner {name}")),
        "{}",
        out.stderr
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_pacer_is_asked_again_with_a_fresh_token_and_a_new_name() {
    let w = world().await;
    let proxy = Proxy::start(&w.pacer.base).await;
    proxy.state.unavailable.store(2, Ordering::SeqCst);
    let m = Machine::new();
    m.install_fake_runner("exit 0");
    m.give_tokens(&tokens(&w, 5));

    let out = m
        .run(
            &proxy.url,
            &[("PACER_LABELS", "gpu"), ("PACER_RUNNER_NAME", "retry")],
        )
        .await;
    assert_eq!(out.code, Some(0), "{}", out.printed());

    let provisions: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path == "/api/v1/runners/provision")
        .collect();
    let statuses: Vec<u16> = provisions.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 201]);
    for (i, p) in provisions.iter().enumerate() {
        assert_named(p.body["runner_name"].as_str().unwrap(), "retry", i + 1);
        assert_eq!(p.body["labels"], json!(["gpu"]));
        assert_eq!(p.body["ephemeral"], json!(true));
    }
    let mut bearers: Vec<_> = provisions.iter().map(|p| p.authorization.clone()).collect();
    bearers.dedup();
    assert_eq!(bearers.len(), 3, "a fresh token each time");
    assert!(
        out.stderr
            .contains("attempt 1 of 3: HTTP 503: pacer is restarting"),
        "{}",
        out.stderr
    );
    let registered = w.github.jit_registered();
    assert_eq!(registered.len(), 1);
    assert_eq!(m.configs_run(), [registered[0].encoded_jit_config.clone()]);
    assert_eq!(m.tokens_used().len(), 4, "three provisions and a delete");
    proxy.stop().await;
}

/// A port on 127.0.0.1 for a pacer that must never be called: bound, so
/// nothing else takes it, and checked for connections at the end.
struct Untouched(StdTcpListener);

impl Untouched {
    fn new() -> Untouched {
        let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Untouched(listener)
    }

    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }

    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("pacer was called: {other:?}"),
        }
    }
}

#[tokio::test]
async fn without_a_runner_and_with_downloads_off_nothing_is_asked_of_anyone() {
    let pacer = Untouched::new();
    let m = Machine::new();
    m.give_tokens(&["never.used.token".to_string()]);

    let out = m.run(&pacer.url(), &[]).await;

    assert_eq!(out.code, Some(1), "{}", out.printed());
    assert!(
        out.stderr.contains("holds no executable run.sh")
            && out.stderr.contains("PACER_RUNNER_DOWNLOAD=0"),
        "{}",
        out.stderr
    );
    assert!(m.tokens_used().is_empty(), "no token was taken");
    assert!(!m.runner_dir().exists(), "nothing was unpacked");
    pacer.assert_untouched();
}

#[tokio::test]
async fn a_failing_token_command_stops_the_script_before_pacer_is_asked() {
    let pacer = Untouched::new();
    let m = Machine::new();
    m.install_fake_runner("exit 0");

    let out = m
        .run(
            &pacer.url(),
            &[("PACER_TOKEN_COMMAND", "echo 'idp down' >&2; exit 3")],
        )
        .await;

    assert_eq!(out.code, Some(1), "{}", out.printed());
    assert!(
        out.stderr
            .contains("PACER_TOKEN_COMMAND failed with status 3"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("idp down"),
        "the command's own error: {}",
        out.stderr
    );
    assert_eq!(m.runner_args(), None);
    pacer.assert_untouched();
}

/// Every `PACER_…` and `ACTIONS_ID_TOKEN_REQUEST_…` name in the script.
fn variables_read(script: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["PACER_", "ACTIONS_ID_TOKEN_REQUEST_"] {
        for (at, _) in script.match_indices(prefix) {
            let name: String = script[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > prefix.len() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[tokio::test]
async fn help_names_every_variable_and_a_missing_tool_is_named() {
    let text = std::fs::read_to_string(script_path()).unwrap();
    let variables = variables_read(&text);
    assert!(
        variables.len() >= 15,
        "the scan found the script's variables: {variables:?}"
    );

    let help = tokio::process::Command::new("bash")
        .arg(script_path())
        .arg("--help")
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for name in &variables {
        assert!(help.contains(name.as_str()), "--help misses {name}");
    }
    assert!(help.contains("id-token: write"), "the Actions example");
    assert!(
        help.contains("PACER_TOKEN_COMMAND='"),
        "the command example"
    );

    // A PATH with curl and without jq
    let bin = tempfile::tempdir().unwrap();
    let curl = which("curl");
    std::os::unix::fs::symlink(curl, bin.path().join("curl")).unwrap();
    let out = tokio::process::Command::new(which("bash"))
        .arg(script_path())
        .env_clear()
        .env("PATH", bin.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("jq is required but not installed"),
        "{stderr}"
    );
}

fn which(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| PathBuf::from(dir).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is on PATH"))
}
