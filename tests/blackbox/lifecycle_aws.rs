//! The runner lifecycle end to end against the real parts: EC2 (and, in
//! the second variant, DynamoDB and SQS) on moto_server through the real
//! SDK clients, and the fake GitHub checked against GitHub's OpenAPI
//! description. The test plays the instance: it reads the user data EC2
//! holds, registers with its token, and plays GitHub's webhooks.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::{Clock as _, ManualClock, SystemClock};
use pacer_shared::config::RunnerConfig;
use pacer_shared::domain::usage::Period;
use pacer_shared::fleet::ec2::{Ec2Fleet, sdk};
use pacer_shared::fleet::simulated::RunnerIdentity;
use pacer_shared::fleet::{Fleet, JobRef, user_data};
use pacer_shared::github::rest::RestGitHub;
use pacer_shared::host::simulation::workflow_job_payload;
use pacer_shared::pricing::aws::AwsPricing;
use pacer_shared::queue::Queue;
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::service::Ports;
use pacer_shared::store::Store;
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_shared::store::sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::ec2_fleet::Aws;
use crate::fake_github::{Endpoint, FakeGitHub, FakeRelease, FakeTarget, runner_sha256};
use crate::support::{LocalPacer, local_ports, queued_payload};

pub(crate) enum Backend {
    Sqlite,
    DynamoSqs,
}

pub(crate) struct World {
    pub(crate) aws: Aws,
    pub(crate) github: FakeGitHub,
    pub(crate) pacer: LocalPacer,
}

async fn world(backend: Backend) -> World {
    world_with_clock(backend, Arc::new(SystemClock)).await
}

pub(crate) async fn world_with_clock(
    backend: Backend,
    clock: Arc<dyn pacer_shared::clock::Clock>,
) -> World {
    pacer_shared::http_client::install_crypto_provider();
    let aws = Aws::start().await;
    let fleet = Arc::new(Ec2Fleet::new(aws.ec2.clone(), "pacer".into()));
    world_on(aws, fleet, backend, clock).await
}

/// The world over an `aws` already started, with `fleet` as pacer's fleet
/// (an [`Ec2Fleet`] whose client talks to moto through a fault proxy, say).
pub(crate) async fn world_on(
    aws: Aws,
    fleet: Arc<dyn Fleet>,
    backend: Backend,
    clock: Arc<dyn pacer_shared::clock::Clock>,
) -> World {
    pacer_shared::http_client::install_crypto_provider();
    let github = FakeGitHub::start().await;
    github.install_on_repo("acme/app", 77);
    github.set_latest_runner_release("2.330.0");
    let pacer = pacer_on(&aws, &github, fleet, backend, clock, "pacer").await;
    World { aws, github, pacer }
}

/// One pacer of deployment `deployment` over moto and the fake GitHub given,
/// so several deployments can share one account and one GitHub org. Each has
/// its own store (table and queue named after the deployment).
pub(crate) async fn pacer_on(
    aws: &Aws,
    github: &FakeGitHub,
    fleet: Arc<dyn Fleet>,
    backend: Backend,
    clock: Arc<dyn pacer_shared::clock::Clock>,
    deployment: &str,
) -> LocalPacer {
    let sdk_config = aws.moto.sdk_config().await;
    let dir = tempfile::tempdir().unwrap();
    let (local, simulated) = local_ports(dir.path());
    let (store, queue): (Arc<dyn Store>, Arc<dyn Queue>) = match backend {
        Backend::Sqlite => (
            Arc::new(SqliteStore::open(&dir.path().join("e2e.db")).unwrap()),
            Arc::new(MemoryQueue::new(Duration::from_secs(300))),
        ),
        Backend::DynamoSqs => {
            let dynamo = DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&sdk_config),
                format!("{deployment}-e2e"),
            );
            dynamo.create_table().await.unwrap();
            let sqs = aws_sdk_sqs::Client::new(&sdk_config);
            let url = sqs
                .create_queue()
                .queue_name(format!("{deployment}-jobs"))
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap();
            (Arc::new(dynamo), Arc::new(SqsQueue::new(sqs, url)))
        }
    };
    let ports = Ports {
        store,
        queue,
        fleet,
        github: Arc::new(
            RestGitHub::new(
                &github.github_config(),
                &RunnerConfig::default(),
                Arc::new(SystemClock),
            )
            .unwrap(),
        ),
        pricing: Arc::new(
            AwsPricing::from_sdk_config(
                &sdk_config,
                Duration::from_secs(3600),
                Arc::new(SystemClock),
            )
            .unwrap(),
        ),
        clock,
        ids: local.ids.clone(),
        settings: Arc::new(pacer_shared::service::Settings {
            deployment: deployment.into(),
            ..(*local.settings).clone()
        }),
        // As `pacer serve` keeps it by default (`database.config_cache_ttl`).
        catalog: Arc::new(pacer_shared::service::catalog::Catalog::new(
            Duration::from_secs(10),
        )),
    };
    LocalPacer::serve(ports, simulated, dir).await
}

