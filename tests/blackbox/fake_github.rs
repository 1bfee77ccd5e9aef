//! A fake api.github.com for the black-box tests: the endpoints pacer uses, served on
//! 127.0.0.1 (a free port, stopped on drop), at the root and under a GitHub Enterprise style
//! `/api/v3` prefix.
//!
//! It behaves like GitHub where pacer can tell: App endpoints want a valid App JWT (RS256 under the
//! test App's key, right `iss`, `iat`/`exp` window); installation endpoints want an installation
//! token it issued, unexpired, for an installation that covers the repository or organisation;
//! tokens carry an `expires_at`; runners, jobs, workflow runs and the App's webhook deliveries
//! are state that tests seed and inspect. A redelivery is recorded ([`FakeGitHub::redeliveries`])
//! and, like GitHub, shows up as a new delivery of the same event; when a test names a webhook
//! endpoint ([`FakeGitHub::forward_redeliveries_to`]), the fake also delivers it there, signed.
//!
//! It checks pacer where GitHub would not say: every request body it receives and every
//! response body it sends is validated against the operation's schema in GitHub's own OpenAPI
//! description ([`openapi`]), request headers and query parameters are checked too, and every
//! breach is recorded as a violation; so is a query parameter the operation does not document, or
//! a value its schema refuses. A fake dropped with violations fails the test; a test
//! that provokes one on purpose takes them with [`FakeGitHub::take_violations`].
//!
//! Tests can make the next N calls of an endpoint fail ([`FakeGitHub::fail_next`]) and read
//! every request it received ([`FakeGitHub::requests`]).

mod app_jwt;
use crate::b64 as base64;
pub mod openapi;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use pacer_shared::clock::{Clock, SystemClock};
use pacer_shared::config::{GithubConfig, Secret};
use pacer_shared::domain::Time;
use serde_json::{Value, json};

pub use app_jwt::AppJwtClaims;
use openapi::ResponseSpec;

/// The test App's id.
pub const TEST_APP_ID: u64 = 424_242;
/// The test App's private key, PKCS#1 PEM as GitHub hands App keys out.
/// TEST ONLY: generated for these tests; it guards nothing anywhere.
pub const TEST_APP_PRIVATE_KEY: &str = include_str!("fake_github/test_only_app_key.pem");
/// Its public half (PKCS#1), with which the fake checks App JWTs.
const TEST_APP_PUBLIC_KEY: &str = include_str!("fake_github/test_only_app_key.pub.pem");
/// The prefix GitHub Enterprise Server puts before the REST API.
pub const GHES_PREFIX: &str = "/api/v3";
/// How long an issued installation token lives, as on GitHub.
const DEFAULT_TOKEN_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);
const DOCS: &str = "https://docs.github.com/rest";

/// The API operations the fake serves: exactly the ones pacer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    AccessToken,
    RepoInstallation,
    OrgInstallation,
    RepoJitConfig,
    OrgJitConfig,
    ListRepoRunners,
    ListOrgRunners,
    GetRepoRunner,
    GetOrgRunner,
    DeleteRepoRunner,
    DeleteOrgRunner,
    GetJob,
    LatestRelease,
    ReleaseByTag,
    ListRepoRuns,
    ListRunJobs,
    ListHookDeliveries,
    RedeliverHookDelivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    App,
    Installation,
    Anonymous,
}

impl Endpoint {
    /// The HTTP method and the path template, as the OpenAPI description names the operation.
    pub fn operation(self) -> (&'static str, &'static str) {
        use Endpoint::*;
        match self {
            AccessToken => ("POST", "/app/installations/{installation_id}/access_tokens"),
            RepoInstallation => ("GET", "/repos/{owner}/{repo}/installation"),
            OrgInstallation => ("GET", "/orgs/{org}/installation"),
            RepoJitConfig => (
                "POST",
                "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
            ),
            OrgJitConfig => ("POST", "/orgs/{org}/actions/runners/generate-jitconfig"),
            ListRepoRunners => ("GET", "/repos/{owner}/{repo}/actions/runners"),
            ListOrgRunners => ("GET", "/orgs/{org}/actions/runners"),
            GetRepoRunner => ("GET", "/repos/{owner}/{repo}/actions/runners/{runner_id}"),
            GetOrgRunner => ("GET", "/orgs/{org}/actions/runners/{runner_id}"),
            DeleteRepoRunner => (
                "DELETE",
                "/repos/{owner}/{repo}/actions/runners/{runner_id}",
            ),
            DeleteOrgRunner => ("DELETE", "/orgs/{org}/actions/runners/{runner_id}"),
            GetJob => ("GET", "/repos/{owner}/{repo}/actions/jobs/{job_id}"),
            LatestRelease => ("GET", "/repos/{owner}/{repo}/releases/latest"),
            ReleaseByTag => ("GET", "/repos/{owner}/{repo}/releases/tags/{tag}"),
            ListRepoRuns => ("GET", "/repos/{owner}/{repo}/actions/runs"),
            ListRunJobs => ("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs"),
            ListHookDeliveries => ("GET", "/app/hook/deliveries"),
            RedeliverHookDelivery => ("POST", "/app/hook/deliveries/{delivery_id}/attempts"),
        }
    }

    fn auth(self) -> AuthKind {
        match self {
            Endpoint::AccessToken
            | Endpoint::RepoInstallation
            | Endpoint::OrgInstallation
            | Endpoint::ListHookDeliveries
            | Endpoint::RedeliverHookDelivery => AuthKind::App,
            Endpoint::LatestRelease | Endpoint::ReleaseByTag => AuthKind::Anonymous,
            _ => AuthKind::Installation,
        }
    }
}

/// Where a runner is registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FakeTarget {
    /// `owner/name`, lower-cased.
    Repo(String),
    /// The organisation's login, lower-cased.
    Org(String),
}

impl FakeTarget {
    pub fn repo(full_name: &str) -> Self {
        FakeTarget::Repo(full_name.to_lowercase())
    }

    pub fn org(login: &str) -> Self {
        FakeTarget::Org(login.to_lowercase())
    }
}

/// A runner registration the fake holds.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRunner {
    pub id: i64,
    pub name: String,
    pub target: FakeTarget,
    pub runner_group_id: i64,
    pub labels: Vec<String>,
    /// `offline` until a runner connects (tests flip it).
    pub status: String,
    pub busy: bool,
    pub work_folder: Option<String>,
    /// What generate-jitconfig returned for it (empty for seeded runners).
    pub encoded_jit_config: String,
}

/// A workflow job the fake knows. Its run, when seeded ([`FakeGitHub::add_run`]), gives it its
/// workflow name and attempt, and lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FakeJob {
    pub id: i64,
    pub run_id: i64,
    /// `owner/name`.
    pub repo: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub labels: Vec<String>,
    pub runner_id: Option<i64>,
    pub runner_name: Option<String>,
    /// The job's name in the workflow; empty answers `build`.
    pub name: String,
    /// `None` answers the fake's clock at the time of asking.
    pub created_at: Option<Time>,
}

impl FakeJob {
    /// A job waiting for a runner with `labels`.
    pub fn queued(id: i64, run_id: i64, repo: &str, labels: &[&str]) -> Self {
        FakeJob {
            id,
            run_id,
            repo: repo.to_owned(),
            status: "queued".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            name: format!("job-{id}"),
            ..FakeJob::default()
        }
    }

