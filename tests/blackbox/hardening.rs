//! What an outside security review found, each as the test that would have
//! caught it: hostile or careless input that must get a clean refusal and
//! leave pacer running.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::{ManualClock, SystemClock};
use pacer_shared::fleet::ec2::Ec2Fleet;
use pacer_shared::fleet::simulated::{workflow_job_payload, RunnerIdentity};
use pacer_shared::fleet::{user_data, JobRef};
use pacer_shared::service::reaper::reconcile;
use serde_json::{json, Value};

use crate::ec2_fleet::Aws;
use crate::fake_github::FakeGitHub;
use crate::lifecycle_aws::{instance_of_job, pacer_on, seed, user_data_of, Backend};
use crate::support::{queued_payload, LocalPacer};

/// A `runs-on` label of 100 × '€' (300 bytes): building its error message
/// once cut through a character at byte 32 and panicked, which in a release
/// build aborted the whole process, and again on every reaper pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_multibyte_label_leaves_the_job_unmatched_and_pacer_up() {
    let pacer = LocalPacer::start().await;
    pacer.seed(2).await;
    let euro = "€".repeat(100);

    let (status, body) = pacer.webhook("workflow_job", &queued_payload(101, "acme/app", &["self-hosted", "linux", &euro])).await;
    assert_eq!(status, 202, "{body}");
    let (_, job) = pacer.get(&format!("/api/jobs/{}", body["job_id"].as_str().unwrap())).await;
    assert_eq!(job["state"], "unmatched", "no runner can carry a label no pool may have: {job}");
    let (_, audit) = pacer.get("/api/audit?action=job.no_pool_match").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    let (status, body) = pacer.webhook("workflow_job", &queued_payload(102, "acme/app", &[&euro])).await;
    assert_eq!((status, &body["ignored"]), (200, &json!("not self-hosted")), "{body}");
    assert_eq!(pacer.fleet.counters().launched, 0);
    let health = pacer.http.get(format!("{}/healthz", pacer.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// GitHub does not order its deliveries: a job cancelled before any runner
/// took it can have its `completed` arrive before its `queued`. The late
/// `queued` once made a new row and launched a runner for a finished job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_queued_after_completed_launches_nothing() {
    let pacer = LocalPacer::start().await;
    pacer.seed(2).await;
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
    let states: Vec<&str> = jobs[0]["transitions"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["completed"], "the late queued moved nothing backwards");
    // Even a message for it (a redrive, a duplicate) launches nothing.
    let job_id = jobs[0]["id"].as_str().unwrap();
    let dispatched = pacer_shared::service::dispatch::dispatch(&pacer.ports, job_id).await.unwrap();
    assert!(matches!(dispatched, pacer_shared::service::dispatch::Dispatched::NotNeeded(_)), "{dispatched:?}");
    assert_eq!(pacer.fleet.counters().launched, 0, "a finished job is never launched");

    // A cancelled job of a repository no project serves leaves no row.
    let mut elsewhere = completed.clone();
    elsewhere["repository"]["full_name"] = json!("other/app");
    elsewhere["workflow_job"]["id"] = json!(202);
    assert_eq!(pacer.webhook("workflow_job", &elsewhere).await.1["ignored"], "unknown job");
}

/// Deployment names may hold `-`, and "ours" was `name.starts_with("pacer-")`:
/// deployment `pacer` took `pacer-staging-…` runners for its own, recorded
/// their jobs and deregistered their idle runners as ghosts. Two deployments
/// share one AWS account (moto) and one GitHub org (the fake GitHub).
async fn two_deployments_never_touch_each_others_runners(backend: fn() -> Backend) {
    pacer_shared::server::install_crypto_provider();
    let aws = Aws::start().await;
    let github = FakeGitHub::start().await;
    github.install_on_repo("acme/app", 77);
    github.set_latest_runner_release("2.330.0");
    let prod_clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fleet = |deployment: &str| Arc::new(Ec2Fleet::new(aws.ec2.clone(), deployment.into()));
    let prod = pacer_on(&aws, &github, fleet("pacer"), backend(), prod_clock.clone(), "pacer").await;
    let staging = pacer_on(&aws, &github, fleet("pacer-staging"), backend(), Arc::new(SystemClock), "pacer-staging").await;
    seed(&aws, &prod, 2).await;
    seed(&aws, &staging, 2).await;

    // Staging launches a runner, which registers with GitHub.
    let (status, accepted) = staging.webhook("workflow_job", &queued_payload(8001, "acme/app", &["self-hosted"])).await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap();
    let instance = instance_of_job(&aws, job_id).await;
    let instance_id = instance.instance_id().unwrap();
    let token = user_data::parse(&user_data_of(&aws, instance_id).await).unwrap().token;
    let res = staging.http.post(format!("{}/api/runner/register", staging.base)).bearer_auth(token.expose()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let registered: Value = res.json().await.unwrap();
    let name = registered["runner_name"].as_str().unwrap().to_string();
    assert!(name.starts_with("pacer-staging-"), "{name}");
    let on_github = github.runners().into_iter().find(|r| r.name == name).expect("registered at GitHub");

    // GitHub tells both installs the job runs on staging's runner, then ends.
    let job = JobRef {
        id: job_id.into(), github_job_id: 8001, run_id: 9001, repo: "acme/app".into(),
        labels: vec!["self-hosted".into()], installation_id: Some(77),
    };
    let runner = RunnerIdentity { id: on_github.id, name: name.clone() };
    for action in ["in_progress", "completed"] {
        let delivery = workflow_job_payload(&job, &runner, action, chrono::Utc::now());
        let (status, body) = prod.webhook("workflow_job", &delivery).await;
        assert_eq!((status, &body["ignored"]), (200, &json!("unknown job")), "{action}: {body}");
        assert_eq!(staging.webhook("workflow_job", &delivery).await.0, 200);
    }
    let (_, jobs) = prod.get("/api/jobs").await;
    assert_eq!(jobs["items"], json!([]), "prod recorded none of staging's jobs");

    // Prod's reaper, an hour on: staging's registration and instance stay.
    prod_clock.advance(Duration::from_secs(3600));
    let report = reconcile(&prod.ports).await.unwrap();
    assert_eq!((report.count("reaper.ghost"), report.count("reaper.orphan")), (0, 0), "{report:?}");
    assert!(github.runner(on_github.id).is_some(), "staging's runner is still registered");
    let state = aws.ec2.describe_instances().instance_ids(instance_id).send().await.unwrap();
    let state = state.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string();
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
