//! pacer's GitHub client (`RestGitHub`) against the fake GitHub API: authentication as an App,
//! the installation-token cache, each endpoint's request, pagination, and how failures are
//! retried, waited out or reported. Every request and response is also checked against GitHub's
//! OpenAPI description by the fake; a test ends in failure if either side broke it.
//!
//! Also the reaper's view of missed webhooks: queued jobs found through workflow runs, failed
//! App webhook deliveries, and redelivery.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use pacer_shared::clock::{Clock, ManualClock};
use pacer_shared::config::{RunnerConfig, RunnerSha256};
use pacer_shared::domain::RepoName;
use pacer_shared::github::rest::{RestGitHub, RetryPolicy, USER_AGENT};
use pacer_shared::github::{GitHub, GitHubError, JitRequest, RunnerDownload, RunnerTarget};
use serde_json::json;

use crate::fake_github::{
    Endpoint, Failure, FakeDelivery, FakeGitHub, FakeJob, FakeRelease, FakeRun, FakeTarget,
    openapi, runner_sha256,
};

const REPO_INSTALLATION: i64 = 1001;
const ORG_INSTALLATION: i64 = 2002;

struct Setup {
    fake: FakeGitHub,
    clock: Arc<ManualClock>,
    github: RestGitHub,
}

/// Retries fast enough for tests: the rules are the same, the waits are milliseconds.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(5),
        max_rate_limit_wait: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

/// A fake GitHub where the App is installed on the repo `acme/widgets` and the org `acme-org`,
/// and a client pointed at it; both read the same manual clock.
async fn setup() -> Setup {
    setup_with(|fake| fake.url(), RunnerConfig::default()).await
}

async fn setup_with(api_url: impl FnOnce(&FakeGitHub) -> String, runner: RunnerConfig) -> Setup {
    pacer_shared::http_client::install_crypto_provider();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = FakeGitHub::start_with_clock(clock.clone()).await;
    fake.install_on_repo("acme/widgets", REPO_INSTALLATION);
    fake.install_on_org("acme-org", ORG_INSTALLATION);
    let mut config = fake.github_config();
    config.api_url = api_url(&fake).parse().unwrap();
    let github = RestGitHub::new(&config, &runner, clock.clone())
        .unwrap()
        .with_retry_policy(quick_retries());
    Setup {
        fake,
        clock,
        github,
    }
}

fn widgets() -> RepoName {
    RepoName::parse("acme/widgets").unwrap()
}

fn repo_target() -> RunnerTarget {
    RunnerTarget::Repo(widgets())
}

fn org_target() -> RunnerTarget {
    RunnerTarget::Org("acme-org".into())
}

fn jit_request(name: &str, runner_group_id: i64) -> JitRequest {
    JitRequest {
        name: name.into(),
        runner_group_id,
        labels: vec!["self-hosted".into(), "linux".into(), "acme".into()],
        work_folder: None,
    }
}

// ------------------------------------------------------------------------------ authentication

#[tokio::test]
async fn the_app_jwt_is_accepted_and_finds_the_repos_installation() {
    let s = setup().await;

    let installation = s.github.repo_installation(&widgets()).await.unwrap();

    assert_eq!(installation, REPO_INSTALLATION);
    let request = &s.fake.requests_to(Endpoint::RepoInstallation)[0];
    assert_eq!(request.path, "/repos/acme/widgets/installation");
    let jwt = request.headers["authorization"]
        .strip_prefix("Bearer ")
        .unwrap();
    let claims = s.fake.verify_app_jwt(jwt).unwrap();
    let now = s.clock.now().timestamp();
    assert_eq!(claims.iat, now - 60, "iat is a minute in the past");
    assert_eq!(
        claims.exp,
        now + 9 * 60,
        "exp is within GitHub's ten minutes"
    );
    assert_eq!(request.headers["accept"], "application/vnd.github+json");
    assert_eq!(request.headers["x-github-api-version"], "2022-11-28");
    assert_eq!(request.headers["user-agent"], USER_AGENT);
    assert!(USER_AGENT.starts_with("pacer/"));
}

#[tokio::test]
async fn a_repo_inside_an_installed_org_is_found_through_the_org() {
    let s = setup().await;
    let repo = RepoName::parse("acme-org/anything").unwrap();
    assert_eq!(
        s.github.repo_installation(&repo).await.unwrap(),
        ORG_INSTALLATION
    );
}

#[tokio::test]
async fn a_repo_without_the_app_is_not_found_with_a_hint() {
    let s = setup().await;
    let err = s
        .github
        .repo_installation(&RepoName::parse("someone/else").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::NotFound(m) if m.contains("not installed")),
        "{err}"
    );
}

#[tokio::test]
async fn an_organisations_installation_is_found_only_where_the_app_is_installed_on_it() {
    let s = setup().await;
    assert_eq!(
        s.github.org_installation("acme-org").await.unwrap(),
        ORG_INSTALLATION
    );
    let request = &s.fake.requests_to(Endpoint::OrgInstallation)[0];
    assert_eq!(request.path, "/orgs/acme-org/installation");
    assert!(
        s.fake
            .verify_app_jwt(
                request.headers["authorization"]
                    .strip_prefix("Bearer ")
                    .unwrap()
            )
            .is_ok()
    );
    // `acme` has the App on one repository only: that is not the organisation's.
    let err = s.github.org_installation("acme").await.unwrap_err();
    assert!(
        matches!(&err, GitHubError::NotFound(m) if m.contains("not installed on this organization")),
        "{err}"
    );
}

#[tokio::test]
async fn the_installation_token_is_fetched_once_and_reused() {
    let s = setup().await;

    for i in 0..3 {
        s.github
            .generate_jit_config(
                REPO_INSTALLATION,
                &repo_target(),
                &jit_request(&format!("r{i}"), 1),
            )
            .await
            .unwrap();
    }
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    assert_eq!(s.fake.count(Endpoint::AccessToken), 1);
    let token_request = &s.fake.requests_to(Endpoint::AccessToken)[0];
    assert_eq!(
        token_request.path,
        format!("/app/installations/{REPO_INSTALLATION}/access_tokens")
    );
    let used: Vec<String> = s
        .fake
        .requests_to(Endpoint::RepoJitConfig)
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert!(
        used.windows(2).all(|w| w[0] == w[1]),
        "every call used the same token"
    );
    assert!(used[0].starts_with("Bearer ghs_"));
}

#[tokio::test]
async fn each_installation_gets_its_own_token() {
    let s = setup().await;
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    s.github
        .list_runners(ORG_INSTALLATION, &org_target())
        .await
        .unwrap();
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    assert_eq!(s.fake.count(Endpoint::AccessToken), 2);
}

#[tokio::test]
async fn the_token_is_replaced_five_minutes_before_it_expires() {
    let s = setup().await; // tokens live an hour
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    s.clock.advance(Duration::from_secs(54 * 60));
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    assert_eq!(
        s.fake.count(Endpoint::AccessToken),
        1,
        "54 minutes in, the token is still used"
    );

    s.clock.advance(Duration::from_secs(60));
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    assert_eq!(
        s.fake.count(Endpoint::AccessToken),
        2,
        "55 minutes in, a new token is fetched"
    );
}

