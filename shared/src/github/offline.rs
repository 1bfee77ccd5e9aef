//! [`OfflineGitHub`]: the GitHub port answered locally, for `github.disabled: true`.
//!
//! Demos and the simulated fleet run the whole lifecycle without a GitHub App: every repository
//! is "installed" under one fixed installation, generate-jitconfig hands out a dummy config that
//! says plainly it is one (a real runner would refuse it; the simulated one recognises it with
//! [`is_offline_jit_config`]), and the registrations it handed out are remembered so that list,
//! get and delete agree with each other, as the reaper expects of GitHub. There are no workflow
//! runs and no webhook deliveries to reconcile: offline, every job arrives by a webhook pacer
//! itself sends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::{
    GhDelivery, GhJob, GhQueuedJob, GhRunner, GitHub, GitHubError, GitHubResult, JitConfig,
    JitRequest, RunnerDownload, RunnerTarget,
};
use crate::calls::{Call, CallCounts, Calls};
use crate::domain::{RepoName, Time};

/// The installation every repository and organisation belongs to offline.
pub const OFFLINE_INSTALLATION_ID: i64 = 1;

/// The actions/runner release reported for `runner.version: latest` when GitHub is offline: a
/// real release number, so the download named is a real tarball.
pub const OFFLINE_RUNNER_VERSION: &str = "2.328.0";

/// What an offline JIT config decodes to. The marker field makes it impossible to mistake for
/// GitHub's (which is base64 of a JSON object with `.runner`, `.credentials`, … files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineJitConfig {
    pub pacer_offline: bool,
    pub runner_id: i64,
    pub runner_name: String,
    pub labels: Vec<String>,
}

/// Decodes an offline JIT config, or `None` when `encoded` is not one (e.g. GitHub's).
pub fn decode_offline_jit_config(encoded: &str) -> Option<OfflineJitConfig> {
    let json = BASE64.decode(encoded.trim()).ok()?;
    serde_json::from_slice::<OfflineJitConfig>(&json)
        .ok()
        .filter(|c| c.pacer_offline)
}

/// Whether `encoded` is a dummy config made by [`OfflineGitHub`], not one from GitHub.
pub fn is_offline_jit_config(encoded: &str) -> bool {
    decode_offline_jit_config(encoded).is_some()
}

/// The GitHub port without GitHub. See the module docs.
#[derive(Debug)]
pub struct OfflineGitHub {
    /// The actions/runner release named to runners.
    runner_version: String,
    next_runner_id: AtomicI64,
    /// Registered runners per target (keyed case-insensitively, as GitHub matches names).
    runners: Mutex<HashMap<String, BTreeMap<i64, GhRunner>>>,
    /// One per port method call: what GitHub would have been asked.
    calls: CallCounts,
}

impl OfflineGitHub {
    /// `runner_version` is `runner.version`: `latest` (answered with [`OFFLINE_RUNNER_VERSION`])
    /// or a pin, reported as is.
    pub fn new(runner_version: &str) -> Self {
        let version = match runner_version.trim() {
            "" | "latest" => OFFLINE_RUNNER_VERSION,
            pin => pin.trim_start_matches('v'),
        };
        Self {
            runner_version: version.to_owned(),
            next_runner_id: AtomicI64::new(1),
            runners: Mutex::new(HashMap::new()),
            calls: CallCounts::default(),
        }
    }

    /// The GitHub calls made so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    fn key(target: &RunnerTarget) -> String {
        match target {
            RunnerTarget::Repo(repo) => format!("repo:{}", repo.key()),
            RunnerTarget::Org(org) => format!("org:{}", org.to_lowercase()),
        }
    }
}

impl Default for OfflineGitHub {
    fn default() -> Self {
        Self::new("latest")
    }
}

#[async_trait]
impl GitHub for OfflineGitHub {
    async fn repo_installation(&self, _repo: &RepoName) -> GitHubResult<i64> {
        self.calls.count(Call::GitHub);
        Ok(OFFLINE_INSTALLATION_ID)
    }

    async fn org_installation(&self, _org: &str) -> GitHubResult<i64> {
        self.calls.count(Call::GitHub);
        Ok(OFFLINE_INSTALLATION_ID)
    }

