//! The store conformance suite: the specification of [`Store`], run against
//! every adapter (SQLite in-process, DynamoDB on moto_server). Each case is
//! a public async function taking a fresh, empty store; the black-box test
//! binary runs every case against every adapter.
//!
//! It lives in the library (not under `tests/`) so any future adapter, and
//! any test binary, can run it unchanged. It is test code, so a failed
//! step panics like an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::domain::job::JobChanges;
use crate::domain::pool::{Market, PoolSpec};
use crate::domain::project::{BindingSpec, ProjectSpec};
use crate::domain::{Actor, ActorKind, IdKind, Label, RepoName, Role, Scope, TransitionCause};

/// Every case, by name, for adapters to run (see the `store_conformance!`
/// use in the black-box tests).
pub type Case = fn(Arc<dyn Store>) -> futures::future::BoxFuture<'static, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// All cases with their names.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

cases!(
    projects_crud,
    project_names_are_unique_ignoring_case,
    project_with_pools_or_bindings_cannot_be_deleted,
    pools_need_an_existing_project,
    pool_names_are_unique_within_a_project,
    updating_a_pool_keeps_its_reserved_capacity,
    capacity_never_exceeds_max_with_50_concurrent_reservers,
    pool_holding_capacity_cannot_be_deleted,
    capacity_is_repaired_only_from_the_value_read,
    bindings_are_unique_per_repo_and_found_by_repo_key,
    inserting_a_job_twice_keeps_the_first,
    job_transitions_are_conditional,
    jobs_page_newest_first_without_gaps_or_repeats,
    jobs_filter_by_state_repo_pool_and_time,
    runners_are_found_by_instance_and_transition_conditionally,
    users_are_unique_by_email,
    audit_events_append_and_filter,
    a_bad_cursor_is_refused,
    counters_count_every_hit_once_per_window,
    revoked_sessions_stay_revoked,
    lookups_by_an_oversized_value_find_nothing,
);

/// A fixed starting instant, so ids and times are deterministic in order.
pub fn t0() -> Time {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
}

/// The fixtures' ids, from one generator for the whole suite so that ids made
/// within one millisecond keep the order they were made in.
fn new_id(kind: IdKind, at: Time) -> String {
    static IDS: std::sync::LazyLock<crate::domain::Ulids> =
        std::sync::LazyLock::new(crate::domain::Ulids::default);
    crate::domain::IdSource::new_id(&*IDS, kind, at)
}

fn at(secs: i64) -> Time {
    t0() + chrono::Duration::seconds(secs)
}

pub fn project(name: &str, at: Time) -> Project {
    Project {
        id: new_id(IdKind::Project, at),
        spec: ProjectSpec {
            name: name.into(),
            scope: Scope::Repo,
            org: None,
            label: Label::parse(name).unwrap(),
            runner_group_id: 1,
            // Not the default, so every case that reads a project back
            // shows the store keeps it.
            allow_public_repos: true,
        },
        created_at: at,
        updated_at: at,
    }
}

pub fn pool(project_id: &str, name: &str, max_runners: u32, at: Time) -> Pool {
    Pool {
        id: new_id(IdKind::Pool, at),
        spec: PoolSpec {
            project_id: project_id.into(),
            name: name.into(),
            labels: [Label::parse("linux").unwrap()].into(),
            instance_types: vec!["m7g.large".into()],
            subnets: vec!["subnet-0abc1234".into()],
            security_groups: vec![],
            ami: "ami-0123456789abcdef0".into(),
            instance_profile: None,
            market: Market::OnDemand,
            max_runners,
            root_volume_gb: 30,
            boot_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(6 * 3600),
            idle_timeout: Duration::from_secs(300),
            priority: 0,
        },
        active_runners: 0,
        degraded: None,
        created_at: at,
        updated_at: at,
    }
}

pub fn binding(repo: &str, project_id: &str, at: Time) -> RepoBinding {
    RepoBinding {
        id: new_id(IdKind::Binding, at),
        spec: BindingSpec {
            repo: RepoName::parse(repo).unwrap(),
            project_id: project_id.into(),
        },
        created_at: at,
        updated_at: at,
    }
}

