//! pacer's GitHub client (`RestGitHub`) against the fake GitHub API: authentication as an App,
//! the installation-token cache, each endpoint's request, pagination, and how failures are
//! retried, waited out or reported. Every request and response is also checked against GitHub's
//! OpenAPI description by the fake; a test ends in failure if either side broke it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_shared::clock::{Clock, ManualClock};
use pacer_shared::domain::RepoName;
use pacer_shared::github::rest::{RestGitHub, RetryPolicy, USER_AGENT};
use pacer_shared::github::{GitHub, GitHubError, JitRequest, RunnerTarget};
use serde_json::json;

use crate::fake_github::{Endpoint, Failure, FakeGitHub, FakeJob, FakeTarget, openapi};

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
    setup_with(|fake| fake.url(), "latest").await
}

async fn setup_with(api_url: impl FnOnce(&FakeGitHub) -> String, runner_version: &str) -> Setup {
    pacer_shared::server::install_crypto_provider();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = FakeGitHub::start_with_clock(clock.clone()).await;
    fake.install_on_repo("acme/widgets", REPO_INSTALLATION);
    fake.install_on_org("acme-org", ORG_INSTALLATION);
    let mut config = fake.github_config();
    config.api_url = api_url(&fake).parse().unwrap();
    let github = RestGitHub::new(&config, runner_version, clock.clone())
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
    let github = RestGitHub::new(&config, "latest", s.clock.clone())
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

#[tokio::test]
async fn the_latest_runner_release_is_asked_once_an_hour() {
    let s = setup().await;
    s.fake.set_latest_runner_release("2.330.0");

    assert_eq!(
        s.github.latest_runner_release().await.unwrap().version,
        "2.330.0"
    );
    assert_eq!(
        s.github.latest_runner_release().await.unwrap().version,
        "2.330.0"
    );
    assert_eq!(s.fake.count(Endpoint::LatestRelease), 1);
    assert_eq!(
        s.fake.requests_to(Endpoint::LatestRelease)[0].path,
        "/repos/actions/runner/releases/latest"
    );

    s.fake.set_latest_runner_release("2.331.0");
    s.clock.advance(Duration::from_secs(61 * 60));
    assert_eq!(
        s.github.latest_runner_release().await.unwrap().version,
        "2.331.0"
    );
    assert_eq!(s.fake.count(Endpoint::LatestRelease), 2);
}

#[tokio::test]
async fn a_pinned_runner_version_never_asks_github() {
    let s = setup_with(|fake| fake.url(), "2.321.0").await;
    assert_eq!(
        s.github.latest_runner_release().await.unwrap().version,
        "2.321.0"
    );
    assert_eq!(s.fake.count(Endpoint::LatestRelease), 0);
}

#[tokio::test]
async fn an_enterprise_api_prefix_is_kept_on_every_path() {
    let s = setup_with(|fake| fake.ghes_url(), "latest").await;

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
    pacer_shared::server::install_crypto_provider();
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
