//! [`RestGitHub`]: the GitHub port over GitHub's REST API, authenticated as a GitHub App.
//!
//! It owns the App's credentials: it signs the short App JWT (RS256, `iat` a minute in the past
//! for clock drift, `exp` nine minutes ahead, under GitHub's ten-minute limit), trades it for one
//! installation access token per installation, and caches each token until five minutes before
//! it expires. Concurrent callers for one installation wait for a single fetch.
//!
//! Every call goes through [`RestGitHub::call`], which owns the resilience rules: transport errors
//! and 5xx are retried with jittered exponential backoff inside a bounded number of attempts and
//! total time; a 403/429 rate limit is waited out when GitHub asks for a short wait and reported
//! as [`GitHubError::RateLimited`] otherwise; a 403 "Resource not accessible by integration"
//! names the App permission the endpoint needs. Tokens, the JWT and JIT configs never reach an
//! error message or a log line.
//!
//! Lists are paged: page numbers for runners, workflow runs and jobs, following the `Link`
//! header's `next` (or, without one, a full page short of `total_count`); a cursor taken from the
//! `next` link for webhook deliveries. Each is bounded by [`MAX_PAGES`] (and `queued_jobs` by its
//! `max_runs`), so a misbehaving server cannot keep pacer paging.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::TimeDelta;
use futures::future::BoxFuture;
use futures::{StreamExt as _, TryStreamExt as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    GhDelivery, GhJob, GhQueuedJob, GhRunner, GitHub, GitHubError, GitHubResult, JitConfig,
    JitRequest, RunnerDownload, RunnerTarget, runner_tarball, sha256_hex,
};
use crate::calls::{self, CallCounts, Calls};
use crate::clock::Clock;
use crate::config::{GithubConfig, RunnerConfig, RunnerSha256, Secret};
use crate::domain::{RepoName, Time, Visibility};

/// Sent on every request, as GitHub asks of API clients.
pub const USER_AGENT: &str = concat!("pacer/", env!("CARGO_PKG_VERSION"));
/// The REST API version pacer was written against.
pub const API_VERSION: &str = "2022-11-28";
const ACCEPT: &str = "application/vnd.github+json";

