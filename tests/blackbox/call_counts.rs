//! Every adapter counts the calls it makes to what lies behind it (the
//! "calls per job" of `make bench`): a known sequence of port calls moves
//! exactly the expected counters, on the embedded adapters and on the AWS
//! ones against moto_server, and two adapter instances never share counts.

use std::time::Duration;

use pacer_shared::calls::Calls;
use pacer_shared::config::Secret;
use pacer_shared::domain::RepoName;
use pacer_shared::fleet::simulated::{SimulatedFleet, SimulatedSettings};
use pacer_shared::fleet::{Fleet as _, LaunchRequest, RunnerCallback};
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::github::{GitHub as _, JitRequest, RunnerTarget};
use pacer_shared::queue::Queue as _;
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::store::conformance::{job, pool, project, t0};
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_shared::store::sqlite::SqliteStore;
use pacer_shared::store::{ConfigStore as _, JobStore as _, RunnerStore as _};

use crate::moto::Moto;

#[tokio::test]
async fn the_sqlite_store_counts_one_read_or_write_per_trip() {
    // Given two stores
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
    let other = SqliteStore::open(&dir.path().join("b.db")).unwrap();
    let before = store.calls();

    // When one of them writes four times and reads twice
    let acme = project("acme", t0());
    store.create_project(&acme).await.unwrap();
    let linux = pool(&acme.id, "linux", 2, t0());
    store.create_pool(&linux).await.unwrap();
    let queued = job(42, "acme/app", t0());
    store.insert_job(&queued).await.unwrap();
    assert!(store.reserve_capacity(&linux.id).await.unwrap());
    store.get_job(&queued.id).await.unwrap().expect("the job");
    store.job_by_github_id(42).await.unwrap().expect("the job");

    // Then its counters say so, and the other store's stay at zero
    assert_eq!(
        store.calls() - before,
        Calls {
            store_reads: 2,
            store_writes: 4,
            ..Default::default()
        }
    );
    assert_eq!(other.calls(), Calls::default());
}

#[tokio::test]
async fn the_memory_queue_counts_sends_receives_acks_and_retries() {
    let queue = MemoryQueue::new(Duration::from_secs(60));
    queue.send("job_a", None).await.unwrap();
    queue.send("job_b", None).await.unwrap();
    let got = queue.receive(10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.len(), 2, "one receive call answers both messages");
    queue.ack(&got[0]).await.unwrap();
    queue.retry_later(&got[1], Duration::ZERO).await.unwrap();

    assert_eq!(
        queue.calls(),
        Calls {
            queue_sends: 2,
            queue_receives: 1,
            queue_deletes: 1,
            queue_requeues: 1,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn the_simulated_fleet_and_offline_github_count_what_ec2_and_github_would_be_asked() {
    // Given a fleet whose instances stay booting for the whole test
    let fleet = SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_secs(3600),
        job_time: Duration::ZERO,
        deployment: "pacer".into(),
        github: None,
        pickup_delay: Duration::ZERO,
        register_tries: 1,
        retry_delay: Duration::ZERO,
        launch_failure_rate: 0.0,
        bootstrap_failure_rate: 0.0,
    });
    let acme = project("acme", t0());
    let request = LaunchRequest {
        pool: pool(&acme.id, "linux", 2, t0()),
        runner_id: "run_1".into(),
        runner_name: "pacer-1".into(),
        job: None,
        callback: RunnerCallback {
            url: "http://127.0.0.1:9".into(),
            token: Secret::new("unused"),
        },
        attempt: 1,
        first_launch: false,
    };

    // When it launches, lists and terminates
    let launched = fleet.launch(&request).await.unwrap();
    assert_eq!(fleet.list_instances().await.unwrap().len(), 1);
    fleet.terminate(&launched.instance_id).await.unwrap();

    // Then that is three fleet calls and nothing else
    assert_eq!(
        fleet.calls(),
        Calls {
            fleet: 3,
            ..Default::default()
        }
    );

    // And the offline GitHub counts its two API calls, but not the runner
    // download, whose release the REST adapter caches
    let github = OfflineGitHub::new("latest");
    let repo = RepoName::parse("acme/app").unwrap();
    let installation = github.repo_installation(&repo).await.unwrap();
    let jit = JitRequest {
        name: "pacer-1".into(),
        runner_group_id: 1,
        labels: vec!["self-hosted".into()],
        work_folder: None,
    };
    github
        .generate_jit_config(installation, &RunnerTarget::Repo(repo), &jit)
        .await
        .unwrap();
    github.runner_download("linux", "x64").await.unwrap();
    assert_eq!(
        github.calls(),
        Calls {
            github: 2,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn the_aws_adapters_count_each_request_they_send_but_not_table_setup() {
    let moto = Moto::start().await;
    let aws = moto.sdk_config().await;

    // DynamoDB: creating the table is setup, not counted
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), "pacer-calls".into());
    store.create_table().await.unwrap();
    assert_eq!(
        store.calls(),
        Calls::default(),
        "table setup is not a job's cost"
    );
    let acme = project("acme", t0());
    store.create_project(&acme).await.unwrap();
    let created = store.calls();
    assert!(
        created.store_writes >= 1 && created.store_reads == 0,
        "{created:?}"
    );
    store
        .get_project(&acme.id)
        .await
        .unwrap()
        .expect("the project");
    assert_eq!(
        store.calls() - created,
        Calls {
            store_reads: 1,
            ..Default::default()
        },
        "one GetItem"
    );

    // SQS: one request per message call (the queue itself made by another client)
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let url = sqs
        .create_queue()
        .queue_name("pacer-calls")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = SqsQueue::new(sqs, url);
    queue.send("job_a", None).await.unwrap();
    let got = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    queue.ack(&got[0]).await.unwrap();
    assert_eq!(
        queue.calls(),
        Calls {
            queue_sends: 1,
            queue_receives: 1,
            queue_deletes: 1,
            ..Default::default()
        }
    );

    // EC2: listing the deployment's instances is one DescribeInstances
    let fleet = pacer_shared::fleet::ec2::Ec2Fleet::new(
        aws_sdk_ec2::Client::new(&aws),
        "pacer-calls".into(),
    );
    assert!(fleet.list_instances().await.unwrap().is_empty());
    assert_eq!(
        fleet.calls(),
        Calls {
            fleet: 1,
            ..Default::default()
        }
    );
}
