//! `infra/runner/bootstrap.sh`, rendered into user data exactly as pacer
//! launches it, run for real with bash against a stub of pacer's three
//! runner callbacks (register, complete, error) on 127.0.0.1, with a stub
//! runner (`run.sh` records how it was called) and a stub power-off.
//!
//! As root (CI), the script must hand the runner to an unprivileged user:
//! the tests use `nobody`, which every Linux has, so they create no users.
//! As anyone else, the runner user is the current user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pacer_shared::config::Secret;
use pacer_shared::fleet::user_data;
use pacer_test_support::loopback::Loopback;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const TOKEN: &str = "cbt.runner-7.SIGNATURE-do-not-log";
const JIT: &str = "eyJKSVQiOiJzZWNyZXQtcnVubmVyLWNyZWRlbnRpYWxzIn0=";

#[derive(Debug, Clone)]
struct Call {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// pacer's runner callbacks as the issue specifies them, and a download
/// location for the runner tarball.
struct StubPacer {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    server: Loopback,
}

impl StubPacer {
    /// pacer answering `register_status`, and naming `tarball` with its true SHA-256.
    async fn start(register_status: StatusCode, tarball: Vec<u8>) -> StubPacer {
        let sha256 = hex::encode(Sha256::digest(&tarball));
        StubPacer::naming(register_status, tarball, Some(sha256)).await
    }

    /// The same, naming `sha256` (or, `None`, no checksum) for the download.
    async fn naming(
        register_status: StatusCode,
        tarball: Vec<u8>,
        sha256: Option<String>,
    ) -> StubPacer {
        let bound = Loopback::bind().await;
        let url = bound.url.clone();
        let download_url = format!("{url}/runner.tar.gz");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (recorded, download_url, tarball, sha256) =
                (Arc::clone(&recorded), download_url.clone(), tarball.clone(), sha256.clone());
            async move {
                let path = uri.path().to_string();
                let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                recorded.lock().unwrap().push(Call { path: path.clone(), authorization, body });
                let reply: Response = match path.as_str() {
                    "/api/runner/register" if register_status.is_success() => axum::Json(json!({
                        "encoded_jit_config": JIT, "runner_name": "pacer-run-7", "runner_version": "2.328.0",
                        "download_url": download_url, "sha256": sha256,
                    }))
                    .into_response(),
                    "/api/runner/register" => (register_status, "nope").into_response(),
                    "/api/runner/complete" | "/api/runner/error" => StatusCode::NO_CONTENT.into_response(),
                    "/runner.tar.gz" => tarball.into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                };
                reply
            }
        });
        let server = bound.serve(app);
        StubPacer { url, calls, server }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The log tail of the last call, an `/api/runner/error` report.
    fn reported_tail(&self) -> String {
        let last = self.calls().pop().expect("a call");
        assert_eq!(last.path, "/api/runner/error");
        last.body["log_tail"]
            .as_str()
            .expect("a log_tail string")
            .to_string()
    }

    fn paths(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|c| c.path)
            .filter(|p| p.starts_with("/api/"))
            .collect()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// A machine for the script: a runner directory, a log, a power switch.
pub(crate) struct Machine {
    dir: tempfile::TempDir,
    runner_user: String,
}

impl Machine {
    pub(crate) fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        // The runner user (nobody, under root) must reach the runner directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let runner_user = if whoami("-u") == "0" {
            "nobody".to_string()
        } else {
            whoami("-un")
        };
        Machine { dir, runner_user }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn runner_dir(&self) -> PathBuf {
        self.path("actions-runner")
    }

    /// An AMI that ships the runner: a `run.sh` that records its arguments
    /// and user, prints `output`, and exits with `status`.
    pub(crate) fn install_fake_runner(&self, output: &str, status: i32) {
        write_fake_runner(&self.runner_dir(), output, status);
    }