/// How far back the App JWT's `iat` is set, so a GitHub clock slightly behind ours accepts it.
const JWT_BACKDATE: TimeDelta = TimeDelta::seconds(60);
/// The App JWT's lifetime from now; GitHub refuses more than ten minutes.
const JWT_LIFETIME: TimeDelta = TimeDelta::minutes(9);
/// An installation token is replaced this long before it expires, so no call starts with a
/// token that dies in flight.
pub const TOKEN_REFRESH_MARGIN: TimeDelta = TimeDelta::minutes(5);
/// How long the latest actions/runner release is trusted before asking again (a pinned one is
/// kept for good: a published release's assets do not change).
pub const RELEASE_CACHE_TTL: TimeDelta = TimeDelta::hours(1);
/// GitHub's largest page.
const PER_PAGE: usize = 100;
/// A bound on pagination, so a misbehaving server cannot keep pacer paging forever.
pub const MAX_PAGES: u32 = 100;
/// The workflow run statuses whose runs may hold queued jobs, in the order they are looked at:
/// a queued run's jobs are all waiting; a run in progress may still have some waiting.
const RUN_STATUSES_WITH_QUEUED_JOBS: [&str; 2] = ["queued", "in_progress"];
/// How many runs' jobs are listed at once: quicker than one by one, gentle on GitHub's
/// secondary (concurrency) limits.
const RUN_JOBS_CONCURRENCY: usize = 4;
/// What GitHub documents for a secondary rate limit that names no wait: at least a minute.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Error text taken from a response body is cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// How hard [`RestGitHub`] tries before giving up on a call.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles per attempt, jittered.
    pub base_delay: Duration,
    /// No single backoff is longer.
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    /// A rate limit asking for a longer wait is returned as `RateLimited` instead of waited out.
    pub max_rate_limit_wait: Duration,
    /// Per HTTP request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(60),
            max_rate_limit_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: exponential with "equal jitter" (half fixed, half
    /// random), so concurrent callers spread out but never retry immediately.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

/// The GitHub port over the REST API. See the module docs.
pub struct RestGitHub {
    http: reqwest::Client,
    /// Ends with `/`, so API paths join under an Enterprise `/api/v3` prefix too.
    base: Url,
    app_id: u64,
    key: EncodingKey,
    clock: Arc<dyn Clock>,
    /// Which actions/runner release runners install, and where its checksums come from.
    release_source: ReleaseSource,
    retry: RetryPolicy,
    /// One slot per installation; a caller holds the slot's lock while fetching, so concurrent
    /// callers share one fetch.
    tokens: std::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<InstallationToken>>>>>,
    /// The release last learnt from GitHub, and when.
    release: tokio::sync::Mutex<Option<(RunnerRelease, Time)>>,
    /// One per HTTP request sent, retries and token fetches included.
    calls: CallCounts,
}

impl fmt::Debug for RestGitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestGitHub")
            .field("base", &self.base.as_str())
            .field("app_id", &self.app_id)
            .field("release_source", &self.release_source)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// An actions/runner release: its version and the SHA-256 of those of its tarballs pacer learnt,
/// lower-case hex by file name.
#[derive(Debug, Clone, PartialEq)]
struct RunnerRelease {
    version: String,
    sha256: BTreeMap<String, String>,
}

/// Where the release runners install comes from: `runner.version` and `runner.sha256`.
#[derive(Debug, Clone, PartialEq)]
enum ReleaseSource {
    /// The newest release, asked for at `releases/latest`.
    Latest,
    /// A pinned version, asked for by its tag.
    Tag(String),
    /// A pinned version with the operator's checksums: GitHub is not asked.
    Configured(RunnerRelease),
}

impl ReleaseSource {
    fn from_config(runner: &RunnerConfig) -> Self {
        let version = match runner.version.trim() {
            "" | "latest" => return ReleaseSource::Latest,
            pin => pin.trim_start_matches('v').to_owned(),
        };
        let sha256: BTreeMap<String, String> = runner
            .sha256
            .given()
            .filter_map(|(_, os, arch, value)| {
                Some((runner_tarball(&version, os, arch), sha256_hex(value)?))
            })
            .collect();
        if sha256.is_empty() {
            ReleaseSource::Tag(version)
        } else {
            ReleaseSource::Configured(RunnerRelease { version, sha256 })
        }
    }
}

struct InstallationToken {
    token: Secret,
    expires_at: Time,
}

impl InstallationToken {
    fn usable_at(&self, now: Time) -> bool {
        now < self.expires_at - TOKEN_REFRESH_MARGIN
    }
}

#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

impl RestGitHub {
    /// Builds the client from `github.*`: the App id, the PEM key (`private_key` or
    /// `private_key_path`, checked by signing once so a bad key fails at start, naming the key)
    /// and `api_url`; and from `runner.*`, which release runners install (`latest` or a pin) and
    /// the operator's checksums of it, if any.
    pub fn new(
        cfg: &GithubConfig,
        runner: &RunnerConfig,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let app_id = cfg
            .app_id
            .context("github.app_id is required unless github.disabled is true")?;
        let key_name = if cfg.private_key.is_some() {
            "github.private_key"
        } else {
            "github.private_key_path"
        };
        let pem = cfg.private_key_pem()?;
        let key = EncodingKey::from_rsa_pem(pem.expose().as_bytes())
            .map_err(|e| anyhow::anyhow!("{key_name}: not an RSA private key in PEM form ({e})"))?;

        crate::server::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(HeaderMap::from_iter([
                (header::ACCEPT, HeaderValue::from_static(ACCEPT)),
                (
                    header::HeaderName::from_static("x-github-api-version"),
                    HeaderValue::from_static(API_VERSION),
                ),
            ]))
            .build()
            .context("building the GitHub HTTP client")?;

        let mut base = cfg.api_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let github = Self {
            http,
            base,
            app_id,
            key,
            clock,
            release_source: ReleaseSource::from_config(runner),
            retry: RetryPolicy::default(),
            tokens: Default::default(),
            release: Default::default(),
            calls: CallCounts::default(),
        };
        github
            .app_jwt()
            .map_err(|e| anyhow::anyhow!("{key_name}: the key cannot sign the App's JWT ({e})"))?;
        Ok(github)
    }

    /// The requests sent so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The App JWT GitHub wants on `/app/…` endpoints.
    fn app_jwt(&self) -> Result<Secret, jsonwebtoken::errors::Error> {
        let now = self.clock.now();
        let claims = AppClaims {
            iat: (now - JWT_BACKDATE).timestamp(),
            exp: (now + JWT_LIFETIME).timestamp(),
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map(Secret::new)
    }

    /// A usable installation token: the cached one, or a fresh one fetched by exactly one of the
    /// callers that found the cache stale.
    async fn installation_token(&self, installation_id: i64) -> GitHubResult<Secret> {
        let slot = self.token_slot(installation_id);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.usable_at(self.clock.now())) {
            return Ok(token.token.clone());
        }
        let fresh = self.fetch_installation_token(installation_id).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops `stale` from the cache after GitHub refused it, unless another caller already
    /// replaced it.
    async fn forget_token(&self, installation_id: i64, stale: &Secret) {
        let slot = self.token_slot(installation_id);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|t| &t.token == stale) {
            *cached = None;
        }
    }

    fn token_slot(
        &self,
        installation_id: i64,
    ) -> Arc<tokio::sync::Mutex<Option<InstallationToken>>> {
        let mut tokens = crate::sync::lock(&self.tokens);
        tokens.entry(installation_id).or_default().clone()
    }

    /// Trades the App JWT for an installation token. Boxed: `call` fetches tokens, and this
    /// fetch is itself a `call`.
    fn fetch_installation_token(
        &self,
        installation_id: i64,
    ) -> BoxFuture<'_, GitHubResult<InstallationToken>> {
        #[derive(Deserialize)]
        struct Wire {
            token: String,
            expires_at: Time,
        }
        Box::pin(async move {
            let id = installation_id.to_string();
            let call = Call::new(
                &ACCESS_TOKEN,
                Method::POST,
                ["app", "installations", &id, "access_tokens"],
            )
            .auth(Auth::App);
            let wire: Wire = self.call(&call).await?.json(&call)?;
            tracing::debug!(installation_id, expires_at = %wire.expires_at, "installation token issued");
            Ok(InstallationToken {
                token: Secret::new(wire.token),
                expires_at: wire.expires_at,
            })
        })
    }

    /// One API call with authentication, retries and error mapping (see the module docs).
    /// Answers 2xx replies, and a 404 reply when the call allows it.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = call.endpoint.route))]
    async fn call(&self, call: &Call<'_>) -> GitHubResult<Reply> {
        let url = self.url(call);
        let started = tokio::time::Instant::now();
        let mut refreshed_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credential = match call.auth {
                Auth::None => None,
                Auth::App => Some(
                    self.app_jwt()
                        .map_err(|e| anyhow::anyhow!("signing the App JWT: {e}"))?,
                ),
                Auth::Installation(id) => Some(self.installation_token(id).await?),
            };
            let failure = match self.send(call, &url, credential.as_ref()).await {
                Ok(reply) if reply.status.is_success() => return Ok(reply),
                Ok(reply) if reply.status == StatusCode::NOT_FOUND && call.not_found_ok => {
                    return Ok(reply);
                }
                Ok(reply) => classify(call, &reply, self.clock.now()),
                Err(e) => {
                    Failure::Transient(format!("{}: {}", call.describe(), transport_error(&e)))
                }
            };
            let wait = match failure {
                Failure::Final(err) => return Err(err),
                Failure::Unauthorized(err) => match (call.auth, credential) {
                    // A revoked or expired token: fetch a new one, once.
                    (Auth::Installation(id), Some(stale)) if !refreshed_token => {
                        refreshed_token = true;
                        self.forget_token(id, &stale).await;
                        tracing::info!(
                            installation_id = id,
                            "GitHub refused the installation token; fetching a new one"
                        );
                        continue;
                    }
                    _ => return Err(err),
                },
                Failure::RateLimited(wait) => {
                    if attempt >= self.retry.max_attempts || wait > self.retry.max_rate_limit_wait {
                        return Err(GitHubError::RateLimited { retry_after: wait });
                    }
                    tracing::warn!(
                        endpoint = call.endpoint.route,
                        ?wait,
                        attempt,
                        "GitHub rate limit; waiting as asked"
                    );
                    wait
                }
                Failure::Transient(message) => {
                    let wait = self.retry.backoff(attempt);
                    if attempt >= self.retry.max_attempts
                        || started.elapsed() + wait > self.retry.max_elapsed
                    {
                        return Err(GitHubError::Unavailable(format!(
                            "{message} (gave up after {attempt} attempts)"
                        )));
                    }
                    tracing::warn!(endpoint = call.endpoint.route, ?wait, attempt, %message, "GitHub call failed; retrying");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn send(
        &self,
        call: &Call<'_>,
        url: &Url,
        credential: Option<&Secret>,
    ) -> reqwest::Result<Reply> {
        let mut request = self
            .http
            .request(call.method.clone(), url.clone())
            .timeout(self.retry.request_timeout);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(credential) = credential {
            // pacer's App JWT is base64url; an installation token is whatever GitHub sent. One
            // that cannot be a header value goes unsent, and GitHub's 401 says what is wrong.
            match HeaderValue::try_from(format!("Bearer {}", credential.expose())) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request = request.header(header::AUTHORIZATION, value);
                }
                Err(_) => tracing::error!(
                    endpoint = call.endpoint.route,
                    "the GitHub credential holds characters a header cannot carry; sending the call without it"
                ),
            }
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        self.calls.count(calls::Call::GitHub);
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Up to `budget` runs of `repo` with `status`, newest first, skipping those in `seen`
    /// (a run can change status between two listings). Answers the runs and the calls made.
    async fn runs_with_status(
        &self,
        installation_id: i64,
        repo: &RepoName,
        status: &'static str,
        budget: usize,
        per_page: usize,
        seen: &mut HashSet<i64>,
    ) -> GitHubResult<(Vec<WireRun>, u32)> {
        let mut runs = Vec::new();
        let mut listed = 0;
        for page in 1..=MAX_PAGES {
            let call = Call::new(
                &REPO_RUNS,
                Method::GET,
                ["repos", repo.owner(), repo.name(), "actions", "runs"],
            )
            .auth(Auth::Installation(installation_id))
            .query("status", status.to_owned())
            .query("per_page", per_page.to_string())
            .query("page", page.to_string());
            let reply = self.call(&call).await?;
            let wire: WireRuns = reply.json(&call)?;
            let on_page = wire.workflow_runs.len();
            listed += on_page;
            for run in wire.workflow_runs {
                if runs.len() == budget {
                    return Ok((runs, page));
                }
                if seen.insert(run.id) {
                    runs.push(run);
                }
            }
            if runs.len() == budget
                || !more_pages(&reply.headers, on_page, per_page, listed, wire.total_count)
            {
                return Ok((runs, page));
            }
        }
        tracing::warn!(
            status,
            pages = MAX_PAGES,
            "workflow run list truncated at the page limit"
        );
        Ok((runs, MAX_PAGES))
    }

    /// The queued jobs of one run's latest attempt, and the calls made. A run GitHub no longer
    /// has (deleted since it was listed) has none.
    async fn queued_jobs_of_run(
        &self,
        installation_id: i64,
        repo: &RepoName,
        run: WireRun,
    ) -> GitHubResult<(Vec<GhQueuedJob>, u32)> {
        let run_id = run.id.to_string();
        let mut queued = Vec::new();
        let mut listed = 0;
        for page in 1..=MAX_PAGES {
            let call = Call::new(
                &RUN_JOBS,
                Method::GET,
                [
                    "repos",
                    repo.owner(),
                    repo.name(),
                    "actions",
                    "runs",
                    &run_id,
                    "jobs",
                ],
            )
            .auth(Auth::Installation(installation_id))
            .query("filter", "latest".to_owned())
            .query("per_page", PER_PAGE.to_string())
            .query("page", page.to_string())
            .not_found_ok();
            let reply = self.call(&call).await?;
            if reply.status == StatusCode::NOT_FOUND {
                tracing::debug!(
                    run_id = run.id,
                    "workflow run gone before its jobs were listed"
                );
                return Ok((queued, page));
            }
            let wire: WireJobs = reply.json(&call)?;
            let on_page = wire.jobs.len();
            listed += on_page;
            queued.extend(
                wire.jobs
                    .into_iter()
                    .filter(|job| job.status == "queued")
                    .map(|job| job.into_queued(&run, self.clock.now())),
            );
            if !more_pages(&reply.headers, on_page, PER_PAGE, listed, wire.total_count) {
                return Ok((queued, page));
            }
        }
        tracing::warn!(
            run_id = run.id,
            pages = MAX_PAGES,
            "job list truncated at the page limit"
        );
        Ok((queued, MAX_PAGES))
    }

    /// The release runners install: the operator's (no call), or GitHub's, cached — an hour
    /// for the newest, for good for a pin.
    async fn runner_release(&self) -> GitHubResult<RunnerRelease> {
        let (call, pinned) = match &self.release_source {
            ReleaseSource::Configured(release) => return Ok(release.clone()),
            ReleaseSource::Latest => (
                Call::new(
                    &LATEST_RELEASE,
                    Method::GET,
                    ["repos", "actions", "runner", "releases", "latest"].map(String::from),
                ),
                None,
            ),
            ReleaseSource::Tag(version) => (
                Call::new(
                    &RELEASE_BY_TAG,
                    Method::GET,
                    ["repos", "actions", "runner", "releases", "tags"]
                        .map(String::from)
                        .into_iter()
                        .chain([format!("v{version}")]),
                ),
                Some(version),
            ),
        };
        // Held across the fetch: callers arriving meanwhile wait for its answer.
        let mut cached = self.release.lock().await;
        let now = self.clock.now();
        if let Some((release, fetched_at)) = cached.as_ref() {
            if pinned.is_some() || now - *fetched_at < RELEASE_CACHE_TTL {
                return Ok(release.clone());
            }
        }
        let fetched = match self.call(&call).await {
            Ok(reply) => reply
                .json::<WireRelease>(&call)
                .and_then(WireRelease::into_release),
            Err(e) => Err(e),
        };
        let fetched = fetched.and_then(|release| match pinned {
            Some(pin) if *pin != release.version => Err(GitHubError::Other(anyhow::anyhow!(
                "{}: GitHub answered release {} for the pinned runner.version {pin}",
                call.describe(),
                release.version
            ))),
            _ => Ok(release),
        });
        match (fetched, cached.as_ref()) {
            (Ok(release), _) => {
                tracing::info!(version = %release.version, checksums = release.sha256.len(), "actions/runner release");
                *cached = Some((release.clone(), now));
                Ok(release)
            }
            // A stale answer beats no runner: keep serving it while GitHub is unreachable.
            (Err(e), Some((stale, _))) if e.is_transient() => {
                tracing::warn!(error = %crate::error_text::display_chain(&e), version = %stale.version, "cannot refresh the latest actions/runner release; using the cached one");
                Ok(stale.clone())
            }
            (Err(e), _) => Err(e),
        }
    }

    fn url(&self, call: &Call<'_>) -> Url {
        let mut url = self.base.clone();
        // `github.api_url` is validated as an http(s) URL, and those always have a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(&call.segments);
        }
        url
    }

    fn target_segments(target: &RunnerTarget) -> Vec<String> {
        match target {
            RunnerTarget::Repo(repo) => {
                vec!["repos".into(), repo.owner().into(), repo.name().into()]
            }
            RunnerTarget::Org(org) => vec!["orgs".into(), org.clone()],
        }
    }
}

#[async_trait]
impl GitHub for RestGitHub {
    #[tracing::instrument(skip(self), fields(repo = %repo))]
    async fn repo_installation(&self, repo: &RepoName) -> GitHubResult<i64> {
        #[derive(Deserialize)]
        struct Wire {
            id: i64,
        }
        let call = Call::new(
            &REPO_INSTALLATION,
            Method::GET,
            ["repos", repo.owner(), repo.name(), "installation"],
        )
        .auth(Auth::App);
        Ok(self.call(&call).await?.json::<Wire>(&call)?.id)
    }

    #[tracing::instrument(skip(self, req), fields(target = %target, runner_name = %req.name))]
    async fn generate_jit_config(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        req: &JitRequest,
    ) -> GitHubResult<JitConfig> {
        #[derive(Deserialize)]
        struct Wire {
            runner: WireRunnerRef,
            encoded_jit_config: String,
        }
        #[derive(Deserialize)]
        struct WireRunnerRef {
            id: i64,
            name: String,
        }
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_JITCONFIG,
            RunnerTarget::Org(_) => &ORG_JITCONFIG,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions", "runners", "generate-jitconfig"].map(String::from));
        let body = serde_json::to_value(req).context("serialising the JIT request")?;
        let call = Call::new(endpoint, Method::POST, segments)
            .auth(Auth::Installation(installation_id))
            .body(body);
        let wire: Wire = self.call(&call).await?.json(&call)?;
        tracing::info!(runner_id = wire.runner.id, "JIT runner registered");
        Ok(JitConfig {
            runner_id: wire.runner.id,
            runner_name: wire.runner.name,
            encoded_jit_config: wire.encoded_jit_config,
        })
    }

    #[tracing::instrument(skip(self), fields(target = %target))]
    async fn delete_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<()> {
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_RUNNER_DELETE,
            RunnerTarget::Org(_) => &ORG_RUNNER_DELETE,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions".into(), "runners".into(), runner_id.to_string()]);
        let call = Call::new(endpoint, Method::DELETE, segments)
            .auth(Auth::Installation(installation_id))
            .not_found_ok();
        let reply = self.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            tracing::debug!("runner already gone");
        }
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(target = %target))]
    async fn list_runners(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
    ) -> GitHubResult<Vec<GhRunner>> {
        #[derive(Deserialize)]
        struct Wire {
            total_count: usize,
            runners: Vec<WireRunner>,
        }
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_RUNNERS,
            RunnerTarget::Org(_) => &ORG_RUNNERS,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions", "runners"].map(String::from));
        let mut runners = Vec::new();
        for page in 1..=MAX_PAGES {
            let call = Call::new(endpoint, Method::GET, segments.clone())
                .auth(Auth::Installation(installation_id))
                .query("per_page", PER_PAGE.to_string())
                .query("page", page.to_string());
            let reply = self.call(&call).await?;
            let wire: Wire = reply.json(&call)?;
            let on_page = wire.runners.len();
            runners.extend(wire.runners.into_iter().map(GhRunner::from));
            if !more_pages(
                &reply.headers,
                on_page,
                PER_PAGE,
                runners.len(),
                wire.total_count,
            ) {
                return Ok(runners);
            }
        }
        tracing::warn!(
            pages = MAX_PAGES,
            listed = runners.len(),
            "runner list truncated at the page limit"
        );
        Ok(runners)
    }

    #[tracing::instrument(skip(self), fields(target = %target))]
    async fn get_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<Option<GhRunner>> {
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_RUNNER,
            RunnerTarget::Org(_) => &ORG_RUNNER,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions".into(), "runners".into(), runner_id.to_string()]);
        let call = Call::new(endpoint, Method::GET, segments)
            .auth(Auth::Installation(installation_id))
            .not_found_ok();
        let reply = self.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(reply.json::<WireRunner>(&call)?.into()))
    }

    #[tracing::instrument(skip(self), fields(repo = %repo))]
    async fn get_job(
        &self,
        installation_id: i64,
        repo: &RepoName,
        job_id: i64,
    ) -> GitHubResult<Option<GhJob>> {
        let job = job_id.to_string();
        let call = Call::new(
            &JOB,
            Method::GET,
            ["repos", repo.owner(), repo.name(), "actions", "jobs", &job],
        )
        .auth(Auth::Installation(installation_id))
        .not_found_ok();
        let reply = self.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        reply.json(&call).map(Some)
    }

    #[tracing::instrument(skip(self))]
    async fn runner_download(&self, os: &str, arch: &str) -> GitHubResult<RunnerDownload> {
        let release = self.runner_release().await?;
        let file = runner_tarball(&release.version, os, arch);
        if let Some(sha256) = release.sha256.get(&file) {
            return Ok(RunnerDownload::new(
                &release.version,
                os,
                arch,
                Some(sha256.clone()),
            ));
        }
        let key = RunnerSha256::key_for(os, arch);
        let (why, fix) = match (&self.release_source, key) {
            (ReleaseSource::Configured(_), Some(key)) => {
                ("runner.sha256 gives none".to_owned(), format!("set {key}"))
            }
            (ReleaseSource::Configured(_), None) => (
                "runner.sha256 gives none".to_owned(),
                "runner.sha256 holds Linux x64 and arm64 checksums only".to_owned(),
            ),
            (_, key) => (
                format!(
                    "actions/runner v{} publishes none (no digest on such an asset, none between the SHA markers of its release notes)",
                    release.version
                ),
                match key {
                    Some(key) => format!("pin runner.version and set {key}"),
                    None => "use a platform the release publishes a checksum for".to_owned(),
                },
            ),
        };
        Err(GitHubError::Other(anyhow::anyhow!(
            "no SHA-256 is known for {file}: {why}; pacer hands out no download a runner cannot verify ({fix})"
        )))
    }

    #[tracing::instrument(skip(self), fields(repo = %repo))]
    async fn queued_jobs(
        &self,
        installation_id: i64,
        repo: &RepoName,
        max_runs: usize,
    ) -> GitHubResult<Vec<GhQueuedJob>> {
        // One page size for every page of a listing: page N is an offset of (N - 1) pages.
        let per_page = max_runs.min(PER_PAGE);
        let mut seen = HashSet::new();
        let mut runs = Vec::new();
        let mut calls = 0;
        for status in RUN_STATUSES_WITH_QUEUED_JOBS {
            let budget = max_runs - runs.len();
            if budget == 0 {
                break;
            }
            let (found, made) = self
                .runs_with_status(installation_id, repo, status, budget, per_page, &mut seen)
                .await?;
            runs.extend(found);
            calls += made;
        }
        let run_count = runs.len();
        let per_run: Vec<(Vec<GhQueuedJob>, u32)> = futures::stream::iter(runs)
            .map(|run| self.queued_jobs_of_run(installation_id, repo, run))
            .buffered(RUN_JOBS_CONCURRENCY)
            .try_collect()
            .await?;
        let mut jobs_seen = HashSet::new();
        let mut queued = Vec::new();
        for (jobs, made) in per_run {
            calls += made;
            queued.extend(jobs.into_iter().filter(|job| jobs_seen.insert(job.id)));
        }
        tracing::debug!(
            runs = run_count,
            queued = queued.len(),
            calls,
            "listed the queued jobs of the repository's runs"
        );
        Ok(queued)
    }

    #[tracing::instrument(skip(self))]
    async fn failed_deliveries(&self, since: Time) -> GitHubResult<Vec<GhDelivery>> {
        let mut failed: Vec<GhDelivery> = Vec::new();
        let mut failed_at: HashMap<String, usize> = HashMap::new();
        let mut delivered: HashSet<String> = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            let mut call = Call::new(&HOOK_DELIVERIES, Method::GET, ["app", "hook", "deliveries"])
                .auth(Auth::App)
                .query("per_page", PER_PAGE.to_string());
            if let Some(cursor) = &cursor {
                call = call.query("cursor", cursor.clone());
            }
            let reply = self.call(&call).await?;
            let page: Vec<WireDelivery> = reply.json(&call)?;
            // Newest first: once a page reaches past `since`, older pages are not wanted.
            let reached_since = page.is_empty() || page.iter().any(|d| d.delivered_at < since);
            for wire in page.into_iter().filter(|d| d.delivered_at >= since) {
                if (200..300).contains(&wire.status_code) {
                    delivered.insert(wire.guid);
                } else if let Some(listed) =
                    failed_at.get(&wire.guid).and_then(|&i| failed.get_mut(i))
                {
                    // An older failed attempt of an event already listed by its newest one.
                    listed.failed_attempts += 1;
                } else {
                    failed_at.insert(wire.guid.clone(), failed.len());
                    failed.push(wire.into_delivery());
                }
            }
            if reached_since {
                break;
            }
            let next = link_target(&reply.headers, "next").and_then(|url| {
                url.query_pairs()
                    .find(|(k, _)| k == "cursor")
                    .map(|(_, v)| v.into_owned())
            });
            match next {
                Some(next) if cursor.as_ref() != Some(&next) && pages < MAX_PAGES => {
                    cursor = Some(next)
                }
                Some(_) => {
                    tracing::warn!(
                        pages,
                        "webhook delivery list truncated (page limit or a repeated cursor)"
                    );
                    break;
                }
                None => break,
            }
        }
        // An event GitHub delivered successfully since (a redelivery that worked) needs nothing.
        failed.retain(|d| !delivered.contains(&d.guid));
        failed.sort_by_key(|d| std::cmp::Reverse(d.delivered_at));
        tracing::debug!(
            pages,
            failed = failed.len(),
            "listed failed webhook deliveries"
        );
        Ok(failed)
    }

    #[tracing::instrument(skip(self))]
    async fn redeliver(&self, delivery_id: i64) -> GitHubResult<()> {
        let id = delivery_id.to_string();
        let call = Call::new(
            &REDELIVER,
            Method::POST,
            ["app", "hook", "deliveries", &id, "attempts"],
        )
        .auth(Auth::App);
        self.call(&call).await?;
        tracing::info!(delivery_id, "webhook redelivery requested");
        Ok(())
    }
}