    /// The same job in another status (`in_progress`, `completed`, …).
    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.to_owned();
        if status == "completed" {
            self.conclusion = Some("success".into());
        }
        self
    }
}

/// A workflow run the fake knows; its jobs are the [`FakeJob`]s with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRun {
    pub id: i64,
    /// `owner/name`.
    pub repo: String,
    /// The workflow's name.
    pub name: String,
    /// `queued` | `in_progress` | `completed` | `waiting` | …
    pub status: String,
    pub run_attempt: i64,
    /// Who triggered it.
    pub actor: String,
    /// `None` answers the fake's clock at the time of asking.
    pub created_at: Option<Time>,
    /// Whether the run's repository is private (a public one's jobs need their project's
    /// consent).
    pub private: bool,
}

impl FakeRun {
    /// A first attempt of workflow `CI`, triggered by `octocat`.
    pub fn new(id: i64, repo: &str, status: &str) -> Self {
        FakeRun {
            id,
            repo: repo.to_owned(),
            name: "CI".into(),
            status: status.to_owned(),
            run_attempt: 1,
            actor: "octocat".into(),
            created_at: None,
            private: true,
        }
    }
}

/// One delivery of the App's webhook, as `GET /app/hook/deliveries` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeDelivery {
    /// 0 when seeding: the fake numbers it.
    pub id: i64,
    /// The event's id, shared by its redeliveries.
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    /// What the webhook endpoint answered; 0 for "could not connect".
    pub status_code: u16,
    pub delivered_at: Time,
    pub redelivery: bool,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
    /// The event's body, sent again by a forwarded redelivery.
    pub payload: Option<Value>,
}

impl FakeDelivery {
    /// A first delivery of a `workflow_job` event with `action`, answered `status_code`.
    pub fn workflow_job(guid: &str, action: &str, status_code: u16, delivered_at: Time) -> Self {
        FakeDelivery {
            id: 0,
            guid: guid.to_owned(),
            event: "workflow_job".into(),
            action: Some(action.to_owned()),
            status_code,
            delivered_at,
            redelivery: false,
            installation_id: Some(1),
            repository_id: Some(1),
            payload: None,
        }
    }

    /// The event's body, for [`FakeGitHub::forward_redeliveries_to`].
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// An actions/runner release the fake serves, with the checksums of its tarballs where
/// actions/runner publishes them: GitHub's `digest` of each asset, and its release notes.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRelease {
    /// e.g. `2.330.0`; its tag is `v2.330.0`.
    pub version: String,
    /// The tarballs, by platform (`linux-x64`), each with its `digest` hex, or `None` for an
    /// asset uploaded before GitHub computed digests.
    pub assets: Vec<(String, Option<String>)>,
    /// The checksums the notes give between `<!-- BEGIN SHA linux-x64 -->` markers, by platform.
    pub notes: Vec<(String, String)>,
}

impl FakeRelease {
    /// A release as actions/runner publishes them since mid-2025: linux-x64 and linux-arm64
    /// tarballs, each checksum ([`runner_sha256`]) both in the asset's digest and in the notes.
    pub fn new(version: &str) -> Self {
        let platforms = ["linux-x64", "linux-arm64"];
        let checksum = |p: &str| (p.to_owned(), runner_sha256(version, p));
        FakeRelease {
            version: version.to_owned(),
            assets: platforms
                .iter()
                .map(|p| {
                    let (p, hex) = checksum(p);
                    (p, Some(hex))
                })
                .collect(),
            notes: platforms.iter().map(|p| checksum(p)).collect(),
        }
    }

    /// Its assets as uploaded before GitHub computed digests: `digest` is null.
    pub fn without_digests(mut self) -> Self {
        for (_, digest) in &mut self.assets {
            *digest = None;
        }
        self
    }

    /// Its notes without checksums.
    pub fn without_notes_checksums(mut self) -> Self {
        self.notes.clear();
        self
    }

    /// `platform`'s checksum in the notes is `hex`.
    pub fn with_notes_checksum(mut self, platform: &str, hex: &str) -> Self {
        self.notes.retain(|(p, _)| p != platform);
        self.notes.push((platform.to_owned(), hex.to_owned()));
        self
    }

    /// The tarball of `platform`.
    fn file(&self, platform: &str) -> String {
        format!("actions-runner-{platform}-{}.tar.gz", self.version)
    }
}

/// The checksum the fake publishes for `platform`'s tarball of `version` (no tarball exists:
/// any fixed 64 hex digits do, and these differ per release and platform).
pub fn runner_sha256(version: &str, platform: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(format!("{platform} {version}")))
}

/// Where forwarded redeliveries go, signed as GitHub signs them.
#[derive(Clone)]
struct WebhookTarget {
    url: String,
    secret: Vec<u8>,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as received, an Enterprise prefix included.
    pub path: String,
    pub query: Option<String>,
    /// `None` for a path the fake does not serve.
    pub endpoint: Option<Endpoint>,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: Option<Value>,
    /// What the fake answered.
    pub status: u16,
}

impl RecordedRequest {
    /// A query parameter's value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }
}

/// A failure to answer instead of the real thing.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub message: String,
}

impl Failure {
    pub fn status(status: u16) -> Self {
        let message = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned();
        Failure {
            status,
            headers: Vec::new(),
            message,
        }
    }

    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    pub fn message(mut self, message: &str) -> Self {
        self.message = message.to_owned();
        self
    }

    /// A 502, as GitHub's edge answers during an incident.
    pub fn server_error() -> Self {
        Failure::status(502).message("Server Error")
    }

    /// A secondary rate limit that says how long to wait.
    pub fn rate_limited_retry_after(seconds: u64) -> Self {
        Failure::status(403)
            .message("You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")
            .header("retry-after", seconds)
    }

    /// The primary rate limit, exhausted until `reset` (epoch seconds).
    pub fn rate_limit_exhausted_until(reset: i64) -> Self {
        Failure::status(403)
            .message("API rate limit exceeded for installation ID 1.")
            .header("x-ratelimit-limit", 5000)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-used", 5000)
            .header("x-ratelimit-reset", reset)
    }

    /// What GitHub says when the App lacks the endpoint's permission.
    pub fn missing_permission() -> Self {
        Failure::status(403).message("Resource not accessible by integration")
    }
}

struct Injected {
    endpoint: Endpoint,
    remaining: usize,
    failure: Failure,
}

struct IssuedToken {
    installation_id: i64,
    expires_at: Time,
}

