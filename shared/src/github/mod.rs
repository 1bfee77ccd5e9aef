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

use crate::domain::RepoName;

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

/// The actions/runner release to install on a runner.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerRelease {
    /// e.g. `2.321.0` (no leading `v`).
    pub version: String,
}

impl RunnerRelease {
    /// The tarball for `os`-`arch` (`linux`, `x64` | `arm64`), from GitHub's
    /// release assets naming scheme.
    pub fn download_url(&self, os: &str, arch: &str) -> String {
        format!(
            "https://github.com/actions/runner/releases/download/v{v}/actions-runner-{os}-{arch}-{v}.tar.gz",
            v = self.version
        )
    }
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
    #[error("the GitHub App lacks the {permission} permission ({message}); edit the App's permissions on GitHub")]
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
        matches!(self, GitHubError::RateLimited { .. } | GitHubError::Unavailable(_))
    }
}

pub type GitHubResult<T> = Result<T, GitHubError>;

#[async_trait]
pub trait GitHub: Send + Sync + 'static {
    /// The App's installation on a repository (for payloads that carry none).
    async fn repo_installation(&self, repo: &RepoName) -> GitHubResult<i64>;
    /// Mints a just-in-time runner configuration.
    async fn generate_jit_config(&self, installation_id: i64, target: &RunnerTarget, req: &JitRequest) -> GitHubResult<JitConfig>;
    /// Removes a runner registration; a runner already gone is success.
    async fn delete_runner(&self, installation_id: i64, target: &RunnerTarget, runner_id: i64) -> GitHubResult<()>;
    /// Every self-hosted runner registered at the target.
    async fn list_runners(&self, installation_id: i64, target: &RunnerTarget) -> GitHubResult<Vec<GhRunner>>;
    /// One runner, or `None` when GitHub no longer knows it.
    async fn get_runner(&self, installation_id: i64, target: &RunnerTarget, runner_id: i64) -> GitHubResult<Option<GhRunner>>;
    /// One workflow job, or `None` when GitHub does not know it.
    async fn get_job(&self, installation_id: i64, repo: &RepoName, job_id: i64) -> GitHubResult<Option<GhJob>>;
    /// The newest actions/runner release (cached by the adapter).
    async fn latest_runner_release(&self) -> GitHubResult<RunnerRelease>;
}
