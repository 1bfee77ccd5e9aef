//! The store conformance suite: the specification of [`Store`], run against
//! every adapter (SQLite in-process, DynamoDB on moto_server). Each case is
//! a public async function taking a fresh, empty store; the black-box test
//! binary runs every case against every adapter.
//!
//! One module per trait — `config` ([`ConfigStore`]), `runners`
//! ([`RunnerStore`]), `jobs` ([`JobStore`]), `users` ([`UserStore`]), `audit`
//! ([`AuditStore`]), `self_service` ([`SelfServiceStore`]), `usage` ([`UsageStore`]) — holds that trait's specification; this file holds the
//! fixtures and the cases every aggregate shares (cursors, oversized keys).
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

mod audit;
mod config;
mod jobs;
mod runners;
mod self_service;
mod usage;
mod users;

pub use audit::*;
pub use config::*;
pub use jobs::*;
pub use runners::*;
pub use self_service::*;
pub use usage::*;
pub use users::*;

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
    // ConfigStore
    projects_crud,
    project_names_are_unique_ignoring_case,
    project_with_pools_or_bindings_cannot_be_deleted,
    pools_need_an_existing_project,
    pool_names_are_unique_within_a_project,
    updating_a_pool_keeps_its_reserved_capacity,
    pool_holding_capacity_cannot_be_deleted,
    bindings_are_unique_per_repo_and_found_by_repo_key,
    // RunnerStore
    capacity_never_exceeds_max_with_50_concurrent_reservers,
    capacity_is_repaired_only_from_the_value_read,
    runners_are_found_by_instance_and_transition_conditionally,
    // JobStore
    inserting_a_job_twice_keeps_the_first,
    job_transitions_are_conditional,
    a_job_write_from_an_older_copy_in_the_same_state_is_refused,
    a_launch_claims_its_job_capacity_and_runner_at_once_or_not_at_all,
    jobs_page_newest_first_without_gaps_or_repeats,
    jobs_filter_by_state_repo_pool_and_time,
    // UserStore
    users_are_unique_by_email,
    counters_count_every_hit_once_per_window,
    revoked_sessions_stay_revoked,
    // AuditStore
    audit_events_append_and_filter,
    // SelfServiceStore
    a_token_is_used_once_even_by_ten_concurrent_requests,
    an_owner_never_holds_more_live_runners_than_its_limit,
    self_runners_are_unique_by_name_and_updated_conditionally,
    a_deleted_runners_name_is_free_again,
    self_runners_list_newest_first_by_owner_and_status,
    label_policies_are_kept_per_identity,
    security_events_append_and_filter,
    a_sweep_keeps_what_has_not_expired,
    // UsageStore
    a_contribution_counts_once_even_added_by_ten_at_once,
    usage_adds_up_per_hour_and_day_and_reads_by_window,
    a_histogram_keeps_every_bucket_through_the_store,
    a_budget_line_is_marked_once_a_month_and_spend_is_kept_beside_it,
    // every aggregate
    a_bad_cursor_is_refused,
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
        usage: None,
        waiting_for_capacity: false,
        version: 0,
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
        repo: None,
        installation_id: None,
        name: format!("pacer-{instance_id}"),
        state: RunnerState::Pending,
        instance_id: Some(instance_id.into()),
        instance_type: Some("m7g.large".into()),
        availability_zone: Some("us-east-1a".into()),
        market: Some("on-demand".into()),
        price: Some(crate::domain::Price {
            micro_usd_per_hour: 81_600,
            source: crate::domain::PriceSource::PricingApi,
        }),
        volume_micro_usd_per_hour: 3_288,
        github_runner_id: None,
        callback_token_id: Some("tok".into()),
        error_tail: None,
        job_ended_at: None,
        registered_at: None,
        launched_at: None,
        ran_job_id: None,
        job_started_at: None,
        cost: None,
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