/// `v2.321.0` → `2.321.0`, refusing anything that is not a dotted number.
fn parse_release_tag(tag: &str) -> GitHubResult<String> {
    let version = tag.trim().trim_start_matches('v');
    let well_formed = !version.is_empty()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(GitHubError::Other(anyhow::anyhow!(
            "the actions/runner release has an unexpected tag {tag:?}"
        )));
    }
    Ok(version.to_owned())
}

/// An actions/runner release as the REST API returns it.
#[derive(Deserialize)]
struct WireRelease {
    tag_name: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    assets: Vec<WireAsset>,
}

#[derive(Deserialize)]
struct WireAsset {
    name: String,
    /// `sha256:<hex>`, computed by GitHub at upload; `null` for assets uploaded before it did.
    #[serde(default)]
    digest: Option<String>,
}

impl WireRelease {
    /// The release with the checksum of each tarball: GitHub's digest of the asset, else the one
    /// actions/runner writes into the release notes (older releases have only those).
    fn into_release(self) -> GitHubResult<RunnerRelease> {
        let version = parse_release_tag(&self.tag_name)?;
        let mut sha256 = BTreeMap::new();
        for asset in self.assets {
            let digest = asset
                .digest
                .as_deref()
                .and_then(|d| d.strip_prefix("sha256:"));
            if let Some(hex) = digest.and_then(sha256_hex) {
                sha256.insert(asset.name, hex);
            }
        }
        for (platform, hex) in notes_checksums(self.body.as_deref().unwrap_or_default()) {
            // Windows packages are zips, which pacer never names.
            if !platform.starts_with("win-") {
                let (os, arch) = platform.split_once('-').unwrap_or((platform, ""));
                sha256
                    .entry(runner_tarball(&version, os, arch))
                    .or_insert(hex);
            }
        }
        Ok(RunnerRelease { version, sha256 })
    }
}

