//! [`NoAppKey`]: the GitHub port of a function that is not given the App's private key.
//!
//! The orchestrator only launches instances (a runner fetches its JIT configuration through its
//! own callback), so the serverless deployment does not let it read the key. Should a code path
//! there ever reach GitHub, it fails loudly with this error rather than with a confusing 401.

use async_trait::async_trait;

use super::{
    GhDelivery, GhJob, GhQueuedJob, GhRunner, GitHub, GitHubError, GitHubResult, JitConfig,
    JitRequest, RunnerDownload, RunnerTarget,
};
use crate::config::Function;
use crate::domain::{RepoName, Time};

/// Every call fails, naming the function that has no key.
pub struct NoAppKey {
    pub function: Function,
}

impl NoAppKey {
    fn refuse<T>(&self, call: &str) -> GitHubResult<T> {
        Err(GitHubError::Other(anyhow::anyhow!(
            "the {} function holds no GitHub App key (github.private_key), so it cannot {call}",
            self.function.name()
        )))
    }
}

#[async_trait]
impl GitHub for NoAppKey {
    async fn repo_installation(&self, _: &RepoName) -> GitHubResult<i64> {
        self.refuse("look up the App's installation")
    }
    async fn org_installation(&self, _: &str) -> GitHubResult<i64> {
        self.refuse("look up the App's installation")
    }
    async fn generate_jit_config(
        &self,
        _: i64,
        _: &RunnerTarget,
        _: &JitRequest,
    ) -> GitHubResult<JitConfig> {
        self.refuse("register a runner")
    }
    async fn delete_runner(&self, _: i64, _: &RunnerTarget, _: i64) -> GitHubResult<()> {
        self.refuse("remove a runner")
    }
    async fn list_runners(&self, _: i64, _: &RunnerTarget) -> GitHubResult<Vec<GhRunner>> {
        self.refuse("list runners")
    }
    async fn get_runner(&self, _: i64, _: &RunnerTarget, _: i64) -> GitHubResult<Option<GhRunner>> {
        self.refuse("read a runner")
    }
    async fn get_job(&self, _: i64, _: &RepoName, _: i64) -> GitHubResult<Option<GhJob>> {
        self.refuse("read a job")
    }
    async fn runner_download(&self, _: &str, _: &str) -> GitHubResult<RunnerDownload> {
        self.refuse("look up the runner release")
    }
    async fn queued_jobs(&self, _: i64, _: &RepoName, _: usize) -> GitHubResult<Vec<GhQueuedJob>> {
        self.refuse("list queued jobs")
    }
    async fn failed_deliveries(&self, _: Time) -> GitHubResult<Vec<GhDelivery>> {
        self.refuse("list webhook deliveries")
    }
    async fn redeliver(&self, _: i64) -> GitHubResult<()> {
        self.refuse("redeliver a webhook")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_names_the_function_without_a_key() {
        let github = NoAppKey {
            function: Function::Orchestrator,
        };
        let err = github.runner_download("linux", "x64").await.unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "the orchestrator function holds no GitHub App key (github.private_key), so it cannot look up the runner release"
        );
    }
}