struct State {
    clock: Arc<dyn Clock>,
    public_key: Vec<u8>,
    repo_installations: HashMap<String, i64>,
    org_installations: HashMap<String, i64>,
    tokens: HashMap<String, IssuedToken>,
    token_ttl: chrono::TimeDelta,
    next_token: u64,
    runners: BTreeMap<i64, FakeRunner>,
    /// Every runner generate-jitconfig registered, as registered, deleted or not.
    jit_registered: Vec<FakeRunner>,
    next_runner_id: i64,
    jobs: HashMap<i64, FakeJob>,
    runs: BTreeMap<i64, FakeRun>,
    deliveries: Vec<FakeDelivery>,
    next_delivery_id: i64,
    redeliveries: Vec<i64>,
    webhook_target: Option<WebhookTarget>,
    redelivery_status: u16,
    runner_releases: BTreeMap<String, FakeRelease>,
    latest_runner_version: String,
    failures: Vec<Injected>,
    delays: HashMap<Endpoint, Duration>,
    requests: Vec<RecordedRequest>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

/// The running fake. See the module docs.
pub struct FakeGitHub {
    port: u16,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    /// Starts the fake with the real clock.
    pub async fn start() -> FakeGitHub {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Starts the fake judging token expiry and JWT times by `clock` (share it with the
    /// client under test to move time for both).
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> FakeGitHub {
        // Loaded before the first request, so a missing `tests/node_modules` fails here, loudly.
        openapi::description();
        let state = Arc::new(Mutex::new(State {
            clock,
            public_key: base64::pem_body(TEST_APP_PUBLIC_KEY),
            repo_installations: HashMap::new(),
            org_installations: HashMap::new(),
            tokens: HashMap::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            next_token: 1,
            runners: BTreeMap::new(),
            jit_registered: Vec::new(),
            next_runner_id: 1,
            jobs: HashMap::new(),
            runs: BTreeMap::new(),
            deliveries: Vec::new(),
            next_delivery_id: 90_000_001,
            redeliveries: Vec::new(),
            webhook_target: None,
            redelivery_status: 200,
            runner_releases: BTreeMap::from([("2.328.0".into(), FakeRelease::new("2.328.0"))]),
            latest_runner_version: "2.328.0".into(),
            failures: Vec::new(),
            delays: HashMap::new(),
            requests: Vec::new(),
            violations: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1 for the fake GitHub");
        let port = listener.local_addr().expect("local address").port();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the fake GitHub serves");
        });
        FakeGitHub {
            port,
            state,
            shutdown: Some(shutdown),
            server,
        }
    }

    /// `http://127.0.0.1:PORT/`, what `github.api_url` is set to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The same API under GitHub Enterprise's `/api/v3/`.
    pub fn ghes_url(&self) -> String {
        format!("http://127.0.0.1:{}{GHES_PREFIX}/", self.port)
    }

    /// `github.*` for pacer against this fake: the test App's id and key, and the API URL.
    pub fn github_config(&self) -> GithubConfig {
        GithubConfig {
            app_id: Some(TEST_APP_ID),
            private_key: Some(Secret::new(TEST_APP_PRIVATE_KEY)),
            api_url: self.url().parse().expect("a valid URL"),
            ..GithubConfig::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake GitHub state lock")
    }

    /// Installs the App on one repository (`owner/name`) under `installation_id`.
    pub fn install_on_repo(&self, repo: &str, installation_id: i64) {
        self.state()
            .repo_installations
            .insert(repo.to_lowercase(), installation_id);
    }

    /// Installs the App on an organisation: it covers the org and all its repositories.
    pub fn install_on_org(&self, org: &str, installation_id: i64) {
        self.state()
            .org_installations
            .insert(org.to_lowercase(), installation_id);
    }

    /// Registers a runner as if someone had, and answers its id.
    pub fn add_runner(&self, target: FakeTarget, name: &str, labels: &[&str]) -> i64 {
        let mut state = self.state();
        let id = state.next_runner_id;
        state.next_runner_id += 1;
        state.runners.insert(
            id,
            FakeRunner {
                id,
                name: name.to_owned(),
                target,
                runner_group_id: 1,
                labels: labels.iter().map(|l| l.to_string()).collect(),
                status: "online".into(),
                busy: false,
                work_folder: None,
                encoded_jit_config: String::new(),
            },
        );
        id
    }

    /// Every registered runner.
    pub fn runners(&self) -> Vec<FakeRunner> {
        self.state().runners.values().cloned().collect()
    }

    pub fn runner(&self, id: i64) -> Option<FakeRunner> {
        self.state().runners.get(&id).cloned()
    }

    /// The runner a JIT config was issued for: what a test playing the instance checks.
    pub fn runner_by_jit_config(&self, encoded_jit_config: &str) -> Option<FakeRunner> {
        self.state()
            .runners
            .values()
            .find(|r| {
                !r.encoded_jit_config.is_empty() && r.encoded_jit_config == encoded_jit_config
            })
            .cloned()
    }

    /// Every runner registered by a JIT configuration, in order, as it was
    /// registered: also those deleted since (an ephemeral runner is gone
    /// after its job; a test playing the machine checks what it was given).
    pub fn jit_registered(&self) -> Vec<FakeRunner> {
        self.state().jit_registered.clone()
    }

    /// Sets what GitHub says of a runner (`online`/`offline`, busy).
    pub fn set_runner_status(&self, id: i64, status: &str, busy: bool) {
        let mut state = self.state();
        let runner = state
            .runners
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no runner {id}"));
        runner.status = status.to_owned();
        runner.busy = busy;
    }

    pub fn add_job(&self, job: FakeJob) {
        self.state().jobs.insert(job.id, job);
    }

    /// Seeds a workflow run (its jobs are added with [`FakeGitHub::add_job`]).
    pub fn add_run(&self, run: FakeRun) {
        self.state().runs.insert(run.id, run);
    }

    /// Seeds a run with one job per entry of `jobs` (`(job id, status, labels)`).
    pub fn add_run_with_jobs(&self, run: FakeRun, jobs: &[(i64, &str, &[&str])]) {
        for &(id, status, labels) in jobs {
            self.add_job(FakeJob::queued(id, run.id, &run.repo, labels).with_status(status));
        }
        self.add_run(run);
    }

    /// Changes what GitHub says of a job (say, a runner took it).
    pub fn set_job_status(&self, id: i64, status: &str) {
        let mut state = self.state();
        let job = state
            .jobs
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no job {id}"));
        job.status = status.to_owned();
    }

    /// Seeds a webhook delivery and answers its id.
    pub fn add_delivery(&self, mut delivery: FakeDelivery) -> i64 {
        let mut state = self.state();
        if delivery.id == 0 {
            delivery.id = state.next_delivery_id;
            state.next_delivery_id += 1;
        }
        let id = delivery.id;
        state.deliveries.push(delivery);
        id
    }

    /// Every delivery, newest first (as GitHub lists them), redeliveries included.
    pub fn deliveries(&self) -> Vec<FakeDelivery> {
        self.state().deliveries_newest_first()
    }

    /// The delivery ids whose redelivery was asked for, in order.
    pub fn redeliveries(&self) -> Vec<i64> {
        self.state().redeliveries.clone()
    }

    /// What a redelivery that is not forwarded records as the endpoint's answer (200 unless
    /// set; 503 says "pacer was still down").
    pub fn set_redelivery_status(&self, status_code: u16) {
        self.state().redelivery_status = status_code;
    }

    /// From now on a redelivery of a delivery with a payload is POSTed to `url` (pacer's
    /// `/api/webhook`), signed with `secret`, and what it answers is recorded as the new
    /// delivery's status; [`FakeGitHub::wait_for_deliveries`] waits for it.
    pub fn forward_redeliveries_to(&self, url: &str, secret: &[u8]) {
        self.state().webhook_target = Some(WebhookTarget {
            url: url.to_owned(),
            secret: secret.to_vec(),
        });
    }

    /// Waits (up to ten seconds) until the fake holds `count` deliveries, redeliveries included.
    pub async fn wait_for_deliveries(&self, count: usize) -> Vec<FakeDelivery> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let deliveries = self.deliveries();
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} deliveries, the fake holds {}",
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The actions/runner release `releases/latest` reports (`2.330.0`; the tag gets its `v`):
    /// the one added as that version, else a [`FakeRelease::new`].
    pub fn set_latest_runner_release(&self, version: &str) {
        let version = version.trim_start_matches('v').to_owned();
        let mut state = self.state();
        state
            .runner_releases
            .entry(version.clone())
            .or_insert_with(|| FakeRelease::new(&version));
        state.latest_runner_version = version;
    }

    /// Publishes (or replaces) an actions/runner release, found by its tag.
    pub fn add_runner_release(&self, release: FakeRelease) {
        self.state()
            .runner_releases
            .insert(release.version.clone(), release);
    }

    /// Lifetime of installation tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: chrono::TimeDelta) {
        self.state().token_ttl = ttl;
    }

    /// Forgets every issued token, as if GitHub had revoked them: the next use answers 401.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// The next `times` calls of `endpoint` (that pass authentication) answer `failure`.
    pub fn fail_next(&self, endpoint: Endpoint, times: usize, failure: Failure) {
        self.state().failures.push(Injected {
            endpoint,
            remaining: times,
            failure,
        });
    }

    /// Calls of `endpoint` take `delay` before answering (to make concurrent callers overlap).
    pub fn delay(&self, endpoint: Endpoint, delay: Duration) {
        self.state().delays.insert(endpoint, delay);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests to one endpoint, in order.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.endpoint == Some(endpoint))
            .cloned()
            .collect()
    }

    /// How many requests reached `endpoint`.
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.endpoint == Some(endpoint))
            .count()
    }