/// The checksums in actions/runner's release notes, one per platform:
/// `<!-- BEGIN SHA linux-x64 -->`hex`<!-- END SHA linux-x64 -->`.
fn notes_checksums(notes: &str) -> impl Iterator<Item = (&str, String)> {
    notes.split("<!-- BEGIN SHA ").skip(1).filter_map(|part| {
        let (platform, rest) = part.split_once(" -->")?;
        let (hex, rest) = rest.split_once("<!-- END SHA ")?;
        if rest.split_once(" -->")?.0 != platform {
            return None;
        }
        Some((platform, sha256_hex(hex.trim())?))
    })
}

// ----------------------------------------------------------------------------------- endpoints

/// What pacer knows about one API operation: its route (for logs) and what it needs.
#[derive(Debug)]
struct Endpoint {
    /// Method and path template, as in GitHub's REST reference.
    route: &'static str,
    /// The App permission the operation needs, named when GitHub says it is missing.
    permission: Option<&'static str>,
    /// What a 404 most likely means here.
    not_found_hint: Option<&'static str>,
}

const ACCESS_TOKEN: Endpoint = Endpoint {
    route: "POST /app/installations/{installation_id}/access_tokens",
    permission: None,
    not_found_hint: Some("the installation does not exist; was the App uninstalled?"),
};
const REPO_INSTALLATION: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/installation",
    permission: None,
    not_found_hint: Some("the GitHub App is not installed on this repository"),
};
const REPO_JITCONFIG: Endpoint = Endpoint {
    route: "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig",
    permission: Some("administration: write (repository)"),
    not_found_hint: Some("is the App installed on this repository?"),
};
const ORG_JITCONFIG: Endpoint = Endpoint {
    route: "POST /orgs/{org}/actions/runners/generate-jitconfig",
    permission: Some("organization_self_hosted_runners: write (organization)"),
    not_found_hint: Some(
        "is the App installed on the organization itself, not only on some of its repositories?",
    ),
};
const REPO_RUNNERS: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runners",
    permission: Some("administration: read (repository)"),
    not_found_hint: None,
};
const ORG_RUNNERS: Endpoint = Endpoint {
    route: "GET /orgs/{org}/actions/runners",
    permission: Some("organization_self_hosted_runners: read (organization)"),
    not_found_hint: None,
};
const REPO_RUNNER: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runners/{runner_id}",
    permission: Some("administration: read (repository)"),
    not_found_hint: None,
};
const ORG_RUNNER: Endpoint = Endpoint {
    route: "GET /orgs/{org}/actions/runners/{runner_id}",
    permission: Some("organization_self_hosted_runners: read (organization)"),
    not_found_hint: None,
};
const REPO_RUNNER_DELETE: Endpoint = Endpoint {
    route: "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}",
    permission: Some("administration: write (repository)"),
    not_found_hint: None,
};
const ORG_RUNNER_DELETE: Endpoint = Endpoint {
    route: "DELETE /orgs/{org}/actions/runners/{runner_id}",
    permission: Some("organization_self_hosted_runners: write (organization)"),
    not_found_hint: None,
};
const JOB: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/jobs/{job_id}",
    permission: Some("actions: read (repository)"),
    not_found_hint: None,
};
const REPO_RUNS: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runs",
    permission: Some("actions: read (repository)"),
    not_found_hint: Some("is the App installed on this repository?"),
};
const RUN_JOBS: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
    permission: Some("actions: read (repository)"),
    not_found_hint: None,
};
const HOOK_DELIVERIES: Endpoint = Endpoint {
    route: "GET /app/hook/deliveries",
    permission: None,
    not_found_hint: Some("does the GitHub App have a webhook?"),
};
const REDELIVER: Endpoint = Endpoint {
    route: "POST /app/hook/deliveries/{delivery_id}/attempts",
    permission: None,
    not_found_hint: Some("GitHub keeps webhook deliveries for three days; this one may be gone"),
};
const LATEST_RELEASE: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/releases/latest",
    permission: None,
    not_found_hint: Some(
        "actions/runner releases are looked up at github.api_url; if that host has none, pin runner.version and set runner.sha256",
    ),
};
const RELEASE_BY_TAG: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/releases/tags/{tag}",
    permission: None,
    not_found_hint: Some(
        "actions/runner releases are looked up at github.api_url; if that host has none, set runner.sha256",
    ),
};