#[tokio::test]
async fn a_short_lived_token_is_replaced_as_soon_as_it_is_within_five_minutes_of_expiry() {
    let s = setup().await;
    s.fake.set_token_ttl(chrono::TimeDelta::minutes(8));
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    s.clock.advance(Duration::from_secs(2 * 60));
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    assert_eq!(
        s.fake.count(Endpoint::AccessToken),
        1,
        "6 minutes left: reused"
    );

    s.clock.advance(Duration::from_secs(60));
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    assert_eq!(
        s.fake.count(Endpoint::AccessToken),
        2,
        "5 minutes left: replaced"
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_token_fetch() {
    let s = setup().await;
    s.fake
        .delay(Endpoint::AccessToken, Duration::from_millis(200));
    let github = Arc::new(s.github);

    let calls = (0..10).map(|i| {
        let github = github.clone();
        tokio::spawn(async move {
            github
                .generate_jit_config(
                    REPO_INSTALLATION,
                    &repo_target(),
                    &jit_request(&format!("c{i}"), 1),
                )
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }

    assert_eq!(s.fake.count(Endpoint::AccessToken), 1, "no thundering herd");
    assert_eq!(s.fake.count(Endpoint::RepoJitConfig), 10);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_call_succeeds() {
    let s = setup().await;
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    s.fake.revoke_tokens();
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    assert_eq!(s.fake.count(Endpoint::AccessToken), 2);
    let statuses: Vec<u16> = s
        .fake
        .requests_to(Endpoint::ListRepoRunners)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 401, 200]);
}

#[tokio::test]
async fn a_key_github_does_not_know_is_unauthorized() {
    let s = setup().await;
    let mut config = s.fake.github_config();
    config.app_id = Some(1); // the JWT's iss no longer names the test App
    let github = RestGitHub::new(&config, &RunnerConfig::default(), s.clock.clone())
        .unwrap()
        .with_retry_policy(quick_retries());

    let err = github.repo_installation(&widgets()).await.unwrap_err();

    assert!(matches!(err, GitHubError::Unauthorized(_)), "{err}");
    assert_eq!(
        s.fake.count(Endpoint::RepoInstallation),
        1,
        "401 is not retried"
    );
}

// -------------------------------------------------------------------------------- the endpoints

#[tokio::test]
async fn a_repo_jit_config_is_requested_at_the_repo_with_the_pools_labels() {
    let s = setup().await;
    let mut request = jit_request("pacer-dev-r1", 1);
    request.work_folder = Some("_work".into());

    let jit = s
        .github
        .generate_jit_config(REPO_INSTALLATION, &repo_target(), &request)
        .await
        .unwrap();

    let sent = &s.fake.requests_to(Endpoint::RepoJitConfig)[0];
    assert_eq!(
        sent.path,
        "/repos/acme/widgets/actions/runners/generate-jitconfig"
    );
    assert_eq!(
        sent.body.as_ref().unwrap(),
        &json!({"name": "pacer-dev-r1", "runner_group_id": 1, "labels": ["self-hosted", "linux", "acme"], "work_folder": "_work"})
    );
    let registered = s
        .fake
        .runner_by_jit_config(&jit.encoded_jit_config)
        .expect("the config the fake issued");
    assert_eq!(registered.id, jit.runner_id);
    assert_eq!(registered.name, "pacer-dev-r1");
    assert_eq!(registered.target, FakeTarget::repo("acme/widgets"));
    assert_eq!(jit.runner_name, "pacer-dev-r1");
    assert!(
        !format!("{jit:?}").contains(&jit.encoded_jit_config),
        "Debug never shows the JIT config"
    );
}

#[tokio::test]
async fn an_org_jit_config_is_requested_at_the_org_in_its_runner_group() {
    let s = setup().await;

    let jit = s
        .github
        .generate_jit_config(
            ORG_INSTALLATION,
            &org_target(),
            &jit_request("pacer-dev-r2", 3),
        )
        .await
        .unwrap();

    let sent = &s.fake.requests_to(Endpoint::OrgJitConfig)[0];
    assert_eq!(
        sent.path,
        "/orgs/acme-org/actions/runners/generate-jitconfig"
    );
    assert_eq!(
        sent.body.as_ref().unwrap(),
        &json!({"name": "pacer-dev-r2", "runner_group_id": 3, "labels": ["self-hosted", "linux", "acme"]})
    );
    let registered = s.fake.runner(jit.runner_id).unwrap();
    assert_eq!(
        (registered.target, registered.runner_group_id),
        (FakeTarget::org("acme-org"), 3)
    );
}

#[tokio::test]
async fn deleting_a_runner_removes_it_and_one_already_gone_is_fine() {
    let s = setup().await;
    let id = s
        .fake
        .add_runner(FakeTarget::repo("acme/widgets"), "old", &["self-hosted"]);

    s.github
        .delete_runner(REPO_INSTALLATION, &repo_target(), id)
        .await
        .unwrap();
    assert_eq!(s.fake.runner(id), None);

    s.github
        .delete_runner(REPO_INSTALLATION, &repo_target(), id)
        .await
        .unwrap();
    let statuses: Vec<u16> = s
        .fake
        .requests_to(Endpoint::DeleteRepoRunner)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [204, 404]);
}

#[tokio::test]
async fn an_org_runner_is_deleted_at_the_org() {
    let s = setup().await;
    let id = s
        .fake
        .add_runner(FakeTarget::org("acme-org"), "org-runner", &["self-hosted"]);
    s.github
        .delete_runner(ORG_INSTALLATION, &org_target(), id)
        .await
        .unwrap();
    assert_eq!(
        s.fake.requests_to(Endpoint::DeleteOrgRunner)[0].path,
        format!("/orgs/acme-org/actions/runners/{id}")
    );
    assert_eq!(s.fake.runner(id), None);
}

#[tokio::test]
async fn listing_runners_follows_every_page() {
    let s = setup().await;
    for i in 0..250 {
        s.fake.add_runner(
            FakeTarget::repo("acme/widgets"),
            &format!("r{i:03}"),
            &["self-hosted", "linux"],
        );
    }
    s.fake
        .add_runner(FakeTarget::repo("acme/other"), "not-ours", &["self-hosted"]);

    let runners = s
        .github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    assert_eq!(runners.len(), 250);
    assert_eq!(runners[0].name, "r000");
    assert_eq!(runners[249].labels, ["self-hosted", "linux"]);
    let pages: Vec<(Option<String>, Option<String>)> = s
        .fake
        .requests_to(Endpoint::ListRepoRunners)
        .iter()
        .map(|r| (r.query_param("per_page"), r.query_param("page")))
        .collect();
    let expected: Vec<(Option<String>, Option<String>)> = ["1", "2", "3"]
        .iter()
        .map(|p| (Some("100".to_owned()), Some(p.to_string())))
        .collect();
    assert_eq!(pages, expected);
}

#[tokio::test]
async fn a_runner_is_got_or_none_when_github_no_longer_knows_it() {
    let s = setup().await;
    let id = s.fake.add_runner(
        FakeTarget::org("acme-org"),
        "busy-one",
        &["self-hosted", "gpu"],
    );
    s.fake.set_runner_status(id, "online", true);

    let runner = s
        .github
        .get_runner(ORG_INSTALLATION, &org_target(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (runner.name.as_str(), runner.status.as_str(), runner.busy),
        ("busy-one", "online", true)
    );
    assert_eq!(runner.labels, ["self-hosted", "gpu"]);

    assert_eq!(
        s.github
            .get_runner(ORG_INSTALLATION, &org_target(), id + 100)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_job_is_got_or_none_when_github_does_not_know_it() {
    let s = setup().await;
    s.fake.add_job(FakeJob {
        id: 77,
        run_id: 7,
        repo: "acme/widgets".into(),
        status: "in_progress".into(),
        conclusion: None,
        labels: vec!["self-hosted".into(), "linux".into()],
        runner_id: Some(5),
        runner_name: Some("pacer-dev-r5".into()),
        ..FakeJob::default()
    });

    let job = s
        .github
        .get_job(REPO_INSTALLATION, &widgets(), 77)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.id, job.run_id, job.status.as_str()),
        (77, 7, "in_progress")
    );
    assert_eq!(job.conclusion, None);
    assert_eq!(job.runner_name.as_deref(), Some("pacer-dev-r5"));
    assert_eq!(job.labels, ["self-hosted", "linux"]);

    assert_eq!(
        s.github
            .get_job(REPO_INSTALLATION, &widgets(), 78)
            .await
            .unwrap(),
        None
    );
}

/// `runner.version` pinned to `version`.
fn pinned(version: &str) -> RunnerConfig {
    RunnerConfig {
        version: version.into(),
        ..RunnerConfig::default()
    }
}

#[tokio::test]
async fn the_latest_runner_release_is_asked_once_an_hour() {
    let s = setup().await;
    s.fake.set_latest_runner_release("2.330.0");

    let version = || async {
        s.github
            .runner_download("linux", "x64")
            .await
            .unwrap()
            .version
    };
    assert_eq!(version().await, "2.330.0");
    assert_eq!(version().await, "2.330.0");
    assert_eq!(s.fake.count(Endpoint::LatestRelease), 1);
    assert_eq!(
        s.fake.requests_to(Endpoint::LatestRelease)[0].path,
        "/repos/actions/runner/releases/latest"
    );

    s.fake.set_latest_runner_release("2.331.0");
    s.clock.advance(Duration::from_secs(61 * 60));
    assert_eq!(version().await, "2.331.0");
    assert_eq!(s.fake.count(Endpoint::LatestRelease), 2);
}

#[tokio::test]
async fn the_runner_checksum_is_githubs_digest_of_the_exact_tarball() {
    // Given a release whose notes give another x64 checksum than GitHub's digest of the file
    let s = setup().await;
    s.fake.add_runner_release(
        FakeRelease::new("2.330.0").with_notes_checksum("linux-x64", &"0".repeat(64)),
    );
    s.fake.set_latest_runner_release("2.330.0");

    let x64 = s.github.runner_download("linux", "x64").await.unwrap();
    let arm64 = s.github.runner_download("linux", "arm64").await.unwrap();

    assert_eq!(
        x64,
        RunnerDownload {
            version: "2.330.0".into(),
            file: "actions-runner-linux-x64-2.330.0.tar.gz".into(),
            url: "https://github.com/actions/runner/releases/download/v2.330.0/actions-runner-linux-x64-2.330.0.tar.gz".into(),
            sha256: Some(runner_sha256("2.330.0", "linux-x64")),
        },
        "the digest wins over the notes"
    );
    assert_eq!(arm64.file, "actions-runner-linux-arm64-2.330.0.tar.gz");
    assert_eq!(arm64.sha256, Some(runner_sha256("2.330.0", "linux-arm64")));
    assert_eq!(
        s.fake.count(Endpoint::LatestRelease),
        1,
        "one call serves every architecture"
    );
}

#[tokio::test]
async fn without_a_digest_the_checksum_comes_from_the_release_notes() {
    // Given a release from before GitHub computed digests
    let s = setup().await;
    s.fake
        .add_runner_release(FakeRelease::new("2.310.0").without_digests());
    s.fake.set_latest_runner_release("2.310.0");

    for arch in ["x64", "arm64"] {
        let download = s.github.runner_download("linux", arch).await.unwrap();
        assert_eq!(
            download.sha256,
            Some(runner_sha256("2.310.0", &format!("linux-{arch}"))),
            "{arch}"
        );
    }
}

#[tokio::test]
async fn a_release_without_digests_or_notes_checksums_is_a_clear_error() {
    let s = setup().await;
    s.fake.add_runner_release(
        FakeRelease::new("2.330.0")
            .without_digests()
            .without_notes_checksums(),
    );
    s.fake.set_latest_runner_release("2.330.0");

    let err = s.github.runner_download("linux", "x64").await.unwrap_err();

    assert!(!err.is_transient(), "asking again will not help: {err}");
    assert_eq!(
        err.to_string(),
        "no SHA-256 is known for actions-runner-linux-x64-2.330.0.tar.gz: actions/runner v2.330.0 \
         publishes none (no digest on such an asset, none between the SHA markers of its release \
         notes); pacer hands out no download a runner cannot verify (pin runner.version and set \
         runner.sha256.linux_x64)"
    );
}

#[tokio::test]
async fn a_pinned_version_is_looked_up_by_its_tag_once_and_kept() {
    let s = setup_with(|fake| fake.url(), pinned("2.321.0")).await;
    s.fake.add_runner_release(FakeRelease::new("2.321.0"));
    s.fake.set_latest_runner_release("2.330.0");

    for _ in 0..2 {
        let download = s.github.runner_download("linux", "x64").await.unwrap();
        assert_eq!(download.version, "2.321.0");
        assert_eq!(download.sha256, Some(runner_sha256("2.321.0", "linux-x64")));
    }
    // A published release's assets do not change: days later it is not asked again.
    s.clock.advance(Duration::from_secs(48 * 3600));
    let arm64 = s.github.runner_download("linux", "arm64").await.unwrap();
    assert_eq!(arm64.sha256, Some(runner_sha256("2.321.0", "linux-arm64")));

    assert_eq!(s.fake.count(Endpoint::ReleaseByTag), 1);
    assert_eq!(
        s.fake.requests_to(Endpoint::ReleaseByTag)[0].path,
        "/repos/actions/runner/releases/tags/v2.321.0"
    );
    assert_eq!(
        s.fake.count(Endpoint::LatestRelease),
        0,
        "a pin never asks for the newest"
    );
}

#[tokio::test]
async fn a_pinned_release_the_host_does_not_have_names_the_setting_that_replaces_it() {
    // Given GitHub Enterprise, which holds no actions/runner releases
    let s = setup_with(|fake| fake.ghes_url(), pinned("2.321.0")).await;

    let err = s.github.runner_download("linux", "x64").await.unwrap_err();

    assert!(matches!(err, GitHubError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("set runner.sha256"), "{err}");
    assert_eq!(
        s.fake.requests_to(Endpoint::ReleaseByTag)[0].path,
        "/api/v3/repos/actions/runner/releases/tags/v2.321.0"
    );
}

#[tokio::test]
async fn checksums_the_operator_pins_win_and_github_is_not_asked() {
    // Given the operator's x64 checksum (written in capitals) and a GitHub that says otherwise
    let configured = "AB".repeat(32);
    let runner = RunnerConfig {
        sha256: RunnerSha256 {
            linux_x64: Some(configured.clone()),
            linux_arm64: None,
        },
        ..pinned("2.321.0")
    };
    let s = setup_with(|fake| fake.url(), runner).await;
    s.fake.add_runner_release(FakeRelease::new("2.321.0"));

    let x64 = s.github.runner_download("linux", "x64").await.unwrap();
    let arm64 = s
        .github
        .runner_download("linux", "arm64")
        .await
        .unwrap_err();

    assert_eq!(x64.version, "2.321.0");
    assert_eq!(x64.sha256, Some(configured.to_lowercase()));
    assert_eq!(
        arm64.to_string(),
        "no SHA-256 is known for actions-runner-linux-arm64-2.321.0.tar.gz: runner.sha256 gives \
         none; pacer hands out no download a runner cannot verify (set runner.sha256.linux_arm64)"
    );
    assert!(
        s.fake.requests().is_empty(),
        "GitHub was asked: {:?}",
        s.fake.requests()
    );
}

#[tokio::test]
async fn an_enterprise_api_prefix_is_kept_on_every_path() {
    let s = setup_with(|fake| fake.ghes_url(), RunnerConfig::default()).await;

    s.github.repo_installation(&widgets()).await.unwrap();
    s.github
        .generate_jit_config(ORG_INSTALLATION, &org_target(), &jit_request("ghes-r1", 1))
        .await
        .unwrap();
    s.github
        .list_runners(ORG_INSTALLATION, &org_target())
        .await
        .unwrap();

    let paths: Vec<String> = s.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v3/repos/acme/widgets/installation",
            &format!("/api/v3/app/installations/{ORG_INSTALLATION}/access_tokens"),
            "/api/v3/orgs/acme-org/actions/runners/generate-jitconfig",
            "/api/v3/orgs/acme-org/actions/runners",
        ]
    );
}

// ------------------------------------------------------------------------------------ failures

#[tokio::test]
async fn server_errors_are_retried_until_github_answers() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::RepoJitConfig, 2, Failure::server_error());

    let jit = s
        .github
        .generate_jit_config(
            REPO_INSTALLATION,
            &repo_target(),
            &jit_request("retried", 1),
        )
        .await
        .unwrap();

    let statuses: Vec<u16> = s
        .fake
        .requests_to(Endpoint::RepoJitConfig)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [502, 502, 201]);
    assert_eq!(s.fake.runners().len(), 1, "one registration, not three");
    assert_eq!(jit.runner_name, "retried");
}

