//! The DynamoDB store on moto_server: the whole conformance suite, then the
//! parts only this adapter has (guard items, the dependents counter, the
//! item layout later indexes rely on, merged and filtered pagination).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use pacer_shared::domain::{JobState, RepoName, RunnerState};
use pacer_shared::store::conformance::{self, binding, job, pool, project, runner, t0};
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_shared::store::{
    ConfigStore as _, JobFilter, JobStore as _, PageRequest, RunnerFilter, RunnerStore as _, Store,
    StoreError,
};

use crate::moto::Moto;

const TABLE: &str = "pacer-test";

/// A DynamoDB store on its own moto_server, with its table created, and a
/// raw client to look at the items it wrote.
struct Fixture {
    store: Arc<DynamoStore>,
    client: Client,
    _moto: Moto,
}

async fn fixture() -> Fixture {
    let moto = Moto::start().await;
    let client = Client::new(&moto.sdk_config().await);
    let store = DynamoStore::new(client.clone(), TABLE.into());
    store
        .create_table()
        .await
        .expect("create the table on moto");
    Fixture {
        store: Arc::new(store),
        client,
        _moto: moto,
    }
}

/// What the conformance macro needs: a fresh store, and a guard that keeps
/// its moto_server alive for the test.
async fn dynamodb() -> (Arc<dyn Store>, Moto) {
    let Fixture { store, _moto, .. } = fixture().await;
    (store as Arc<dyn Store>, _moto)
}

crate::store_conformance!(dynamodb_conformance, dynamodb());

#[test]
fn every_conformance_case_is_run_on_dynamodb() {
    let listed: Vec<&str> = conformance::CASES.iter().map(|(name, _)| *name).collect();
    assert_eq!(dynamodb_conformance::NAMES, listed.as_slice());
}

impl Fixture {
    async fn raw(&self, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.client
            .get_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }

    async fn dependents(&self, project_id: &str) -> i64 {
        let item = self
            .raw(&format!("PROJECT#{project_id}"), "PROJECT")
            .await
            .expect("project item");
        item["dependents"]
            .as_n()
            .expect("a number")
            .parse()
            .unwrap()
    }
}

fn at(secs: i64) -> pacer_shared::domain::Time {
    t0() + chrono::Duration::seconds(secs)
}

