//! [`AuditStore`].

use super::*;

pub async fn audit_events_append_and_filter(store: Arc<dyn Store>) {
    let mut expected = Vec::new();
    for n in 0..5 {
        let action = if n % 2 == 0 {
            "project.created"
        } else {
            "pool.updated"
        };
        let actor = if n < 3 { "usr_a" } else { "usr_b" };
        let e = audit(action, actor, at(n * 10));
        store.append_audit(&e).await.unwrap();
        expected.push(e);
    }
    let list = |f: AuditFilter| {
        let store = store.clone();
        async move {
            all_pages(2, |page| {
                let store = store.clone();
                let f = f.clone();
                async move { store.list_audit(&f, &page).await }
            })
            .await
        }
    };
    let everything = list(AuditFilter::default()).await;
    assert_eq!(
        everything,
        expected.iter().rev().cloned().collect::<Vec<_>>(),
        "newest first, unchanged"
    );
    let created = list(AuditFilter {
        action: Some("project.created".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        created.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![at(40), at(20), at(0)]
    );
    let pools = list(AuditFilter {
        action_prefix: Some("pool.".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        pools.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![at(30), at(10)]
    );
    let p_anything = list(AuditFilter {
        action_prefix: Some("p".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        p_anything.len(),
        5,
        "both project.* and pool.* begin with p"
    );
    let none = list(AuditFilter {
        action_prefix: Some("project.created.".into()),
        ..Default::default()
    })
    .await;
    assert!(
        none.is_empty(),
        "a prefix longer than every action matches none"
    );
    let mixed = list(AuditFilter {
        action_prefix: Some("pro".into()),
        actor: Some("usr_b".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(mixed.iter().map(|e| e.at).collect::<Vec<_>>(), vec![at(40)]);
    let by_b = list(AuditFilter {
        actor: Some("usr_b".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_b.len(), 2);
    let window = list(AuditFilter {
        from: Some(at(10)),
        to: Some(at(30)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        window.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![at(20), at(10)]
    );
}
