//! The GitHub port: everything pacer asks of GitHub, as a GitHub App.
//!
//! Adapters: [`rest::RestGitHub`] (the real REST API at `github.api_url`,
//! App JWT + cached installation tokens, retries) and [`offline::OfflineGitHub`]
//! (`github.disabled`: answers locally so routes, orchestrator and reaper
//! keep working for demos and the simulated fleet). Webhook verification and
//! payloads live in [`webhook`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{GithubJob, PendingJob, RepoName, Time, Visibility};

pub mod absent;
pub mod offline;
pub mod rest;
pub mod webhook;

/// Where a runner registers: one repository, or an organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerTarget {
    Repo(RepoName),
    Org(String),
}

impl fmt::Display for RunnerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerTarget::Repo(r) => write!(f, "repo {r}"),
            RunnerTarget::Org(o) => write!(f, "org {o}"),
        }
    }
}

/// The body of generate-jitconfig.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JitRequest {
    pub name: String,
    pub runner_group_id: i64,
    /// 1–100 labels.
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_folder: Option<String>,
}

/// What generate-jitconfig returns. `encoded_jit_config` is a credential:
/// never log it, store it, or put it in an error.
#[derive(Clone, PartialEq)]
pub struct JitConfig {
    pub runner_id: i64,
    pub runner_name: String,
    pub encoded_jit_config: String,
}

impl fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitConfig")
            .field("runner_id", &self.runner_id)
            .field("runner_name", &self.runner_name)
            .field("encoded_jit_config", &"[redacted]")
            .finish()
    }
}