    /// The user data pacer would render, run as cloud-init would (but with
    /// the test's overrides), to completion.
    async fn boot(&self, pacer_url: &str, extra_env: &[(&str, &str)]) -> std::process::Output {
        self.boot_user_data(
            &user_data::render(pacer_url, &Secret::new(TOKEN)),
            extra_env,
        )
        .await
    }

    /// Runs the given user data (say, what EC2 holds for an instance).
    pub(crate) async fn boot_user_data(
        &self,
        user_data: &str,
        extra_env: &[(&str, &str)],
    ) -> std::process::Output {
        let script = self.path("user-data");
        std::fs::write(&script, user_data).unwrap();
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&script)
            .env("PACER_RUNNER_DIR", self.runner_dir())
            .env("PACER_RUNNER_USER", &self.runner_user)
            .env("PACER_LOG", self.path("bootstrap.log"))
            .env(
                "PACER_POWEROFF_CMD",
                format!("touch '{}'", self.path("powered-off").display()),
            )
            .env("PACER_REGISTER_TRIES", "3")
            .env("PACER_RETRY_DELAY", "0")
            .env("PACER_CURL_TIMEOUT", "10")
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("the bootstrap script finishes")
            .expect("bash runs")
    }

    pub(crate) fn powered_off(&self) -> bool {
        self.path("powered-off").exists()
    }

    pub(crate) fn runner_args(&self) -> Option<Vec<String>> {
        let args = std::fs::read_to_string(self.runner_dir().join("args.txt")).ok()?;
        Some(args.lines().map(str::to_string).collect())
    }

    fn runner_ran_as(&self) -> String {
        std::fs::read_to_string(self.runner_dir().join("user.txt"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("bootstrap.log")).unwrap_or_default()
    }
}