#[tokio::test]
async fn server_errors_that_outlast_the_retries_are_reported_unavailable() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::ListOrgRunners, 10, Failure::status(503));

    let err = s
        .github
        .list_runners(ORG_INSTALLATION, &org_target())
        .await
        .unwrap_err();

    assert!(
        matches!(&err, GitHubError::Unavailable(m) if m.contains("503") && m.contains("3 attempts")),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(
        s.fake.count(Endpoint::ListOrgRunners),
        3,
        "max_attempts bounds the calls"
    );
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_waited_out() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::GetJob, 1, Failure::rate_limited_retry_after(1));

    let started = Instant::now();
    let job = s
        .github
        .get_job(REPO_INSTALLATION, &widgets(), 1)
        .await
        .unwrap();

    assert_eq!(job, None);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited as GitHub asked"
    );
    assert_eq!(s.fake.count(Endpoint::GetJob), 2);
}

#[tokio::test]
async fn an_exhausted_rate_limit_resetting_soon_is_waited_out() {
    let s = setup().await;
    let reset = s.clock.now().timestamp() + 1;
    s.fake.fail_next(
        Endpoint::ListRepoRunners,
        1,
        Failure::rate_limit_exhausted_until(reset),
    );

    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();

    assert_eq!(s.fake.count(Endpoint::ListRepoRunners), 2);
}

