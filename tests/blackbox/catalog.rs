//! The catalog: a warm process takes in webhooks with the projects, pools
//! and bindings it read, for `database.config_cache_ttl`, without a store
//! read. Changes through this process are seen at once; changes another
//! process made (written to the store directly here) within the interval;
//! and a job the stale copy turned away is not lost — the reaper's scan for
//! missed webhooks takes it in (`reaper`).

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::{Clock as _, ManualClock};
use pacer_shared::domain::{JobState, Time};
use pacer_shared::service::catalog::Catalog;
use pacer_shared::service::dispatch::{Dispatched, dispatch};
use pacer_shared::service::{Caller, Ports, config_objects};
use pacer_shared::store::sqlite::SqliteStore;
use pacer_shared::store::{ConfigStore as _, conformance};
use serde_json::json;

use pacer_shared::service::webhook::Outcome;

use crate::support::{deliver_queued, local_ports, seed_acme};

struct World {
    ports: Ports,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    project_id: String,
    _dir: tempfile::TempDir,
}

/// Project `acme` with pool `linux`, bound to `acme/app`, and a catalog
/// held for `ttl`.
async fn world(ttl: Duration) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("catalog.db")).unwrap());
    let now: Time = "2026-05-04T10:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let ports = Ports {
        store: store.clone(),
        clock: clock.clone(),
        catalog: Arc::new(Catalog::new(ttl)),
        ..local_ports(dir.path()).0
    };
    let (project, _) = seed_acme(&*store, 5, now).await;
    World {
        ports,
        store,
        clock,
        project_id: project.id,
        _dir: dir,
    }
}

impl World {
    /// A signed queued delivery: the job id, or `None` when not taken in.
    async fn deliver(&self, github_job_id: i64, repo: &str) -> Option<String> {
        match deliver_queued(&self.ports, github_job_id, repo, &["self-hosted", "linux"]).await {
            Outcome::Accepted { job_id } => Some(job_id),
            _ => None,
        }
    }

    fn reads(&self) -> u64 {
        self.store.calls().store_reads
    }
}

#[tokio::test]
async fn a_warm_process_takes_in_a_job_without_reading_the_store() {
    let w = world(Duration::from_secs(10)).await;
    assert!(w.deliver(1, "acme/app").await.is_some(), "the first reads");
    let before = w.reads();
    let job = w.deliver(2, "acme/app").await.expect("taken in");
    assert_eq!(
        w.reads() - before,
        0,
        "the binding, project and pools come from memory, and the insert finds a duplicate itself"
    );
    let stored = w.ports.store.get_job(&job).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Queued);
    assert!(stored.pool_id.is_some(), "matched to pool linux");

    // A repository nobody serves: nothing read, its first job audited, and
    // for the next hour its next ones cost nothing at all.
    let before = w.reads();
    assert_eq!(w.deliver(3, "other/app").await, None);
    assert_eq!(w.reads() - before, 0);
    let audited = || async {
        let filter = pacer_shared::store::AuditFilter {
            action: Some("job.repo_not_bound".into()),
            ..Default::default()
        };
        let page = pacer_shared::store::PageRequest::first(100);
        w.ports
            .store
            .list_audit(&filter, &page)
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(audited().await, 1);
    let before_calls = w.store.calls();
    assert_eq!(w.deliver(4, "Other/App").await, None);
    assert_eq!(w.store.calls() - before_calls, Default::default());
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(w.deliver(5, "other/app").await, None);
    assert_eq!(audited().await, 2, "an hour later, audited again");

    // A redelivery: no store trip at all.
    let before_calls = w.store.calls();
    assert_eq!(
        w.deliver(2, "acme/app").await,
        Some(job.clone()),
        "the same job"
    );
    assert_eq!(
        w.store.calls() - before_calls,
        Default::default(),
        "the redelivery of a job this process took in is answered from memory"
    );
}

#[tokio::test]
async fn another_processs_change_is_seen_within_the_interval_and_this_ones_at_once() {
    let w = world(Duration::from_secs(10)).await;
    assert!(w.deliver(1, "acme/app").await.is_some());

    // Another process binds acme/lib: this one still has its copy.
    let t = w.clock.now();
    w.store
        .create_binding(&conformance::binding("acme/lib", &w.project_id, t))
        .await
        .unwrap();
    assert_eq!(
        w.deliver(2, "acme/lib").await,
        None,
        "turned away within the interval (the reaper's scan takes it in later)"
    );
    w.clock.advance(Duration::from_secs(10));
    assert!(
        w.deliver(2, "acme/lib").await.is_some(),
        "seen once the interval is over"
    );

    // A change through this process's API drops its copy at once.
    let admin = Caller::system("test");
    let body = json!({"repo": "acme/web", "project_id": w.project_id});
    config_objects::create_binding(&w.ports, &admin, body.as_object().unwrap().clone())
        .await
        .unwrap();
    assert!(
        w.deliver(3, "acme/web").await.is_some(),
        "bound through this process: served now"
    );
}

#[tokio::test]
async fn a_zero_interval_reads_the_configuration_for_every_webhook() {
    let w = world(Duration::ZERO).await;
    assert!(w.deliver(1, "acme/app").await.is_some());
    let t = w.clock.now();
    w.store
        .create_binding(&conformance::binding("acme/lib", &w.project_id, t))
        .await
        .unwrap();
    let before = w.reads();
    assert!(w.deliver(2, "acme/lib").await.is_some(), "seen at once");
    assert!(w.reads() - before >= 3, "binding, project and pools read");
}

#[tokio::test]
async fn an_orchestrator_whose_copy_holds_a_pool_deleted_elsewhere_fails_the_job_instead_of_waiting()
 {
    // Given a warm process whose copy holds pool `linux`, and a queued job
    // of that pool
    let w = world(Duration::from_secs(600)).await;
    let job_id = w.deliver(1, "acme/app").await.expect("taken in");
    let pool = w
        .ports
        .store
        .get_job(&job_id)
        .await
        .unwrap()
        .unwrap()
        .pool_id
        .unwrap();

    // When another process deletes the pool (straight to the store here)
    w.store.delete_pool(&pool).await.unwrap();

    // Then the launch finds no slot, learns why, and fails the job, rather
    // than leaving it waiting for a slot that never frees
    assert_eq!(
        dispatch(&w.ports, &job_id).await.unwrap(),
        Dispatched::NotNeeded("pool deleted")
    );
    let job = w.ports.store.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(!job.waiting_for_capacity);
    assert!(
        job.failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("pool was deleted")),
        "{job:?}"
    );
}
