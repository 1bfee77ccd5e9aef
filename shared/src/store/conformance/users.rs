//! [`UserStore`]: users, login counters and revoked sessions.

use super::*;

pub async fn users_are_unique_by_email(store: Arc<dyn Store>) {
    let mut u = user("admin@example.com", at(0));
    u.role = Role::Admin;
    store.create_user(&u).await.unwrap();
    assert!(matches!(
        store.create_user(&user("admin@example.com", at(1))).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.user_by_email("admin@example.com").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.get_user(&u.id).await.unwrap(), Some(u.clone()));

    assert_eq!(store.user_by_oidc_subject("idp|123").await.unwrap(), None);
    let mut linked = u.clone();
    linked.oidc_subject = Some("idp|123".into());
    store.update_user(&linked).await.unwrap();
    assert_eq!(
        store.user_by_oidc_subject("idp|123").await.unwrap(),
        Some(linked.clone())
    );
    // Linked to another identity: the old subject no longer finds the user.
    linked.oidc_subject = Some("idp|456".into());
    store.update_user(&linked).await.unwrap();
    assert_eq!(store.user_by_oidc_subject("idp|123").await.unwrap(), None);
    assert_eq!(
        store.user_by_oidc_subject("idp|456").await.unwrap(),
        Some(linked.clone())
    );
    let u = linked;
    let mut disabled = u.clone();
    disabled.disabled = true;
    disabled.updated_at = at(2);
    store.update_user(&disabled).await.unwrap();
    assert!(store.get_user(&u.id).await.unwrap().unwrap().disabled);
    store
        .create_user(&user("viewer@example.com", at(3)))
        .await
        .unwrap();
    let all = store.list_users(&PageRequest::first(1)).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert!(all.next_cursor.is_some());
}

pub async fn counters_count_every_hit_once_per_window(store: Arc<dyn Store>) {
    let window = at(0);
    let expires = at(600);
    let hits: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .hit_counter("login:10.0.0.1", window, expires)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut counts = Vec::new();
    for h in hits {
        counts.push(h.await.unwrap());
    }
    counts.sort();
    assert_eq!(
        counts,
        (1..=20).collect::<Vec<u64>>(),
        "each concurrent hit sees its own count"
    );
    assert_eq!(
        store
            .hit_counter("login:10.0.0.1", at(300), at(900))
            .await
            .unwrap(),
        1,
        "a new window starts at one"
    );
    assert_eq!(
        store
            .hit_counter("login:10.0.0.2", window, expires)
            .await
            .unwrap(),
        1,
        "keys are separate"
    );

    // A refund takes one back, never below zero, and creates nothing.
    store.refund_hit("login:10.0.0.2", window).await.unwrap();
    store.refund_hit("login:10.0.0.2", window).await.unwrap();
    assert_eq!(
        store
            .hit_counter("login:10.0.0.2", window, expires)
            .await
            .unwrap(),
        1,
        "0 after two refunds, then one hit"
    );
    store.refund_hit("login:10.0.0.1", window).await.unwrap();
    assert_eq!(
        store
            .hit_counter("login:10.0.0.1", window, expires)
            .await
            .unwrap(),
        20,
        "20 hits, one refunded, one more"
    );
    store.refund_hit("login:10.0.0.3", window).await.unwrap();
    assert_eq!(
        store
            .hit_counter("login:10.0.0.3", window, expires)
            .await
            .unwrap(),
        1,
        "a refund of nothing leaves nothing"
    );
}

pub async fn revoked_sessions_stay_revoked(store: Arc<dyn Store>) {
    assert!(!store.is_session_revoked("sess_1").await.unwrap());
    store.revoke_session("sess_1", at(3600)).await.unwrap();
    store.revoke_session("sess_1", at(3600)).await.unwrap();
    assert!(store.is_session_revoked("sess_1").await.unwrap());
    assert!(!store.is_session_revoked("sess_2").await.unwrap());
}