pub fn job(github_job_id: i64, repo: &str, at: Time) -> Job {
    Job {
        id: new_id(IdKind::Job, at),
        github_job_id,
        run_id: 1000 + github_job_id,
        run_attempt: 1,
        repo: repo.into(),
        installation_id: Some(42),
        labels: vec!["self-hosted".into(), "linux".into()],
        workflow_name: Some("CI".into()),
        job_name: Some("build".into()),
        sender: Some("octocat".into()),
        html_url: Some(format!(
            "https://github.com/{repo}/actions/runs/1/job/{github_job_id}"
        )),
        project_id: None,
        pool_id: None,
        runner_id: None,
        runner_name: None,
        state: JobState::Queued,
        conclusion: None,
        attempts: 0,
        failure_reason: None,
        cost_usd: None,
        waiting_for_capacity: false,
        transitions: vec![crate::domain::Transition {
            state: JobState::Queued,
            at,
            cause: TransitionCause::Webhook,
            note: None,
        }],
        created_at: at,
        updated_at: at,
    }
}

pub fn runner(pool: &Pool, instance_id: &str, at: Time) -> Runner {
    Runner {
        id: new_id(IdKind::Runner, at),
        pool_id: pool.id.clone(),
        project_id: pool.spec.project_id.clone(),
        job_id: None,
        name: format!("pacer-{instance_id}"),
        state: RunnerState::Pending,
        instance_id: Some(instance_id.into()),
        instance_type: Some("m7g.large".into()),
        availability_zone: Some("us-east-1a".into()),
        market: Some("on-demand".into()),
        price_per_hour_usd: Some(0.0816),
        github_runner_id: None,
        callback_token_id: Some("tok".into()),
        error_tail: None,
        job_ended_at: None,
        created_at: at,
        updated_at: at,
        version: 0,
    }
}

