//! A queued job's row, then its queue hint: every failure between them
//! must leave a job that runs once — a hint for a row not (yet) there, a
//! write that fails, a send that fails after the write. On SQLite and on
//! DynamoDB (moto), with SQS on moto where the queue fails.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::{Clock as _, ManualClock};
use pacer_shared::domain::{IdKind, JobState, RepoName, Time};
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::queue::{Delivery, Queue};
use pacer_shared::service::catalog::Catalog;
use pacer_shared::service::dispatch::{
    Dispatched, NOT_STORED_RECEIVES, Settlement, dispatch, handle,
};
use pacer_shared::service::webhook::Outcome;
use pacer_shared::service::{Ports, reaper};
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_shared::store::sqlite::SqliteStore;
use pacer_shared::store::{PageRequest, Store, conformance};

use crate::moto::Moto;
use crate::support::{deliver_queued, local_ports, seed_acme};

#[derive(Clone, Copy, Debug)]
enum On {
    Sqlite,
    Dynamo,
}

struct World {
    ports: Ports,
    clock: Arc<ManualClock>,
    pool_id: String,
    moto: Moto,
    dir: tempfile::TempDir,
}

/// Project `acme` bound to `acme/app` with pool `linux`, on `on`, an
/// in-process queue, and moto for what needs AWS.
async fn world(on: On) -> World {
    pacer_shared::http_client::install_crypto_provider();
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = match on {
        On::Sqlite => Arc::new(SqliteStore::open(&dir.path().join("hint.db")).unwrap()),
        On::Dynamo => {
            let dynamo = DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&moto.sdk_config().await),
                "pacer-hint".into(),
            );
            dynamo.create_table().await.unwrap();
            Arc::new(dynamo)
        }
    };
    let now: Time = "2026-05-04T10:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let ports = Ports {
        store: store.clone(),
        clock: clock.clone(),
        queue: Arc::new(MemoryQueue::new(Duration::from_secs(300))),
        ..local_ports(dir.path()).0
    };
    let (_, pool) = seed_acme(&*store, 5, now).await;
    World {
        ports,
        clock,
        pool_id: pool.id,
        moto,
        dir,
    }
}

/// A queued job of pool `pool_id`, not stored.
fn job_of(w: &World, github_job_id: i64) -> pacer_shared::domain::Job {
    let mut job = conformance::job(github_job_id, "acme/app", w.clock.now());
    job.pool_id = Some(w.pool_id.clone());
    job.state = JobState::Queued;
    job
}

async fn a_hint_that_outruns_its_row_waits_for_it(on: On) {
    let w = world(on).await;
    let job = job_of(&w, 11);
    let store = w.ports.store.clone();
    let late = job.clone();
    let writing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        store.insert_job(&late).await.unwrap();
    });
    assert!(
        matches!(
            dispatch(&w.ports, &job.id).await.unwrap(),
            Dispatched::Launched { .. }
        ),
        "the orchestrator looked again and found the row"
    );
    writing.await.unwrap();
}