pub(crate) async fn instance_of_job(aws: &Aws, job_id: &str) -> sdk::types::Instance {
    for _ in 0..400 {
        let out = aws
            .ec2
            .describe_instances()
            .filters(
                sdk::types::Filter::builder()
                    .name("tag:pacer:job")
                    .values(job_id)
                    .build(),
            )
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
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Project `acme` (repo scope) bound to `acme/app`, with a pool on moto's
/// network; returns the pool id.
pub(crate) async fn seed(aws: &Aws, pacer: &LocalPacer, max_runners: u32) -> String {
    seed_with_market(aws, pacer, max_runners, "on-demand").await
}

pub(crate) async fn seed_with_market(
    aws: &Aws,
    pacer: &LocalPacer,
    max_runners: u32,
    market: &str,
) -> String {
    let (_, project) = pacer
        .post(
            "/api/projects",
            json!({"name": "acme", "runner_group_id": 1}),
        )
        .await;
    let project = project["id"].as_str().unwrap().to_string();
    let (s, pool) = pacer
        .post("/api/pools", json!({"project_id": project, "name": "linux", "labels": ["linux", "x64"],
            "instance_types": ["t3.micro"], "subnets": aws.subnets, "security_groups": [aws.sg], "ami": aws.ami,
            "max_runners": max_runners, "market": market}))
        .await;
    assert_eq!(s, 201, "{pool}");
    pacer
        .post(
            "/api/repos",
            json!({"repo": "acme/app", "project_id": project}),
        )
        .await;
    pool["id"].as_str().unwrap().to_string()
}

/// The day buckets of the roll-ups from two days before `now` to two after.
pub(crate) async fn usage_around(
    pacer: &LocalPacer,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<pacer_shared::domain::usage::UsageBucket> {
    let two_days = chrono::Duration::days(2);
    pacer
        .ports
        .store
        .usage_buckets(Period::Day, now - two_days, now + two_days)
        .await
        .unwrap()
}

pub(crate) async fn user_data_of(aws: &Aws, instance_id: &str) -> String {
    let attr = aws
        .ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(sdk::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    user_data::from_base64(attr.user_data().and_then(|u| u.value()).expect("user data")).unwrap()
}

async fn a_job_goes_from_webhook_to_done_on_ec2(backend: Backend) {
    // A clock the test moves, so what the runner cost is known to the micro-dollar.
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let World { aws, github, pacer } = world_with_clock(backend, clock.clone()).await;
    let pool_id = seed_with_market(&aws, &pacer, 3, "spot").await;

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
    assert_eq!(tag(&instance, "pacer:repo"), Some("acme/app"));
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(tag(&instance, "pacer:project"), pool["project_id"].as_str());
    let runner_id = tag(&instance, "pacer:runner")
        .expect("runner tag")
        .to_string();
    let callback = user_data::parse(&user_data_of(&aws, &instance_id).await).unwrap();
    assert_eq!(callback.url, pacer.base);
    // The launch facts land on the runner just after the job is starting.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "starting" && !j["runner"]["instance_id"].is_null()
        })
        .await;
    assert_eq!(job["runner"]["instance_id"], instance_id.as_str());
    assert_eq!(job["runner"]["instance_type"], "t3.micro");
    assert_eq!(job["runner"]["market"], "spot");
    assert_eq!(
        job["runner"]["price"],
        json!({"micro_usd_per_hour": 10, "source": "spot-history"}),
        "moto's spot price history quotes $0.00001 an hour"
    );

    // The instance registers 40 s after its launch and receives the JIT
    // config GitHub issued for the right repo, group and labels.
    clock.advance(Duration::from_secs(40));
    let register = |token: String| {
        let http = pacer.http.clone();
        let url = format!("{}/api/runner/register", pacer.base);
        async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"os": "linux", "arch": "x64"}))
                .send()
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, reg) = register(callback.token.expose().to_string()).await;
    assert_eq!(s, 200, "{reg}");
    let issued = github
        .runner_by_jit_config(reg["encoded_jit_config"].as_str().unwrap())
        .expect("GitHub issued it");
    assert_eq!(issued.target, FakeTarget::repo("acme/app"));
    assert_eq!(issued.runner_group_id, 1);
    let mut labels = issued.labels.clone();
    labels.sort();
    assert_eq!(labels, ["acme", "linux", "self-hosted", "x64"]);
    assert_eq!(reg["runner_name"], issued.name.as_str());
    assert_eq!(reg["runner_version"], "2.330.0");
    assert!(
        reg["download_url"]
            .as_str()
            .unwrap()
            .ends_with("actions-runner-linux-x64-2.330.0.tar.gz")
    );
    assert_eq!(
        reg["sha256"],
        runner_sha256("2.330.0", "linux-x64").as_str(),
        "the checksum of that very tarball"
    );
    let (s, _) = register(callback.token.expose().to_string()).await;
    assert_eq!(s, 401, "the register right works once");
    let (s, _) = register("pcr1.forged.token".into()).await;
    assert_eq!(s, 401);

    // GitHub runs the job on it and says so.
    let job_ref = JobRef {
        id: job_id.clone(),
        github_job_id: 9001,
        run_id: 5000 + 9001,
        repo: "acme/app".into(),
        labels: vec!["self-hosted".into(), "linux".into()],
        installation_id: Some(77),
    };
    let me = RunnerIdentity {
        id: issued.id,
        name: issued.name.clone(),
    };
    let now = chrono::Utc::now();
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        pacer
            .webhook(
                "workflow_job",
                &workflow_job_payload(&job_ref, &me, "in_progress", now)
            )
            .await
            .0,
        200
    );
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "running")
        .await;
    assert_eq!(job["runner"]["state"], "busy");
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        pacer
            .webhook(
                "workflow_job",
                &workflow_job_payload(&job_ref, &me, "completed", now)
            )
            .await
            .0,
        200
    );
    let (_, job) = pacer.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(
        job["usage"],
        Value::Null,
        "not settled while its runner lives: its cost is not known yet"
    );
    clock.advance(Duration::from_secs(30));

    // The runner reports completion (twice: idempotent) and capacity is back.
    for _ in 0..2 {
        let res = pacer
            .http
            .post(format!("{}/api/runner/complete", pacer.base))
            .bearer_auth(callback.token.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "completed"
        })
        .await;
    let states: Vec<&str> = job["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["queued", "claimed", "starting", "running", "completed"]
    );
    assert_eq!(job["runner"]["id"], runner_id.as_str());
    assert_eq!(job["runner"]["state"], "done");

    // Launched, registered at 40 s, ran the job from 60 s to 660 s, ended at
    // 690 s. Spot at $0.00001/h plus 30 GB of gp3 at $0.08 a GB-month
    // ($0.003288/h) is 3,298 micro-dollars an hour: 600 s of job is 550,
    // 90 s of boot and shutdown 82.
    let cost = json!({
        "source": "spot-history", "micro_usd_per_hour": 3_298,
        "job_seconds": 600, "overhead_seconds": 90, "idle_seconds": 0,
        "job_micro_usd": 550, "overhead_micro_usd": 82, "idle_micro_usd": 0,
        "total_micro_usd": 632,
    });
    assert_eq!(job["runner"]["cost"], cost, "{job}");
    assert_eq!(
        job["usage"]["cost"], cost,
        "the job carries its runner's cost"
    );
    assert_eq!(job["usage"]["runner_id"], runner_id.as_str());
    assert_eq!(
        job["usage"]["timings"],
        json!({"queued_to_launched_ms": 0, "launched_to_registered_ms": 40_000,
               "queued_to_in_progress_ms": 60_000})
    );
    // And into the day's roll-up, once.
    let days = usage_around(&pacer, clock.now()).await;
    assert_eq!(days.len(), 1, "{days:?}");
    let (dims, f) = (&days[0].dims, &days[0].figures);
    assert_eq!(
        (
            dims.pool_id.as_str(),
            dims.repo.as_str(),
            dims.market.as_str(),
            dims.conclusion.as_str()
        ),
        (pool_id.as_str(), "acme/app", "spot", "success")
    );
    assert_eq!(
        (
            f.jobs,
            f.succeeded,
            f.job_seconds,
            f.overhead_seconds,
            f.job_micro_usd,
            f.overhead_micro_usd
        ),
        (1, 1, 600, 90, 550, 82)
    );
    assert_eq!(f.queued_to_in_progress.count(), 1);

    // The reports read the same figures: per pool, the payload's sender, a CSV row.
    let (status, stats) = pacer.get("/api/stats?group_by=pool").await;
    assert_eq!(status, 200, "{stats}");
    let by_pool = &stats["buckets"][0];
    assert_eq!(by_pool["key"], pool_id.as_str(), "{stats}");
    assert_eq!(
        (
            by_pool["jobs"].clone(),
            by_pool["cost"]["total_micro_usd"].clone()
        ),
        (json!(1), json!(632))
    );
    let mut waited = pacer_shared::domain::usage::Histogram::default();
    waited.record(60_000);
    assert_eq!(
        by_pool["queued_to_in_progress"]["p50_ms"],
        json!(waited.percentile_ms(50.0))
    );
    let (_, top) = pacer.get("/api/stats/top-users").await;
    assert_eq!(top["users"][0]["sender"], job["sender"], "{top}");
    assert_eq!(top["users"][0]["cost_micro_usd"], 632);
    let csv = pacer
        .http
        .get(format!("{}/api/stats/export?format=csv", pacer.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with(job_id.as_str()))
        .unwrap_or_else(|| panic!("no row for {job_id}: {csv}"));
    assert!(
        row.contains(",spot,") && row.contains(",0.000632,spot-history"),
        "{row}"
    );

    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(pool["active_runners"], 0, "capacity released exactly once");
    assert_eq!(
        github.take_violations(),
        Vec::<String>::new(),
        "every GitHub call matched GitHub's OpenAPI description"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_end_to_end_on_ec2_with_sqlite() {
    a_job_goes_from_webhook_to_done_on_ec2(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_end_to_end_on_ec2_with_dynamodb_and_sqs() {
    a_job_goes_from_webhook_to_done_on_ec2(Backend::DynamoSqs).await;
}

/// The bootstrap script, from the user data EC2 holds, run for real with
/// bash against pacer (a stub `run.sh` stands in for the runner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_script_registers_runs_the_runner_and_completes_against_pacer() {
    let World { aws, github, pacer } = world(Backend::Sqlite).await;
    let pool_id = seed(&aws, &pacer, 2).await;
    let (_, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(9100, "acme/app", &["self-hosted"]),
        )
        .await;
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let instance = instance_of_job(&aws, &job_id).await;
    pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "starting")
        .await;
    let script = user_data_of(&aws, instance.instance_id().unwrap()).await;
    let token = user_data::parse(&script)
        .unwrap()
        .token
        .expose()
        .to_string();

    let machine = crate::bootstrap_script::Machine::new();
    machine.install_fake_runner("echo the job ran", 0);
    let out = machine.boot_user_data(&script, &[]).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        machine.log()
    );
    assert!(machine.powered_off());
    let args = machine
        .runner_args()
        .unwrap_or_else(|| panic!("run.sh never ran:\n{}", machine.log()));
    assert_eq!(args[0], "--jitconfig");
    let issued = github
        .runner_by_jit_config(&args[1])
        .expect("the JIT config GitHub issued reached run.sh");
    assert!(issued.name.starts_with("pacer-"));
    assert!(
        !machine.log().contains(&token) && !machine.log().contains(&args[1]),
        "no secret in the bootstrap log"
    );

    let (_, job) = pacer.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["runner"]["state"], "done", "{job}");
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(pool["active_runners"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bootstrap_reports_a_redacted_tail_and_the_job_gets_another_runner() {
    let World {
        aws,
        github: _github,
        pacer,
    } = world(Backend::Sqlite).await;
    let pool_id = seed(&aws, &pacer, 2).await;
    let (_, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(9200, "acme/app", &["self-hosted"]),
        )
        .await;
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let instance = instance_of_job(&aws, &job_id).await;
    let first_instance = instance.instance_id().unwrap().to_string();
    let script = user_data_of(&aws, &first_instance).await;
    let token = user_data::parse(&script)
        .unwrap()
        .token
        .expose()
        .to_string();

    let machine = crate::bootstrap_script::Machine::new();
    machine.install_fake_runner("echo runner crashed; exit 1", 1);
    let out = machine.boot_user_data(&script, &[]).await;
    assert!(
        machine.powered_off(),
        "it powers off even after a failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jit = machine.runner_args().expect("run.sh ran")[1].clone();

    // The runner is failed with the tail of its log, secrets removed…
    let (_, runners) = pacer
        .get(&format!("/api/runners?pool_id={pool_id}&state=failed"))
        .await;
    let failed = &runners["items"][0];
    let tail = failed["error_tail"].as_str().expect("an error tail");
    assert!(tail.contains("runner crashed"), "{tail}");
    assert!(
        !tail.contains(&token) && !tail.contains(&jit),
        "secrets are redacted: {tail}"
    );
    // …and the job is queued again and launched on a second instance.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["attempts"] == 2 && j["state"] == "starting"
        })
        .await;
    assert_ne!(job["runner"]["instance_id"], first_instance.as_str());
    let (_, audit) = pacer.get("/api/audit?action=runner.bootstrap_failed").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
}

/// Without a checksum for the tarball, pacer registers nothing: the
/// bootstrap script reports the refusal, and the job gets another runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_is_refused_before_any_registration_when_its_download_has_no_checksum() {
    // Given a latest release that publishes no checksum at all
    let World { aws, github, pacer } = world(Backend::Sqlite).await;
    github.add_runner_release(
        FakeRelease::new("2.330.0")
            .without_digests()
            .without_notes_checksums(),
    );
    let pool_id = seed(&aws, &pacer, 2).await;
    let (_, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(9250, "acme/app", &["self-hosted"]),
        )
        .await;
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let instance = instance_of_job(&aws, &job_id).await;
    let first_instance = instance.instance_id().unwrap().to_string();
    pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "starting")
        .await;
    let script = user_data_of(&aws, &first_instance).await;

    // When the instance boots (the AMI ships no runner: it would download one)
    let machine = crate::bootstrap_script::Machine::new();
    machine.boot_user_data(&script, &[]).await;

    // Then GitHub minted nothing, no runner ran, and the refusal says why
    assert_eq!(
        github.count(Endpoint::RepoJitConfig),
        0,
        "no JIT configuration was minted"
    );
    assert!(github.runners().is_empty());
    assert_eq!(machine.runner_args(), None);
    assert!(
        !machine.runner_dir().exists(),
        "nothing was downloaded or unpacked"
    );
    assert!(machine.powered_off());
    let (_, runners) = pacer
        .get(&format!("/api/runners?pool_id={pool_id}&state=failed"))
        .await;
    let tail = runners["items"][0]["error_tail"]
        .as_str()
        .expect("an error tail")
        .to_string();
    assert!(tail.contains("refused with HTTP 409"), "{tail}");
    assert!(
        tail.contains("no SHA-256 is known for actions-runner-linux-"),
        "{tail}"
    );
    let (_, audit) = pacer.get("/api/audit?action=runner.register_failed").await;
    let reason = audit["items"][0]["detail"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("publishes none"), "{audit}");
    // And the job is launched again, on a second instance
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["attempts"] == 2 && j["state"] == "starting"
        })
        .await;
    assert_ne!(job["runner"]["instance_id"], first_instance.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_a_pool_ec2_refuses_is_a_422_naming_the_field() {
    let World {
        aws,
        github: _github,
        pacer,
    } = world(Backend::Sqlite).await;
    let (_, project) = pacer.post("/api/projects", json!({"name": "acme"})).await;
    let base = json!({"project_id": project["id"], "name": "linux", "instance_types": ["t3.micro"],
        "subnets": aws.subnets, "security_groups": [aws.sg], "ami": aws.ami});
    for (field, value) in [
        ("subnets", json!(["subnet-0123456789abcdef0"])),
        ("security_groups", json!(["sg-0123456789abcdef0"])),
        ("ami", json!("ami-0123456789abcdef0")),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let (s, err) = pacer.post("/api/pools", body).await;
        assert_eq!((s, err["field"].as_str()), (422, Some(field)), "{err}");
    }
    let (_, pools) = pacer.get("/api/pools").await;
    assert_eq!(
        pools["items"],
        json!([]),
        "nothing stored for a refused pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_terminates_a_runner_deregistering_it_and_its_job_gets_another() {
    let World { aws, github, pacer } = world(Backend::Sqlite).await;
    let pool_id = seed(&aws, &pacer, 2).await;
    let (_, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(9300, "acme/app", &["self-hosted"]),
        )
        .await;
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let instance = instance_of_job(&aws, &job_id).await;
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            !j["runner"]["instance_id"].is_null()
        })
        .await;
    let runner_id = job["runner"]["id"].as_str().unwrap().to_string();
    // It registered with GitHub.
    let token = user_data::parse(&user_data_of(&aws, instance.instance_id().unwrap()).await)
        .unwrap()
        .token;
    let res = pacer
        .http
        .post(format!("{}/api/runner/register", pacer.base))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(github.runners().len(), 1);

    let (s, runner) = pacer
        .post(&format!("/api/runners/{runner_id}/terminate"), json!({}))
        .await;
    assert_eq!(s, 200, "{runner}");
    assert_eq!(runner["state"], "reaped");
    assert!(
        github.runners().is_empty(),
        "its GitHub registration is gone"
    );
    let state = aws
        .ec2
        .describe_instances()
        .instance_ids(instance.instance_id().unwrap())
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
    assert!(state == "shutting-down" || state == "terminated", "{state}");
    // The job it was launched for had not started: it gets a new runner,
    // which holds the capacity the terminated one gave back.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["runner"]["id"].as_str().is_some_and(|r| r != runner_id)
        })
        .await;
    assert_eq!(job["attempts"], 2, "{job}");
    // Its timeline says who gave it back.
    let requeued: Vec<&Value> = job["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "queued")
        .collect();
    assert_eq!(
        (requeued.len(), &requeued[1]["cause"]),
        (2, &json!("operator")),
        "{job}"
    );
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(pool["active_runners"], 1);
    let (s, _) = pacer
        .post(&format!("/api/runners/{runner_id}/terminate"), json!({}))
        .await;
    assert_eq!(
        s, 409,
        "a runner that is no longer live cannot be terminated again"
    );
    let (_, audit) = pacer.get("/api/audit?action=runner.terminated").await;
    assert_eq!(audit["items"][0]["target"], runner_id.as_str());
}

