//! A full pool's waiting jobs, driven message by message (no worker): a
//! freed slot wakes only a job that has no message of its own, and two
//! slots freed at once never leave a waiting job behind for the reaper.

use pacer_shared::domain::JobState;
use pacer_shared::service::Ports;
use pacer_shared::service::capacity;
use pacer_shared::service::dispatch::{self, Dispatched};
use std::time::Duration;

use crate::support::{deliver_queued, local_ports, seed_acme};

/// Ports with project `acme` bound to `acme/app` and one pool of two.
async fn full_pool_world() -> (Ports, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _) = local_ports(dir.path());
    let (_, pool) = seed_acme(&*ports.store, 2, chrono::Utc::now()).await;
    (ports, pool.id, dir)
}

/// A signed queued delivery, as GitHub sends it; returns the job id.
async fn deliver(ports: &Ports, github_job_id: i64) -> String {
    match deliver_queued(ports, github_job_id, "acme/app", &["self-hosted", "linux"]).await {
        pacer_shared::service::webhook::Outcome::Accepted { job_id } => job_id,
        other => panic!("not accepted: {other:?}"),
    }
}

/// Every message on the queue now, acknowledged, oldest first.
async fn drain(ports: &Ports) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let batch = ports
            .queue
            .receive(10, Duration::from_millis(10))
            .await
            .unwrap();
        if batch.is_empty() {
            return ids;
        }
        for delivery in batch {
            ports.queue.ack(&delivery).await.unwrap();
            ids.push(delivery.job_id);
        }
    }
}

async fn state(ports: &Ports, job_id: &str) -> JobState {
    ports.store.get_job(job_id).await.unwrap().unwrap().state
}

#[tokio::test]
async fn two_slots_freed_at_once_launch_both_waiting_jobs() {
    let (ports, pool_id, _dir) = full_pool_world().await;
    let jobs = [
        deliver(&ports, 1).await,
        deliver(&ports, 2).await,
        deliver(&ports, 3).await,
        deliver(&ports, 4).await,
    ];
    for id in drain(&ports).await {
        dispatch::dispatch(&ports, &id).await.unwrap();
    }
    assert_eq!(state(&ports, &jobs[0]).await, JobState::Starting);
    assert_eq!(state(&ports, &jobs[1]).await, JobState::Starting);
    for waiting in &jobs[2..] {
        let job = ports.store.get_job(waiting).await.unwrap().unwrap();
        assert_eq!(
            (job.state, job.waiting_for_capacity),
            (JobState::Queued, true),
            "handed back, marked waiting"
        );
    }
    assert!(
        drain(&ports).await.is_empty(),
        "waiting jobs hold no message"
    );

    // Two runners end before any orchestrator runs: both wakes find the
    // oldest waiting job.
    assert!(capacity::release(&ports, &pool_id).await.unwrap());
    assert!(capacity::release(&ports, &pool_id).await.unwrap());
    let woken = drain(&ports).await;
    assert_eq!(woken, [jobs[2].clone(), jobs[2].clone()]);

    // The first launches it and, the pool having room, wakes the next; the
    // repeat finds it launched already.
    assert!(matches!(
        dispatch::dispatch(&ports, &woken[0]).await.unwrap(),
        Dispatched::Launched { .. }
    ));
    assert!(matches!(
        dispatch::dispatch(&ports, &woken[1]).await.unwrap(),
        Dispatched::NotNeeded(_)
    ));
    let next = drain(&ports).await;
    assert_eq!(
        next,
        [jobs[3].clone()],
        "the last waiting job is woken without the reaper"
    );
    dispatch::dispatch(&ports, &next[0]).await.unwrap();
    assert_eq!(state(&ports, &jobs[3]).await, JobState::Starting);
    assert!(
        !ports
            .store
            .get_job(&jobs[3])
            .await
            .unwrap()
            .unwrap()
            .waiting_for_capacity,
        "the claim cleared the mark"
    );
}

#[tokio::test]
async fn a_freed_slot_sends_nothing_for_jobs_that_have_their_own_message() {
    let (ports, pool_id, _dir) = full_pool_world().await;
    let first = [deliver(&ports, 1).await, deliver(&ports, 2).await];
    for id in drain(&ports).await {
        dispatch::dispatch(&ports, &id).await.unwrap();
    }
    // A new job arrives while the pool is full; its message is on the queue.
    let newcomer = deliver(&ports, 3).await;
    assert!(capacity::release(&ports, &pool_id).await.unwrap());
    assert_eq!(
        drain(&ports).await,
        [newcomer],
        "only the newcomer's own message: no second one"
    );
    assert_eq!(state(&ports, &first[0]).await, JobState::Starting);
}
