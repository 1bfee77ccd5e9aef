//! What an outside security review found, each as the test that would have
//! caught it: hostile or careless input that must get a clean refusal and
//! leave pacer running.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::{ManualClock, SystemClock};
use pacer_shared::fleet::ec2::Ec2Fleet;
use pacer_shared::fleet::simulated::RunnerIdentity;
use pacer_shared::fleet::{JobRef, user_data};
use pacer_shared::host::simulation::workflow_job_payload;
use pacer_shared::service::reaper::reconcile;
use serde_json::{Value, json};

use crate::ec2_fleet::Aws;
use crate::fake_github::FakeGitHub;
use crate::lifecycle_aws::{
    Backend, World, instance_of_job, pacer_on, seed, user_data_of, world_with_clock,
};
use crate::support::{LocalPacer, queued_payload};

/// A `runs-on` label of 100 × '€' (300 bytes): building its error message
/// once cut through a character at byte 32 and panicked, which in a release
/// build aborted the whole process, and again on every reaper pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_multibyte_label_leaves_the_job_unmatched_and_pacer_up() {
    let pacer = LocalPacer::start().await;
    pacer.seed(2).await;
    let euro = "€".repeat(100);

    let (status, body) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(101, "acme/app", &["self-hosted", "linux", &euro]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, job) = pacer
        .get(&format!("/api/jobs/{}", body["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(
        job["state"], "unmatched",
        "no runner can carry a label no pool may have: {job}"
    );
    let (_, audit) = pacer.get("/api/audit?action=job.no_pool_match").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    let (status, body) = pacer
        .webhook("workflow_job", &queued_payload(102, "acme/app", &[&euro]))
        .await;
    assert_eq!(
        (status, &body["ignored"]),
        (200, &json!("not self-hosted")),
        "{body}"
    );
    assert_eq!(pacer.fleet.counters().launched, 0);
    let health = pacer
        .http
        .get(format!("{}/healthz", pacer.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// GitHub does not order its deliveries: a job cancelled before any runner
/// took it can have its `completed` arrive before its `queued`. The late
/// `queued` once made a new row and launched a runner for a finished job.
/// The finished job is a row of the store, so both stores are held to it.
async fn a_late_queued_after_completed_launches_nothing(backend: Backend) {
    let World {
        aws,
        github: _github,
        pacer,
    } = world_with_clock(backend, Arc::new(SystemClock)).await;
    seed(&aws, &pacer, 2).await;
    let queued = queued_payload(201, "acme/app", &["self-hosted", "linux"]);
    let mut completed = queued.clone();
    completed["action"] = json!("completed");
    completed["workflow_job"]["status"] = json!("completed");
    completed["workflow_job"]["conclusion"] = json!("cancelled");

    let (status, body) = pacer.webhook("workflow_job", &completed).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = pacer.webhook("workflow_job", &queued).await;
    assert_eq!(status, 202, "{body}");

    let (_, jobs) = pacer.get("/api/jobs").await;
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "completed");
    assert_eq!(jobs[0]["conclusion"], "cancelled");
    let states: Vec<&str> = jobs[0]["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["completed"],
        "the late queued moved nothing backwards"
    );
    // Even a message for it (a redrive, a duplicate) launches nothing.
    let job_id = jobs[0]["id"].as_str().unwrap();
    let dispatched = pacer_shared::service::dispatch::dispatch(&pacer.ports, job_id)
        .await
        .unwrap();
    assert!(
        matches!(
            dispatched,
            pacer_shared::service::dispatch::Dispatched::NotNeeded(_)
        ),
        "{dispatched:?}"
    );
    let instances = aws.ec2.describe_instances().send().await.unwrap();
    assert!(
        instances.reservations().is_empty(),
        "a finished job is never launched: {instances:?}"
    );

    // A cancelled job of a repository no project serves leaves no row.
    let mut elsewhere = completed.clone();
    elsewhere["repository"]["full_name"] = json!("other/app");
    elsewhere["workflow_job"]["id"] = json!(202);
    assert_eq!(
        pacer.webhook("workflow_job", &elsewhere).await.1["ignored"],
        "unknown job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_queued_after_completed_launches_nothing_with_sqlite() {
    a_late_queued_after_completed_launches_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_queued_after_completed_launches_nothing_with_dynamodb() {
    a_late_queued_after_completed_launches_nothing(Backend::DynamoSqs).await;
}

/// Deployment names may hold `-`, and "ours" was `name.starts_with("pacer-")`:
/// deployment `pacer` took `pacer-staging-…` runners for its own, recorded
/// their jobs and deregistered their idle runners as ghosts. Two deployments
/// share one AWS account (moto) and one GitHub org (the fake GitHub).
async fn two_deployments_never_touch_each_others_runners(backend: fn() -> Backend) {
    pacer_shared::http_client::install_crypto_provider();
    let aws = Aws::start().await;
    let github = FakeGitHub::start().await;
    github.install_on_repo("acme/app", 77);
    github.set_latest_runner_release("2.330.0");
    let prod_clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fleet = |deployment: &str| Arc::new(Ec2Fleet::new(aws.ec2.clone(), deployment.into()));
    let prod = pacer_on(
        &aws,
        &github,
        fleet("pacer"),
        backend(),
        prod_clock.clone(),
        "pacer",
    )
    .await;
    let staging = pacer_on(
        &aws,
        &github,
        fleet("pacer-staging"),
        backend(),
        Arc::new(SystemClock),
        "pacer-staging",
    )
    .await;
    seed(&aws, &prod, 2).await;
    seed(&aws, &staging, 2).await;

    // Staging launches a runner, which registers with GitHub.
    let (status, accepted) = staging
        .webhook(
            "workflow_job",
            &queued_payload(8001, "acme/app", &["self-hosted"]),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap();
    let instance = instance_of_job(&aws, job_id).await;
    let instance_id = instance.instance_id().unwrap();
    let token = user_data::parse(&user_data_of(&aws, instance_id).await)
        .unwrap()
        .token;
    let res = staging
        .http
        .post(format!("{}/api/runner/register", staging.base))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let registered: Value = res.json().await.unwrap();
    let name = registered["runner_name"].as_str().unwrap().to_string();
    assert!(name.starts_with("pacer-staging-"), "{name}");
    let on_github = github
        .runners()
        .into_iter()
        .find(|r| r.name == name)
        .expect("registered at GitHub");

    // GitHub tells both installs the job runs on staging's runner, then ends.
    let job = JobRef {
        id: job_id.into(),
        github_job_id: 8001,
        run_id: 9001,
        repo: "acme/app".into(),
        labels: vec!["self-hosted".into()],
        installation_id: Some(77),
    };
    let runner = RunnerIdentity {
        id: on_github.id,
        name: name.clone(),
    };
    for action in ["in_progress", "completed"] {
        let delivery = workflow_job_payload(&job, &runner, action, chrono::Utc::now());
        let (status, body) = prod.webhook("workflow_job", &delivery).await;
        assert_eq!(
            (status, &body["ignored"]),
            (200, &json!("unknown job")),
            "{action}: {body}"
        );
        assert_eq!(staging.webhook("workflow_job", &delivery).await.0, 200);
    }
    let (_, jobs) = prod.get("/api/jobs").await;
    assert_eq!(
        jobs["items"],
        json!([]),
        "prod recorded none of staging's jobs"
    );

    // Prod's reaper, an hour on: staging's registration and instance stay.
    prod_clock.advance(Duration::from_secs(3600));
    let report = reconcile(&prod.ports).await.unwrap();
    assert_eq!(
        (report.count("reaper.ghost"), report.count("reaper.orphan")),
        (0, 0),
        "{report:?}"
    );
    assert!(
        github.runner(on_github.id).is_some(),
        "staging's runner is still registered"
    );
    let state = aws
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .unwrap();
    let state = state.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(state, "running", "staging's instance is untouched");
    assert_eq!(github.take_violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_side_by_side_with_sqlite() {
    two_deployments_never_touch_each_others_runners(|| Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_side_by_side_with_dynamodb() {
    two_deployments_never_touch_each_others_runners(|| Backend::DynamoSqs).await;
}

/// Nothing read `repository.private`: a public repository bound to a project
/// handed fork pull requests a machine in the operator's network. GitHub's
/// own example of a queued self-hosted job is from a public repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_repository_gets_no_runner_unless_its_project_allows_it() {
    let (pacer, project_id) =
        crate::webhook_examples::pacer_serving_the_examples_as(json!({"name": "elastic"})).await;
    let (_, project) = pacer.get(&format!("/api/projects/{project_id}")).await;
    assert_eq!(
        project["allow_public_repos"], false,
        "refused unless allowed: {project}"
    );
    let queued = crate::webhook_examples::self_hosted_example("queued");
    assert_eq!(
        queued["repository"]["private"], false,
        "the example is public"
    );

    // Delivered twice (a redelivery): refused both times, audited once.
    for _ in 0..2 {
        let (status, body) = pacer.webhook("workflow_job", &queued).await;
        assert_eq!(
            (status, &body["refused"]),
            (200, &json!("public repository")),
            "{body}"
        );
    }
    let (_, jobs) = pacer.get("/api/jobs").await;
    assert_eq!(jobs["items"], json!([]), "no job, no runner");
    let (_, audit) = pacer.get("/api/audit?action=job.public_repo_refused").await;
    let refused = audit["items"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{audit}");
    assert_eq!(refused[0]["target"], "lineville/elastic-machines-testing");
    assert_eq!(refused[0]["detail"]["project"], "elastic");

    // An operator who accepts the risk turns it on for this project.
    let patch = pacer
        .http
        .patch(format!("{}/api/projects/{project_id}", pacer.base))
        .json(&json!({"allow_public_repos": true}));
    assert_eq!(patch.send().await.unwrap().status(), 200);
    let (status, body) = pacer.webhook("workflow_job", &queued).await;
    assert_eq!(status, 202, "{body}");
    pacer
        .wait_for(
            &format!("/api/jobs/{}", body["job_id"].as_str().unwrap()),
            |j| j["state"] == "completed",
        )
        .await;
}

/// The webhook's limit was meant to be GitHub's cap, 25 MiB, but axum's
/// default extractor limit (2 MB) applied first; the only test sent 25 MiB
/// + 1 and passed either way. Both sides of each limit, now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_up_to_each_routes_limit_are_read_and_one_byte_more_is_a_413() {
    use pacer_shared::http::{API_BODY_LIMIT, webhook::WEBHOOK_BODY_LIMIT};
    let pacer = LocalPacer::start().await;
    // A signed ping padded with spaces to `size` bytes: valid JSON, GitHub's signature.
    let ping = |size: usize| {
        let mut body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_vec();
        body.resize(size, b' ');
        let signature =
            pacer_shared::github::webhook::sign(crate::support::WEBHOOK_SECRET.as_bytes(), &body);
        pacer
            .http
            .post(format!("{}/api/webhook", pacer.base))
            .header("x-github-event", "ping")
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
    };
    assert_eq!(
        ping(3 * 1024 * 1024).send().await.unwrap().status(),
        200,
        "over axum's 2 MB default"
    );
    assert_eq!(
        ping(WEBHOOK_BODY_LIMIT).send().await.unwrap().status(),
        200,
        "exactly 25 MiB"
    );
    let over = pacer
        .status_for_declared_length(
            "/api/webhook",
            WEBHOOK_BODY_LIMIT + 1,
            &[("x-github-event", "ping")],
        )
        .await;
    assert_eq!(over, "HTTP/1.1 413 Payload Too Large");

    // The console API: a project padded to exactly 1 MiB is read, one byte more is not.
    let project = |size: usize| {
        let mut body = br#"{"name": "padded"}"#.to_vec();
        body.resize(size, b' ');
        pacer
            .http
            .post(format!("{}/api/projects", pacer.base))
            .header("content-type", "application/json")
            .body(body)
    };
    let over = pacer
        .status_for_declared_length("/api/projects", API_BODY_LIMIT + 1, &[])
        .await;
    assert_eq!(over, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(project(API_BODY_LIMIT).send().await.unwrap().status(), 201);
}

/// An SSO state works once. It was checked, then marked used after the
/// code exchange: two callbacks racing each other could both pass the
/// check. The claim is now one atomic store operation, on either store.
async fn a_state_is_claimed_by_exactly_one_of_many_racing_callbacks(
    ports: pacer_shared::service::Ports,
) {
    let until = chrono::Utc::now() + chrono::Duration::minutes(10);
    let claims = (0..16).map(|_| {
        let ports = ports.clone();
        tokio::spawn(async move {
            pacer_shared::service::limits::claim_once(&ports, "oidc-state:raced", until)
                .await
                .unwrap()
        })
    });
    let won = futures::future::join_all(claims)
        .await
        .into_iter()
        .filter(|won| *won.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    assert!(
        !pacer_shared::service::limits::claim_once(&ports, "oidc-state:raced", until)
            .await
            .unwrap(),
        "and stays used"
    );
    assert!(
        pacer_shared::service::limits::claim_once(&ports, "oidc-state:another", until)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_is_claimed_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_state_is_claimed_by_exactly_one_of_many_racing_callbacks(
        crate::support::local_ports(dir.path()).0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_is_claimed_once_on_dynamodb() {
    let moto = pacer_test_support::moto::Moto::start().await;
    let store = pacer_shared::store::dynamodb::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&moto.sdk_config().await),
        "claims".into(),
    );
    store.create_table().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ports = pacer_shared::service::Ports {
        store: Arc::new(store),
        ..crate::support::local_ports(dir.path()).0
    };
    a_state_is_claimed_by_exactly_one_of_many_racing_callbacks(ports).await;
}

/// Failed sign-ins are rate-limited per address; many addresses together
/// could still fill the audit log. Past a minute's bound they are logged,
/// not appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_audit_entries_are_bounded_across_addresses() {
    use pacer_shared::service::audit::{UNAUTHENTICATED_PER_MINUTE, record_unauthenticated};
    let dir = tempfile::tempdir().unwrap();
    // One minute, held still: the bound is per minute.
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let ports = pacer_shared::service::Ports {
        clock: clock.clone(),
        ..crate::support::local_ports(dir.path()).0
    };
    for n in 0..(UNAUTHENTICATED_PER_MINUTE + 20) {
        let caller = pacer_shared::service::Caller {
            actor: pacer_shared::domain::Actor::user(format!("guess-{n}@example.com")),
            client_ip: Some(std::net::IpAddr::from([
                10,
                0,
                (n / 250) as u8,
                (n % 250) as u8,
            ])),
            role: pacer_shared::domain::Role::Viewer,
        };
        record_unauthenticated(&ports, &caller, "auth.login_failed", None, json!({}))
            .await
            .unwrap();
    }
    let filter = pacer_shared::store::AuditFilter {
        action: Some("auth.login_failed".into()),
        ..Default::default()
    };
    let written = || async {
        ports
            .store
            .list_audit(&filter, &pacer_shared::store::PageRequest::first(500))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(written().await, UNAUTHENTICATED_PER_MINUTE as usize);

    // The next minute takes entries again.
    clock.advance(Duration::from_secs(60));
    let caller = pacer_shared::service::Caller::system("a later minute");
    record_unauthenticated(&ports, &caller, "auth.login_failed", None, json!({}))
        .await
        .unwrap();
    assert_eq!(written().await, UNAUTHENTICATED_PER_MINUTE as usize + 1);
}