#[tokio::test]
async fn a_rate_limit_resetting_later_than_the_cap_is_reported_with_its_wait() {
    let s = setup().await;
    let reset = s.clock.now().timestamp() + 3600;
    s.fake.fail_next(
        Endpoint::RepoJitConfig,
        1,
        Failure::rate_limit_exhausted_until(reset),
    );

    let err = s
        .github
        .generate_jit_config(REPO_INSTALLATION, &repo_target(), &jit_request("later", 1))
        .await
        .unwrap_err();

    match err {
        GitHubError::RateLimited { retry_after } => {
            assert_eq!(retry_after, Duration::from_secs(3600))
        }
        other => panic!("expected RateLimited, got {other}"),
    }
    assert_eq!(
        s.fake.count(Endpoint::RepoJitConfig),
        1,
        "no retry inside the call"
    );
}

#[tokio::test]
async fn a_missing_repo_permission_names_administration() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::RepoJitConfig, 1, Failure::missing_permission());

    let err = s
        .github
        .generate_jit_config(REPO_INSTALLATION, &repo_target(), &jit_request("denied", 1))
        .await
        .unwrap_err();

    match &err {
        GitHubError::MissingPermission { permission, .. } => assert!(
            permission.starts_with("administration: write"),
            "{permission}"
        ),
        other => panic!("expected MissingPermission, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("Resource not accessible by integration"),
        "{err}"
    );
    assert_eq!(
        s.fake.count(Endpoint::RepoJitConfig),
        1,
        "a permission problem is not retried"
    );
}

#[tokio::test]
async fn a_missing_org_permission_names_organization_self_hosted_runners() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::OrgJitConfig, 1, Failure::missing_permission());

    let err = s
        .github
        .generate_jit_config(ORG_INSTALLATION, &org_target(), &jit_request("denied", 1))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, GitHubError::MissingPermission { permission, .. } if permission.starts_with("organization_self_hosted_runners: write")),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_actions_permission_is_named_for_jobs() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::GetJob, 1, Failure::missing_permission());
    let err = s
        .github
        .get_job(REPO_INSTALLATION, &widgets(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::MissingPermission { permission, .. } if permission.starts_with("actions: read")),
        "{err}"
    );
}