    /// Takes the contract violations recorded so far (a test provoking one on purpose).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.state().violations)
    }

    /// Checks an App JWT as the App endpoints do (for tests that look at the claims).
    pub fn verify_app_jwt(&self, token: &str) -> Result<AppJwtClaims, String> {
        let state = self.state();
        app_jwt::verify(
            token,
            &state.public_key,
            TEST_APP_ID,
            state.clock.now().timestamp(),
        )
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.server.abort();
        let violations = self.take_violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "pacer broke GitHub's API contract ({} violation(s)):\n  {}",
                violations.len(),
                violations.join("\n  ")
            );
        }
    }
}

// ------------------------------------------------------------------------------------- routing

/// The path parameters of a request.
#[derive(Debug, Default)]
struct Params {
    owner: String,
    repo: String,
    org: String,
    id: i64,
    tag: String,
}

impl Params {
    fn repo_full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo).to_lowercase()
    }
}

fn route(method: &Method, api_path: &str) -> Option<(Endpoint, Params)> {
    use Endpoint::*;
    let segments: Vec<&str> = api_path.trim_start_matches('/').split('/').collect();
    let id = |s: &str| s.parse::<i64>().ok();
    let repo = |o: &str, r: &str| Params {
        owner: o.into(),
        repo: r.into(),
        ..Params::default()
    };
    let org = |o: &str| Params {
        org: o.into(),
        ..Params::default()
    };
    let m = method.as_str();
    Some(match (m, segments.as_slice()) {
        ("POST", ["app", "installations", i, "access_tokens"]) => (
            AccessToken,
            Params {
                id: id(i)?,
                ..Params::default()
            },
        ),
        ("GET", ["repos", o, r, "installation"]) => (RepoInstallation, repo(o, r)),
        ("GET", ["orgs", o, "installation"]) => (OrgInstallation, org(o)),
        ("POST", ["repos", o, r, "actions", "runners", "generate-jitconfig"]) => {
            (RepoJitConfig, repo(o, r))
        }
        ("POST", ["orgs", o, "actions", "runners", "generate-jitconfig"]) => (OrgJitConfig, org(o)),
        ("GET", ["repos", o, r, "actions", "runners"]) => (ListRepoRunners, repo(o, r)),
        ("GET", ["orgs", o, "actions", "runners"]) => (ListOrgRunners, org(o)),
        ("GET", ["repos", o, r, "actions", "runners", i]) => (
            GetRepoRunner,
            Params {
                id: id(i)?,
                ..repo(o, r)
            },
        ),
        ("GET", ["orgs", o, "actions", "runners", i]) => (
            GetOrgRunner,
            Params {
                id: id(i)?,
                ..org(o)
            },
        ),
        ("DELETE", ["repos", o, r, "actions", "runners", i]) => (
            DeleteRepoRunner,
            Params {
                id: id(i)?,
                ..repo(o, r)
            },
        ),
        ("DELETE", ["orgs", o, "actions", "runners", i]) => (
            DeleteOrgRunner,
            Params {
                id: id(i)?,
                ..org(o)
            },
        ),
        ("GET", ["repos", o, r, "actions", "jobs", i]) => (
            GetJob,
            Params {
                id: id(i)?,
                ..repo(o, r)
            },
        ),
        ("GET", ["repos", o, r, "releases", "latest"]) => (LatestRelease, repo(o, r)),
        ("GET", ["repos", o, r, "releases", "tags", t]) => (
            ReleaseByTag,
            Params {
                tag: percent_decode(t),
                ..repo(o, r)
            },
        ),
        ("GET", ["repos", o, r, "actions", "runs"]) => (ListRepoRuns, repo(o, r)),
        ("GET", ["repos", o, r, "actions", "runs", i, "jobs"]) => (
            ListRunJobs,
            Params {
                id: id(i)?,
                ..repo(o, r)
            },
        ),
        ("GET", ["app", "hook", "deliveries"]) => (ListHookDeliveries, Params::default()),
        ("POST", ["app", "hook", "deliveries", i, "attempts"]) => (
            RedeliverHookDelivery,
            Params {
                id: id(i)?,
                ..Params::default()
            },
        ),
        _ => return None,
    })
}

/// A request as the behaviour sees it.
struct Incoming<'a> {
    headers: &'a HeaderMap,
    path: &'a str,
    query: &'a str,
    body: Option<&'a Value>,
    /// Contract violations found in the request so far.
    violations: &'a [String],
}

impl Incoming<'_> {
    fn query_param(&self, name: &str) -> Option<usize> {
        self.query_text(name)?.parse().ok()
    }

    fn query_text(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(percent_decode)
    }

    /// `per_page` and `page` with GitHub's defaults: 30 a page, at most 100.
    fn page(&self) -> (usize, usize) {
        let per_page = self.query_param("per_page").unwrap_or(30).clamp(1, 100);
        (per_page, self.query_param("page").unwrap_or(1).max(1))
    }

    fn host(&self) -> &str {
        self.headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1")
    }
}

/// `%3A` → `:` and `+` → space, as a form-encoded query carries them.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer before it is checked and sent.
struct Answer {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    /// A redelivery to send once the answer is out.
    forward: Option<Box<(WebhookTarget, FakeDelivery)>>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Some(body),
            forward: None,
        }
    }

    fn empty(status: StatusCode) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: None,
            forward: None,
        }
    }

    /// GitHub's error body.
    fn error(status: StatusCode, message: &str) -> Self {
        Answer::json(
            status,
            json!({"message": message, "documentation_url": DOCS, "status": status.as_str()}),
        )
    }
}