pub fn user(email: &str, at: Time) -> User {
    User {
        id: new_id(IdKind::User, at),
        email: email.into(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        oidc_subject: None,
        role: Role::Viewer,
        disabled: false,
        // Not the default, so reading a user back shows the store keeps it.
        session_generation: 3,
        created_at: at,
        updated_at: at,
    }
}

pub fn audit(action: &str, actor: &str, at: Time) -> AuditEvent {
    AuditEvent {
        id: new_id(IdKind::Audit, at),
        at,
        actor: Actor {
            kind: ActorKind::User,
            id: actor.into(),
        },
        client_ip: Some("127.0.0.1".into()),
        action: action.into(),
        target: Some("prj_x".into()),
        detail: json!({"name": "acme"}),
    }
}

/// Reads every page of a listing, checking page sizes as it goes.
async fn all_pages<T, F, Fut>(limit: u32, mut list: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Page<T>>>,
{
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let page = list(PageRequest {
            limit,
            cursor: cursor.clone(),
        })
        .await
        .expect("list");
        assert!(
            page.items.len() <= limit as usize,
            "a page never holds more than its limit"
        );
        let more = page.next_cursor.is_some();
        if more {
            assert!(
                !page.items.is_empty(),
                "a page with a next cursor is not empty"
            );
        }
        out.extend(page.items);
        cursor = page.next_cursor;
        if !more {
            return out;
        }
    }
    panic!("pagination did not end");
}

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
    assert_eq!(
        store
            .get_pool(&pl.id)
            .await
            .unwrap()
            .unwrap()
            .active_runners,
        7
    );
    assert!(!store.reserve_capacity(&pl.id).await.unwrap());

    for _ in 0..7 {
        assert!(store.release_capacity(&pl.id).await.unwrap());
    }
    assert!(
        !store.release_capacity(&pl.id).await.unwrap(),
        "never below zero"
    );
    assert_eq!(
        store
            .get_pool(&pl.id)
            .await
            .unwrap()
            .unwrap()
            .active_runners,
        0
    );
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

pub async fn inserting_a_job_twice_keeps_the_first(store: Arc<dyn Store>) {
    let first = job(7, "acme/app", at(0));
    assert_eq!(store.insert_job(&first).await.unwrap(), Inserted::Created);
    let redelivery = job(7, "acme/app", at(1));
    match store.insert_job(&redelivery).await.unwrap() {
        Inserted::Existing(existing) => assert_eq!(*existing, first),
        Inserted::Created => panic!("a redelivery must not create a second job"),
    }
    assert_eq!(store.get_job(&redelivery.id).await.unwrap(), None);
    assert_eq!(
        store.job_by_github_id(7).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.get_job(&first.id).await.unwrap(), Some(first));
}

pub async fn job_transitions_are_conditional(store: Arc<dyn Store>) {
    let queued = job(1, "acme/app", at(0));
    store.insert_job(&queued).await.unwrap();

    let mut claimed = queued.clone();
    let changes = JobChanges {
        pool_id: Some("pool_x".into()),
        ..Default::default()
    };
    claimed.apply(
        JobState::Claimed,
        TransitionCause::Orchestrator,
        &changes,
        at(1),
    );
    store
        .transition_job(JobState::Queued, &claimed)
        .await
        .unwrap();
    assert_eq!(
        store.get_job(&queued.id).await.unwrap(),
        Some(claimed.clone())
    );

    // A second orchestrator holding the same queued copy loses.
    assert!(matches!(
        store.transition_job(JobState::Queued, &claimed).await,
        Err(StoreError::Stale)
    ));
    // A transition from a state the job is not in is refused.
    let mut running = claimed.clone();
    running.apply(
        JobState::Running,
        TransitionCause::Webhook,
        &JobChanges::default(),
        at(2),
    );
    assert!(matches!(
        store.transition_job(JobState::Starting, &running).await,
        Err(StoreError::Stale)
    ));
    store
        .transition_job(JobState::Claimed, &running)
        .await
        .unwrap();

    let stored = store.get_job(&queued.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(
        stored
            .transitions
            .iter()
            .map(|t| t.state)
            .collect::<Vec<_>>(),
        vec![JobState::Queued, JobState::Claimed, JobState::Running]
    );
    let ghost = job(99, "acme/app", at(3));
    assert!(matches!(
        store.transition_job(JobState::Queued, &ghost).await,
        Err(StoreError::Stale | StoreError::NotFound)
    ));

    // The mark of a job handed back for a full pool is kept.
    let waiting = job(2, "acme/app", at(4));
    store.insert_job(&waiting).await.unwrap();
    let mut claimed = waiting.clone();
    claimed.apply(
        JobState::Claimed,
        TransitionCause::Orchestrator,
        &JobChanges::default(),
        at(5),
    );
    store
        .transition_job(JobState::Queued, &claimed)
        .await
        .unwrap();
    let mut handed_back = claimed.clone();
    let full = JobChanges {
        waiting_for_capacity: true,
        ..Default::default()
    };
    handed_back.apply(
        JobState::Queued,
        TransitionCause::Orchestrator,
        &full,
        at(6),
    );
    store
        .transition_job(JobState::Claimed, &handed_back)
        .await
        .unwrap();
    assert!(
        store
            .get_job(&waiting.id)
            .await
            .unwrap()
            .unwrap()
            .waiting_for_capacity
    );
}

pub async fn jobs_page_newest_first_without_gaps_or_repeats(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..7 {
        let j = job(100 + n, "acme/app", at(n));
        store.insert_job(&j).await.unwrap();
        ids.push(j.id);
    }
    let listed: Vec<String> = all_pages(3, |page| {
        let store = store.clone();
        async move { store.list_jobs(&JobFilter::default(), &page).await }
    })
    .await
    .into_iter()
    .map(|j| j.id)
    .collect();
    let oldest_first: Vec<String> = all_pages(3, |page| {
        let store = store.clone();
        async move {
            store
                .list_jobs(
                    &JobFilter {
                        oldest_first: true,
                        ..Default::default()
                    },
                    &page,
                )
                .await
        }
    })
    .await
    .into_iter()
    .map(|j| j.id)
    .collect();
    assert_eq!(oldest_first, ids, "every job once, oldest first when asked");
    ids.reverse();
    assert_eq!(listed, ids, "every job once, newest first");
}

pub async fn jobs_filter_by_state_repo_pool_and_time(store: Arc<dyn Store>) {
    for n in 0..6 {
        let repo = if n % 2 == 0 { "acme/app" } else { "acme/lib" };
        let mut j = job(200 + n, repo, at(n * 60));
        if n >= 4 {
            let from = j.state;
            j.apply(
                JobState::Claimed,
                TransitionCause::Orchestrator,
                &JobChanges {
                    pool_id: Some("pool_a".into()),
                    ..Default::default()
                },
                at(n * 60 + 1),
            );
            let mut fresh = j.clone();
            fresh.state = from;
            fresh.pool_id = None;
            fresh.transitions.pop();
            fresh.updated_at = fresh.created_at;
            store.insert_job(&fresh).await.unwrap();
            store.transition_job(from, &j).await.unwrap();
        } else {
            store.insert_job(&j).await.unwrap();
        }
    }
    let list = |f: JobFilter| {
        let store = store.clone();
        async move {
            all_pages(2, |page| {
                let store = store.clone();
                let f = f.clone();
                async move { store.list_jobs(&f, &page).await }
            })
            .await
            .into_iter()
            .map(|j| j.github_job_id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Claimed),
            ..Default::default()
        })
        .await,
        vec![205, 204]
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            ..Default::default()
        })
        .await,
        vec![203, 202, 201, 200]
    );
    assert_eq!(
        list(JobFilter {
            repo: Some("acme/lib".into()),
            ..Default::default()
        })
        .await,
        vec![205, 203, 201]
    );
    assert_eq!(
        list(JobFilter {
            pool_id: Some("pool_a".into()),
            ..Default::default()
        })
        .await,
        vec![205, 204]
    );
    assert_eq!(
        list(JobFilter {
            github_job_id: Some(202),
            ..Default::default()
        })
        .await,
        vec![202]
    );
    assert_eq!(
        list(JobFilter {
            from: Some(at(60)),
            to: Some(at(180)),
            ..Default::default()
        })
        .await,
        vec![202, 201],
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Queued),
            repo: Some("acme/app".into()),
            from: Some(at(60)),
            ..Default::default()
        })
        .await,
        vec![202]
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