#[tokio::test]
async fn an_unprocessable_request_is_refused_with_githubs_message_and_not_retried() {
    let s = setup().await;
    s.fake.fail_next(
        Endpoint::RepoJitConfig,
        1,
        Failure::status(422).message("Invalid runner group"),
    );

    let err = s
        .github
        .generate_jit_config(
            REPO_INSTALLATION,
            &repo_target(),
            &jit_request("bad-group", 99),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(&err, GitHubError::Refused(m) if m.contains("Invalid runner group")),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(s.fake.count(Endpoint::RepoJitConfig), 1);
}

#[tokio::test]
async fn a_duplicate_runner_name_is_refused_as_a_conflict() {
    let s = setup().await;
    s.github
        .generate_jit_config(REPO_INSTALLATION, &repo_target(), &jit_request("twice", 1))
        .await
        .unwrap();

    let err = s
        .github
        .generate_jit_config(REPO_INSTALLATION, &repo_target(), &jit_request("twice", 1))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, GitHubError::Refused(m) if m.contains("already exists")),
        "{err}"
    );
}

#[tokio::test]
async fn an_org_where_the_app_is_not_installed_is_not_found_with_a_hint() {
    let s = setup().await;
    let err = s
        .github
        .generate_jit_config(
            ORG_INSTALLATION,
            &RunnerTarget::Org("elsewhere".into()),
            &jit_request("x", 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::NotFound(m) if m.contains("installed on the organization")),
        "{err}"
    );
}

#[tokio::test]
async fn errors_never_carry_the_token_or_the_jit_config() {
    let s = setup().await;
    let jit = s
        .github
        .generate_jit_config(
            REPO_INSTALLATION,
            &repo_target(),
            &jit_request("secretive", 1),
        )
        .await
        .unwrap();
    let token = s.fake.requests_to(Endpoint::RepoJitConfig)[0].headers["authorization"]
        .replace("Bearer ", "");
    s.fake
        .fail_next(Endpoint::RepoJitConfig, 1, Failure::missing_permission());
    s.fake
        .fail_next(Endpoint::ListRepoRunners, 5, Failure::server_error());
    s.fake.fail_next(Endpoint::GetJob, 1, Failure::status(400));

    let errors = [
        s.github
            .generate_jit_config(REPO_INSTALLATION, &repo_target(), &jit_request("again", 1))
            .await
            .unwrap_err(),
        s.github
            .list_runners(REPO_INSTALLATION, &repo_target())
            .await
            .unwrap_err(),
        s.github
            .get_job(REPO_INSTALLATION, &widgets(), 1)
            .await
            .unwrap_err(),
    ];

    for err in errors {
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains(&jit.encoded_jit_config), "{text}");
    }
}

// ------------------------------------------------------------------------ missed webhooks

const SELF_HOSTED: &[&str] = &["self-hosted", "linux"];

fn ids(jobs: &[pacer_shared::github::GhQueuedJob]) -> BTreeSet<i64> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn queued_jobs_are_found_in_queued_and_in_progress_runs_and_nothing_else() {
    let s = setup().await;
    // A queued run: every job waits, whatever runner it wants.
    s.fake.add_run_with_jobs(
        FakeRun::new(10, "acme/widgets", "queued"),
        &[
            (101, "queued", SELF_HOSTED),
            (102, "queued", &["ubuntu-latest"]),
        ],
    );
    // A run in progress with one job still waiting for a runner.
    s.fake.add_run_with_jobs(
        FakeRun::new(11, "acme/widgets", "in_progress"),
        &[
            (111, "in_progress", SELF_HOSTED),
            (112, "queued", SELF_HOSTED),
            (113, "completed", SELF_HOSTED),
        ],
    );
    // Runs that cannot hold a queued job, and another repository's run.
    s.fake.add_run_with_jobs(
        FakeRun::new(12, "acme/widgets", "completed"),
        &[(121, "completed", SELF_HOSTED)],
    );
    s.fake.add_run_with_jobs(
        FakeRun::new(13, "acme/widgets", "waiting"),
        &[(131, "waiting", SELF_HOSTED)],
    );
    s.fake.add_run_with_jobs(
        FakeRun::new(14, "acme/other", "queued"),
        &[(141, "queued", SELF_HOSTED)],
    );

    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 10)
        .await
        .unwrap();

    assert_eq!(ids(&jobs), BTreeSet::from([101, 102, 112]));
    let statuses: Vec<Option<String>> = s
        .fake
        .requests_to(Endpoint::ListRepoRuns)
        .iter()
        .map(|r| r.query_param("status"))
        .collect();
    assert_eq!(
        statuses,
        [Some("queued".to_owned()), Some("in_progress".to_owned())]
    );
    let job_listings = s.fake.requests_to(Endpoint::ListRunJobs);
    let runs: BTreeSet<&str> = job_listings.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        runs,
        BTreeSet::from([
            "/repos/acme/widgets/actions/runs/10/jobs",
            "/repos/acme/widgets/actions/runs/11/jobs"
        ]),
        "only queued and in-progress runs are looked into"
    );
    assert!(job_listings.iter().all(|r| {
        r.query_param("filter").as_deref() == Some("latest")
            && r.query_param("per_page").as_deref() == Some("100")
    }));
}

#[tokio::test]
async fn a_job_a_runner_has_taken_meanwhile_is_no_longer_queued() {
    let s = setup().await;
    s.fake.add_run_with_jobs(
        FakeRun::new(1, "acme/widgets", "queued"),
        &[(10, "queued", SELF_HOSTED), (11, "queued", SELF_HOSTED)],
    );
    let first = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 10)
        .await
        .unwrap();
    assert_eq!(ids(&first), BTreeSet::from([10, 11]));

    s.fake.set_job_status(10, "in_progress");

    let second = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 10)
        .await
        .unwrap();
    assert_eq!(ids(&second), BTreeSet::from([11]));
}

#[tokio::test]
async fn a_queued_job_carries_what_its_webhook_would_have() {
    let s = setup().await;
    let created: pacer_shared::domain::Time = "2025-03-01T10:00:00Z".parse().unwrap();
    let mut run = FakeRun::new(20, "acme/widgets", "queued");
    run.name = "Release".into();
    run.run_attempt = 2;
    run.actor = "hubot".into();
    s.fake.add_run(run);
    s.fake.add_job(FakeJob {
        name: "build (arm64)".into(),
        created_at: Some(created),
        ..FakeJob::queued(201, 20, "acme/widgets", &["self-hosted", "linux", "arm64"])
    });

    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 5)
        .await
        .unwrap();

    let job = &jobs[0];
    assert_eq!((job.id, job.run_id, job.run_attempt), (201, 20, 2));
    assert_eq!(job.labels, ["self-hosted", "linux", "arm64"]);
    assert_eq!(job.name, "build (arm64)");
    assert_eq!(job.workflow_name.as_deref(), Some("Release"));
    assert_eq!(
        job.html_url.as_deref(),
        Some("https://github.com/acme/widgets/actions/runs/20/job/201")
    );
    assert_eq!(job.created_at, created);
    assert_eq!(job.sender.as_deref(), Some("hubot"));

    // …and it reads as the job the missing delivery would have brought.
    let pending = job.pending(&widgets(), REPO_INSTALLATION);
    assert!(!pending.awaiting_approval);
    assert_eq!(pending.job.repo, "acme/widgets");
    assert_eq!(pending.job.labels, job.labels);
    assert_eq!((pending.job.id, pending.job.run_attempt), (201, 2));
    assert_eq!(pending.job.installation_id, Some(REPO_INSTALLATION));
    assert_eq!(pending.job.sender.as_deref(), Some("hubot"));
}

