//! [`RunnerStore`]: runners and the pool capacity they hold.

use super::*;

pub async fn capacity_never_exceeds_max_with_50_concurrent_reservers(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 7, at(1));
    store.create_pool(&pl).await.unwrap();

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let id = pl.id.clone();
            tokio::spawn(async move { store.reserve_capacity(&id).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        if t.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 7, "exactly max_runners reservations succeed");
    assert_eq!(active_runners(&store, &pl.id).await, 7);
    assert!(!store.reserve_capacity(&pl.id).await.unwrap());

    for _ in 0..7 {
        assert!(store.release_capacity(&pl.id).await.unwrap());
    }
    assert!(
        !store.release_capacity(&pl.id).await.unwrap(),
        "never below zero"
    );
    assert_eq!(active_runners(&store, &pl.id).await, 0);
}

pub async fn capacity_is_repaired_only_from_the_value_read(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 5, at(1));
    store.create_pool(&pl).await.unwrap();
    for _ in 0..3 {
        assert!(store.reserve_capacity(&pl.id).await.unwrap());
    }
    assert!(
        !store.set_capacity(&pl.id, 2, 1).await.unwrap(),
        "stale: someone reserved meanwhile"
    );
    assert!(store.set_capacity(&pl.id, 3, 1).await.unwrap());
    assert_eq!(active_runners(&store, &pl.id).await, 1);
    assert!(
        !store
            .set_capacity("pool_01jzzzzzzzzzzzzzzzzzzzzzzz", 0, 1)
            .await
            .unwrap(),
        "no such pool"
    );
}

pub async fn runners_are_found_by_instance_and_transition_conditionally(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 5, at(0));
    store.create_pool(&pl).await.unwrap();
    let r1 = runner(&pl, "i-0aaa", at(1));
    let r2 = runner(&pl, "i-0bbb", at(2));
    store.insert_runner(&r1).await.unwrap();
    store.insert_runner(&r2).await.unwrap();
    assert_eq!(store.get_runner(&r1.id).await.unwrap(), Some(r1.clone()));
    assert_eq!(
        store.runner_by_instance("i-0bbb").await.unwrap(),
        Some(r2.clone())
    );
    assert_eq!(store.runner_by_instance("i-0ccc").await.unwrap(), None);
    assert_eq!(
        store.runner_by_name(&r2.name).await.unwrap(),
        Some(r2.clone())
    );
    assert_eq!(store.runner_by_name("pacer-nobody").await.unwrap(), None);

    let mut registered = r1.clone();
    registered.state = RunnerState::Registered;
    registered.github_runner_id = Some(77);
    registered.updated_at = at(3);
    registered.version = 1;
    store
        .transition_runner(RunnerState::Pending, &registered)
        .await
        .unwrap();
    assert!(matches!(
        store
            .transition_runner(RunnerState::Pending, &registered)
            .await,
        Err(StoreError::Stale)
    ));
    // A writer holding an older copy in the same state loses too: it would
    // erase what the newer write set.
    let mut facts = registered.clone();
    facts.instance_type = Some("m7g.xlarge".into());
    facts.version = 2;
    store
        .transition_runner(RunnerState::Registered, &facts)
        .await
        .unwrap();
    let mut stale = registered.clone();
    stale.state = RunnerState::Busy;
    stale.version = 2;
    assert!(matches!(
        store
            .transition_runner(RunnerState::Registered, &stale)
            .await,
        Err(StoreError::Stale)
    ));
    let registered = facts;
    assert_eq!(
        store.get_runner(&r1.id).await.unwrap(),
        Some(registered.clone())
    );

    let live = |states: Vec<RunnerState>| RunnerFilter {
        pool_id: Some(pl.id.clone()),
        states,
    };
    let pending = store
        .list_runners(&live(vec![RunnerState::Pending]), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(pending.items, vec![r2.clone()]);
    let both = store
        .list_runners(
            &live(vec![RunnerState::Pending, RunnerState::Registered]),
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(both.items, vec![r2, registered], "newest first");
}

/// The pool's reservation count as the store holds it.
async fn active_runners(store: &Arc<dyn Store>, pool_id: &str) -> u32 {
    store
        .get_pool(pool_id)
        .await
        .unwrap()
        .unwrap()
        .active_runners
}