#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    App,
    Installation(i64),
}

/// One request as the retry loop sees it.
struct Call<'e> {
    endpoint: &'e Endpoint,
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<serde_json::Value>,
    auth: Auth,
    not_found_ok: bool,
}

impl<'e> Call<'e> {
    fn new<S: Into<String>>(
        endpoint: &'e Endpoint,
        method: Method,
        segments: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            endpoint,
            method,
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            auth: Auth::None,
            not_found_ok: false,
        }
    }

    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    fn query(mut self, name: &'static str, value: String) -> Self {
        self.query.push((name, value));
        self
    }

    /// A 404 is an answer ("gone"), not an error.
    fn not_found_ok(mut self) -> Self {
        self.not_found_ok = true;
        self
    }

    /// `POST /orgs/acme/actions/runners/generate-jitconfig`: names what failed, with no secret.
    fn describe(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// Parses the body. A parse error names the endpoint and the position only: serde's own
    /// message can quote values, and a value here may be a token or a JIT config.
    fn json<T: DeserializeOwned>(&self, call: &Call<'_>) -> GitHubResult<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            GitHubError::Other(anyhow::anyhow!(
                "{}: unexpected response body ({:?} error at line {}, column {})",
                call.describe(),
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// GitHub's error text: `message`, plus the field errors of a 422, cut short.
    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Wire {
            message: Option<String>,
            #[serde(default)]
            errors: Vec<serde_json::Value>,
        }
        let reason = self.status.canonical_reason().unwrap_or("error").to_owned();
        let Ok(wire) = serde_json::from_slice::<Wire>(&self.body) else {
            return format!("{} {reason}", self.status.as_u16());
        };
        let mut message = wire.message.unwrap_or(reason);
        let details: Vec<String> = wire
            .errors
            .iter()
            .filter_map(describe_field_error)
            .collect();
        if !details.is_empty() {
            message = format!("{message} ({})", details.join("; "));
        }
        if message.chars().count() > MAX_MESSAGE_CHARS {
            message = message
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .chain("…".chars())
                .collect();
        }
        message
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }
}