#[tokio::test]
async fn a_run_with_more_than_a_hundred_jobs_is_read_page_by_page() {
    let s = setup().await;
    let run = FakeRun::new(30, "acme/widgets", "in_progress");
    s.fake.add_run(run);
    for id in 3000..3150 {
        let status = if id % 3 == 0 { "in_progress" } else { "queued" };
        s.fake
            .add_job(FakeJob::queued(id, 30, "acme/widgets", SELF_HOSTED).with_status(status));
    }

    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 5)
        .await
        .unwrap();

    let expected: BTreeSet<i64> = (3000..3150).filter(|id| id % 3 != 0).collect();
    assert_eq!(ids(&jobs), expected);
    let pages: Vec<Option<String>> = s
        .fake
        .requests_to(Endpoint::ListRunJobs)
        .iter()
        .map(|r| r.query_param("page"))
        .collect();
    assert_eq!(pages, [Some("1".to_owned()), Some("2".to_owned())]);
}

#[tokio::test]
async fn more_than_a_hundred_runs_are_listed_page_by_page() {
    let s = setup().await;
    for run in 1..=120 {
        s.fake.add_run_with_jobs(
            FakeRun::new(run, "acme/widgets", "queued"),
            &[(run * 10, "queued", SELF_HOSTED)],
        );
    }

    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 150)
        .await
        .unwrap();

    assert_eq!(jobs.len(), 120);
    let listings: Vec<(Option<String>, Option<String>, Option<String>)> = s
        .fake
        .requests_to(Endpoint::ListRepoRuns)
        .iter()
        .map(|r| {
            (
                r.query_param("status"),
                r.query_param("per_page"),
                r.query_param("page"),
            )
        })
        .collect();
    let listing = |status: &str, page: &str| {
        (
            Some(status.to_owned()),
            Some("100".to_owned()),
            Some(page.to_owned()),
        )
    };
    assert_eq!(
        listings,
        [
            listing("queued", "1"),
            listing("queued", "2"),
            listing("in_progress", "1")
        ]
    );
    assert_eq!(s.fake.count(Endpoint::ListRunJobs), 120);
}

#[tokio::test]
async fn max_runs_bounds_the_runs_looked_at_and_so_the_calls() {
    let s = setup().await;
    // Five queued runs (ids 1–5) and three in progress (6–8), one queued job each.
    for run in 1..=8 {
        let status = if run <= 5 { "queued" } else { "in_progress" };
        s.fake.add_run_with_jobs(
            FakeRun::new(run, "acme/widgets", status),
            &[(run * 10, "queued", SELF_HOSTED)],
        );
    }

    // Four runs: the four newest queued ones fill the budget; runs in progress are not listed.
    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 4)
        .await
        .unwrap();
    assert_eq!(ids(&jobs), BTreeSet::from([20, 30, 40, 50]));
    assert_eq!(s.fake.count(Endpoint::ListRepoRuns), 1);
    assert_eq!(
        s.fake.requests_to(Endpoint::ListRepoRuns)[0]
            .query_param("per_page")
            .as_deref(),
        Some("4")
    );
    assert_eq!(s.fake.count(Endpoint::ListRunJobs), 4);

    // Seven runs: all five queued, then the two newest in progress. max_runs + 2 calls at most.
    let before = s.fake.requests().len();
    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 7)
        .await
        .unwrap();
    assert_eq!(ids(&jobs), BTreeSet::from([10, 20, 30, 40, 50, 70, 80]));
    assert_eq!(s.fake.requests().len() - before, 2 + 7);

    // None: no call at all.
    let before = s.fake.requests().len();
    assert!(
        s.github
            .queued_jobs(REPO_INSTALLATION, &widgets(), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.fake.requests().len(), before);
}

#[tokio::test]
async fn a_run_gone_before_its_jobs_are_listed_is_skipped() {
    let s = setup().await;
    s.fake.add_run_with_jobs(
        FakeRun::new(1, "acme/widgets", "queued"),
        &[(10, "queued", SELF_HOSTED)],
    );
    s.fake.add_run_with_jobs(
        FakeRun::new(2, "acme/widgets", "queued"),
        &[(20, "queued", SELF_HOSTED)],
    );
    s.fake.fail_next(
        Endpoint::ListRunJobs,
        1,
        Failure::status(404).message("Not Found"),
    );

    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 10)
        .await
        .unwrap();

    assert_eq!(jobs.len(), 1, "the other run's job is still found");
    assert_eq!(
        s.fake.count(Endpoint::ListRunJobs),
        2,
        "a 404 is not retried"
    );
}

#[tokio::test]
async fn server_errors_while_listing_runs_and_jobs_are_retried() {
    let s = setup().await;
    s.fake.add_run_with_jobs(
        FakeRun::new(1, "acme/widgets", "queued"),
        &[(10, "queued", SELF_HOSTED)],
    );
    s.fake
        .fail_next(Endpoint::ListRepoRuns, 2, Failure::server_error());
    s.fake
        .fail_next(Endpoint::ListRunJobs, 1, Failure::status(503));

    let jobs = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 10)
        .await
        .unwrap();

    assert_eq!(ids(&jobs), BTreeSet::from([10]));
    assert_eq!(
        s.fake.count(Endpoint::ListRepoRuns),
        4,
        "two failures, then queued and in_progress"
    );
    assert_eq!(s.fake.count(Endpoint::ListRunJobs), 2);
}

#[tokio::test]
async fn listing_runs_without_the_actions_permission_names_it() {
    let s = setup().await;
    s.fake
        .fail_next(Endpoint::ListRepoRuns, 1, Failure::missing_permission());
    let err = s
        .github
        .queued_jobs(REPO_INSTALLATION, &widgets(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::MissingPermission { permission, .. } if permission.starts_with("actions: read")),
        "{err}"
    );
}

/// A delivery `minutes` before now.
fn delivery(s: &Setup, guid: &str, status_code: u16, minutes: i64) -> FakeDelivery {
    FakeDelivery::workflow_job(
        guid,
        "queued",
        status_code,
        s.clock.now() - TimeDelta::minutes(minutes),
    )
}