#[tokio::test]
async fn a_hint_that_outruns_its_row_waits_for_it_on_sqlite() {
    a_hint_that_outruns_its_row_waits_for_it(On::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_that_outruns_its_row_waits_for_it_on_dynamodb() {
    a_hint_that_outruns_its_row_waits_for_it(On::Dynamo).await;
}

async fn a_hint_whose_row_never_comes_is_received_again_then_dropped(on: On) {
    let w = world(on).await;
    let never = w.ports.ids.new_id(IdKind::Job, w.clock.now());
    let delivery = |receive_count| Delivery {
        job_id: never.clone(),
        receipt: "r".into(),
        receive_count,
    };
    for count in 1..3 {
        assert!(
            matches!(
                handle(&w.ports, &delivery(count)).await,
                Settlement::RetryAfter(_)
            ),
            "receive {count}: the write may still land"
        );
    }
    assert_eq!(handle(&w.ports, &delivery(3)).await, Settlement::Done);
    assert!(w.ports.store.get_job(&never).await.unwrap().is_none());
}

#[tokio::test]
async fn a_hint_whose_row_never_comes_is_received_again_then_dropped_on_sqlite() {
    a_hint_whose_row_never_comes_is_received_again_then_dropped(On::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_whose_row_never_comes_is_received_again_then_dropped_on_dynamodb() {
    a_hint_whose_row_never_comes_is_received_again_then_dropped(On::Dynamo).await;
}

/// Every message on the queue now, acknowledged.
async fn drain(queue: &dyn Queue) -> Vec<Delivery> {
    let mut all = Vec::new();
    loop {
        let batch = queue.receive(10, Duration::from_millis(10)).await.unwrap();
        if batch.is_empty() {
            return all;
        }
        for d in batch {
            queue.ack(&d).await.unwrap();
            all.push(d);
        }
    }
}

#[tokio::test]
async fn a_write_that_fails_sends_no_hint_and_githubs_redelivery_runs_the_job() {
    // SQLite refuses the row as a full disk would: a real failure of the
    // real store.
    let w = world(On::Sqlite).await;
    let db = rusqlite::Connection::open(w.dir.path().join("hint.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let body = crate::support::queued_payload(21, "acme/app", &["self-hosted", "linux"]);
    let bytes = serde_json::to_vec(&body).unwrap();
    let signature =
        pacer_shared::github::webhook::sign(crate::support::WEBHOOK_SECRET.as_bytes(), &bytes);
    let failed = pacer_shared::http::webhook::accept(
        &w.ports,
        None,
        "workflow_job",
        Some(&signature),
        &bytes,
    )
    .await;
    assert!(failed.is_err(), "GitHub is told the delivery failed");
    assert!(
        drain(&*w.ports.queue).await.is_empty(),
        "no hint for a row that is not there"
    );

    // The disk has room again, and GitHub redelivers the failed delivery.
    db.execute_batch("DROP TRIGGER refuse_jobs;").unwrap();
    let Outcome::Accepted { job_id } =
        deliver_queued(&w.ports, 21, "acme/app", &["self-hosted", "linux"]).await
    else {
        panic!("the redelivery is taken in");
    };
    let hints = drain(&*w.ports.queue).await;
    assert_eq!(
        hints.iter().map(|d| d.job_id.as_str()).collect::<Vec<_>>(),
        [job_id.as_str()]
    );
    assert!(matches!(
        dispatch(&w.ports, &job_id).await.unwrap(),
        Dispatched::Launched { .. }
    ));
}

async fn a_send_that_fails_after_the_write_is_redriven_by_the_reaper(on: On) {
    let w = world(on).await;
    // SQS on moto, whose queue is deleted before the webhook: a real
    // SendMessage failure, after the row went out.
    let sqs = aws_sdk_sqs::Client::new(&w.moto.sdk_config().await);
    let make = || sqs.create_queue().queue_name("pacer-hint-jobs").send();
    let url = make().await.unwrap().queue_url.unwrap();
    let queue = Arc::new(SqsQueue::new(sqs.clone(), url.clone()));
    let ports = Ports {
        queue: queue.clone(),
        ..w.ports.clone()
    };
    sqs.delete_queue().queue_url(&url).send().await.unwrap();

    let Outcome::Accepted { job_id } =
        deliver_queued(&ports, 31, "acme/app", &["self-hosted", "linux"]).await
    else {
        panic!("a stored job is accepted though its hint failed");
    };
    let stored = ports.store.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Queued);

    // The queue is back; past reaper.redrive_after the reaper sends the hint.
    assert_eq!(make().await.unwrap().queue_url.unwrap(), url);
    w.clock
        .advance(ports.settings.redrive_after + Duration::from_secs(1));
    let report = reaper::reconcile(&ports).await.unwrap();
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.action == "reaper.redrive" && a.target == job_id),
        "{report:?}"
    );
    let hints = drain(&*queue).await;
    assert_eq!(
        hints.iter().map(|d| d.job_id.as_str()).collect::<Vec<_>>(),
        [job_id.as_str()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_fails_after_the_write_is_redriven_by_the_reaper_on_sqlite() {
    a_send_that_fails_after_the_write_is_redriven_by_the_reaper(On::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_fails_after_the_write_is_redriven_by_the_reaper_on_dynamodb() {
    a_send_that_fails_after_the_write_is_redriven_by_the_reaper(On::Dynamo).await;
}

/// `w`'s ports with SQS on moto as their queue — a send that is a round
/// trip, so the webhook sends a queued job's hint beside its row's write —
/// and a catalog that keeps what it read, as a warm function's does.
async fn over_sqs(w: &World, name: &str) -> (Ports, Arc<SqsQueue>) {
    let sqs = aws_sdk_sqs::Client::new(&w.moto.sdk_config().await);
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = Arc::new(SqsQueue::new(sqs, url));
    let ports = Ports {
        queue: queue.clone(),
        catalog: Arc::new(Catalog::new(Duration::from_secs(600))),
        ..w.ports.clone()
    };
    let repo = RepoName::parse("acme/app").unwrap();
    assert!(
        ports
            .catalog
            .serving(&ports, &repo)
            .await
            .unwrap()
            .is_some()
    );
    (ports, queue)
}

/// Which ports write no job: on SQLite a trigger refuses the row as a full
/// disk would; on DynamoDB the table is one that does not exist, so the
/// real SDK meets DynamoDB's ResourceNotFoundException. Either is undone
/// by `restore`.
async fn failing_writes(w: &World, ports: &Ports, on: On) -> Ports {
    match on {
        On::Sqlite => {
            let db = rusqlite::Connection::open(w.dir.path().join("hint.db")).unwrap();
            db.execute_batch(
                "CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
            )
            .unwrap();
            ports.clone()
        }
        On::Dynamo => Ports {
            store: Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&w.moto.sdk_config().await),
                "pacer-hint-gone".into(),
            )),
            ..ports.clone()
        },
    }
}

fn restore(w: &World, on: On) {
    if let On::Sqlite = on {
        let db = rusqlite::Connection::open(w.dir.path().join("hint.db")).unwrap();
        db.execute_batch("DROP TRIGGER refuse_jobs;").unwrap();
    }
}

async fn a_write_that_fails_beside_its_hint_loses_nothing_and_runs_nothing_twice(on: On) {
    // Given a webhook whose job write fails while its hint goes out
    let w = world(on).await;
    let (ports, queue) = over_sqs(&w, "pacer-hint-beside").await;
    let failing = failing_writes(&w, &ports, on).await;
    let body = crate::support::queued_payload(41, "acme/app", &["self-hosted", "linux"]);
    let bytes = serde_json::to_vec(&body).unwrap();
    let signature =
        pacer_shared::github::webhook::sign(crate::support::WEBHOOK_SECRET.as_bytes(), &bytes);
    let failed = pacer_shared::http::webhook::accept(
        &failing,
        None,
        "workflow_job",
        Some(&signature),
        &bytes,
    )
    .await;
    assert!(failed.is_err(), "GitHub is told the delivery failed");

    // Then its hint went out, finds no row, and is dropped after its receives
    let stray = drain(&*queue).await;
    assert_eq!(stray.len(), 1, "the hint went out beside the write");
    for receive_count in 1..=NOT_STORED_RECEIVES {
        let delivery = Delivery {
            receive_count,
            ..stray[0].clone()
        };
        let settled = handle(&ports, &delivery).await;
        if receive_count < NOT_STORED_RECEIVES {
            assert!(matches!(settled, Settlement::RetryAfter(_)), "{settled:?}");
        } else {
            assert_eq!(settled, Settlement::Done, "dropped at last");
        }
    }
    assert!(
        ports
            .store
            .get_job(&stray[0].job_id)
            .await
            .unwrap()
            .is_none()
    );

    // And GitHub's redelivery, once the store takes writes again, runs the
    // job once: its own row, its own hint
    restore(&w, on);
    let Outcome::Accepted { job_id } =
        deliver_queued(&ports, 41, "acme/app", &["self-hosted", "linux"]).await
    else {
        panic!("the redelivery is taken in");
    };
    assert_ne!(job_id, stray[0].job_id);
    let hints = drain(&*queue).await;
    assert_eq!(
        hints.iter().map(|d| d.job_id.as_str()).collect::<Vec<_>>(),
        [job_id.as_str()]
    );
    assert!(matches!(handle(&ports, &hints[0]).await, Settlement::Done));
    let job = ports.store.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Starting, 1),
        "{job:?}"
    );
    let runners = ports
        .store
        .list_runners(&Default::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(runners.items.len(), 1, "one launch in all: {runners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_beside_its_hint_loses_nothing_and_runs_nothing_twice_on_sqlite() {
    a_write_that_fails_beside_its_hint_loses_nothing_and_runs_nothing_twice(On::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_beside_its_hint_loses_nothing_and_runs_nothing_twice_on_dynamodb() {
    a_write_that_fails_beside_its_hint_loses_nothing_and_runs_nothing_twice(On::Dynamo).await;
}

async fn a_redelivery_beside_its_hint_launches_nothing_more(on: On) {
    // Given a job taken in and launched, in another process than the one
    // its redelivery reaches (which does not remember it)
    let w = world(on).await;
    let (ports, queue) = over_sqs(&w, "pacer-hint-again").await;
    let Outcome::Accepted { job_id } =
        deliver_queued(&ports, 51, "acme/app", &["self-hosted", "linux"]).await
    else {
        panic!("taken in");
    };
    let first = drain(&*queue).await;
    assert_eq!(first.len(), 1);
    assert_eq!(handle(&ports, &first[0]).await, Settlement::Done);
    let other = Ports {
        catalog: Arc::new(Catalog::new(Duration::from_secs(600))),
        ..ports.clone()
    };

    // When GitHub delivers it again
    let Outcome::Accepted { job_id: again } =
        deliver_queued(&other, 51, "acme/app", &["self-hosted", "linux"]).await
    else {
        panic!("taken in");
    };

    // Then it is the same job, and the extra hint, which names the row the
    // redelivery did not write, launches nothing
    assert_eq!(again, job_id);
    let extra = drain(&*queue).await;
    assert_eq!(extra.len(), 1, "the hint went out beside the write");
    assert_ne!(extra[0].job_id, job_id);
    assert_eq!(
        dispatch(&other, &extra[0].job_id).await.unwrap(),
        Dispatched::NotStored
    );
    let job = ports.store.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Starting, 1),
        "{job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_beside_its_hint_launches_nothing_more_on_sqlite() {
    a_redelivery_beside_its_hint_launches_nothing_more(On::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_beside_its_hint_launches_nothing_more_on_dynamodb() {
    a_redelivery_beside_its_hint_launches_nothing_more(On::Dynamo).await;
}