    async fn generate_jit_config(
        &self,
        _installation_id: i64,
        target: &RunnerTarget,
        req: &JitRequest,
    ) -> GitHubResult<JitConfig> {
        self.calls.count(Call::GitHub);
        // The same checks GitHub makes, so offline runs surface the same mistakes.
        if req.labels.is_empty() || req.labels.len() > 100 {
            return Err(GitHubError::Refused(format!(
                "a runner needs 1 to 100 labels, got {}",
                req.labels.len()
            )));
        }
        let mut runners = crate::sync::lock(&self.runners);
        let registered = runners.entry(Self::key(target)).or_default();
        if registered
            .values()
            .any(|r| r.name.eq_ignore_ascii_case(&req.name))
        {
            return Err(GitHubError::Refused(format!(
                "a runner named {} already exists at {target}",
                req.name
            )));
        }
        let runner_id = self.next_runner_id.fetch_add(1, Ordering::Relaxed);
        let config = OfflineJitConfig {
            pacer_offline: true,
            runner_id,
            runner_name: req.name.clone(),
            labels: req.labels.clone(),
        };
        // Plain strings and numbers: serialising cannot fail.
        #[allow(clippy::expect_used)]
        let encoded = BASE64.encode(serde_json::to_vec(&config).expect("serialisable"));
        registered.insert(
            runner_id,
            GhRunner {
                id: runner_id,
                name: req.name.clone(),
                status: "online".into(),
                busy: false,
                labels: req.labels.clone(),
            },
        );
        Ok(JitConfig {
            runner_id,
            runner_name: req.name.clone(),
            encoded_jit_config: encoded,
        })
    }