#[tokio::test]
async fn failed_deliveries_are_paged_until_since_one_per_event_never_delivered() {
    let s = setup().await;
    // 250 deliveries, one a minute; every tenth one failed.
    let mut failed_ids = Vec::new();
    for minute in 0..250 {
        let status = if minute % 10 == 5 { 502 } else { 200 };
        let id = s
            .fake
            .add_delivery(delivery(&s, &format!("ev-{minute}"), status, minute));
        if status == 502 && minute < 150 {
            failed_ids.push(id);
        }
    }
    // An event that failed and was then redelivered successfully needs nothing.
    s.fake.add_delivery(delivery(&s, "healed", 503, 30));
    s.fake.add_delivery(FakeDelivery {
        redelivery: true,
        ..delivery(&s, "healed", 200, 20)
    });
    // One that failed twice (its redelivery too) is listed once, by its newest attempt.
    s.fake.add_delivery(delivery(&s, "twice", 0, 40));
    let newest = s.fake.add_delivery(FakeDelivery {
        redelivery: true,
        ..delivery(&s, "twice", 500, 10)
    });

    let since = s.clock.now() - TimeDelta::minutes(150);
    let failed = s.github.failed_deliveries(since).await.unwrap();

    let twice = failed.iter().find(|d| d.guid == "twice").unwrap();
    assert_eq!(
        (
            twice.id,
            twice.status_code,
            twice.redelivery,
            twice.failed_attempts
        ),
        (newest, 500, true, 2)
    );
    assert!(failed.iter().all(|d| d.guid != "healed"));
    let mut listed: Vec<i64> = failed
        .iter()
        .filter(|d| d.guid.starts_with("ev-"))
        .map(|d| d.id)
        .collect();
    listed.sort();
    assert_eq!(
        listed, failed_ids,
        "the failed ones since `since`, no older"
    );
    assert!(
        failed
            .windows(2)
            .all(|w| w[0].delivered_at >= w[1].delivered_at),
        "newest first"
    );
    let first = failed.iter().find(|d| d.guid == "ev-5").unwrap();
    assert_eq!(
        (
            first.event.as_str(),
            first.action.as_deref(),
            first.status_code
        ),
        ("workflow_job", Some("queued"), 502)
    );
    assert!(!first.redelivery);

    // 254 deliveries, 154 of them since `since`: two pages of 100 reach past it; no third.
    let pages = s.fake.requests_to(Endpoint::ListHookDeliveries);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].query_param("cursor"), None);
    let cursor = pages[1].query_param("cursor").unwrap();
    assert!(cursor.starts_with("v1_"), "{cursor}");
    assert!(
        pages
            .iter()
            .all(|p| p.query_param("per_page").as_deref() == Some("100"))
    );
    let jwt = pages[0].headers["authorization"]
        .strip_prefix("Bearer ")
        .unwrap();
    assert!(
        s.fake.verify_app_jwt(jwt).is_ok(),
        "deliveries are the App's, read with its JWT"
    );
}

#[tokio::test]
async fn with_no_failure_since_nothing_is_listed_and_one_call_is_made() {
    let s = setup().await;
    s.fake.add_delivery(delivery(&s, "old-failure", 502, 600));
    s.fake.add_delivery(delivery(&s, "fine", 200, 5));

    let failed = s
        .github
        .failed_deliveries(s.clock.now() - TimeDelta::minutes(60))
        .await
        .unwrap();

    assert_eq!(failed, Vec::new());
    assert_eq!(s.fake.count(Endpoint::ListHookDeliveries), 1);
}

#[tokio::test]
async fn a_redelivery_is_recorded_and_the_event_then_counts_as_delivered() {
    let s = setup().await;
    let id = s.fake.add_delivery(delivery(&s, "lost", 503, 3));
    let since = s.clock.now() - TimeDelta::minutes(60);
    assert_eq!(s.github.failed_deliveries(since).await.unwrap()[0].id, id);

    s.github.redeliver(id).await.unwrap();

    assert_eq!(s.fake.redeliveries(), [id]);
    let request = &s.fake.requests_to(Endpoint::RedeliverHookDelivery)[0];
    assert_eq!(
        (
            request.method.as_str(),
            request.path.as_str(),
            request.status
        ),
        (
            "POST",
            format!("/app/hook/deliveries/{id}/attempts").as_str(),
            202
        )
    );
    assert_eq!(request.body, None, "the operation takes no body");
    let redelivered = &s.fake.deliveries()[0];
    assert_eq!(
        (redelivered.guid.as_str(), redelivered.redelivery),
        ("lost", true)
    );
    assert_eq!(s.github.failed_deliveries(since).await.unwrap(), Vec::new());
}

#[tokio::test]
async fn a_redelivery_that_fails_again_keeps_the_event_listed() {
    let s = setup().await;
    let id = s.fake.add_delivery(delivery(&s, "stubborn", 503, 3));
    s.fake.set_redelivery_status(503);

    s.github.redeliver(id).await.unwrap();

    let failed = s
        .github
        .failed_deliveries(s.clock.now() - TimeDelta::minutes(60))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_ne!(failed[0].id, id, "the newest attempt is the one listed");
    assert_eq!((failed[0].failed_attempts, failed[0].redelivery), (2, true));
}

#[tokio::test]
async fn a_forwarded_redelivery_reaches_the_webhook_endpoint_signed() {
    let s = setup().await;
    let secret = b"webhook-secret-for-the-test";
    let (received, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(String, String, bool)>();
    let endpoint = axum::Router::new().route(
        "/api/webhook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let signed = pacer_shared::github::webhook::verify_signature(
                        &[secret.as_slice()],
                        &body,
                        header("x-hub-signature-256").as_deref(),
                    )
                    .is_ok();
                    let _ = received.send((
                        header("x-github-event").unwrap_or_default(),
                        header("x-github-delivery").unwrap_or_default(),
                        signed,
                    ));
                    axum::http::StatusCode::ACCEPTED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/webhook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, endpoint).await.unwrap() });
    s.fake.forward_redeliveries_to(&url, secret);
    let id = s
        .fake
        .add_delivery(delivery(&s, "forward-me", 0, 2).with_payload(json!({"action": "queued"})));

    s.github.redeliver(id).await.unwrap();

    let (event, guid, signed) = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.as_str(), guid.as_str(), signed),
        ("workflow_job", "forward-me", true)
    );
    let deliveries = s.fake.wait_for_deliveries(2).await;
    assert_eq!(
        (deliveries[0].status_code, deliveries[0].redelivery),
        (202, true),
        "what the endpoint answered is recorded"
    );
    server.abort();
}

#[tokio::test]
async fn redelivering_a_delivery_github_no_longer_keeps_is_not_found() {
    let s = setup().await;
    let err = s.github.redeliver(123).await.unwrap_err();
    assert!(
        matches!(&err, GitHubError::NotFound(m) if m.contains("three days")),
        "{err}"
    );
    assert_eq!(s.fake.redeliveries(), Vec::<i64>::new());
}

#[tokio::test]
async fn server_errors_on_deliveries_and_redelivery_are_retried() {
    let s = setup().await;
    let id = s.fake.add_delivery(delivery(&s, "lost", 502, 1));
    s.fake
        .fail_next(Endpoint::ListHookDeliveries, 2, Failure::server_error());
    s.fake
        .fail_next(Endpoint::RedeliverHookDelivery, 1, Failure::status(500));

    let failed = s
        .github
        .failed_deliveries(s.clock.now() - TimeDelta::hours(1))
        .await
        .unwrap();
    s.github.redeliver(failed[0].id).await.unwrap();

    assert_eq!(s.fake.count(Endpoint::ListHookDeliveries), 3);
    assert_eq!(s.fake.count(Endpoint::RedeliverHookDelivery), 2);
    assert_eq!(s.fake.redeliveries(), [id], "redelivered once");
}

