//! [`ConfigStore`]: projects, pools and repo bindings.

use super::*;

pub async fn projects_crud(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    assert_eq!(store.get_project(&p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(
        store
            .get_project("prj_01jzzzzzzzzzzzzzzzzzzzzzzz")
            .await
            .unwrap(),
        None
    );

    let mut changed = p.clone();
    changed.spec.label = Label::parse("acme-renamed").unwrap();
    changed.updated_at = at(5);
    store.update_project(&changed).await.unwrap();
    assert_eq!(
        store.get_project(&p.id).await.unwrap(),
        Some(changed.clone())
    );

    let q = project("beta", at(1));
    store.create_project(&q).await.unwrap();
    let listed = store.list_projects(&PageRequest::first(10)).await.unwrap();
    assert_eq!(
        listed.items,
        vec![changed.clone(), q.clone()],
        "projects list oldest first"
    );
    assert_eq!(listed.next_cursor, None);

    store.delete_project(&p.id).await.unwrap();
    assert_eq!(store.get_project(&p.id).await.unwrap(), None);
    assert!(matches!(
        store.delete_project(&p.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_project(&changed).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn project_names_are_unique_ignoring_case(store: Arc<dyn Store>) {
    let a = project("acme", at(0));
    store.create_project(&a).await.unwrap();
    let mut b = project("beta", at(1));
    store.create_project(&b).await.unwrap();
    let mut dup = project("ACME", at(2));
    dup.spec.label = Label::parse("other").unwrap();
    assert!(matches!(
        store.create_project(&dup).await,
        Err(StoreError::Conflict(_))
    ));

    b.spec.name = "Acme".into();
    assert!(
        matches!(store.update_project(&b).await, Err(StoreError::Conflict(_))),
        "renaming onto a taken name"
    );
    b.spec.name = "gamma".into();
    store.update_project(&b).await.unwrap();
    // The old name is free again once renamed away, and after a delete.
    store.create_project(&project("beta", at(3))).await.unwrap();
    store.delete_project(&a.id).await.unwrap();
    store.create_project(&project("acme", at(4))).await.unwrap();
}

pub async fn project_with_pools_or_bindings_cannot_be_deleted(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 5, at(1));
    store.create_pool(&pl).await.unwrap();
    let b = binding("acme/app", &p.id, at(2));
    store.create_binding(&b).await.unwrap();

    assert!(matches!(
        store.delete_project(&p.id).await,
        Err(StoreError::InUse(_))
    ));
    store.delete_pool(&pl.id).await.unwrap();
    assert!(
        matches!(store.delete_project(&p.id).await, Err(StoreError::InUse(_))),
        "the binding still names it"
    );
    store.delete_binding(&b.id).await.unwrap();
    store.delete_project(&p.id).await.unwrap();
}

pub async fn pools_need_an_existing_project(store: Arc<dyn Store>) {
    let orphan = pool("prj_01jzzzzzzzzzzzzzzzzzzzzzzz", "linux", 5, at(0));
    assert!(matches!(
        store.create_pool(&orphan).await,
        Err(StoreError::MissingParent("project"))
    ));
    let b = binding("acme/app", "prj_01jzzzzzzzzzzzzzzzzzzzzzzz", at(0));
    assert!(matches!(
        store.create_binding(&b).await,
        Err(StoreError::MissingParent("project"))
    ));
    assert_eq!(
        store.get_pool(&orphan.id).await.unwrap(),
        None,
        "nothing half-written"
    );
}

pub async fn pool_names_are_unique_within_a_project(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    let q = project("beta", at(0));
    store.create_project(&p).await.unwrap();
    store.create_project(&q).await.unwrap();
    store
        .create_pool(&pool(&p.id, "linux", 5, at(1)))
        .await
        .unwrap();
    assert!(matches!(
        store.create_pool(&pool(&p.id, "Linux", 5, at(2))).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_pool(&pool(&q.id, "linux", 5, at(3)))
        .await
        .unwrap();

    let listed = store
        .list_pools(Some(&p.id), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let all = store
        .list_pools(None, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
}

pub async fn updating_a_pool_keeps_its_reserved_capacity(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let mut pl = pool(&p.id, "linux", 5, at(1));
    store.create_pool(&pl).await.unwrap();
    assert!(store.reserve_capacity(&pl.id).await.unwrap());
    assert!(store.reserve_capacity(&pl.id).await.unwrap());

    // A client's copy still says 0 active: an update must not write it back.
    pl.spec.max_runners = 9;
    pl.spec.labels = [
        Label::parse("linux").unwrap(),
        Label::parse("arm64").unwrap(),
    ]
    .into();
    pl.updated_at = at(2);
    store.update_pool(&pl).await.unwrap();
    let stored = store.get_pool(&pl.id).await.unwrap().unwrap();
    assert_eq!(stored.spec, pl.spec);
    assert_eq!(stored.active_runners, 2);

    let mut gone = pool(&p.id, "ghost", 1, at(3));
    gone.id = "pool_01jzzzzzzzzzzzzzzzzzzzzzzz".into();
    assert!(matches!(
        store.update_pool(&gone).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn pool_holding_capacity_cannot_be_deleted(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    store.create_project(&p).await.unwrap();
    let pl = pool(&p.id, "linux", 2, at(1));
    store.create_pool(&pl).await.unwrap();
    assert!(store.reserve_capacity(&pl.id).await.unwrap());
    assert!(matches!(
        store.delete_pool(&pl.id).await,
        Err(StoreError::InUse(_))
    ));
    assert!(store.release_capacity(&pl.id).await.unwrap());
    store.delete_pool(&pl.id).await.unwrap();
    assert!(matches!(
        store.delete_pool(&pl.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn bindings_are_unique_per_repo_and_found_by_repo_key(store: Arc<dyn Store>) {
    let p = project("acme", at(0));
    let q = project("beta", at(0));
    store.create_project(&p).await.unwrap();
    store.create_project(&q).await.unwrap();
    let b = binding("Octo-Org/Hello-World", &p.id, at(1));
    store.create_binding(&b).await.unwrap();
    assert!(matches!(
        store
            .create_binding(&binding("octo-org/hello-world", &q.id, at(2)))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .binding_for_repo("octo-org/hello-world")
            .await
            .unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.get_binding(&b.id).await.unwrap(), Some(b.clone()));

    // Moving a binding to another project, and renaming its repo.
    let mut moved = b.clone();
    moved.spec.project_id = q.id.clone();
    moved.spec.repo = RepoName::parse("octo-org/renamed").unwrap();
    store.update_binding(&moved).await.unwrap();
    assert_eq!(
        store
            .binding_for_repo("octo-org/hello-world")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.binding_for_repo("octo-org/renamed").await.unwrap(),
        Some(moved.clone())
    );
    store
        .delete_project(&p.id)
        .await
        .expect("p no longer has dependents");
    assert!(matches!(
        store.delete_project(&q.id).await,
        Err(StoreError::InUse(_))
    ));

    let listed = store
        .list_bindings(Some(&q.id), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.items, vec![moved.clone()]);
    store.delete_binding(&moved.id).await.unwrap();
    assert_eq!(
        store.binding_for_repo("octo-org/renamed").await.unwrap(),
        None
    );
}