#[tokio::test]
async fn creating_the_table_twice_is_harmless() {
    let f = fixture().await;
    f.store
        .create_table()
        .await
        .expect("a second create_table leaves the table as it is");
    let ttl = f
        .client
        .describe_time_to_live()
        .table_name(TABLE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
}

#[tokio::test]
async fn a_rename_moves_the_name_guard_in_the_same_write() {
    let f = fixture().await;
    let mut p = project("Acme", at(0));
    f.store.create_project(&p).await.unwrap();
    let guard = f
        .raw("PROJECTNAME#acme", "UNIQUE")
        .await
        .expect("the name guard exists");
    assert_eq!(guard["owner"].as_s().unwrap(), &p.id);

    p.spec.name = "Renamed".into();
    f.store.update_project(&p).await.unwrap();
    assert!(
        f.raw("PROJECTNAME#acme", "UNIQUE").await.is_none(),
        "the old name is released"
    );
    assert!(
        f.raw("PROJECTNAME#renamed", "UNIQUE").await.is_some(),
        "the new name is taken"
    );

    // A refused create leaves nothing behind: no item without its guard.
    let dup = project("RENAMED", at(1));
    assert!(matches!(
        f.store.create_project(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        f.raw(&format!("PROJECT#{}", dup.id), "PROJECT")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn the_dependents_counter_follows_pools_and_bindings() {
    let f = fixture().await;
    let (p, q) = (project("acme", at(0)), project("beta", at(0)));
    f.store.create_project(&p).await.unwrap();
    f.store.create_project(&q).await.unwrap();
    let mut pl = pool(&p.id, "linux", 3, at(1));
    f.store.create_pool(&pl).await.unwrap();
    let b = binding("acme/app", &p.id, at(2));
    f.store.create_binding(&b).await.unwrap();
    assert_eq!(f.dependents(&p.id).await, 2);

    // Moving a pool to another project moves its count and its name guard.
    pl.spec.project_id = q.id.clone();
    f.store.update_pool(&pl).await.unwrap();
    assert_eq!(
        (f.dependents(&p.id).await, f.dependents(&q.id).await),
        (1, 1)
    );
    assert!(
        f.raw(&format!("POOLNAME#{}#linux", p.id), "UNIQUE")
            .await
            .is_none()
    );
    assert!(
        f.raw(&format!("POOLNAME#{}#linux", q.id), "UNIQUE")
            .await
            .is_some()
    );

    match f.store.delete_project(&p.id).await {
        Err(StoreError::InUse(why)) => assert!(
            why.contains("repo bindings") && !why.contains("pools"),
            "{why}"
        ),
        other => panic!("expected InUse, got {other:?}"),
    }
    f.store.delete_binding(&b.id).await.unwrap();
    f.store.delete_pool(&pl.id).await.unwrap();
    assert_eq!(
        (f.dependents(&p.id).await, f.dependents(&q.id).await),
        (0, 0)
    );
    f.store.delete_project(&p.id).await.unwrap();
    assert!(
        f.raw("PROJECTNAME#acme", "UNIQUE").await.is_none(),
        "a deleted project frees its name"
    );
}

#[tokio::test]
async fn a_missing_parent_writes_nothing() {
    let f = fixture().await;
    let b = binding("acme/app", "prj_01jzzzzzzzzzzzzzzzzzzzzzzz", at(0));
    assert!(matches!(
        f.store.create_binding(&b).await,
        Err(StoreError::MissingParent("project"))
    ));
    assert!(f.raw("REPO#acme/app", "UNIQUE").await.is_none());
    assert!(
        f.raw("PROJECT#prj_01jzzzzzzzzzzzzzzzzzzzzzzz", "PROJECT")
            .await
            .is_none(),
        "no phantom project item"
    );
}

#[tokio::test]
async fn the_repo_guard_carries_the_binding_for_a_one_read_lookup() {
    let f = fixture().await;
    let p = project("acme", at(0));
    f.store.create_project(&p).await.unwrap();
    let mut b = binding("Octo/App", &p.id, at(1));
    f.store.create_binding(&b).await.unwrap();
    let guard = f.raw("REPO#octo/app", "UNIQUE").await.expect("repo guard");
    assert!(guard["binding"].is_m());

    // An update that keeps the repo refreshes the copy.
    b.spec.repo = RepoName::parse("octo/APP").unwrap();
    b.updated_at = at(5);
    f.store.update_binding(&b).await.unwrap();
    assert_eq!(
        f.store.binding_for_repo("octo/app").await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(f.store.binding_for_repo("OCTO/APP").await.unwrap(), Some(b));
}

#[tokio::test]
async fn items_hold_typed_top_level_attributes_for_future_indexes() {
    let f = fixture().await;
    let mut j = job(4242, "Acme/App", at(0));
    j.pool_id = Some("pool_a".into());
    f.store.insert_job(&j).await.unwrap();
    let item = f.raw(&format!("JOB#{}", j.id), "JOB").await.unwrap();
    assert_eq!(item["type"].as_s().unwrap(), "job");
    assert_eq!(item["github_job_id"].as_n().unwrap(), "4242");
    assert_eq!(item["job_repo_key"].as_s().unwrap(), "acme/app");
    assert_eq!(item["job_pool_id"].as_s().unwrap(), "pool_a");
    assert_eq!(item["gsi2pk"].as_s().unwrap(), "JOBSTATE#queued");
    assert!(
        !item.contains_key("runner_name"),
        "a None field is absent, not NULL"
    );
    assert!(item.values().all(|v| !v.is_null()));
    assert!(f.raw("GHJOB#4242", "UNIQUE").await.is_some());

    let p = project("acme", at(0));
    f.store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 3, at(0));
    f.store.create_pool(&pl).await.unwrap();
    let live = runner(&pl, "i-0abc", at(1));
    f.store.insert_runner(&live).await.unwrap();
    let item = f
        .raw(&format!("RUNNER#{}", live.id), "RUNNER")
        .await
        .unwrap();
    assert_eq!(item["runner_live_pool_id"].as_s().unwrap(), &pl.id);
    assert_eq!(item["runner_reg_name"].as_s().unwrap(), "pacer-i-0abc");

    // Once done, the runner leaves the sparse "live" attribute and its state partition.
    let mut done = live.clone();
    done.state = RunnerState::Done;
    f.store
        .transition_runner(RunnerState::Pending, &done)
        .await
        .unwrap();
    let item = f
        .raw(&format!("RUNNER#{}", live.id), "RUNNER")
        .await
        .unwrap();
    assert!(!item.contains_key("runner_live_pool_id"));
    assert_eq!(item["gsi2pk"].as_s().unwrap(), "RUNNERSTATE#done");
}

#[tokio::test]
async fn a_runner_without_an_instance_is_not_in_the_instance_index() {
    let f = fixture().await;
    let p = project("acme", at(0));
    f.store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 3, at(0));
    f.store.create_pool(&pl).await.unwrap();
    let mut r = runner(&pl, "i-0abc", at(1));
    r.instance_id = None;
    f.store
        .insert_runner(&r)
        .await
        .expect("a runner may not have an instance yet");

    let mut launched = r.clone();
    launched.instance_id = Some("i-0def".into());
    launched.state = RunnerState::Registered;
    f.store
        .transition_runner(RunnerState::Pending, &launched)
        .await
        .unwrap();
    assert_eq!(
        f.store.runner_by_instance("i-0def").await.unwrap(),
        Some(launched)
    );
}

#[tokio::test]
async fn filtered_pages_are_full_and_skip_nothing_however_sparse_the_matches() {
    let f = fixture().await;
    // 40 jobs; every 7th is in acme/lib. DynamoDB's Limit counts the
    // skipped ones too, so a naive page would come back short or empty.
    let mut expected = Vec::new();
    for n in 0..40 {
        let repo = if n % 7 == 0 { "acme/lib" } else { "acme/app" };
        f.store
            .insert_job(&job(500 + n, repo, at(n)))
            .await
            .unwrap();
        if n % 7 == 0 {
            expected.push(500 + n);
        }
    }
    expected.reverse();

    let filter = JobFilter {
        repo: Some("acme/lib".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_jobs(&filter, &PageRequest { limit: 2, cursor })
            .await
            .unwrap();
        if page.next_cursor.is_some() {
            assert_eq!(page.items.len(), 2, "a page followed by another is full");
        }
        seen.extend(page.items.iter().map(|j| j.github_job_id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, expected, "every match once, newest first");
}

#[tokio::test]
async fn runners_of_several_states_merge_into_one_newest_first_listing() {
    let f = fixture().await;
    let p = project("acme", at(0));
    f.store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 3, at(0));
    f.store.create_pool(&pl).await.unwrap();
    let states = [
        RunnerState::Pending,
        RunnerState::Busy,
        RunnerState::Done,
        RunnerState::Registered,
    ];
    let mut live = Vec::new();
    for n in 0..9 {
        let mut r = runner(&pl, &format!("i-{n:04}"), at(n));
        r.state = states[n as usize % states.len()];
        f.store.insert_runner(&r).await.unwrap();
        if r.state.is_live() {
            live.push(r.id);
        }
    }
    live.reverse();

    let filter = RunnerFilter {
        pool_id: Some(pl.id.clone()),
        states: vec![
            RunnerState::Pending,
            RunnerState::Registered,
            RunnerState::Busy,
        ],
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store
            .list_runners(&filter, &PageRequest { limit: 2, cursor })
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|r| r.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, live);
}

#[tokio::test]
async fn a_cursor_from_another_listing_is_refused() {
    let f = fixture().await;
    for n in 0..3 {
        f.store
            .insert_job(&job(n, "acme/app", at(n)))
            .await
            .unwrap();
    }
    let page = f
        .store
        .list_jobs(&JobFilter::default(), &PageRequest::first(1))
        .await
        .unwrap();
    let jobs_cursor = page.next_cursor.expect("more jobs follow");
    let queued = JobFilter {
        state: Some(JobState::Queued),
        ..Default::default()
    };
    let foreign = PageRequest {
        limit: 1,
        cursor: Some(jobs_cursor),
    };
    assert!(matches!(
        f.store.list_jobs(&queued, &foreign).await,
        Err(StoreError::BadCursor)
    ));
    assert!(matches!(
        f.store.list_projects(&foreign).await,
        Err(StoreError::BadCursor)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_updates_racing_reservations_never_lose_a_reservation() {
    let f = fixture().await;
    let p = project("acme", at(0));
    f.store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 50, at(0));
    f.store.create_pool(&pl).await.unwrap();

    let reservers: Vec<_> = (0..20)
        .map(|_| {
            let store = f.store.clone();
            let id = pl.id.clone();
            tokio::spawn(async move { store.reserve_capacity(&id).await.unwrap() })
        })
        .collect();
    let updaters: Vec<_> = (0..5)
        .map(|n| {
            let store = f.store.clone();
            let mut copy = pl.clone(); // still says active_runners = 0
            copy.spec.priority = n;
            tokio::spawn(async move { store.update_pool(&copy).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for r in reservers {
        granted += u32::from(r.await.unwrap());
    }
    for u in updaters {
        u.await.unwrap();
    }
    assert_eq!(granted, 20);
    assert_eq!(
        f.store
            .get_pool(&pl.id)
            .await
            .unwrap()
            .unwrap()
            .active_runners,
        20
    );
}

#[tokio::test]
async fn updating_a_project_from_a_stale_copy_keeps_its_dependents() {
    let f = fixture().await;
    let mut p = project("acme", at(0));
    f.store.create_project(&p).await.unwrap();
    f.store
        .create_pool(&pool(&p.id, "linux", 3, at(1)))
        .await
        .unwrap();

    p.spec.name = "acme-2".into();
    p.updated_at = at(2);
    f.store.update_project(&p).await.unwrap();
    assert_eq!(f.dependents(&p.id).await, 1);
    assert!(matches!(
        f.store.delete_project(&p.id).await,
        Err(StoreError::InUse(_))
    ));
}