fn whoami(flag: &str) -> String {
    let out = std::process::Command::new("id")
        .arg(flag)
        .output()
        .expect("id runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn write_fake_runner(dir: &Path, output: &str, status: i32) {
    std::fs::create_dir_all(dir).unwrap();
    let run_sh = dir.join("run.sh");
    std::fs::write(
        &run_sh,
        format!(
            "#!/bin/sh\nhere=\"$(dirname \"$0\")\"\nprintf '%s\\n' \"$@\" > \"$here/args.txt\"\nid -un > \"$here/user.txt\"\n{output}\nexit {status}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&run_sh, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A runner release tarball holding the fake runner.
fn fake_runner_tarball() -> Vec<u8> {
    let staging = tempfile::tempdir().unwrap();
    write_fake_runner(staging.path(), "echo fake runner from the tarball", 0);
    let tarball = staging.path().join("runner.tar.gz");
    let status = std::process::Command::new("tar")
        .args([
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            staging.path().to_str().unwrap(),
            "run.sh",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(tarball).unwrap()
}

fn assert_no_secrets(what: &str, text: &str) {
    assert!(
        !text.contains(TOKEN),
        "{what} holds the callback token:\n{text}"
    );
    assert!(!text.contains(JIT), "{what} holds the JIT config:\n{text}");
}

fn bearer() -> Option<String> {
    Some(format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn the_script_registers_runs_the_runner_reports_completion_and_powers_off() {
    // Given an AMI with the runner installed and pacer answering
    let pacer = StubPacer::start(StatusCode::OK, Vec::new()).await;
    let machine = Machine::new();
    machine.install_fake_runner("echo runner says hi", 0);

    // When the instance boots
    let out = machine.boot(&pacer.url, &[]).await;

    // Then it registered with its token, as linux on this architecture
    let calls = pacer.calls();
    assert_eq!(
        pacer.paths(),
        ["/api/runner/register", "/api/runner/complete"],
        "{}",
        machine.log()
    );
    assert_eq!(calls[0].authorization, bearer());
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "x64"
    };
    assert_eq!(calls[0].body, json!({"os": "linux", "arch": arch}));
    // ran the runner with the JIT config, as an unprivileged user
    assert_eq!(
        machine.runner_args(),
        Some(vec!["--jitconfig".to_string(), JIT.to_string()])
    );
    assert_eq!(machine.runner_ran_as(), machine.runner_user);
    // reported completion with the same token, and powered off
    assert_eq!(calls[1].authorization, bearer());
    assert!(machine.powered_off());
    // without ever printing a secret
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secrets("the script's output", &printed);
    assert_no_secrets("the bootstrap log", &machine.log());
    assert!(
        machine.log().contains("registered as runner pacer-run-7"),
        "{}",
        machine.log()
    );
    pacer.stop().await;
}

#[tokio::test]
async fn without_a_runner_in_place_the_script_downloads_the_one_pacer_names_and_checks_it() {
    let pacer = StubPacer::start(StatusCode::OK, fake_runner_tarball()).await;
    let machine = Machine::new();

    machine.boot(&pacer.url, &[]).await;

    assert!(
        pacer.calls().iter().any(|c| c.path == "/runner.tar.gz"),
        "downloaded from download_url"
    );
    assert!(
        machine
            .log()
            .contains("the runner download matches SHA-256"),
        "{}",
        machine.log()
    );
    assert_eq!(
        machine.runner_args(),
        Some(vec!["--jitconfig".to_string(), JIT.to_string()]),
        "{}",
        machine.log()
    );
    assert_eq!(
        pacer.paths(),
        ["/api/runner/register", "/api/runner/complete"]
    );
    assert!(machine.powered_off());
    pacer.stop().await;
}

#[tokio::test]
async fn a_download_that_does_not_match_its_checksum_is_never_unpacked_and_is_reported() {
    // Given pacer naming the checksum of another tarball than the one served
    let named = hex::encode(Sha256::digest(b"the release's real tarball"));
    let served = fake_runner_tarball();
    let actual = hex::encode(Sha256::digest(&served));
    let pacer = StubPacer::naming(StatusCode::OK, served, Some(named.clone())).await;
    let machine = Machine::new();

    machine.boot(&pacer.url, &[]).await;

    // Then it downloaded, refused to unpack, ran nothing, and said why
    assert!(pacer.calls().iter().any(|c| c.path == "/runner.tar.gz"));
    assert!(!machine.runner_dir().exists(), "nothing was unpacked");
    assert_eq!(machine.runner_args(), None, "the runner never ran");
    assert_eq!(pacer.paths(), ["/api/runner/register", "/api/runner/error"]);
    let tail = pacer.reported_tail();
    assert!(
        tail.contains("the runner download's SHA-256 does not match"),
        "{tail}"
    );
    assert!(
        tail.contains(&format!("expected {named}, got {actual}")),
        "{tail}"
    );
    assert_no_secrets("the log tail", &tail);
    assert!(machine.powered_off());
    pacer.stop().await;
}

#[tokio::test]
async fn a_download_without_a_checksum_is_refused_before_it_starts() {
    let pacer = StubPacer::naming(StatusCode::OK, fake_runner_tarball(), None).await;
    let machine = Machine::new();

    machine.boot(&pacer.url, &[]).await;

    assert!(
        !pacer.calls().iter().any(|c| c.path == "/runner.tar.gz"),
        "nothing was downloaded"
    );
    assert!(!machine.runner_dir().exists(), "nothing was unpacked");
    assert_eq!(machine.runner_args(), None);
    assert_eq!(pacer.paths(), ["/api/runner/register", "/api/runner/error"]);
    let tail = pacer.reported_tail();
    assert!(
        tail.contains("pacer named no SHA-256 for the runner download"),
        "{tail}"
    );
    assert!(machine.powered_off());
    pacer.stop().await;
}

#[tokio::test]
async fn a_runner_baked_into_the_ami_is_trusted_as_the_ami_is() {
    // Given an AMI with the runner, and no checksum from pacer
    let pacer = StubPacer::naming(StatusCode::OK, Vec::new(), None).await;
    let machine = Machine::new();
    machine.install_fake_runner("", 0);

    machine.boot(&pacer.url, &[]).await;

    // Then there is nothing to download or verify: it runs
    assert_eq!(
        pacer.paths(),
        ["/api/runner/register", "/api/runner/complete"]
    );
    assert!(machine.runner_args().is_some());
    assert!(
        machine.log().contains("baked into the AMI"),
        "{}",
        machine.log()
    );
    pacer.stop().await;
}

#[tokio::test]
async fn a_register_that_keeps_failing_is_retried_then_reported_and_the_machine_powers_off() {
    // Given pacer answering 500 to every register
    let pacer = StubPacer::start(StatusCode::INTERNAL_SERVER_ERROR, Vec::new()).await;
    let machine = Machine::new();
    machine.install_fake_runner("", 0);

    machine.boot(&pacer.url, &[]).await;

    // Then it tried three times, reported the failure with its log tail, and powered off
    assert_eq!(
        pacer.paths(),
        [
            "/api/runner/register",
            "/api/runner/register",
            "/api/runner/register",
            "/api/runner/error"
        ]
    );
    let error = pacer.calls().pop().unwrap();
    assert_eq!(error.authorization, bearer());
    let tail = error.body["log_tail"].as_str().expect("a log_tail string");
    assert!(
        tail.contains("register: gave up after 3 attempts"),
        "{tail}"
    );
    assert_no_secrets("the log tail", tail);
    assert_eq!(machine.runner_args(), None, "the runner never ran");
    assert!(machine.powered_off());
    pacer.stop().await;
}

#[tokio::test]
async fn a_refused_register_is_not_retried() {
    let pacer = StubPacer::start(StatusCode::UNAUTHORIZED, Vec::new()).await;
    let machine = Machine::new();
    machine.install_fake_runner("", 0);

    machine.boot(&pacer.url, &[]).await;

    assert_eq!(pacer.paths(), ["/api/runner/register", "/api/runner/error"]);
    let tail = pacer.reported_tail();
    assert!(tail.contains("refused with HTTP 401"), "{tail}");
    assert!(machine.powered_off());
    pacer.stop().await;
}

#[tokio::test]
async fn a_failing_runner_is_reported_with_a_redacted_log_tail() {
    // Given a runner that prints its arguments (the JIT config) and fails
    let pacer = StubPacer::start(StatusCode::OK, Vec::new()).await;
    let machine = Machine::new();
    machine.install_fake_runner("echo \"runner crashed; args: $*\"", 1);

    machine.boot(&pacer.url, &[]).await;

    // Then /error gets the tail of the log, the JIT config and token blanked out
    assert_eq!(pacer.paths(), ["/api/runner/register", "/api/runner/error"]);
    let tail = pacer.reported_tail();
    assert!(tail.contains("run.sh exited with status 1"), "{tail}");
    assert!(
        tail.contains("runner crashed; args: --jitconfig [redacted]"),
        "{tail}"
    );
    assert_no_secrets("the log tail", &tail);
    assert!(
        tail.len() <= 4096 + 64,
        "about the last 4 KB: {} bytes",
        tail.len()
    );
    assert!(machine.powered_off());
    pacer.stop().await;
}

#[tokio::test]
async fn the_runner_is_never_started_as_root() {
    let pacer = StubPacer::start(StatusCode::OK, Vec::new()).await;
    let machine = Machine::new();
    machine.install_fake_runner("", 0);

    machine
        .boot(&pacer.url, &[("PACER_RUNNER_USER", "root")])
        .await;

    assert_eq!(machine.runner_args(), None, "run.sh did not run");
    assert_eq!(pacer.paths(), ["/api/runner/register", "/api/runner/error"]);
    let tail = pacer.reported_tail();
    assert!(tail.contains("root") && tail.contains("FAILED"), "{tail}");
    assert!(machine.powered_off());
    pacer.stop().await;
}
