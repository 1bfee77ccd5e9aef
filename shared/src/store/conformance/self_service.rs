//! [`SelfServiceStore`]: token uses, self-service runners with their
//! owners' live limit, label policies and security events.

use crate::domain::self_service::{
    IdentityPolicy, LabelGlob, LabelPolicy, Placement, SecurityEvent, SecurityEventKind,
    SelfRunnerStatus, SelfServiceRunner,
};

use super::*;

pub fn self_runner(name: &str, owner: &str, at: Time) -> SelfServiceRunner {
    SelfServiceRunner {
        id: new_id(IdKind::SelfServiceRunner, at),
        name: name.into(),
        owner: owner.into(),
        trusted_identity: owner.split(':').next().unwrap().into(),
        labels: vec!["gpu".into(), "self-hosted".into()],
        github_runner_id: Some(4242),
        installation_id: 77,
        placement: Placement {
            scope: Scope::Org,
            org: Some("octo-org".into()),
            repo: None,
            runner_group_id: 1,
            name_prefix: "ci-".into(),
        },
        status: SelfRunnerStatus::Pending,
        source_ip: Some("10.1.2.3".into()),
        created_at: at,
        registered_at: None,
        updated_at: at,
        deleted_at: None,
        version: 1,
    }
}

/// `runner` moved to `to` as a service writes it: one version on.
fn moved(runner: &SelfServiceRunner, to: SelfRunnerStatus, when: Time) -> SelfServiceRunner {
    let mut next = runner.clone();
    next.status = to;
    next.updated_at = when;
    if to == SelfRunnerStatus::Deleted {
        next.deleted_at = Some(when);
    }
    next.version += 1;
    next
}

pub async fn a_token_is_used_once_even_by_ten_concurrent_requests(store: Arc<dyn Store>) {
    let (iss, exp) = ("https://issuer.example", at(600));
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.use_token(iss, "jti-1", exp, at(0)).await.unwrap() })
        })
        .collect();
    let mut firsts = 0;
    for t in tries {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1, "exactly one request gets to use the token");
    assert!(!store.use_token(iss, "jti-1", exp, at(10)).await.unwrap());
    // The same jti from another issuer is another token.
    assert!(
        store
            .use_token("https://other.example", "jti-1", exp, at(10))
            .await
            .unwrap()
    );
    // Once expired, the use is forgotten (the token itself is refused by
    // its `exp`; a jti may come round again).
    assert!(
        store
            .use_token(iss, "jti-1", at(1200), at(601))
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_token(iss, "jti-1", at(1200), at(602))
            .await
            .unwrap()
    );
}

