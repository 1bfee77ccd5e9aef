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
//!
//! This file holds the client and the port's surface; each operation lives with its API area:
//! `auth.rs` (the App JWT, installation tokens, a repository's installation), `runners.rs` (JIT
//! registration and the runner list), `jobs.rs` (a job, the queued jobs of a repository's runs),
//! `deliveries.rs` (failed webhook deliveries and redelivery), `release.rs` (the actions/runner
//! release and its checksums), over `transport.rs` (one call: retries, rate limits, errors,
//! `Link` pages) and `endpoints.rs` (what each operation needs).

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

mod auth;
mod deliveries;
mod endpoints;
mod jobs;
mod release;
mod runners;
mod transport;

use auth::InstallationToken;
use endpoints::*;
use release::{ReleaseSource, RunnerRelease};
use transport::{Auth, Call, link_target, more_pages};

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

        let http = crate::http_client::builder()
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
}

/// The port, operation by operation: each is implemented in its API area's file.
#[async_trait]
impl GitHub for RestGitHub {
    async fn repo_installation(&self, repo: &RepoName) -> GitHubResult<i64> {
        RestGitHub::repo_installation(self, repo).await
    }

    async fn org_installation(&self, org: &str) -> GitHubResult<i64> {
        RestGitHub::org_installation(self, org).await
    }

    async fn generate_jit_config(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        req: &JitRequest,
    ) -> GitHubResult<JitConfig> {
        RestGitHub::generate_jit_config(self, installation_id, target, req).await
    }

    async fn delete_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<()> {
        RestGitHub::delete_runner(self, installation_id, target, runner_id).await
    }

    async fn list_runners(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
    ) -> GitHubResult<Vec<GhRunner>> {
        RestGitHub::list_runners(self, installation_id, target).await
    }

    async fn get_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<Option<GhRunner>> {
        RestGitHub::get_runner(self, installation_id, target, runner_id).await
    }

    async fn get_job(
        &self,
        installation_id: i64,
        repo: &RepoName,
        job_id: i64,
    ) -> GitHubResult<Option<GhJob>> {
        RestGitHub::get_job(self, installation_id, repo, job_id).await
    }

    async fn runner_download(&self, os: &str, arch: &str) -> GitHubResult<RunnerDownload> {
        RestGitHub::runner_download(self, os, arch).await
    }

    async fn queued_jobs(
        &self,
        installation_id: i64,
        repo: &RepoName,
        max_runs: usize,
    ) -> GitHubResult<Vec<GhQueuedJob>> {
        RestGitHub::queued_jobs(self, installation_id, repo, max_runs).await
    }

    async fn failed_deliveries(&self, since: Time) -> GitHubResult<Vec<GhDelivery>> {
        RestGitHub::failed_deliveries(self, since).await
    }

    async fn redeliver(&self, delivery_id: i64) -> GitHubResult<()> {
        RestGitHub::redeliver(self, delivery_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::jobs::{WireJob, WireRun};
    use super::release::{notes_checksums, parse_release_tag};
    use super::transport::{Reply, link_rel, rate_limit_wait};
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