    async fn delete_runner(
        &self,
        _installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<()> {
        self.calls.count(Call::GitHub);
        let mut runners = crate::sync::lock(&self.runners);
        if let Some(registered) = runners.get_mut(&Self::key(target)) {
            registered.remove(&runner_id);
        }
        Ok(())
    }

    async fn list_runners(
        &self,
        _installation_id: i64,
        target: &RunnerTarget,
    ) -> GitHubResult<Vec<GhRunner>> {
        self.calls.count(Call::GitHub);
        let runners = crate::sync::lock(&self.runners);
        Ok(runners
            .get(&Self::key(target))
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn get_runner(
        &self,
        _installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<Option<GhRunner>> {
        self.calls.count(Call::GitHub);
        let runners = crate::sync::lock(&self.runners);
        Ok(runners
            .get(&Self::key(target))
            .and_then(|r| r.get(&runner_id))
            .cloned())
    }

    async fn get_job(
        &self,
        _installation_id: i64,
        _repo: &RepoName,
        _job_id: i64,
    ) -> GitHubResult<Option<GhJob>> {
        self.calls.count(Call::GitHub);
        // Offline there is no GitHub to ask; the webhooks the simulated runner sends are the truth.
        Ok(None)
    }

    async fn runner_download(&self, os: &str, arch: &str) -> GitHubResult<RunnerDownload> {
        // Not counted: the REST adapter answers it from its cache nearly always.
        // No checksum: inventing one would look like a verified download. Nothing real needs
        // one here (the JIT configuration is a dummy), and the bootstrap script refuses to
        // download without one.
        Ok(RunnerDownload::new(&self.runner_version, os, arch, None))
    }

    async fn queued_jobs(
        &self,
        _installation_id: i64,
        _repo: &RepoName,
        _max_runs: usize,
    ) -> GitHubResult<Vec<GhQueuedJob>> {
        self.calls.count(Call::GitHub);
        Ok(Vec::new())
    }

    async fn failed_deliveries(&self, _since: Time) -> GitHubResult<Vec<GhDelivery>> {
        self.calls.count(Call::GitHub);
        Ok(Vec::new())
    }

    async fn redeliver(&self, delivery_id: i64) -> GitHubResult<()> {
        self.calls.count(Call::GitHub);
        // Nothing was ever delivered, so no id names a delivery: GitHub's answer is a 404.
        Err(GitHubError::NotFound(format!(
            "webhook delivery {delivery_id}: GitHub is disabled (github.disabled), there are no deliveries"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RunnerTarget {
        RunnerTarget::Repo(RepoName::parse(name).unwrap())
    }

    fn request(name: &str) -> JitRequest {
        JitRequest {
            name: name.into(),
            runner_group_id: 1,
            labels: vec!["self-hosted".into(), "linux".into()],
            work_folder: None,
        }
    }

    #[tokio::test]
    async fn every_repository_is_installed_under_one_fixed_installation() {
        let gh = OfflineGitHub::default();
        let id = gh
            .repo_installation(&RepoName::parse("acme/widgets").unwrap())
            .await
            .unwrap();
        assert_eq!(id, OFFLINE_INSTALLATION_ID);
    }

    #[tokio::test]
    async fn a_jit_config_is_a_marked_dummy_naming_its_runner() {
        let gh = OfflineGitHub::default();
        let jit = gh
            .generate_jit_config(1, &repo("acme/widgets"), &request("pacer-r1"))
            .await
            .unwrap();
        assert!(is_offline_jit_config(&jit.encoded_jit_config));
        let decoded = decode_offline_jit_config(&jit.encoded_jit_config).unwrap();
        assert_eq!(decoded.runner_name, "pacer-r1");
        assert_eq!(decoded.runner_id, jit.runner_id);
        assert_eq!(decoded.labels, ["self-hosted", "linux"]);
    }

    #[test]
    fn a_config_without_the_marker_is_not_offline() {
        assert!(!is_offline_jit_config("not base64 at all!"));
        assert!(!is_offline_jit_config(
            &BASE64.encode(br#"{".runner": "x"}"#)
        ));
        assert!(!is_offline_jit_config(&BASE64.encode(
            br#"{"pacer_offline": false, "runner_id": 1, "runner_name": "x", "labels": []}"#
        )));
    }

    #[tokio::test]
    async fn registered_runners_are_listed_got_and_deleted_consistently() {
        let gh = OfflineGitHub::default();
        let target = repo("acme/widgets");
        let a = gh
            .generate_jit_config(1, &target, &request("a"))
            .await
            .unwrap();
        let b = gh
            .generate_jit_config(1, &target, &request("b"))
            .await
            .unwrap();
        assert_ne!(a.runner_id, b.runner_id);

        let listed: Vec<String> = gh
            .list_runners(1, &target)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(listed, ["a", "b"]);
        assert_eq!(
            gh.get_runner(1, &target, a.runner_id)
                .await
                .unwrap()
                .unwrap()
                .name,
            "a"
        );

        gh.delete_runner(1, &target, a.runner_id).await.unwrap();
        assert_eq!(gh.get_runner(1, &target, a.runner_id).await.unwrap(), None);
        assert_eq!(gh.list_runners(1, &target).await.unwrap().len(), 1);
        // Deleting again, or a runner never registered, is success: it is gone either way.
        gh.delete_runner(1, &target, a.runner_id).await.unwrap();
        gh.delete_runner(1, &RunnerTarget::Org("nobody".into()), 999)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn targets_keep_their_own_runners() {
        let gh = OfflineGitHub::default();
        gh.generate_jit_config(1, &repo("acme/widgets"), &request("r"))
            .await
            .unwrap();
        gh.generate_jit_config(1, &RunnerTarget::Org("acme".into()), &request("o"))
            .await
            .unwrap();
        assert_eq!(
            gh.list_runners(1, &repo("ACME/Widgets"))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            gh.list_runners(1, &RunnerTarget::Org("Acme".into()))
                .await
                .unwrap()[0]
                .name,
            "o"
        );
        assert!(
            gh.list_runners(1, &repo("acme/other"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_duplicate_name_or_bad_labels_are_refused_like_github_does() {
        let gh = OfflineGitHub::default();
        let target = repo("acme/widgets");
        gh.generate_jit_config(1, &target, &request("same"))
            .await
            .unwrap();
        let dup = gh
            .generate_jit_config(1, &target, &request("same"))
            .await
            .unwrap_err();
        assert!(matches!(dup, GitHubError::Refused(_)), "{dup}");
        let mut no_labels = request("other");
        no_labels.labels.clear();
        assert!(matches!(
            gh.generate_jit_config(1, &target, &no_labels).await,
            Err(GitHubError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn jobs_are_unknown_offline() {
        let gh = OfflineGitHub::default();
        assert_eq!(
            gh.get_job(1, &RepoName::parse("acme/widgets").unwrap(), 5)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn there_are_no_runs_and_no_deliveries_offline() {
        let gh = OfflineGitHub::default();
        let repo = RepoName::parse("acme/widgets").unwrap();
        assert_eq!(gh.queued_jobs(1, &repo, 10).await.unwrap(), Vec::new());
        let since = "2025-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(gh.failed_deliveries(since).await.unwrap(), Vec::new());
        assert!(matches!(
            gh.redeliver(42).await,
            Err(GitHubError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn the_runner_download_is_the_pin_or_a_known_release_without_a_checksum() {
        let pinned = OfflineGitHub::new("2.321.0")
            .runner_download("linux", "arm64")
            .await
            .unwrap();
        assert_eq!(pinned.version, "2.321.0");
        assert_eq!(pinned.file, "actions-runner-linux-arm64-2.321.0.tar.gz");
        assert_eq!(
            pinned.url,
            "https://github.com/actions/runner/releases/download/v2.321.0/actions-runner-linux-arm64-2.321.0.tar.gz"
        );
        assert_eq!(pinned.sha256, None, "no made-up checksum");
        let latest = OfflineGitHub::new("latest")
            .runner_download("linux", "x64")
            .await
            .unwrap();
        assert_eq!(latest.version, OFFLINE_RUNNER_VERSION);
        assert_eq!(latest.sha256, None);
    }
}