/// One entry of a 422's `errors`: a string, or `{resource, field, code, message}`.
fn describe_field_error(error: &serde_json::Value) -> Option<String> {
    if let Some(text) = error.as_str() {
        return Some(text.to_owned());
    }
    if let Some(message) = error.get("message").and_then(|m| m.as_str()) {
        return Some(message.to_owned());
    }
    let part = |k: &str| error.get(k).and_then(|v| v.as_str());
    let code = part("code")?;
    Some(match (part("resource"), part("field")) {
        (Some(resource), Some(field)) => format!("{resource}.{field} {code}"),
        (None, Some(field)) => format!("{field} {code}"),
        _ => code.to_owned(),
    })
}

/// What to do about a reply that is neither 2xx nor an allowed 404.
enum Failure {
    Final(GitHubError),
    Unauthorized(GitHubError),
    RateLimited(Duration),
    Transient(String),
}

fn classify(call: &Call<'_>, reply: &Reply, now: Time) -> Failure {
    let status = reply.status;
    let message = reply.message();
    let what = call.describe();
    if let Some(wait) = rate_limit_wait(reply, &message, now) {
        return Failure::RateLimited(wait);
    }
    match status {
        StatusCode::UNAUTHORIZED => Failure::Unauthorized(GitHubError::Unauthorized(format!(
            "{what}: {message} (check github.app_id and the App's private key)"
        ))),
        StatusCode::FORBIDDEN => match call.endpoint.permission {
            Some(permission) if message.contains("Resource not accessible by integration") => {
                Failure::Final(GitHubError::MissingPermission {
                    permission: permission.to_owned(),
                    message: format!("{what}: {message}"),
                })
            }
            _ => Failure::Final(GitHubError::Refused(format!("{what}: 403 {message}"))),
        },
        StatusCode::NOT_FOUND => {
            Failure::Final(GitHubError::NotFound(match call.endpoint.not_found_hint {
                Some(hint) => format!("{what}: {message}; {hint}"),
                None => format!("{what}: {message}"),
            }))
        }
        StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
            Failure::Final(GitHubError::Refused(format!("{what}: {message}")))
        }
        StatusCode::REQUEST_TIMEOUT => {
            Failure::Transient(format!("{what}: {} {message}", status.as_u16()))
        }
        s if s.is_server_error() => {
            Failure::Transient(format!("{what}: {} {message}", status.as_u16()))
        }
        _ => Failure::Final(GitHubError::Refused(format!(
            "{what}: {} {message}",
            status.as_u16()
        ))),
    }
}

/// How long GitHub asks pacer to wait, when `reply` is a rate limit: `retry-after` seconds, else
/// the primary limit's `x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else a minute for a
/// secondary limit that names no wait.
fn rate_limit_wait(reply: &Reply, message: &str, now: Time) -> Option<Duration> {
    if reply.status != StatusCode::FORBIDDEN && reply.status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    if let Some(seconds) = reply
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(Duration::from_secs(seconds));
    }
    if reply.header("x-ratelimit-remaining") == Some("0") {
        if let Some(reset) = reply
            .header("x-ratelimit-reset")
            .and_then(|v| v.parse::<i64>().ok())
        {
            let seconds = (reset - now.timestamp()).max(0);
            return Some(Duration::from_secs(seconds.unsigned_abs()));
        }
    }
    if reply.status == StatusCode::TOO_MANY_REQUESTS
        || message.to_ascii_lowercase().contains("rate limit")
    {
        return Some(DEFAULT_RATE_LIMIT_WAIT);
    }
    None
}

/// Whether the `Link` header has a link with `rel`, or `None` when there is no `Link` header.
fn link_rel(headers: &HeaderMap, rel: &str) -> Option<bool> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let wanted = format!("rel=\"{rel}\"");
    Some(
        link.split(',')
            .any(|part| part.split(';').skip(1).any(|p| p.trim() == wanted)),
    )
}

/// Whether a page-numbered list has another page: the `Link` header is GitHub's word; without
/// one, a full page short of `total_count` means there is more.
fn more_pages(
    headers: &HeaderMap,
    on_page: usize,
    per_page: usize,
    listed: usize,
    total_count: usize,
) -> bool {
    match link_rel(headers, "next") {
        Some(next) => next,
        None => on_page == per_page && listed < total_count,
    }
}