/// The register right lapses at the pool's boot deadline; the token keeps
/// authenticating `/complete` until the pool's max lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_registers_only_before_the_boot_deadline_and_completes_until_the_max_lifetime() {
    let clock = Arc::new(pacer_shared::clock::ManualClock::new(chrono::Utc::now()));
    let World {
        aws,
        github: _github,
        pacer,
    } = world_with_clock(Backend::Sqlite, clock.clone()).await;
    let pool_id = seed(&aws, &pacer, 2).await; // boot_timeout 10m, max_lifetime 6h
    let (_, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(9400, "acme/app", &["self-hosted"]),
        )
        .await;
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let instance = instance_of_job(&aws, &job_id).await;
    pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            !j["runner"]["instance_id"].is_null()
        })
        .await;
    let token = user_data::parse(&user_data_of(&aws, instance.instance_id().unwrap()).await)
        .unwrap()
        .token;
    let call = |path: &'static str| {
        let (http, url, token) = (
            pacer.http.clone(),
            format!("{}{path}", pacer.base),
            token.expose().to_string(),
        );
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(
        call("/api/runner/register").await,
        401,
        "past the boot deadline"
    );
    clock.advance(Duration::from_secs(6 * 3600));
    assert_eq!(
        call("/api/runner/complete").await,
        401,
        "past the max lifetime"
    );
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(
        pool["active_runners"], 1,
        "a refused callback releases nothing"
    );
}