/// A self-hosted runner as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GhRunner {
    pub id: i64,
    pub name: String,
    /// `online` | `offline`.
    pub status: String,
    pub busy: bool,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A workflow job as GitHub reports it (`GET /repos/{o}/{r}/actions/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GhJob {
    pub id: i64,
    pub run_id: i64,
    /// `queued` | `in_progress` | `completed` | `waiting` | …
    pub status: String,
    pub conclusion: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub runner_name: Option<String>,
}

/// A job GitHub has queued, found by listing a repository's workflow runs and their jobs
/// ([`GitHub::queued_jobs`]) rather than from its `workflow_job` delivery: how the reaper finds
/// jobs whose webhook never arrived.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GhQueuedJob {
    /// GitHub's job id (the `workflow_job.id` of the delivery that went missing).
    pub id: i64,
    pub run_id: i64,
    /// 1 for a run's first attempt, higher after a re-run.
    pub run_attempt: i64,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    /// The job's name in the workflow.
    pub name: String,
    pub workflow_name: Option<String>,
    pub head_branch: Option<String>,
    /// The job's page on github.com.
    pub html_url: Option<String>,
    pub created_at: Time,
    /// Who triggered the run (its `triggering_actor`, else its `actor`): the job's sender.
    pub sender: Option<String>,
    /// The repository's visibility, from the run: a public one's jobs are refused unless its
    /// project allows them, whichever way they arrive.
    pub visibility: Visibility,
}

impl GhQueuedJob {
    /// This job as one that needs a runner, as its lost `queued` delivery would have said.
    pub fn pending(&self, repo: &RepoName, installation_id: i64) -> PendingJob {
        PendingJob {
            job: GithubJob {
                id: self.id,
                run_id: self.run_id,
                run_attempt: self.run_attempt,
                repo: repo.to_string(),
                visibility: self.visibility,
                installation_id: Some(installation_id),
                labels: self.labels.clone(),
                workflow_name: self.workflow_name.clone(),
                name: Some(self.name.clone()),
                sender: self.sender.clone(),
                html_url: self.html_url.clone(),
                runner_name: None,
                conclusion: None,
            },
            awaiting_approval: false,
        }
    }
}

/// A webhook delivery of the App that failed: its newest failed attempt, for an event GitHub
/// never delivered successfully ([`GitHub::failed_deliveries`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GhDelivery {
    /// This delivery attempt's id: what [`GitHub::redeliver`] takes.
    pub id: i64,
    /// The event's id, shared by every delivery of it (the `X-GitHub-Delivery` header); a
    /// redelivery keeps it.
    pub guid: String,
    /// `workflow_job`, `ping`, `installation`, …
    pub event: String,
    /// `queued`, `completed`, …, when the event has one.
    pub action: Option<String>,
    /// What pacer's endpoint answered; 0 when GitHub could not reach it at all.
    pub status_code: u16,
    /// GitHub's words for the outcome (`Invalid HTTP Response: 503`, `failed to connect`, …).
    pub status: String,
    pub delivered_at: Time,
    /// Whether this attempt was itself a redelivery.
    pub redelivery: bool,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
    /// How many failed attempts of this event were seen in the window asked about, this one
    /// included: a bound for retrying an event pacer keeps refusing.
    pub failed_attempts: u32,
}

/// The actions/runner tarball a runner installs, and the checksum it must match.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerDownload {
    /// e.g. `2.321.0` (no leading `v`).
    pub version: String,
    /// e.g. `actions-runner-linux-x64-2.321.0.tar.gz`.
    pub file: String,
    pub url: String,
    /// The tarball's SHA-256, lower-case hex. `None` only from the offline stand-in
    /// (`github.disabled`), whose JIT configurations no real runner accepts: there is nothing real
    /// to verify, and the bootstrap script refuses to download without a checksum.
    pub sha256: Option<String>,
}

impl RunnerDownload {
    /// The tarball of release `version` for `os`-`arch` (`linux`, `x64` | `arm64`), named and
    /// placed as actions/runner publishes its releases.
    pub fn new(version: &str, os: &str, arch: &str, sha256: Option<String>) -> Self {
        let file = runner_tarball(version, os, arch);
        Self {
            url: format!("https://github.com/actions/runner/releases/download/v{version}/{file}"),
            version: version.to_owned(),
            file,
            sha256,
        }
    }
}

/// `actions-runner-linux-x64-2.321.0.tar.gz`.
pub fn runner_tarball(version: &str, os: &str, arch: &str) -> String {
    format!("actions-runner-{os}-{arch}-{version}.tar.gz")
}

/// `text` as a SHA-256 in lower-case hex, if it is one: exactly 64 hex digits.
pub fn sha256_hex(text: &str) -> Option<String> {
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// 404: the repo, org, runner or job does not exist — or the App is not
    /// installed where it is asked to act.
    #[error("not found on GitHub: {0}")]
    NotFound(String),
    /// 422 / 409: GitHub refused the request as invalid; retrying will not help.
    #[error("GitHub refused the request: {0}")]
    Refused(String),
    /// 403 "Resource not accessible by integration": the App lacks a permission.
    #[error(
        "the GitHub App lacks the {permission} permission ({message}); edit the App's permissions on GitHub"
    )]
    MissingPermission { permission: String, message: String },
    /// 401: the App's credentials are wrong (app id / private key).
    #[error("GitHub rejected the App's credentials: {0}")]
    Unauthorized(String),
    /// 403/429 rate limit that outlasted the client's own waiting.
    #[error("GitHub rate limit: retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// 5xx or a transport failure that outlasted the client's retries.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl GitHubError {
    /// Whether trying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitHubError::RateLimited { .. } | GitHubError::Unavailable(_)
        )
    }
}

pub type GitHubResult<T> = Result<T, GitHubError>;

#[async_trait]
pub trait GitHub: Send + Sync + 'static {
    /// The App's installation on a repository (for payloads that carry none).
    async fn repo_installation(&self, repo: &RepoName) -> GitHubResult<i64>;
    /// The App's installation on an organisation (`NotFound` when the App is
    /// installed only on some of its repositories, or not at all).
    async fn org_installation(&self, org: &str) -> GitHubResult<i64>;
    /// Mints a just-in-time runner configuration.
    async fn generate_jit_config(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        req: &JitRequest,
    ) -> GitHubResult<JitConfig>;
    /// Removes a runner registration; a runner already gone is success.
    async fn delete_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<()>;
    /// Every self-hosted runner registered at the target.
    async fn list_runners(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
    ) -> GitHubResult<Vec<GhRunner>>;
    /// One runner, or `None` when GitHub no longer knows it.
    async fn get_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<Option<GhRunner>>;
    /// One workflow job, or `None` when GitHub does not know it.
    async fn get_job(
        &self,
        installation_id: i64,
        repo: &RepoName,
        job_id: i64,
    ) -> GitHubResult<Option<GhJob>>;
    /// The actions/runner tarball for `os`-`arch` of the release `runner.version` names (the
    /// newest, or a pin), with its SHA-256. An error when no checksum can be learnt for it: pacer
    /// never hands out a download the runner cannot verify. The adapter caches what it learns.
    async fn runner_download(&self, os: &str, arch: &str) -> GitHubResult<RunnerDownload>;
    /// The repository's jobs GitHub has queued, found through its workflow runs: those with
    /// status `queued`, then `in_progress` (a run in progress may still have jobs waiting for a
    /// runner), newest first, at most `max_runs` runs looked at in all; every job of those runs
    /// (the latest attempt's) whose status is `queued`, self-hosted or not.
    ///
    /// Cost, against the installation's rate limit (5,000 requests an hour for most): one
    /// listing call per 100 runs and status (two when `max_runs` ≤ 100 and fewer than
    /// `max_runs` runs are queued, one otherwise), then one call per run looked at (one more
    /// per extra 100 jobs in a run). So at most `max_runs + 2` calls for `max_runs` ≤ 100 and
    /// runs of at most 100 jobs, and none for `max_runs` 0; plus, when the cached installation
    /// token is due for renewal, one App call for a new one.
    async fn queued_jobs(
        &self,
        installation_id: i64,
        repo: &RepoName,
        max_runs: usize,
    ) -> GitHubResult<Vec<GhQueuedJob>>;
    /// The App's webhook deliveries since `since` that failed (a status code not 2xx) for events
    /// GitHub never delivered successfully in that window: one per event (`guid`), its newest
    /// failed attempt, newest first. An event redelivered successfully is not listed.
    ///
    /// Cost (App JWT, not an installation's budget): pages of 100 until one reaches past
    /// `since`, so ⌊n / 100⌋ + 1 calls for n deliveries since `since`, successful ones included.
    async fn failed_deliveries(&self, since: Time) -> GitHubResult<Vec<GhDelivery>>;
    /// Asks GitHub to deliver a delivery's event again (one call, App JWT). GitHub accepts and
    /// delivers later; the attempt shows up as a new delivery with `redelivery: true` and the
    /// same `guid`. A delivery GitHub no longer keeps (about three days) is `NotFound`.
    async fn redeliver(&self, delivery_id: i64) -> GitHubResult<()>;
}