pub async fn an_owner_never_holds_more_live_runners_than_its_limit(store: Arc<dyn Store>) {
    let owner = "ci:repo:octo-org/infra:ref:refs/heads/main";
    let tries: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let runner = self_runner(&format!("ci-gpu-{i}"), owner, at(i));
            tokio::spawn(async move { store.create_self_runner(&runner, 3).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for t in tries {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, 3, "exactly max_live_runners creations succeed");
    // Another owner has its own limit.
    assert!(
        store
            .create_self_runner(&self_runner("ci-other", "ci:someone-else", at(20)), 3)
            .await
            .unwrap()
    );

    // Deleting one frees its place; an offline one holds none either.
    let mine = owned(&store, owner, None).await;
    assert_eq!(mine.len(), 3);
    let first = &mine[0];
    store
        .update_self_runner(
            first.status,
            &moved(first, SelfRunnerStatus::Deleted, at(30)),
        )
        .await
        .unwrap();
    let second = &mine[1];
    store
        .update_self_runner(
            second.status,
            &moved(second, SelfRunnerStatus::Offline, at(31)),
        )
        .await
        .unwrap();
    for i in 0..2 {
        assert!(
            store
                .create_self_runner(&self_runner(&format!("ci-more-{i}"), owner, at(40 + i)), 3)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .create_self_runner(&self_runner("ci-one-too-many", owner, at(50)), 3)
            .await
            .unwrap()
    );
    // An offline runner that comes back online takes its place again.
    let back = store.get_self_runner(&second.name).await.unwrap().unwrap();
    store
        .update_self_runner(
            SelfRunnerStatus::Offline,
            &moved(&back, SelfRunnerStatus::Active, at(51)),
        )
        .await
        .unwrap();
    let live = owned(&store, owner, None)
        .await
        .iter()
        .filter(|r| r.status.is_live())
        .count();
    assert_eq!(live, 4, "three created within the limit, one back online");
    // A limit of 0 admits nobody.
    assert!(
        !store
            .create_self_runner(&self_runner("ci-zero", "ci:nobody", at(60)), 0)
            .await
            .unwrap()
    );
}

async fn owned(
    store: &Arc<dyn Store>,
    owner: &str,
    status: Option<SelfRunnerStatus>,
) -> Vec<SelfServiceRunner> {
    let filter = SelfRunnerFilter {
        owner: Some(owner.into()),
        status,
    };
    let mut items = store
        .list_self_runners(&filter, &PageRequest::first(100))
        .await
        .unwrap()
        .items;
    items.reverse(); // oldest first reads better in a case
    items
}

pub async fn self_runners_are_unique_by_name_and_updated_conditionally(store: Arc<dyn Store>) {
    let runner = self_runner("ci-gpu-1", "ci:alice", at(0));
    assert!(store.create_self_runner(&runner, 5).await.unwrap());
    let again = self_runner("ci-gpu-1", "ci:bob", at(1));
    assert!(matches!(
        store.create_self_runner(&again, 5).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_self_runner("ci-gpu-1").await.unwrap(),
        Some(runner.clone())
    );
    assert_eq!(store.get_self_runner("ci-nope").await.unwrap(), None);

    let mut active = moved(&runner, SelfRunnerStatus::Active, at(5));
    active.registered_at = Some(at(5));
    store
        .update_self_runner(SelfRunnerStatus::Pending, &active)
        .await
        .unwrap();
    // A write from the status it left, or from the version it replaced, is stale.
    assert!(matches!(
        store
            .update_self_runner(
                SelfRunnerStatus::Pending,
                &moved(&runner, SelfRunnerStatus::Offline, at(6))
            )
            .await,
        Err(StoreError::Stale)
    ));
    assert!(matches!(
        store
            .update_self_runner(
                SelfRunnerStatus::Active,
                &moved(&runner, SelfRunnerStatus::Offline, at(6))
            )
            .await,
        Err(StoreError::Stale)
    ));
    assert_eq!(
        store.get_self_runner("ci-gpu-1").await.unwrap(),
        Some(active)
    );
}

pub async fn a_deleted_runners_name_is_free_again(store: Arc<dyn Store>) {
    let first = self_runner("ci-reused", "ci:alice", at(0));
    assert!(store.create_self_runner(&first, 5).await.unwrap());
    let gone = moved(&first, SelfRunnerStatus::Deleted, at(5));
    store
        .update_self_runner(SelfRunnerStatus::Pending, &gone)
        .await
        .unwrap();
    assert_eq!(
        store.get_self_runner("ci-reused").await.unwrap(),
        Some(gone.clone()),
        "a deleted runner is still found by its name"
    );

    // GitHub freed the name: ten owners ask for it at once, one gets it.
    let tries: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let runner = self_runner("ci-reused", &format!("ci:owner-{i}"), at(10 + i));
            tokio::spawn(async move { (store.create_self_runner(&runner, 5).await, runner) })
        })
        .collect();
    let mut holders = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            (Ok(true), runner) => holders.push(runner),
            (Err(StoreError::Conflict(_)), _) => {}
            (other, _) => panic!("creating a runner under a contested name: {other:?}"),
        }
    }
    assert_eq!(holders.len(), 1, "one runner holds a name");
    let second = holders.pop().unwrap();
    assert_eq!(
        store.get_self_runner("ci-reused").await.unwrap(),
        Some(second.clone()),
        "the name finds the runner holding it, not the deleted one"
    );

    // A deleted runner never comes back: its name is another's now.
    let revived = moved(&gone, SelfRunnerStatus::Active, at(30));
    assert!(matches!(
        store
            .update_self_runner(SelfRunnerStatus::Deleted, &revived)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_self_runner(&moved(&first, SelfRunnerStatus::Deleted, at(31)), 5)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Both are listed, newest first; deleting the second frees the name once more.
    let all = store
        .list_self_runners(&SelfRunnerFilter::default(), &PageRequest::first(100))
        .await
        .unwrap()
        .items;
    let ids: Vec<_> = all
        .iter()
        .filter(|r| r.name == "ci-reused")
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, [second.id.clone(), first.id.clone()]);
    let second_gone = moved(&second, SelfRunnerStatus::Deleted, at(40));
    store
        .update_self_runner(SelfRunnerStatus::Pending, &second_gone)
        .await
        .unwrap();
    assert_eq!(
        store.get_self_runner("ci-reused").await.unwrap(),
        Some(second_gone),
        "with no holder, the newest deleted runner answers for the name"
    );
    let third = self_runner("ci-reused", "ci:alice", at(50));
    assert!(store.create_self_runner(&third, 5).await.unwrap());
}

pub async fn self_runners_list_newest_first_by_owner_and_status(store: Arc<dyn Store>) {
    for (i, owner) in ["ci:alice", "ci:bob", "ci:alice", "ci:alice"]
        .iter()
        .enumerate()
    {
        let r = self_runner(&format!("ci-r{i}"), owner, at(i as i64));
        assert!(store.create_self_runner(&r, 10).await.unwrap());
    }
    let r3 = store.get_self_runner("ci-r3").await.unwrap().unwrap();
    store
        .update_self_runner(
            SelfRunnerStatus::Pending,
            &moved(&r3, SelfRunnerStatus::Deleted, at(10)),
        )
        .await
        .unwrap();

    let names = |page: Page<SelfServiceRunner>| -> Vec<String> {
        page.items.into_iter().map(|r| r.name).collect()
    };
    let all = store
        .list_self_runners(&SelfRunnerFilter::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(names(all), ["ci-r3", "ci-r2", "ci-r1", "ci-r0"]);
    let alice = SelfRunnerFilter {
        owner: Some("ci:alice".into()),
        status: None,
    };
    assert_eq!(
        names(
            store
                .list_self_runners(&alice, &PageRequest::first(100))
                .await
                .unwrap()
        ),
        ["ci-r3", "ci-r2", "ci-r0"]
    );
    let alice_pending = SelfRunnerFilter {
        status: Some(SelfRunnerStatus::Pending),
        ..alice.clone()
    };
    assert_eq!(
        names(
            store
                .list_self_runners(&alice_pending, &PageRequest::first(100))
                .await
                .unwrap()
        ),
        ["ci-r2", "ci-r0"]
    );
    // Pages of one, without gaps or repeats.
    let mut seen = Vec::new();
    let mut request = PageRequest::first(1);
    loop {
        let page = store.list_self_runners(&alice, &request).await.unwrap();
        let next = page.next_cursor.clone();
        seen.extend(names(page));
        match next {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ["ci-r3", "ci-r2", "ci-r0"]);
}

pub fn identity_policy(identity: &str, max: u32, at: Time) -> IdentityPolicy {
    IdentityPolicy {
        identity: identity.into(),
        policy: LabelPolicy {
            allowed_labels: vec![
                LabelGlob::parse("gpu").unwrap(),
                LabelGlob::parse("cuda-*").unwrap(),
            ],
            required_labels: vec![Label::parse("on-prem").unwrap()],
            max_live_runners: max,
        },
        updated_at: at,
        updated_by: "usr_admin".into(),
    }
}

pub async fn label_policies_are_kept_per_identity(store: Arc<dyn Store>) {
    let alice = identity_policy("ci:repo:octo-org/a:ref:refs/heads/main", 2, at(0));
    let bob = identity_policy("ci:bob", 1, at(1));
    store.put_label_policy(&bob).await.unwrap();
    store.put_label_policy(&alice).await.unwrap();
    assert_eq!(
        store.get_label_policy(&alice.identity).await.unwrap(),
        Some(alice.clone())
    );
    // A second put replaces.
    let alice2 = identity_policy(&alice.identity, 5, at(2));
    store.put_label_policy(&alice2).await.unwrap();
    assert_eq!(
        store.get_label_policy(&alice.identity).await.unwrap(),
        Some(alice2.clone())
    );
    let listed = store
        .list_label_policies(&PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(listed.items, [bob.clone(), alice2.clone()], "by identity");
    store.delete_label_policy(&bob.identity).await.unwrap();
    assert!(matches!(
        store.delete_label_policy(&bob.identity).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_label_policy(&bob.identity).await.unwrap(), None);
    assert_eq!(
        store.get_label_policy(&"x".repeat(5000)).await.unwrap(),
        None,
        "an oversized identity finds nothing"
    );
}

fn security_event(kind: SecurityEventKind, identity: Option<&str>, at: Time) -> SecurityEvent {
    SecurityEvent {
        id: new_id(IdKind::SecurityEvent, at),
        at,
        kind,
        trusted_identity: Some("ci".into()),
        identity: identity.map(str::to_string),
        source_ip: Some("10.1.2.3".into()),
        endpoint: "POST /api/v1/runners/provision".into(),
        reason: "claim \"sub\" does not match the pattern".into(),
        token_sha256: Some("ab".repeat(32)),
    }
}

pub async fn security_events_append_and_filter(store: Arc<dyn Store>) {
    let events = [
        security_event(SecurityEventKind::InvalidToken, None, at(0)),
        security_event(SecurityEventKind::Replay, Some("ci:alice"), at(10)),
        security_event(SecurityEventKind::OverLimit, Some("ci:alice"), at(20)),
        security_event(SecurityEventKind::Replay, Some("ci:bob"), at(30)),
    ];
    for e in &events {
        store.append_security_event(e).await.unwrap();
    }
    assert!(matches!(
        store.append_security_event(&events[0]).await,
        Err(StoreError::Conflict(_))
    ));
    let list = |filter: SecurityEventFilter| {
        let store = store.clone();
        async move {
            store
                .list_security_events(&filter, &PageRequest::first(100))
                .await
                .unwrap()
                .items
        }
    };
    assert_eq!(
        list(SecurityEventFilter::default()).await,
        [
            events[3].clone(),
            events[2].clone(),
            events[1].clone(),
            events[0].clone()
        ]
    );
    let replays = SecurityEventFilter {
        kind: Some(SecurityEventKind::Replay),
        ..Default::default()
    };
    assert_eq!(list(replays).await, [events[3].clone(), events[1].clone()]);
    let alice = SecurityEventFilter {
        identity: Some("ci:alice".into()),
        from: Some(at(15)),
        ..Default::default()
    };
    assert_eq!(list(alice).await, [events[2].clone()]);
    let window = SecurityEventFilter {
        from: Some(at(10)),
        to: Some(at(30)),
        ..Default::default()
    };
    assert_eq!(list(window).await, [events[2].clone(), events[1].clone()]);
}

pub async fn a_sweep_keeps_what_has_not_expired(store: Arc<dyn Store>) {
    assert!(
        store
            .use_token("https://issuer.example", "kept", at(600), at(0))
            .await
            .unwrap()
    );
    let live = self_runner("ci-live", "ci:alice", at(0));
    assert!(store.create_self_runner(&live, 5).await.unwrap());
    store.sweep_self_service(at(10), at(10)).await.unwrap();
    assert!(
        !store
            .use_token("https://issuer.example", "kept", at(600), at(20))
            .await
            .unwrap(),
        "a use that has not expired survives a sweep"
    );
    assert_eq!(
        store.get_self_runner("ci-live").await.unwrap(),
        Some(live),
        "a runner that is not deleted survives a sweep"
    );
}
