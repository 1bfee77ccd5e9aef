//! The `pacer` binary as an operator runs it: version, config errors that
//! name the key, `serve --init` on a fresh directory, SIGTERM, restart.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub fn pacer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pacer"))
}

/// A `pacer` command with no inherited PACER_* variables (they would
/// change the config under test).
pub fn pacer() -> Command {
    let mut cmd = Command::new(pacer_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("PACER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `pacer serve`, killed on drop if the test did not stop it.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
    /// What the process wrote to stderr (the bootstrap banner among it).
    pub stderr_path: PathBuf,
    /// A session for the bootstrap admin, when console auth is on.
    pub token: Option<String>,
}

/// The bootstrap admin's email in the config `serve --init` writes.
pub const BOOTSTRAP_EMAIL: &str = "admin@localhost";

/// The password in a bootstrap banner, if `text` holds one.
pub fn banner_password(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .map(str::to_string)
}

impl Served {
    /// Starts `pacer serve --init` and, with console auth on, signs in as the
    /// bootstrap admin — whose password the first start printed once and the
    /// harness kept beside the config.
    pub async fn start(config: &Path, extra_env: &[(&str, &str)]) -> Served {
        pacer_shared::http_client::install_crypto_provider();
        let port = free_port();
        let dir = config.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let stderr_path = dir.join(format!("stderr-{port}.log"));
        let mut cmd = pacer();
        cmd.args(["serve", "--init", "--config"])
            .arg(config)
            .env("PACER_SERVER_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn pacer");
        let mut served = Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            stderr_path,
            token: None,
        };
        for _ in 0..400 {
            if let Ok(res) = served
                .http
                .get(format!("{}/healthz", served.base))
                .send()
                .await
            {
                if res.status().is_success() {
                    served.sign_in_as_bootstrap_admin(&dir).await;
                    return served;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pacer did not answer /healthz at {}", served.base);
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    async fn sign_in_as_bootstrap_admin(&mut self, dir: &Path) {
        let kept = dir.join("bootstrap-password");
        if let Some(password) = banner_password(&self.stderr()) {
            std::fs::write(&kept, &password).unwrap();
        }
        let (_, info) = self.get("/api/auth/info").await;
        if info["enabled"] != true {
            return;
        }
        let password =
            std::fs::read_to_string(&kept).expect("the first start printed the bootstrap password");
        let res = self
            .http
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({"email": BOOTSTRAP_EMAIL, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "the bootstrap admin signs in");
        let body: Value = res.json().await.unwrap();
        self.token = body["token"].as_str().map(str::to_string);
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .authorized(self.http.post(format!("{}{path}", self.base)))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    /// Waits (bounded) for the process to end by itself.
    pub async fn exited(mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pacer did not exit");
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pacer did not stop after SIGTERM");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run pacer")
}

fn write(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("pacer.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A valid local config in `dir`, as YAML.
fn valid_yaml(dir: &Path) -> String {
    format!(
        "database:\n  path: {}/pacer.db\nqueue:\n  engine: memory\nfleet:\n  engine: simulated\ngithub:\n  disabled: true\naws:\n  disabled: true\nauth:\n  jwt_secret: {}\nlogging:\n  format: text\n",
        dir.display(),
        "x".repeat(40)
    )
}

#[test]
fn version_prints_semver_and_git_describe() {
    let out = run(pacer().arg("version"));
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let rest = line
        .trim()
        .strip_prefix("pacer v")
        .unwrap_or_else(|| panic!("{line}"));
    let (semver, describe) = rest
        .split_once('-')
        .unwrap_or_else(|| panic!("no describe part: {line}"));
    assert_eq!(semver, env!("CARGO_PKG_VERSION"));
    assert!(!describe.is_empty());
}

fn refused(yaml: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), yaml);
    let mut cmd = pacer();
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env("PACER_SERVER_ADDR", "127.0.0.1:1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(!out.status.success(), "pacer must refuse to start");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn an_invalid_value_stops_startup_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid_yaml(dir.path());
    let short = base.replace(&"x".repeat(40), "tooshort");
    let err = refused(&short, &[]);
    assert!(err.contains("auth.jwt_secret"), "{err}");
    assert!(
        !err.contains("tooshort"),
        "the secret itself is never printed: {err}"
    );

    let err = refused(
        &base.replace("auth:\n", "auth:\n  session_ttl: 12hours\n"),
        &[],
    );
    assert!(err.contains("auth.session_ttl"), "{err}");

    let err = refused(&base, &[("PACER_DATABASE_ENGINE", "postgres")]);
    assert!(err.contains("database.engine"), "{err}");

    // Auth on, but no way to sign in: refused rather than an unusable console.
    let err = refused(
        &base.replace("auth:\n", "auth:\n  local:\n    enabled: false\n"),
        &[],
    );
    assert!(err.contains("auth.local.enabled"), "{err}");
}

#[test]
fn an_unknown_key_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid_yaml(dir.path());
    let err = refused(
        &base.replace("database:\n  path", "database:\n  pth: x\n  path"),
        &[],
    );
    assert!(err.contains("database.pth"), "{err}");
    let err = refused(&base, &[("PACER_DATABSE_PATH", "/tmp/x.db")]);
    assert!(err.contains("PACER_DATABSE_PATH"), "{err}");
}

#[tokio::test]
async fn serve_init_writes_a_local_config_serves_and_keeps_data_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data/pacer.yaml");
    let served = Served::start(&config, &[]).await;
    assert!(config.exists(), "--init wrote the config");
    let yaml = std::fs::read_to_string(&config).unwrap();
    assert!(yaml.contains("jwt_secret"), "with a generated secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "a file with secrets is readable by its owner only"
        );
    }

    let banner = served.stderr();
    let password = banner_password(&banner).expect("the first start prints the bootstrap banner");
    assert_eq!(password.len(), 16);
    let (status, project) = served.post("/api/projects", json!({"name": "acme"})).await;
    assert_eq!(status, 201, "{project}");
    let status = served.terminate().await;
    assert!(status.success(), "SIGTERM stops pacer cleanly: {status:?}");

    let served = Served::start(&config, &[]).await;
    assert!(
        banner_password(&served.stderr()).is_none(),
        "the banner is shown once, never again"
    );
    let (_, list) = served.get("/api/projects").await;
    assert_eq!(
        list["items"][0]["id"], project["id"],
        "the project survived the restart"
    );
    let (_, audit) = served.get("/api/audit?action=project.created").await;
    let actions: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert_eq!(
        actions,
        [&json!("project.created")],
        "and so did its audit event"
    );
    assert_eq!(
        audit["items"][0]["client_ip"], "127.0.0.1",
        "audited with the client's address"
    );
    let (_, created) = served.get("/api/audit?action=user.created").await;
    assert_eq!(created["items"][0]["detail"]["via"], "bootstrap");
    // The password never reaches a log or the audit trail.
    let (_, everything) = served.get("/api/audit?limit=500").await;
    assert!(!everything.to_string().contains(&password));
    assert!(served.terminate().await.success());
}

#[tokio::test]
async fn send_test_job_takes_one_job_from_queued_to_completed_after_serve_init() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data/pacer.yaml");
    let fast = [
        ("PACER_FLEET_SIMULATED_BOOT_DELAY", "100ms"),
        ("PACER_FLEET_SIMULATED_JOB_TIME", "200ms"),
    ];
    let served = Served::start(&config, &fast).await;
    let (_, project) = served.post("/api/projects", json!({"name": "acme"})).await;
    let project = project["id"].as_str().unwrap();
    let (s, pool) = served
        .post("/api/pools", json!({"project_id": project, "name": "linux", "labels": ["linux"],
            "instance_types": ["m7g.large"], "subnets": ["subnet-0abc1234"], "ami": "ami-0123456789abcdef0"}))
        .await;
    assert_eq!(s, 201, "{pool}");
    served
        .post(
            "/api/repos",
            json!({"repo": "acme/app", "project_id": project}),
        )
        .await;

    let out = run(pacer()
        .args(["admin", "send-test-job", "--config"])
        .arg(&config)
        .args([
            "--repo",
            "acme/app",
            "--labels",
            "self-hosted,linux",
            "--url",
            &served.base,
        ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job_id = stdout.split_whitespace().nth(1).unwrap().to_string();
    assert!(job_id.starts_with("job_"), "{stdout}");

    let mut last = Value::Null;
    for _ in 0..400 {
        let (_, job) = served.get(&format!("/api/jobs/{job_id}")).await;
        // GitHub's completed webhook comes first, then the runner's /complete.
        if job["state"] == "completed" && job["runner"]["state"] == "done" {
            return;
        }
        last = job;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the test job never completed: {last}");
}

#[test]
fn send_test_job_explains_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &valid_yaml(dir.path()));
    let out = run(pacer()
        .args(["admin", "send-test-job", "--config"])
        .arg(&path)
        .args(["--repo", "acme/app"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("github.webhook_secret"),
        "without a webhook secret the job would be refused: {err}"
    );

    let with_secret = valid_yaml(dir.path()).replace(
        "github:\n  disabled: true\n",
        "github:\n  disabled: true\n  webhook_secret: abcdefabcdefabcdefabcdef\n",
    );
    let path = write(dir.path(), &with_secret);
    let out = run(pacer()
        .args(["admin", "send-test-job", "--config"])
        .arg(&path)
        .args(["--repo", "not a repo"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--repo"), "{err}");
}

#[tokio::test]
async fn logs_go_to_an_absolute_file_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data/pacer.yaml");
    let log = dir.path().join("pacer.log");
    let served = Served::start(
        &config,
        &[
            ("PACER_LOGGING_OUTPUT", log.to_str().unwrap()),
            ("PACER_LOGGING_FORMAT", "json"),
        ],
    )
    .await;
    served.get("/healthz").await;
    assert!(served.terminate().await.success());
    let text = std::fs::read_to_string(&log).expect("the log file exists");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"].as_str().unwrap_or("").contains("aws.disabled")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "pacer stopped"),
        "{text}"
    );
    let yaml = std::fs::read_to_string(&config).unwrap();
    let secret = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("jwt_secret:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .trim_matches('"');
    assert!(!text.contains(secret), "no secret reaches the log");
    let password =
        std::fs::read_to_string(config.parent().unwrap().join("bootstrap-password")).unwrap();
    assert!(
        !text.contains(password.trim()),
        "the bootstrap password goes to stderr only, never to the log"
    );
}

/// Runs pacer with a failpoint armed until it dies there, restarts it on
/// the same store, and waits for the reaper to bring the job to completion.
async fn crash_then_converge(failpoint: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data/pacer.yaml");
    let fast = [
        ("PACER_FLEET_SIMULATED_BOOT_DELAY", "50ms"),
        ("PACER_FLEET_SIMULATED_JOB_TIME", "100ms"),
        ("PACER_REAPER_INTERVAL", "1s"),
        ("PACER_REAPER_REDRIVE_AFTER", "1s"),
    ];
    let mut armed = fast.to_vec();
    armed.push(("PACER_FAILPOINTS", failpoint));
    let served = Served::start(&config, &armed).await;
    let (_, project) = served.post("/api/projects", json!({"name": "acme"})).await;
    let project = project["id"].as_str().unwrap();
    served
        .post("/api/pools", json!({"project_id": project, "name": "linux", "labels": ["linux"],
            "instance_types": ["m7g.large"], "subnets": ["subnet-0abc1234"], "ami": "ami-0123456789abcdef0"}))
        .await;
    served
        .post(
            "/api/repos",
            json!({"repo": "acme/app", "project_id": project}),
        )
        .await;
    let _ = run(pacer()
        .args(["admin", "send-test-job", "--config"])
        .arg(&config)
        .args([
            "--repo",
            "acme/app",
            "--labels",
            "self-hosted,linux",
            "--url",
            &served.base,
        ]));
    let status = served.exited().await;
    assert!(
        !status.success(),
        "the failpoint {failpoint} killed pacer: {status:?}"
    );

    let served = Served::start(&config, &fast).await;
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, jobs) = served.get("/api/jobs").await;
        // The runner reports /complete just after GitHub's completed
        // webhook: done means the job completed and its capacity is back.
        let (_, pools) = served.get("/api/pools").await;
        if jobs["items"]
            .as_array()
            .is_some_and(|j| j.len() == 1 && j[0]["state"] == "completed")
            && pools["items"][0]["active_runners"] == 0
        {
            assert!(served.terminate().await.success());
            return;
        }
        last = json!({"jobs": jobs, "pools": pools});
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "after a crash at {failpoint} the job never completed with its capacity released: {last}"
    );
}

#[tokio::test]
async fn killed_after_storing_a_job_its_hint_lost_with_the_process_the_reaper_enqueues_it() {
    crash_then_converge("after_job_insert").await;
}

#[tokio::test]
async fn killed_right_after_a_launch_the_reaper_converges_without_leaking_capacity() {
    crash_then_converge("after_launch").await;
}

#[tokio::test]
async fn the_admin_commands_reset_a_password_and_restore_a_role_in_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data/pacer.yaml");
    let served = Served::start(&config, &[]).await;
    assert!(served.terminate().await.success());

    let out = run(pacer()
        .args(["admin", "reset-password", "--config"])
        .arg(&config)
        .arg(BOOTSTRAP_EMAIL));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stderr).to_string();
    let password = printed
        .lines()
        .find_map(|l| l.split(": ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    std::fs::write(
        config.parent().unwrap().join("bootstrap-password"),
        &password,
    )
    .unwrap();

    let out = run(pacer()
        .args(["admin", "set-role", "--config"])
        .arg(&config)
        .args([BOOTSTRAP_EMAIL, "viewer"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = Served::start(&config, &[]).await; // signs in with the new password
    let (_, me) = served.get("/api/auth/me").await;
    assert_eq!(me["role"], "viewer");
    assert_eq!(
        served.post("/api/projects", json!({"name": "x"})).await.0,
        403
    );
    assert!(served.terminate().await.success());

    let out = run(pacer()
        .args(["admin", "set-role", "--config"])
        .arg(&config)
        .args([BOOTSTRAP_EMAIL, "admin"]));
    assert!(out.status.success());
    let out = run(pacer()
        .args(["admin", "bootstrap", "--config"])
        .arg(&config));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to bootstrap"),
        "users exist already"
    );
    let out = run(pacer()
        .args(["admin", "reset-password", "--config"])
        .arg(&config)
        .arg("nobody@example.com"));
    assert!(!out.status.success(), "an unknown user is an error");
}