/// The target of the `Link` header's link with `rel`.
fn link_target(headers: &HeaderMap, rel: &str) -> Option<Url> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let wanted = format!("rel=\"{rel}\"");
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| p.trim() == wanted)
            .then(|| Url::parse(target).ok())
            .flatten()
    })
}

/// A transport error in words, without the URL's query (harmless today, but kept short).
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    format!("{kind}: {}", crate::error_text::display_chain(e))
}

/// A runner as the REST API returns it: labels are objects there.
#[derive(Deserialize)]
struct WireRunner {
    id: i64,
    name: String,
    status: String,
    busy: bool,
    #[serde(default)]
    labels: Vec<WireLabel>,
}

#[derive(Deserialize)]
struct WireLabel {
    name: String,
}

impl From<WireRunner> for GhRunner {
    fn from(w: WireRunner) -> Self {
        GhRunner {
            id: w.id,
            name: w.name,
            status: w.status,
            busy: w.busy,
            labels: w.labels.into_iter().map(|l| l.name).collect(),
        }
    }
}

#[derive(Deserialize)]
struct WireLogin {
    login: String,
}

#[derive(Deserialize)]
struct WireRuns {
    total_count: usize,
    workflow_runs: Vec<WireRun>,
}

/// A workflow run: what its jobs do not say themselves.
#[derive(Deserialize)]
struct WireRun {
    id: i64,
    /// The workflow's name.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    run_attempt: Option<i64>,
    #[serde(default)]
    head_branch: Option<String>,
    #[serde(default)]
    created_at: Option<Time>,
    #[serde(default)]
    actor: Option<WireLogin>,
    #[serde(default)]
    triggering_actor: Option<WireLogin>,
    /// The repository the run belongs to (not its head's, which a fork's pull request names).
    #[serde(default)]
    repository: Option<WireRunRepository>,
}

#[derive(Deserialize)]
struct WireRunRepository {
    #[serde(default)]
    private: Option<bool>,
    #[serde(default)]
    visibility: Option<String>,
}

#[derive(Deserialize)]
struct WireJobs {
    total_count: usize,
    jobs: Vec<WireJob>,
}

#[derive(Deserialize)]
struct WireJob {
    id: i64,
    run_id: i64,
    #[serde(default)]
    run_attempt: Option<i64>,
    status: String,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    workflow_name: Option<String>,
    #[serde(default)]
    head_branch: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    created_at: Option<Time>,
}

impl WireJob {
    /// The job as the port reports it, completed from its run where the job is silent.
    fn into_queued(self, run: &WireRun, now: Time) -> GhQueuedJob {
        GhQueuedJob {
            id: self.id,
            run_id: self.run_id,
            run_attempt: self.run_attempt.or(run.run_attempt).unwrap_or(1),
            labels: self.labels.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
            workflow_name: self.workflow_name.or_else(|| run.name.clone()),
            head_branch: self.head_branch.or_else(|| run.head_branch.clone()),
            html_url: self.html_url,
            created_at: self.created_at.or(run.created_at).unwrap_or(now),
            sender: run
                .triggering_actor
                .as_ref()
                .or(run.actor.as_ref())
                .map(|a| a.login.clone()),
            visibility: run.repository.as_ref().map_or(Visibility::Public, |r| {
                Visibility::from_github(r.private, r.visibility.as_deref())
            }),
        }
    }
}

/// One item of `GET /app/hook/deliveries`.
#[derive(Deserialize)]
struct WireDelivery {
    id: i64,
    guid: String,
    delivered_at: Time,
    #[serde(default)]
    redelivery: bool,
    #[serde(default)]
    status: String,
    status_code: i64,
    event: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    installation_id: Option<i64>,
    #[serde(default)]
    repository_id: Option<i64>,
}