pub async fn a_bad_cursor_is_refused(store: Arc<dyn Store>) {
    let bad = PageRequest {
        limit: 5,
        cursor: Some("not-a-cursor!".into()),
    };
    assert!(matches!(
        store.list_jobs(&JobFilter::default(), &bad).await,
        Err(StoreError::BadCursor)
    ));
    assert!(matches!(
        store.list_projects(&bad).await,
        Err(StoreError::BadCursor)
    ));
    assert!(matches!(
        store.list_audit(&AuditFilter::default(), &bad).await,
        Err(StoreError::BadCursor)
    ));
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
    assert_eq!(
        store
            .get_pool(&pl.id)
            .await
            .unwrap()
            .unwrap()
            .active_runners,
        1
    );
    assert!(
        !store
            .set_capacity("pool_01jzzzzzzzzzzzzzzzzzzzzzzz", 0, 1)
            .await
            .unwrap(),
        "no such pool"
    );
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

/// Ids, names and emails reach lookups from outside (a path, a sign-in);
/// one longer than any key the store can hold finds nothing, rather than
/// failing the request (DynamoDB refuses a key over 2 KiB outright).
pub async fn lookups_by_an_oversized_value_find_nothing(store: Arc<dyn Store>) {
    let huge = "x".repeat(4096);
    assert!(store.get_project(&huge).await.unwrap().is_none());
    assert!(store.get_pool(&huge).await.unwrap().is_none());
    assert!(store.get_binding(&huge).await.unwrap().is_none());
    assert!(store.get_job(&huge).await.unwrap().is_none());
    assert!(store.get_runner(&huge).await.unwrap().is_none());
    assert!(store.runner_by_instance(&huge).await.unwrap().is_none());
    assert!(store.runner_by_name(&huge).await.unwrap().is_none());
    assert!(store.get_user(&huge).await.unwrap().is_none());
    assert!(
        store
            .user_by_email(&format!("{huge}@example.com"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.user_by_oidc_subject(&huge).await.unwrap().is_none());
    assert!(
        store
            .binding_for_repo(&format!("{huge}/{huge}"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.is_session_revoked(&huge).await.unwrap());
}
