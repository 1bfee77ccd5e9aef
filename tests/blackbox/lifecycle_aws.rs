//! The runner lifecycle end to end against the real parts: EC2 (and, in
//! the second variant, DynamoDB and SQS) on moto_server through the real
//! SDK clients, and the fake GitHub checked against GitHub's OpenAPI
//! description. The test plays the instance: it reads the user data EC2
//! holds, registers with its token, and plays GitHub's webhooks.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::SystemClock;
use pacer_shared::fleet::ec2::{sdk, Ec2Fleet};
use pacer_shared::fleet::simulated::{workflow_job_payload, RunnerIdentity};
use pacer_shared::fleet::{user_data, JobRef};
use pacer_shared::github::rest::RestGitHub;
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::queue::Queue;
use pacer_shared::service::Ports;
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_shared::store::sqlite::SqliteStore;
use pacer_shared::store::Store;
use serde_json::{json, Value};

use crate::ec2_fleet::Aws;
use crate::fake_github::{FakeGitHub, FakeTarget};
use crate::support::{local_ports, queued_payload, LocalPacer};

enum Backend {
    Sqlite,
    DynamoSqs,
}

struct World {
    aws: Aws,
    github: FakeGitHub,
    pacer: LocalPacer,
}

async fn world(backend: Backend) -> World {
    pacer_shared::server::install_crypto_provider();
    let aws = Aws::start().await;
    let sdk_config = aws.moto.sdk_config().await;
    let github = FakeGitHub::start().await;
    github.install_on_repo("acme/app", 4242);
    github.set_latest_runner_release("2.330.0");

    let dir = tempfile::tempdir().unwrap();
    let (mut ports, simulated) = local_ports(dir.path());
    let (store, queue): (Arc<dyn Store>, Arc<dyn Queue>) = match backend {
        Backend::Sqlite => (
            Arc::new(SqliteStore::open(&dir.path().join("e2e.db")).unwrap()),
            Arc::new(MemoryQueue::new(Duration::from_secs(300))),
        ),
        Backend::DynamoSqs => {
            let dynamo = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk_config), "pacer-e2e".into());
            dynamo.create_table().await.unwrap();
            let sqs = aws_sdk_sqs::Client::new(&sdk_config);
            let url = sqs.create_queue().queue_name("pacer-jobs").send().await.unwrap().queue_url.unwrap();
            (Arc::new(dynamo), Arc::new(SqsQueue::new(sqs, url)))
        }
    };
    ports = Ports {
        store,
        queue,
        fleet: Arc::new(Ec2Fleet::new(aws.ec2.clone(), "pacer".into())),
        github: Arc::new(RestGitHub::new(&github.github_config(), "latest", Arc::new(SystemClock)).unwrap()),
        clock: Arc::new(SystemClock),
        ..ports
    };
    let pacer = LocalPacer::serve(ports, simulated, dir).await;
    World { aws, github, pacer }
}