async fn handle(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let api_path = path
        .strip_prefix(GHES_PREFIX)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(&path)
        .to_owned();
    let routed = route(&method, &api_path);
    let delay = routed
        .as_ref()
        .and_then(|(e, _)| shared.lock().unwrap().delays.get(e).copied());
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut state = shared.lock().expect("fake GitHub state lock");
    let mut violations = Vec::new();
    let parsed_body = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                violations.push(format!("{method} {path}: the body is not JSON ({e})"));
                None
            }
        }
    };

    let endpoint = routed.as_ref().map(|(e, _)| *e);
    let mut answer = match routed {
        None => {
            violations.push(format!(
                "{method} {path}: the fake GitHub does not serve this; pacer should not call it"
            ));
            Answer::error(StatusCode::NOT_FOUND, "Not Found")
        }
        Some((endpoint, params)) => {
            check_request(
                endpoint,
                &headers,
                uri.query(),
                parsed_body.as_ref(),
                &body,
                &mut violations,
            );
            let incoming = Incoming {
                headers: &headers,
                path: &path,
                query: uri.query().unwrap_or_default(),
                body: parsed_body.as_ref(),
                violations: &violations,
            };
            let answer = state.answer(endpoint, &params, &incoming);
            check_response(endpoint, &answer, &mut violations);
            answer
        }
    };

    let label = |v: String| {
        if v.starts_with(method.as_str()) {
            v
        } else {
            format!("{method} {path}: {v}")
        }
    };
    state.violations.extend(violations.into_iter().map(label));
    state.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        query: uri.query().map(str::to_owned),
        endpoint,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or("<not UTF-8>").to_owned(),
                )
            })
            .collect(),
        body: parsed_body,
        status: answer.status.as_u16(),
    });
    drop(state);
    if let Some((target, delivery)) = answer.forward.take().map(|f| *f) {
        tokio::spawn(forward_delivery(shared, target, delivery));
    }
    into_response(answer)
}

/// Delivers a redelivery to the test's webhook endpoint as GitHub would, and records it with
/// the status the endpoint answered (0 when it could not be reached).
async fn forward_delivery(shared: Shared, target: WebhookTarget, mut delivery: FakeDelivery) {
    let body = serde_json::to_vec(delivery.payload.as_ref().expect("a payload to forward"))
        .expect("a JSON payload");
    let signature = pacer_shared::github::webhook::sign(&target.secret, &body);
    let answered = reqwest::Client::new()
        .post(&target.url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/fake")
        .header("x-github-event", &delivery.event)
        .header("x-github-delivery", &delivery.guid)
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await;
    delivery.status_code = answered.map_or(0, |r| r.status().as_u16());
    let mut state = shared.lock().expect("fake GitHub state lock");
    delivery.delivered_at = state.now();
    state.deliveries.push(delivery);
}

fn into_response(answer: Answer) -> Response {
    let mut response = match answer.body {
        Some(body) => (answer.status, axum::Json(body)).into_response(),
        None => answer.status.into_response(),
    };
    for (name, value) in answer.headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        response
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).expect("a header value"));
    }
    response
}

/// What GitHub asks of every client, and the operation's documented parameters and body.
fn check_request(
    endpoint: Endpoint,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Option<&Value>,
    raw: &[u8],
    violations: &mut Vec<String>,
) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("accept") != Some("application/vnd.github+json") {
        violations.push(format!(
            "Accept is {:?}, GitHub recommends application/vnd.github+json",
            header("accept")
        ));
    }
    if header("x-github-api-version") != Some("2022-11-28") {
        violations.push(format!(
            "X-GitHub-Api-Version is {:?}, expected 2022-11-28",
            header("x-github-api-version")
        ));
    }
    if header("user-agent").is_none_or(str::is_empty) {
        violations.push("no User-Agent: GitHub refuses such requests".into());
    }
    let (method, template) = endpoint.operation();
    let spec = openapi::description();
    let documented = spec.query_parameters(method, template);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, text) = pair.split_once('=').unwrap_or((pair, ""));
        if !documented.iter().any(|d| d == name) {
            violations.push(format!(
                "query parameter {name:?} is not documented for this operation"
            ));
            continue;
        }
        if let Some((value, validator)) =
            spec.query_parameter(method, template, name, &percent_decode(text))
        {
            violations.extend(
                openapi::violations(&validator, &value)
                    .into_iter()
                    .map(|v| format!("query parameter {name}={text:?} {v}")),
            );
        }
    }
    match (spec.request_validator(method, template), body) {
        (Some(validator), Some(body)) => {
            if header("content-type").is_none_or(|ct| !ct.starts_with("application/json")) {
                violations.push(format!(
                    "a JSON body sent as Content-Type {:?}",
                    header("content-type")
                ));
            }
            violations.extend(
                openapi::violations(&validator, body)
                    .into_iter()
                    .map(|v| format!("request body {v}")),
            );
        }
        (Some(_), None) if spec.request_body_required(method, template) && raw.is_empty() => {
            violations.push("the operation requires a request body; none was sent".into())
        }
        (None, Some(_)) => {
            violations.push("a body was sent to an operation that takes none".into())
        }
        _ => {}
    }
}

/// The answer must be one the description documents for the operation.
fn check_response(endpoint: Endpoint, answer: &Answer, violations: &mut Vec<String>) {
    let (method, template) = endpoint.operation();
    match openapi::description().response(method, template, answer.status.as_u16()) {
        Err(undocumented) => violations.push(format!(
            "the fake answered an undocumented status: {undocumented}"
        )),
        Ok(ResponseSpec::Empty) => {
            if answer.body.is_some() {
                violations.push(format!(
                    "status {} is documented without a body, the fake sent one",
                    answer.status
                ));
            }
        }
        Ok(ResponseSpec::Json(validator)) => match &answer.body {
            None => violations.push(format!(
                "status {} is documented with a JSON body, the fake sent none",
                answer.status
            )),
            Some(body) => violations.extend(
                openapi::violations(&validator, body)
                    .into_iter()
                    .map(|v| format!("the fake's {} response body {v}", answer.status.as_u16())),
            ),
        },
    }
}

// ------------------------------------------------------------------------------------ behaviour

impl State {
    fn now(&self) -> Time {
        self.clock.now()
    }