#[tokio::test]
async fn a_rate_limited_delivery_listing_is_waited_out() {
    let s = setup().await;
    s.fake.add_delivery(delivery(&s, "lost", 502, 1));
    s.fake.fail_next(
        Endpoint::ListHookDeliveries,
        1,
        Failure::rate_limited_retry_after(1),
    );
    let started = Instant::now();

    let failed = s
        .github
        .failed_deliveries(s.clock.now() - TimeDelta::hours(1))
        .await
        .unwrap();

    assert_eq!(failed.len(), 1);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

// ------------------------------------------------------------- the fake's own checks

/// A request as a GitHub client would send it, with `authorization` as given.
fn raw_request(
    method: reqwest::Method,
    url: String,
    authorization: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new()
        .request(method, url)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header("user-agent", "a-test");
    match authorization {
        Some(value) => request.header("authorization", value),
        None => request,
    }
}

#[tokio::test]
async fn the_fake_refuses_app_endpoints_without_a_valid_app_jwt() {
    pacer_shared::http_client::install_crypto_provider();
    let fake = FakeGitHub::start().await;
    fake.install_on_repo("acme/widgets", 1);
    let url = format!("{}repos/acme/widgets/installation", fake.url());

    for authorization in [
        None,
        Some("Bearer not-a-jwt"),
        Some("Bearer ghs_an-installation-token"),
    ] {
        let response = raw_request(reqwest::Method::GET, url.clone(), authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
    }
    let recorded = fake.requests();
    assert!(
        recorded
            .iter()
            .all(|r| r.method == "GET" && r.endpoint == Some(Endpoint::RepoInstallation))
    );
}

#[tokio::test]
async fn the_fake_refuses_installation_endpoints_with_a_token_for_another_installation() {
    let s = setup().await;
    // A token for the org's installation…
    s.github
        .list_runners(ORG_INSTALLATION, &org_target())
        .await
        .unwrap();
    let org_token =
        s.fake.requests_to(Endpoint::ListOrgRunners)[0].headers["authorization"].clone();

    // …does not reach the repo's runners (GitHub hides what an installation cannot see).
    let url = format!("{}repos/acme/widgets/actions/runners", s.fake.url());
    let response = raw_request(reqwest::Method::GET, url, Some(&org_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_fake_reports_missing_github_headers_and_undocumented_query_parameters() {
    let fake = FakeGitHub::start().await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}repos/actions/runner/releases/latest?per_pag=5",
            fake.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let violations = fake.take_violations().join("\n");
    assert!(violations.contains("Accept"), "{violations}");
    assert!(violations.contains("X-GitHub-Api-Version"), "{violations}");
    assert!(violations.contains("\"per_pag\""), "{violations}");
}

#[tokio::test]
async fn the_fake_reports_query_values_githubs_schema_refuses() {
    let s = setup().await;
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    let auth = s.fake.requests_to(Endpoint::ListRepoRunners)[0].headers["authorization"].clone();

    let url = format!(
        "{}repos/acme/widgets/actions/runs?status=stuck&per_page=ten",
        s.fake.url()
    );
    let response = raw_request(reqwest::Method::GET, url, Some(&auth))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let violations = s.fake.take_violations().join("\n");
    assert!(violations.contains("status=\"stuck\""), "{violations}");
    assert!(violations.contains("per_page=\"ten\""), "{violations}");
}

// ------------------------------------------------------------------ the OpenAPI check itself

#[tokio::test]
async fn the_fake_reports_a_request_body_that_breaks_githubs_schema() {
    let s = setup().await;
    // A token the fake issued, so the request reaches the body check.
    s.github
        .list_runners(REPO_INSTALLATION, &repo_target())
        .await
        .unwrap();
    let auth = s.fake.requests_to(Endpoint::ListRepoRunners)[0].headers["authorization"].clone();

    let response = reqwest::Client::new()
        .post(format!(
            "{}repos/acme/widgets/actions/runners/generate-jitconfig",
            s.fake.url()
        ))
        .header("authorization", auth)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header("user-agent", "a-test")
        .json(&json!({"name": "r", "labels": "self-hosted", "runner_grup_id": 1}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 422, "GitHub's answer to an invalid body");
    let violations = s.fake.take_violations().join("\n");
    assert!(
        violations.contains("/labels"),
        "labels as a string is reported:\n{violations}"
    );
    assert!(
        violations.contains("runner_group_id"),
        "the missing runner_group_id is reported:\n{violations}"
    );
    assert!(
        violations.contains("runner_grup_id"),
        "the misspelt field is reported:\n{violations}"
    );
}

#[test]
fn the_schemas_accept_githubs_own_examples_and_its_nulls() {
    let spec = openapi::description();
    let cases = [
        (
            "POST",
            "/orgs/{org}/actions/runners/generate-jitconfig",
            201,
            "runner-jitconfig",
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/actions/jobs/{job_id}",
            200,
            "job",
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/installation",
            200,
            "installation",
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/actions/runners",
            200,
            "runner-paginated",
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/releases/latest",
            200,
            "release",
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/actions/runs",
            200,
            "workflow-run-paginated",
        ),
        (
            "GET",
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            200,
            "job-paginated",
        ),
        ("GET", "/app/hook/deliveries", 200, "hook-delivery-items"),
    ];
    for (method, template, status, example) in cases {
        let openapi::ResponseSpec::Json(validator) =
            spec.response(method, template, status).unwrap()
        else {
            panic!("{method} {template} {status} has a JSON body");
        };
        let mut body = spec.example(example);
        if example == "job" {
            // The description's own example lacks `created_at`, which its schema requires
            // (the check caught it); add it so the example tests the conversion, not the example.
            body["created_at"] = json!("2020-01-20T17:42:40Z");
        }
        if example == "job-paginated" {
            // The same gap in the paginated example.
            body["jobs"][0]["created_at"] = json!("2020-01-20T17:42:40Z");
        }
        assert_eq!(
            openapi::violations(&validator, &body),
            Vec::<String>::new(),
            "{example}"
        );
        if example == "job" {
            // `nullable: true` in the description: null must pass, and a wrong type must not.
            body["conclusion"] = serde_json::Value::Null;
            body["runner_name"] = serde_json::Value::Null;
            assert_eq!(openapi::violations(&validator, &body), Vec::<String>::new());
            body["runner_id"] = json!("five");
            assert_eq!(openapi::violations(&validator, &body).len(), 1);
        }
    }
}

#[test]
fn the_schemas_refuse_a_jit_answer_without_its_config() {
    let spec = openapi::description();
    let openapi::ResponseSpec::Json(validator) = spec
        .response(
            "POST",
            "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
            201,
        )
        .unwrap()
    else {
        panic!("a JSON body");
    };
    let body = json!({"runner": {"id": 1, "name": "r", "os": "linux", "status": "offline", "busy": "no", "labels": []}});
    let violations = openapi::violations(&validator, &body).join("\n");
    assert!(violations.contains("encoded_jit_config"), "{violations}");
    assert!(violations.contains("/runner/busy"), "{violations}");
}