impl WireDelivery {
    fn into_delivery(self) -> GhDelivery {
        GhDelivery {
            id: self.id,
            guid: self.guid,
            event: self.event,
            action: self.action,
            // Anything that is not an HTTP status (GitHub sends 0 when it could not connect).
            status_code: u16::try_from(self.status_code).unwrap_or(0),
            status: self.status,
            delivered_at: self.delivered_at,
            redelivery: self.redelivery,
            installation_id: self.installation_id,
            repository_id: self.repository_id,
            failed_attempts: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use jsonwebtoken::{DecodingKey, Validation};

    fn test_key() -> rcgen::KeyPair {
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .expect("generate an RSA key")
    }

    fn config(pem: &str, api_url: &str) -> GithubConfig {
        GithubConfig {
            app_id: Some(4242),
            private_key: Some(Secret::new(pem)),
            api_url: Url::parse(api_url).unwrap(),
            ..GithubConfig::default()
        }
    }

    fn start() -> Time {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_app_jwt_is_rs256_backdated_a_minute_and_lives_nine_minutes() {
        let key = test_key();
        let gh = RestGitHub::new(
            &config(&key.serialize_pem(), "https://api.github.com/"),
            &RunnerConfig::default(),
            Arc::new(ManualClock::new(start())),
        )
        .unwrap();
        let jwt = gh.app_jwt().unwrap();

        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_issuer(&["4242"]);
        validation.set_required_spec_claims(&["iat", "exp", "iss"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            jwt.expose(),
            &DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes()).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["iat"], start().timestamp() - 60);
        assert_eq!(decoded.claims["exp"], start().timestamp() + 9 * 60);
    }

    #[test]
    fn a_key_that_is_not_an_rsa_pem_is_refused_naming_the_setting() {
        let err = RestGitHub::new(
            &config("not a key", "https://api.github.com/"),
            &RunnerConfig::default(),
            Arc::new(ManualClock::new(start())),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("github.private_key:"), "{err}");
        assert!(
            !err.contains("not a key"),
            "the key text must not be echoed: {err}"
        );

        let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = RestGitHub::new(
            &config(&ec, "https://api.github.com/"),
            &RunnerConfig::default(),
            Arc::new(ManualClock::new(start())),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("github.private_key:"), "{err}");
    }

    #[test]
    fn a_missing_app_id_is_named() {
        let mut cfg = config(&test_key().serialize_pem(), "https://api.github.com/");
        cfg.app_id = None;
        let err = RestGitHub::new(
            &cfg,
            &RunnerConfig::default(),
            Arc::new(ManualClock::new(start())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("github.app_id"), "{err}");
    }

    #[test]
    fn paths_join_under_an_enterprise_api_prefix() {
        let key = test_key().serialize_pem();
        for base in ["https://ghe.example/api/v3/", "https://ghe.example/api/v3"] {
            let gh = RestGitHub::new(
                &config(&key, base),
                &RunnerConfig::default(),
                Arc::new(ManualClock::new(start())),
            )
            .unwrap();
            let call = Call::new(
                &JOB,
                Method::GET,
                ["repos", "acme", "widgets", "actions", "jobs", "5"],
            );
            assert_eq!(
                gh.url(&call).as_str(),
                "https://ghe.example/api/v3/repos/acme/widgets/actions/jobs/5"
            );
        }
    }

    #[test]
    fn a_pinned_runner_version_drops_its_v() {
        let key = test_key().serialize_pem();
        let runner = RunnerConfig {
            version: "v2.321.0".into(),
            ..RunnerConfig::default()
        };
        let gh = RestGitHub::new(
            &config(&key, "https://api.github.com/"),
            &runner,
            Arc::new(ManualClock::new(start())),
        )
        .unwrap();
        assert_eq!(gh.release_source, ReleaseSource::Tag("2.321.0".into()));
    }

    #[test]
    fn release_tags_must_be_dotted_numbers() {
        assert_eq!(parse_release_tag("v2.321.0").unwrap(), "2.321.0");
        assert!(parse_release_tag("nightly").is_err());
        assert!(parse_release_tag("v2..1").is_err());
    }

    #[test]
    fn release_notes_give_each_platform_its_checksum_between_matching_markers() {
        let x64 = "a".repeat(64);
        let arm64 = "B".repeat(64);
        let notes = format!(
            "Another hex: {}\r\n- actions-runner-linux-x64-2.330.0.tar.gz <!-- BEGIN SHA linux-x64 -->{x64}<!-- END SHA linux-x64 -->\r\n\
             - actions-runner-linux-arm64-2.330.0.tar.gz <!-- BEGIN SHA linux-arm64 -->{arm64}<!-- END SHA linux-arm64 -->\n\
             <!-- BEGIN SHA osx-x64 -->{x64}<!-- END SHA osx-arm64 -->\n\
             <!-- BEGIN SHA linux-arm -->not a checksum<!-- END SHA linux-arm -->",
            "c".repeat(64)
        );
        let found: Vec<(&str, String)> = notes_checksums(&notes).collect();
        assert_eq!(
            found,
            [("linux-x64", x64), ("linux-arm64", "b".repeat(64))],
            "mismatched markers and a non-checksum are skipped; hex is lower-cased"
        );
    }

    fn reply(status: u16, headers: &[(&str, &str)], body: serde_json::Value) -> Reply {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    #[test]
    fn rate_limits_are_read_from_retry_after_then_the_reset_time() {
        let now = start();
        let r = reply(
            403,
            &[("retry-after", "7")],
            serde_json::json!({"message": "secondary rate limit"}),
        );
        assert_eq!(
            rate_limit_wait(&r, &r.message(), now),
            Some(Duration::from_secs(7))
        );
        let reset = (now.timestamp() + 30).to_string();
        let r = reply(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            serde_json::json!({}),
        );
        assert_eq!(
            rate_limit_wait(&r, &r.message(), now),
            Some(Duration::from_secs(30))
        );
        let r = reply(429, &[], serde_json::json!({}));
        assert_eq!(
            rate_limit_wait(&r, &r.message(), now),
            Some(DEFAULT_RATE_LIMIT_WAIT)
        );
        let r = reply(
            403,
            &[("x-ratelimit-remaining", "4999")],
            serde_json::json!({"message": "Resource not accessible by integration"}),
        );
        assert_eq!(rate_limit_wait(&r, &r.message(), now), None);
    }

    #[test]
    fn a_422_message_carries_its_field_errors() {
        let r = reply(
            422,
            &[],
            serde_json::json!({"message": "Validation Failed", "errors": [{"resource": "Runner", "field": "name", "code": "already_exists"}]}),
        );
        assert_eq!(
            r.message(),
            "Validation Failed (Runner.name already_exists)"
        );
        assert_eq!(
            reply(502, &[], serde_json::json!(null)).message(),
            "502 Bad Gateway"
        );
    }

    #[test]
    fn a_parse_error_does_not_quote_the_body() {
        let r = reply(
            201,
            &[],
            serde_json::json!({"runner": {"id": 1, "name": "r"}, "encoded_jit_config": 12345678}),
        );
        let call = Call::new(&REPO_JITCONFIG, Method::POST, ["repos", "a", "b"]);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct W {
            encoded_jit_config: String,
        }
        let err = r.json::<W>(&call).unwrap_err().to_string();
        assert!(!err.contains("12345678"), "{err}");
        assert!(err.contains("POST /repos/a/b"), "{err}");
    }

    #[test]
    fn the_link_header_says_whether_another_page_exists() {
        let mut headers = HeaderMap::new();
        assert_eq!(link_rel(&headers, "next"), None);
        headers.insert(
            header::LINK,
            HeaderValue::from_static(r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=3>; rel="last""#),
        );
        assert_eq!(link_rel(&headers, "next"), Some(true));
        headers.insert(
            header::LINK,
            HeaderValue::from_static(r#"<https://api.github.com/x?page=1>; rel="prev""#),
        );
        assert_eq!(link_rel(&headers, "next"), Some(false));
    }

    #[test]
    fn the_next_link_gives_the_delivery_cursor() {
        let mut headers = HeaderMap::new();
        assert_eq!(link_target(&headers, "next"), None);
        headers.insert(
            header::LINK,
            HeaderValue::from_static(r#"<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_12077215967>; rel="next""#),
        );
        let next = link_target(&headers, "next").unwrap();
        assert_eq!(
            next.query_pairs().find(|(k, _)| k == "cursor").unwrap().1,
            "v1_12077215967"
        );
        assert_eq!(link_target(&headers, "prev"), None);
    }

    #[test]
    fn a_job_silent_on_its_workflow_attempt_and_time_takes_them_from_its_run() {
        let run: WireRun = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "CI", "run_attempt": 2, "head_branch": "main",
            "created_at": "2025-01-01T11:00:00Z",
            "actor": {"login": "octocat"}, "triggering_actor": {"login": "hubot"},
        }))
        .unwrap();
        let job: WireJob = serde_json::from_value(serde_json::json!({
            "id": 70, "run_id": 7, "status": "queued", "labels": null, "name": "build",
            "workflow_name": null, "head_branch": null, "html_url": null,
        }))
        .unwrap();
        let queued = job.into_queued(&run, start());
        assert_eq!(queued.run_attempt, 2);
        assert_eq!(queued.workflow_name.as_deref(), Some("CI"));
        assert_eq!(queued.head_branch.as_deref(), Some("main"));
        assert_eq!(
            queued.created_at,
            "2025-01-01T11:00:00Z".parse::<Time>().unwrap()
        );
        assert_eq!(
            queued.sender.as_deref(),
            Some("hubot"),
            "who re-ran it, not who first pushed"
        );
        assert!(queued.labels.is_empty());
    }

    #[test]
    fn backoff_grows_stays_jittered_and_is_capped() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let first = policy.backoff(1);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let tenth = policy.backoff(10);
            assert!(
                tenth >= Duration::from_millis(500) && tenth <= Duration::from_millis(1000),
                "{tenth:?}"
            );
        }
    }

    #[test]
    fn a_token_is_reused_until_five_minutes_before_it_expires() {
        let token = InstallationToken {
            token: Secret::new("t"),
            expires_at: start() + TimeDelta::hours(1),
        };
        assert!(token.usable_at(start() + TimeDelta::minutes(54)));
        assert!(!token.usable_at(start() + TimeDelta::minutes(55)));
    }
}