    fn answer(&mut self, endpoint: Endpoint, params: &Params, request: &Incoming<'_>) -> Answer {
        // Authentication first, as GitHub does: an injected failure stands for what GitHub
        // answers an authenticated caller.
        let installation = match self.authenticate(endpoint, request.headers) {
            Ok(installation) => installation,
            Err(answer) => return answer,
        };
        if let Some(installation_id) = installation {
            if !self.covers(installation_id, endpoint, params) {
                return Answer::error(StatusCode::NOT_FOUND, "Not Found");
            }
        }
        if let Some(injected) = self
            .failures
            .iter_mut()
            .find(|f| f.endpoint == endpoint && f.remaining > 0)
        {
            injected.remaining -= 1;
            let failure = injected.failure.clone();
            let mut answer = Answer::error(
                StatusCode::from_u16(failure.status).expect("a valid status"),
                &failure.message,
            );
            answer.headers = failure.headers;
            return answer;
        }
        // A body GitHub's schema refuses gets GitHub's answer to it (the violation is recorded too).
        if request
            .violations
            .iter()
            .any(|v| v.starts_with("request body"))
        {
            return Answer::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Invalid request.", "documentation_url": DOCS, "errors": request.violations}),
            );
        }
        let body = request.body.unwrap_or(&Value::Null);
        use Endpoint::*;
        match endpoint {
            AccessToken => self.issue_token(params.id),
            RepoInstallation => self.repo_installation(params),
            OrgInstallation => self.org_installation(params),
            RepoJitConfig => {
                self.generate_jit_config(FakeTarget::Repo(params.repo_full_name()), body)
            }
            OrgJitConfig => self.generate_jit_config(FakeTarget::org(&params.org), body),
            ListRepoRunners => {
                self.list_runners(&FakeTarget::Repo(params.repo_full_name()), request)
            }
            ListOrgRunners => self.list_runners(&FakeTarget::org(&params.org), request),
            GetRepoRunner => self.get_runner(&FakeTarget::Repo(params.repo_full_name()), params.id),
            GetOrgRunner => self.get_runner(&FakeTarget::org(&params.org), params.id),
            DeleteRepoRunner => {
                self.delete_runner(&FakeTarget::Repo(params.repo_full_name()), params.id)
            }
            DeleteOrgRunner => self.delete_runner(&FakeTarget::org(&params.org), params.id),
            GetJob => self.get_job(params),
            LatestRelease => self.release(params, &self.latest_runner_version),
            ReleaseByTag => match params.tag.strip_prefix('v') {
                Some(version) => self.release(params, version),
                None => Answer::error(StatusCode::NOT_FOUND, "Not Found"),
            },
            ListRepoRuns => self.list_runs(params, request),
            ListRunJobs => self.list_run_jobs(params, request),
            ListHookDeliveries => self.list_deliveries(request),
            RedeliverHookDelivery => self.redeliver(params.id),
        }
    }

    /// `Ok(Some(installation))` for a valid installation token, `Ok(None)` where none is
    /// needed, or GitHub's 401.
    fn authenticate(&self, endpoint: Endpoint, headers: &HeaderMap) -> Result<Option<i64>, Answer> {
        let credential = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .map(str::trim);
        match endpoint.auth() {
            AuthKind::Anonymous => Ok(None),
            AuthKind::App => {
                let Some(jwt) = credential else {
                    return Err(Answer::error(
                        StatusCode::UNAUTHORIZED,
                        "A JSON web token could not be decoded",
                    ));
                };
                app_jwt::verify(jwt, &self.public_key, TEST_APP_ID, self.now().timestamp())
                    .map(|_| None)
                    .map_err(|why| Answer::error(StatusCode::UNAUTHORIZED, &why))
            }
            AuthKind::Installation => {
                let token = credential.and_then(|t| self.tokens.get(t));
                match token {
                    Some(token) if token.expires_at > self.now() => Ok(Some(token.installation_id)),
                    _ => Err(Answer::error(StatusCode::UNAUTHORIZED, "Bad credentials")),
                }
            }
        }
    }

    fn installation_of_repo(&self, full_name: &str) -> Option<i64> {
        let owner = full_name.split('/').next().unwrap_or_default();
        self.repo_installations
            .get(full_name)
            .or_else(|| self.org_installations.get(owner))
            .copied()
    }

    /// Whether an installation may act where the request points (GitHub answers 404 otherwise).
    fn covers(&self, installation_id: i64, endpoint: Endpoint, params: &Params) -> bool {
        use Endpoint::*;
        match endpoint {
            OrgJitConfig | ListOrgRunners | GetOrgRunner | DeleteOrgRunner => {
                self.org_installations.get(&params.org.to_lowercase()) == Some(&installation_id)
            }
            _ => self.installation_of_repo(&params.repo_full_name()) == Some(installation_id),
        }
    }

    fn installation_exists(&self, id: i64) -> bool {
        self.repo_installations
            .values()
            .chain(self.org_installations.values())
            .any(|&i| i == id)
    }

    fn issue_token(&mut self, installation_id: i64) -> Answer {
        if !self.installation_exists(installation_id) {
            return Answer::error(StatusCode::NOT_FOUND, "Not Found");
        }
        let token = format!(
            "ghs_fake{:04}{installation_id}x{}",
            self.next_token,
            self.now().timestamp_subsec_nanos()
        );
        self.next_token += 1;
        let expires_at = self.now() + self.token_ttl;
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                installation_id,
                expires_at,
            },
        );
        Answer::json(
            StatusCode::CREATED,
            json!({
                "token": token,
                "expires_at": expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "permissions": {"administration": "write", "organization_self_hosted_runners": "write", "actions": "read", "metadata": "read"},
                "repository_selection": "selected",
            }),
        )
    }

    fn repo_installation(&self, params: &Params) -> Answer {
        let id = self.installation_of_repo(&params.repo_full_name());
        Self::installation(id, &params.owner)
    }

    /// Only an installation on the organisation itself, as on GitHub: one on
    /// some of its repositories is not the organisation's.
    fn org_installation(&self, params: &Params) -> Answer {
        let id = self
            .org_installations
            .get(&params.org.to_lowercase())
            .copied();
        Self::installation(id, &params.org)
    }

    fn installation(id: Option<i64>, account: &str) -> Answer {
        let Some(id) = id else {
            return Answer::error(StatusCode::NOT_FOUND, "Not Found");
        };
        let mut installation = openapi::description().example("installation");
        installation["id"] = json!(id);
        installation["app_id"] = json!(TEST_APP_ID);
        installation["account"]["login"] = json!(account);
        installation["access_tokens_url"] = json!(format!(
            "https://api.github.com/app/installations/{id}/access_tokens"
        ));
        Answer::json(StatusCode::OK, installation)
    }

    fn generate_jit_config(&mut self, target: FakeTarget, body: &Value) -> Answer {
        let name = body["name"].as_str().unwrap_or_default().to_owned();
        if self
            .runners
            .values()
            .any(|r| r.target == target && r.name.eq_ignore_ascii_case(&name))
        {
            return Answer::error(
                StatusCode::CONFLICT,
                &format!("Already exists - A runner with the name {name} already exists."),
            );
        }
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let labels: Vec<String> = body["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect();
        // Shaped like GitHub's: base64 of a JSON object holding the runner's config files.
        let encoded_jit_config = base64::encode(
            json!({
                ".runner": base64::encode(json!({"AgentId": id, "AgentName": name, "fake_github": true}).to_string().as_bytes()),
                ".credentials": base64::encode(format!("fake-credentials-for-{id}").as_bytes()),
                ".credentials_rsaparams": base64::encode(b"fake-rsa-params"),
            })
            .to_string()
            .as_bytes(),
        );
        let runner = FakeRunner {
            id,
            name,
            target,
            runner_group_id: body["runner_group_id"].as_i64().unwrap_or_default(),
            labels,
            status: "offline".into(),
            busy: false,
            work_folder: body["work_folder"].as_str().map(str::to_owned),
            encoded_jit_config: encoded_jit_config.clone(),
        };
        let wire = runner_json(&runner);
        self.jit_registered.push(runner.clone());
        self.runners.insert(id, runner);
        Answer::json(
            StatusCode::CREATED,
            json!({"runner": wire, "encoded_jit_config": encoded_jit_config}),
        )
    }

    fn list_runners(&self, target: &FakeTarget, request: &Incoming<'_>) -> Answer {
        // GitHub's defaults: 30 a page, at most 100.
        let per_page = request.query_param("per_page").unwrap_or(30).clamp(1, 100);
        let page = request.query_param("page").unwrap_or(1).max(1);
        let all: Vec<&FakeRunner> = self
            .runners
            .values()
            .filter(|r| &r.target == target)
            .collect();
        let pages = all.len().div_ceil(per_page).max(1);
        let on_page: Vec<Value> = all
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|r| runner_json(r))
            .collect();
        let mut answer = Answer::json(
            StatusCode::OK,
            json!({"total_count": all.len(), "runners": on_page}),
        );
        answer
            .headers
            .extend(page_links(request, per_page, page, pages));
        answer
    }

    fn get_runner(&self, target: &FakeTarget, id: i64) -> Answer {
        match self.runners.get(&id).filter(|r| &r.target == target) {
            Some(runner) => Answer::json(StatusCode::OK, runner_json(runner)),
            None => Answer::error(StatusCode::NOT_FOUND, "Not Found"),
        }
    }

    fn delete_runner(&mut self, target: &FakeTarget, id: i64) -> Answer {
        match self.runners.get(&id).filter(|r| &r.target == target) {
            None => Answer::error(StatusCode::NOT_FOUND, "Not Found"),
            Some(runner) if runner.busy => Answer::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": format!("Bad request - Runner \"{}\" is still running a job\"", runner.name), "documentation_url": DOCS}),
            ),
            Some(_) => {
                self.runners.remove(&id);
                Answer::empty(StatusCode::NO_CONTENT)
            }
        }
    }

    fn get_job(&self, params: &Params) -> Answer {
        let Some(job) = self
            .jobs
            .get(&params.id)
            .filter(|j| j.repo.to_lowercase() == params.repo_full_name())
        else {
            return Answer::error(StatusCode::NOT_FOUND, "Not Found");
        };
        Answer::json(StatusCode::OK, self.job_json(job))
    }

    /// A job as the REST API shows it, completed from its run when the run is seeded.
    fn job_json(&self, job: &FakeJob) -> Value {
        let run = self.runs.get(&job.run_id);
        let mut wire = openapi::description().example("job");
        let repo = &job.repo;
        wire["id"] = json!(job.id);
        wire["run_id"] = json!(job.run_id);
        wire["run_attempt"] = json!(run.map_or(1, |r| r.run_attempt));
        wire["run_url"] = json!(format!(
            "https://api.github.com/repos/{repo}/actions/runs/{}",
            job.run_id
        ));
        wire["url"] = json!(format!(
            "https://api.github.com/repos/{repo}/actions/jobs/{}",
            job.id
        ));
        wire["html_url"] = json!(format!(
            "https://github.com/{repo}/actions/runs/{}/job/{}",
            job.run_id, job.id
        ));
        wire["name"] = json!(if job.name.is_empty() {
            "build"
        } else {
            job.name.as_str()
        });
        wire["workflow_name"] = json!(run.map_or("CI", |r| r.name.as_str()));
        wire["status"] = json!(job.status);
        wire["conclusion"] = json!(job.conclusion);
        wire["labels"] = json!(job.labels);
        wire["runner_id"] = json!(job.runner_id);
        wire["runner_name"] = json!(job.runner_name);
        // GitHub's example predates the required `created_at`; the fake answers the schema.
        let created = job
            .created_at
            .unwrap_or_else(|| self.now())
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        wire["created_at"] = json!(created);
        wire["started_at"] = json!(created);
        if job.status != "completed" {
            wire["completed_at"] = Value::Null;
            wire["steps"] = json!([]);
        }
        wire
    }

    /// A run as the REST API shows it, from GitHub's own example.
    fn run_json(&self, run: &FakeRun) -> Value {
        let mut wire = openapi::description().example("workflow-run");
        let (repo, id) = (&run.repo, run.id);
        let api = format!("https://api.github.com/repos/{repo}/actions/runs/{id}");
        let created = run
            .created_at
            .unwrap_or_else(|| self.now())
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        wire["id"] = json!(id);
        wire["name"] = json!(run.name);
        wire["run_number"] = json!(id);
        wire["status"] = json!(run.status);
        wire["conclusion"] = json!((run.status == "completed").then_some("success"));
        wire["run_attempt"] = json!(run.run_attempt);
        wire["url"] = json!(api);
        wire["html_url"] = json!(format!("https://github.com/{repo}/actions/runs/{id}"));
        wire["jobs_url"] = json!(format!("{api}/jobs"));
        wire["logs_url"] = json!(format!("{api}/logs"));
        wire["artifacts_url"] = json!(format!("{api}/artifacts"));
        wire["cancel_url"] = json!(format!("{api}/cancel"));
        wire["rerun_url"] = json!(format!("{api}/rerun"));
        wire["previous_attempt_url"] = if run.run_attempt > 1 {
            json!(format!("{api}/attempts/{}", run.run_attempt - 1))
        } else {
            Value::Null
        };
        wire["created_at"] = json!(created);
        wire["updated_at"] = json!(created);
        wire["run_started_at"] = json!(created);
        wire["actor"]["login"] = json!(run.actor);
        wire["triggering_actor"]["login"] = json!(run.actor);
        for key in ["repository", "head_repository"] {
            let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
            wire[key]["full_name"] = json!(repo);
            wire[key]["name"] = json!(name);
            wire[key]["owner"]["login"] = json!(owner);
            wire[key]["private"] = json!(run.private);
            wire[key]["visibility"] = json!(if run.private { "private" } else { "public" });
        }
        wire
    }

    fn list_runs(&self, params: &Params, request: &Incoming<'_>) -> Answer {
        let (per_page, page) = request.page();
        let status = request.query_text("status");
        let repo = params.repo_full_name();
        // Newest first, as GitHub lists them.
        let all: Vec<&FakeRun> = self
            .runs
            .values()
            .rev()
            .filter(|r| r.repo.to_lowercase() == repo)
            .filter(|r| status.as_ref().is_none_or(|s| &r.status == s))
            .collect();
        let pages = all.len().div_ceil(per_page).max(1);
        let on_page: Vec<Value> = all
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|r| self.run_json(r))
            .collect();
        let mut answer = Answer::json(
            StatusCode::OK,
            json!({"total_count": all.len(), "workflow_runs": on_page}),
        );
        answer
            .headers
            .extend(page_links(request, per_page, page, pages));
        answer
    }

    fn list_run_jobs(&self, params: &Params, request: &Incoming<'_>) -> Answer {
        let repo = params.repo_full_name();
        if self
            .runs
            .get(&params.id)
            .is_none_or(|r| r.repo.to_lowercase() != repo)
        {
            return Answer::error(StatusCode::NOT_FOUND, "Not Found");
        }
        let (per_page, page) = request.page();
        let mut all: Vec<&FakeJob> = self
            .jobs
            .values()
            .filter(|j| j.run_id == params.id && j.repo.to_lowercase() == repo)
            .collect();
        all.sort_by_key(|j| j.id);
        let pages = all.len().div_ceil(per_page).max(1);
        let on_page: Vec<Value> = all
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|j| self.job_json(j))
            .collect();
        let mut answer = Answer::json(
            StatusCode::OK,
            json!({"total_count": all.len(), "jobs": on_page}),
        );
        answer
            .headers
            .extend(page_links(request, per_page, page, pages));
        answer
    }

    fn deliveries_newest_first(&self) -> Vec<FakeDelivery> {
        let mut all = self.deliveries.clone();
        all.sort_by(|a, b| {
            b.delivered_at
                .cmp(&a.delivered_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        all
    }

    /// Cursor pagination, as GitHub pages deliveries: the cursor names the last delivery of the
    /// previous page, and the `Link` header carries the next one.
    fn list_deliveries(&self, request: &Incoming<'_>) -> Answer {
        let per_page = request.query_param("per_page").unwrap_or(30).clamp(1, 100);
        let all = self.deliveries_newest_first();
        let start = match request.query_text("cursor") {
            None => 0,
            Some(cursor) => {
                let after = cursor
                    .strip_prefix("v1_")
                    .and_then(|id| id.parse::<i64>().ok())
                    .and_then(|id| all.iter().position(|d| d.id == id));
                match after {
                    Some(position) => position + 1,
                    None => return Answer::error(StatusCode::BAD_REQUEST, "Bad Request"),
                }
            }
        };
        let on_page: Vec<&FakeDelivery> = all.iter().skip(start).take(per_page).collect();
        let body: Vec<Value> = on_page.iter().map(|d| delivery_json(d)).collect();
        let mut answer = Answer::json(StatusCode::OK, Value::Array(body));
        if let Some(last) = on_page.last().filter(|_| start + per_page < all.len()) {
            let (host, path) = (request.host(), request.path);
            answer.headers.push((
                "link".into(),
                format!(
                    "<http://{host}{path}?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                    last.id
                ),
            ));
        }
        answer
    }

    fn redeliver(&mut self, delivery_id: i64) -> Answer {
        let Some(original) = self
            .deliveries
            .iter()
            .find(|d| d.id == delivery_id)
            .cloned()
        else {
            return Answer::error(StatusCode::NOT_FOUND, "Not Found");
        };
        self.redeliveries.push(delivery_id);
        let again = FakeDelivery {
            id: self.next_delivery_id,
            redelivery: true,
            status_code: self.redelivery_status,
            delivered_at: self.now(),
            ..original
        };
        self.next_delivery_id += 1;
        let mut answer = Answer::json(StatusCode::ACCEPTED, json!({}));
        match (&self.webhook_target, &again.payload) {
            // GitHub answers first and delivers afterwards; so does the fake.
            (Some(target), Some(_)) => answer.forward = Some(Box::new((target.clone(), again))),
            _ => self.deliveries.push(again),
        }
        answer
    }

    /// An actions/runner release, shaped from GitHub's own example of one.
    fn release(&self, params: &Params, version: &str) -> Answer {
        let release = match self.runner_releases.get(version) {
            Some(release) if params.repo_full_name() == "actions/runner" => release,
            _ => return Answer::error(StatusCode::NOT_FOUND, "Not Found"),
        };
        let mut json = openapi::description().example("release");
        let asset_example = json["assets"][0].clone();
        let tag = format!("v{version}");
        json["tag_name"] = json!(tag);
        json["name"] = json!(tag);
        json["html_url"] = json!(format!(
            "https://github.com/actions/runner/releases/tag/{tag}"
        ));
        let notes: Vec<String> = release
            .notes
            .iter()
            .map(|(p, hex)| {
                format!(
                    "- {} <!-- BEGIN SHA {p} -->{hex}<!-- END SHA {p} -->",
                    release.file(p)
                )
            })
            .collect();
        json["body"] = json!(format!(
            "## What's Changed\n\n## SHA-256 checksums\n{}",
            notes.join("\n")
        ));
        json["assets"] = release
            .assets
            .iter()
            .zip(1..)
            .map(
                |((platform, digest), id): (&(String, Option<String>), i64)| {
                    let name = release.file(platform);
                    let mut asset = asset_example.clone();
                    asset["id"] = json!(id);
                    asset["browser_download_url"] = json!(format!(
                        "https://github.com/actions/runner/releases/download/{tag}/{name}"
                    ));
                    asset["name"] = json!(name);
                    asset["content_type"] = json!("application/gzip");
                    asset["digest"] = json!(digest.as_ref().map(|hex| format!("sha256:{hex}")));
                    asset
                },
            )
            .collect();
        Answer::json(StatusCode::OK, json)
    }
}

/// The `Link` header of page `page` of `pages`: the request's own query with another `page`.
fn page_links(
    request: &Incoming<'_>,
    per_page: usize,
    page: usize,
    pages: usize,
) -> Option<(String, String)> {
    if pages <= 1 {
        return None;
    }
    let (host, path) = (request.host(), request.path);
    let kept: Vec<&str> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page=") && !p.starts_with("per_page="))
        .collect();
    let link = |p: usize, rel: &str| {
        let mut query = kept.clone();
        let (per_page, p) = (format!("per_page={per_page}"), format!("page={p}"));
        query.extend([per_page.as_str(), p.as_str()]);
        format!("<http://{host}{path}?{}>; rel=\"{rel}\"", query.join("&"))
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(link(page + 1, "next"));
        links.push(link(pages, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    Some(("link".into(), links.join(", ")))
}

/// A delivery as `GET /app/hook/deliveries` shows it.
fn delivery_json(delivery: &FakeDelivery) -> Value {
    let status = match delivery.status_code {
        0 => "failed to connect".to_owned(),
        code if delivery.succeeded() => StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("OK")
            .to_owned(),
        code => format!("Invalid HTTP Response: {code}"),
    };
    json!({
        "id": delivery.id,
        "guid": delivery.guid,
        "delivered_at": delivery.delivered_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "redelivery": delivery.redelivery,
        "duration": 0.12,
        "status": status,
        "status_code": delivery.status_code,
        "event": delivery.event,
        "action": delivery.action,
        "installation_id": delivery.installation_id,
        "repository_id": delivery.repository_id,
        "throttled_at": null,
    })
}

/// A runner as the REST API shows it (labels are objects there).
fn runner_json(runner: &FakeRunner) -> Value {
    let labels: Vec<Value> = runner
        .labels
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let kind = if name.eq_ignore_ascii_case("self-hosted") {
                "read-only"
            } else {
                "custom"
            };
            json!({"id": i + 1, "name": name, "type": kind})
        })
        .collect();
    json!({
        "id": runner.id,
        "name": runner.name,
        "os": if runner.encoded_jit_config.is_empty() { "linux" } else { "unknown" },
        "status": runner.status,
        "busy": runner.busy,
        "ephemeral": !runner.encoded_jit_config.is_empty(),
        "runner_group_id": runner.runner_group_id,
        "labels": labels,
    })
}