async fn instance_of_job(aws: &Aws, job_id: &str) -> sdk::types::Instance {
    for _ in 0..400 {
        let out = aws
            .ec2
            .describe_instances()
            .filters(sdk::types::Filter::builder().name("tag:pacer:job").values(job_id).build())
            .send()
            .await
            .unwrap();
        if let Some(i) = out.reservations().iter().flat_map(|r| r.instances()).next() {
            return i.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no instance was launched for {job_id}");
}

fn tag<'a>(instance: &'a sdk::types::Instance, key: &str) -> Option<&'a str> {
    instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

async fn a_job_goes_from_webhook_to_done_on_ec2(backend: Backend) {
    let World { aws, github, pacer } = world(backend).await;
    let (_, project) = pacer.post("/api/projects", json!({"name": "acme", "runner_group_id": 1})).await;
    let project = project["id"].as_str().unwrap().to_string();
    let (s, pool) = pacer
        .post("/api/pools", json!({"project_id": project, "name": "linux", "labels": ["linux", "x64"],
            "instance_types": ["t3.micro"], "subnets": aws.subnets, "security_groups": [aws.sg], "ami": aws.ami,
            "max_runners": 3}))
        .await;
    assert_eq!(s, 201, "{pool}");
    let pool_id = pool["id"].as_str().unwrap().to_string();
    pacer.post("/api/repos", json!({"repo": "acme/app", "project_id": project})).await;

    // Given a queued job (without an installation: pacer asks GitHub)…
    let mut queued = queued_payload(9001, "acme/app", &["self-hosted", "linux"]);
    queued.as_object_mut().unwrap().remove("installation");
    let (s, accepted) = pacer.webhook("workflow_job", &queued).await;
    assert_eq!(s, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap().to_string();

    // …an instance exists with the pool's launch template and pacer's tags.
    let instance = instance_of_job(&aws, &job_id).await;
    let instance_id = instance.instance_id().unwrap().to_string();
    assert_eq!(tag(&instance, "pacer:deployment"), Some("pacer"));
    assert_eq!(tag(&instance, "pacer:pool"), Some(pool_id.as_str()));
    let runner_id = tag(&instance, "pacer:runner").expect("runner tag").to_string();
    let attr = aws.ec2.describe_instance_attribute().instance_id(&instance_id)
        .attribute(sdk::types::InstanceAttributeName::UserData).send().await.unwrap();
    let encoded = attr.user_data().and_then(|u| u.value()).expect("user data");
    let callback = user_data::parse(&user_data::from_base64(encoded).unwrap()).unwrap();
    assert_eq!(callback.url, pacer.base);
    let job = pacer.wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "starting").await;
    assert_eq!(job["runner"]["instance_id"], instance_id.as_str());
    assert_eq!(job["runner"]["instance_type"], "t3.micro");

    // The instance registers and receives the JIT config GitHub issued for
    // the right repo, group and labels.
    let register = |token: String| {
        let http = pacer.http.clone();
        let url = format!("{}/api/runner/register", pacer.base);
        async move {
            let res = http.post(url).bearer_auth(token).json(&json!({"os": "linux", "arch": "x64"})).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, reg) = register(callback.token.expose().to_string()).await;
    assert_eq!(s, 200, "{reg}");
    let issued = github.runner_by_jit_config(reg["encoded_jit_config"].as_str().unwrap()).expect("GitHub issued it");
    assert_eq!(issued.target, FakeTarget::repo("acme/app"));
    assert_eq!(issued.runner_group_id, 1);
    let mut labels = issued.labels.clone();
    labels.sort();
    assert_eq!(labels, ["acme", "linux", "self-hosted", "x64"]);
    assert_eq!(reg["runner_name"], issued.name.as_str());
    assert_eq!(reg["runner_version"], "2.330.0");
    assert!(reg["download_url"].as_str().unwrap().ends_with("actions-runner-linux-x64-2.330.0.tar.gz"));
    let (s, _) = register(callback.token.expose().to_string()).await;
    assert_eq!(s, 401, "the register right works once");
    let (s, _) = register("pcr1.forged.token".into()).await;
    assert_eq!(s, 401);

    // GitHub runs the job on it and says so.
    let job_ref = JobRef {
        id: job_id.clone(), github_job_id: 9001, run_id: 5000 + 9001, repo: "acme/app".into(),
        labels: vec!["self-hosted".into(), "linux".into()], installation_id: Some(4242),
    };
    let me = RunnerIdentity { id: issued.id, name: issued.name.clone() };
    let now = chrono::Utc::now();
    assert_eq!(pacer.webhook("workflow_job", &workflow_job_payload(&job_ref, &me, "in_progress", now)).await.0, 200);
    let job = pacer.wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "running").await;
    assert_eq!(job["runner"]["state"], "busy");
    assert_eq!(pacer.webhook("workflow_job", &workflow_job_payload(&job_ref, &me, "completed", now)).await.0, 200);

    // The runner reports completion (twice: idempotent) and capacity is back.
    for _ in 0..2 {
        let res = pacer.http.post(format!("{}/api/runner/complete", pacer.base)).bearer_auth(callback.token.expose()).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    let job = pacer.wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "completed").await;
    let states: Vec<&str> = job["transitions"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["queued", "claimed", "starting", "running", "completed"]);
    assert_eq!(job["runner"]["id"], runner_id.as_str());
    assert_eq!(job["runner"]["state"], "done");
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(pool["active_runners"], 0, "capacity released exactly once");
    assert_eq!(github.take_violations(), Vec::<String>::new(), "every GitHub call matched GitHub's OpenAPI description");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_end_to_end_on_ec2_with_sqlite() {
    a_job_goes_from_webhook_to_done_on_ec2(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_end_to_end_on_ec2_with_dynamodb_and_sqs() {
    a_job_goes_from_webhook_to_done_on_ec2(Backend::DynamoSqs).await;
}
