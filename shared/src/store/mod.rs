//! The store port: where every project, pool, binding, job, runner, user and
//! audit event lives. The store is the truth (docs/architecture.md): state changes are
//! conditional writes, capacity is reserved by conditional update, and the
//! adapters — SQLite for one process, DynamoDB for Lambda — pass one
//! conformance suite ([`conformance`]), which is the specification of these
//! traits.
//!
//! One trait per aggregate — [`ConfigStore`] (projects, pools, bindings),
//! [`RunnerStore`] (runners and pool capacity), [`JobStore`], [`UserStore`]
//! (users, login counters, revoked sessions), [`AuditStore`],
//! [`SelfServiceStore`] (token uses, self-service runners, label policies,
//! security events), [`UsageStore`] (cost and duration roll-ups) — and
//! [`Store`], which is all of them.

pub mod conformance;
pub mod dynamodb;
pub mod sqlite;

use async_trait::async_trait;

use crate::domain::budget::{BudgetLine, BudgetStanding};
use crate::domain::cost::MicroUsd;
use crate::domain::self_service::{
    IdentityPolicy, SecurityEvent, SecurityEventKind, SelfRunnerStatus, SelfServiceRunner,
};
use crate::domain::usage::{Contribution, Period, UsageBucket};
use crate::domain::{
    AuditEvent, Job, JobState, Pool, Project, RepoBinding, Runner, RunnerState, Time, User,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write; the text says which.
    #[error("{0}")]
    Conflict(String),
    /// The object has dependents; the text names the kind.
    #[error("{0}")]
    InUse(String),
    /// A referenced parent (e.g. a pool's project) does not exist.
    #[error("{0} does not exist")]
    MissingParent(&'static str),
    /// A conditional write found the object changed: a stale or repeated
    /// transition. Callers treat it as "someone else already did it".
    #[error("the object changed underneath this write")]
    Stale,
    #[error("the page cursor is not valid")]
    BadCursor,
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The refusals of [`SelfServiceStore`] both adapters give in the same words.
impl StoreError {
    fn runner_name_taken(name: &str) -> Self {
        StoreError::Conflict(format!("a runner named {name:?} exists"))
    }

    fn runner_left_deleted(runner: &SelfServiceRunner) -> Self {
        StoreError::Conflict(format!(
            "runner {} would be {} after being deleted: a deleted runner is never created nor \
             revived",
            runner.id,
            runner.status.as_str()
        ))
    }
}

/// `?limit=&cursor=` of a list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;

    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The limit, clamped to 1..=MAX_LIMIT (0 means the default).
    pub fn limit(&self) -> usize {
        match self.limit {
            0 => Self::DEFAULT_LIMIT as usize,
            n => n.min(Self::MAX_LIMIT) as usize,
        }
    }
}

/// One page of a list: `{items, next_cursor}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Filters of `GET /api/jobs`. Jobs list newest first, or oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Oldest first (the orchestrator waking the longest-waiting job).
    pub oldest_first: bool,
    pub state: Option<JobState>,
    pub project_id: Option<String>,
    pub pool_id: Option<String>,
    /// Lower-cased `owner/name`.
    pub repo: Option<String>,
    pub github_job_id: Option<i64>,
    /// Created at or after.
    pub from: Option<Time>,
    /// Created before.
    pub to: Option<Time>,
}

/// Filters of `GET /api/runners`. Runners list newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerFilter {
    pub pool_id: Option<String>,
    /// Only runners in one of these states (empty: all).
    pub states: Vec<RunnerState>,
}

/// Filters of `GET /api/audit`. Events list newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// This action exactly.
    pub action: Option<String>,
    /// Actions beginning with this (`runner.` for every runner event).
    pub action_prefix: Option<String>,
    /// The actor's id (a user id, a GitHub login, `orchestrator`, …).
    pub actor: Option<String>,
    pub from: Option<Time>,
    pub to: Option<Time>,
}

/// Filters of the self-service runner listings. Newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelfRunnerFilter {
    /// `<trusted identity>:<claim value>`.
    pub owner: Option<String>,
    pub status: Option<SelfRunnerStatus>,
}

/// Filters of `GET /api/v1/admin/security-events`. Newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityEventFilter {
    pub kind: Option<SecurityEventKind>,
    /// The owner the token spoke for.
    pub identity: Option<String>,
    /// At or after.
    pub from: Option<Time>,
    /// Before.
    pub to: Option<Time>,
}

/// What inserting a job found.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The job is new.
    Created,
    /// A job with this GitHub job id exists already (a redelivery): here it is.
    Existing(Box<Job>),
}

/// Every aggregate's store: what the services hold (`Arc<dyn Store>`, whose
/// methods need no import). Its methods live in one trait per aggregate, so
/// code that uses one aggregate can say so.
pub trait Store:
    ConfigStore
    + RunnerStore
    + JobStore
    + UserStore
    + AuditStore
    + SelfServiceStore
    + UsageStore
    + 'static
{
    /// Which adapter this is, for logs and the bench table.
    fn engine(&self) -> &'static str;
}

/// Configuration objects: projects, their pools and their repo bindings.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    // Projects. Names are unique (case-insensitively).
    async fn create_project(&self, project: &Project) -> StoreResult<()>;
    async fn get_project(&self, id: &str) -> StoreResult<Option<Project>>;
    async fn list_projects(&self, page: &PageRequest) -> StoreResult<Page<Project>>;
    /// Replaces the writable fields; `NotFound` if gone, `Conflict` on a taken name.
    async fn update_project(&self, project: &Project) -> StoreResult<()>;
    /// `InUse` while any pool or binding names the project.
    async fn delete_project(&self, id: &str) -> StoreResult<()>;

    // Pools. Names are unique within a project (case-insensitively).
    /// `MissingParent("project")` when the project is gone.
    async fn create_pool(&self, pool: &Pool) -> StoreResult<()>;
    async fn get_pool(&self, id: &str) -> StoreResult<Option<Pool>>;
    async fn list_pools(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<Pool>>;
    /// Replaces the writable fields, never `active_runners`.
    async fn update_pool(&self, pool: &Pool) -> StoreResult<()>;
    /// `InUse` while the pool holds capacity for live runners.
    async fn delete_pool(&self, id: &str) -> StoreResult<()>;

    // Repo bindings. A repo is bound to at most one project.
    /// `Conflict` when the repo is bound already; `MissingParent("project")`.
    async fn create_binding(&self, binding: &RepoBinding) -> StoreResult<()>;
    async fn get_binding(&self, id: &str) -> StoreResult<Option<RepoBinding>>;
    /// The binding of a repo by its lower-cased `owner/name`.
    async fn binding_for_repo(&self, repo_key: &str) -> StoreResult<Option<RepoBinding>>;
    async fn list_bindings(
        &self,
        project_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<RepoBinding>>;
    async fn update_binding(&self, binding: &RepoBinding) -> StoreResult<()>;
    async fn delete_binding(&self, id: &str) -> StoreResult<()>;
}

/// Runners, and the pool capacity they hold.
#[async_trait]
pub trait RunnerStore: Send + Sync {
    // Capacity: a pool's `active_runners` counter.
    /// Takes one unit of the pool's capacity if `active_runners < max_runners`.
    /// Returns whether it did. Never exceeds the max, however many callers race.
    async fn reserve_capacity(&self, pool_id: &str) -> StoreResult<bool>;
    /// Gives one unit back; never goes below zero. Returns whether it did.
    async fn release_capacity(&self, pool_id: &str) -> StoreResult<bool>;
    /// Sets `active_runners` to `actual` if it is still `expected`: the
    /// reaper repairing drift, safely against concurrent reservations.
    async fn set_capacity(&self, pool_id: &str, expected: u32, actual: u32) -> StoreResult<bool>;

    // Runners.
    async fn insert_runner(&self, runner: &Runner) -> StoreResult<()>;
    async fn get_runner(&self, id: &str) -> StoreResult<Option<Runner>>;
    async fn runner_by_instance(&self, instance_id: &str) -> StoreResult<Option<Runner>>;
    /// The runner registered under `name` (runner names are unique: they
    /// carry the runner's id). The default walks the list; adapters with an
    /// index override it.
    async fn runner_by_name(&self, name: &str) -> StoreResult<Option<Runner>> {
        let every = RunnerFilter::default();
        let mut pages = Pages::start();
        while let Some(page) = pages.next_request() {
            let listed = self.list_runners(&every, &page).await?;
            if let Some(found) = pages.items(listed).into_iter().find(|r| r.name == name) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
    async fn list_runners(
        &self,
        filter: &RunnerFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Runner>>;
    /// Writes `runner` only if the stored one is still in `from` and at
    /// version `runner.version - 1` (the caller read it, changed it, and
    /// bumped the version); otherwise `Stale`.
    async fn transition_runner(&self, from: RunnerState, runner: &Runner) -> StoreResult<()>;
}

/// Jobs: one per GitHub job pacer was asked to run.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Inserts a job unless one with its GitHub job id exists (idempotent).
    async fn insert_job(&self, job: &Job) -> StoreResult<Inserted>;
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>>;
    async fn job_by_github_id(&self, github_job_id: i64) -> StoreResult<Option<Job>>;
    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>>;
    /// Writes `job` (already moved to its new state) only if the stored job
    /// is still in `from` and at the version before `job.version`; otherwise
    /// `Stale`. This is every job state change.
    async fn transition_job(&self, from: JobState, job: &Job) -> StoreResult<()>;
    /// One request for the start of a launch: the job's move (conditional as
    /// in [`JobStore::transition_job`]), one unit of the runner's pool's
    /// capacity (as [`RunnerStore::reserve_capacity`] takes it), and the new
    /// runner record — all three, or none.
    async fn claim_for_launch(
        &self,
        from: JobState,
        job: &Job,
        runner: &Runner,
    ) -> StoreResult<Claim>;
    /// A job's move and its runner's in one request, each conditional as in
    /// [`JobStore::transition_job`] and [`RunnerStore::transition_runner`]:
    /// both, or neither (`Stale`).
    async fn transition_job_and_runner(
        &self,
        job_from: JobState,
        job: &Job,
        runner_from: RunnerState,
        runner: &Runner,
    ) -> StoreResult<()>;
}

/// What [`JobStore::claim_for_launch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed, capacity taken, runner recorded.
    Claimed,
    /// The pool is at `max_runners` (or gone): nothing was written.
    PoolFull,
    /// The job is not where the caller read it: nothing was written.
    Stale,
}

/// Console users, and what their sign-ins need kept: login rate-limit
/// counters and revoked sessions.
#[async_trait]
pub trait UserStore: Send + Sync {
    // Users. Emails are unique.
    /// `Conflict` when the email is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self, page: &PageRequest) -> StoreResult<Page<User>>;
    /// The user an OIDC subject (the IdP's `sub`) belongs to. The default
    /// walks the users (there are few); adapters with an index override it.
    async fn user_by_oidc_subject(&self, subject: &str) -> StoreResult<Option<User>> {
        let mut pages = Pages::start();
        while let Some(page) = pages.next_request() {
            let listed = self.list_users(&page).await?;
            if let Some(found) = pages
                .items(listed)
                .into_iter()
                .find(|u| u.oidc_subject.as_deref() == Some(subject))
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
    async fn update_user(&self, user: &User) -> StoreResult<()>;

    // Console auth support: fixed-window counters (login rate limits that
    // hold across Lambda instances) and revoked sessions. Both expire by
    // themselves (DynamoDB TTL; SQLite prunes as it goes).
    /// Adds one to the counter `key` for the window starting at
    /// `window_start` and returns the new count. Atomic: concurrent hits
    /// each see a different count. `expires_at` bounds how long it is kept.
    async fn hit_counter(
        &self,
        key: &str,
        window_start: Time,
        expires_at: Time,
    ) -> StoreResult<u64>;
    /// Takes one hit back from the counter (a login that succeeded), never
    /// below zero; a counter that does not exist stays absent.
    async fn refund_hit(&self, key: &str, window_start: Time) -> StoreResult<()>;
    /// Marks a session (its token id) revoked until `expires_at`, when the
    /// token would have expired anyway.
    async fn revoke_session(&self, session_id: &str, expires_at: Time) -> StoreResult<()>;
    async fn is_session_revoked(&self, session_id: &str) -> StoreResult<bool>;
}

/// The audit log: append-only.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
}

/// Self-service runners (`docs/self-service.md`): the single use of each
/// workload token, the runners machines asked for, the label policies
/// administrators set, and the security events refusals leave.
#[async_trait]
pub trait SelfServiceStore: Send + Sync {
    /// Records the first use of the token `(issuer, jti)`, remembered until
    /// `expires_at`; `false` when it was used before and has not expired
    /// by `now` (a replay). Concurrent calls with one token: one `true`.
    async fn use_token(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: Time,
        now: Time,
    ) -> StoreResult<bool>;
    /// Inserts a runner unless its owner holds `max_live` live runners
    /// already (`Ok(false)`, nothing written); `Conflict` when a runner that
    /// is not deleted holds the name. A deleted runner stays listed but
    /// holds its name no longer: GitHub has freed it. Concurrent calls never
    /// take an owner past `max_live`, nor give one name to two runners. A
    /// runner is never created deleted (`Conflict`).
    async fn create_self_runner(
        &self,
        runner: &SelfServiceRunner,
        max_live: u32,
    ) -> StoreResult<bool>;
    /// The runner holding `name`, else the newest deleted one that had it.
    async fn get_self_runner(&self, name: &str) -> StoreResult<Option<SelfServiceRunner>>;
    async fn list_self_runners(
        &self,
        filter: &SelfRunnerFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SelfServiceRunner>>;
    /// Replaces the runner (found by its id) written as version
    /// `runner.version - 1` in status `from`: `Stale` if another write came
    /// between. A move out of a live status frees the owner's place, a move
    /// into one takes a place; a move into `deleted` frees the name. No
    /// runner leaves `deleted` (`Conflict`): its name may be another's.
    async fn update_self_runner(
        &self,
        from: SelfRunnerStatus,
        runner: &SelfServiceRunner,
    ) -> StoreResult<()>;

    /// Creates or replaces the policy of `policy.identity`.
    async fn put_label_policy(&self, policy: &IdentityPolicy) -> StoreResult<()>;
    async fn get_label_policy(&self, identity: &str) -> StoreResult<Option<IdentityPolicy>>;
    /// In the order of their identities.
    async fn list_label_policies(&self, page: &PageRequest) -> StoreResult<Page<IdentityPolicy>>;
    /// `NotFound` when there is none.
    async fn delete_label_policy(&self, identity: &str) -> StoreResult<()>;

    async fn append_security_event(&self, event: &SecurityEvent) -> StoreResult<()>;
    async fn list_security_events(
        &self,
        filter: &SecurityEventFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<SecurityEvent>>;

    /// Forgets token uses expired by `now` and runners deleted before
    /// `deleted_before`; how many went. On DynamoDB the table's TTL does
    /// this by itself and the sweep has nothing to do.
    async fn sweep_self_service(&self, now: Time, deleted_before: Time) -> StoreResult<u64>;
}

/// Usage roll-ups: per hour and per day, what settled jobs and idle runners
/// cost and how long the jobs waited (docs/cost.md).
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds `contribution` to the bucket of its hour and of its day, in one
    /// write, once: `false` when one with its id was added before (nothing
    /// is written). Concurrent calls with one id: one `true`.
    async fn add_usage(&self, contribution: &Contribution) -> StoreResult<bool>;
    /// The buckets of `period` whose start is in `[from, to)`, in start
    /// order; one read per bucket, whatever the jobs in it.
    async fn usage_buckets(
        &self,
        period: Period,
        from: Time,
        to: Time,
    ) -> StoreResult<Vec<UsageBucket>>;
    /// Records what `budget` had spent in `month` (`YYYY-MM`) when counted
    /// at `at`, keeping the lines it crossed.
    async fn put_budget_spend(
        &self,
        month: &str,
        budget: &str,
        spent: MicroUsd,
        at: Time,
    ) -> StoreResult<()>;
    /// Marks that `budget` crossed `line` in `month` at `at`, once: `true`
    /// the first time, `false` ever after (nothing is written). Concurrent
    /// calls for one line: one `true`.
    async fn mark_budget_line(
        &self,
        month: &str,
        budget: &str,
        line: BudgetLine,
        at: Time,
    ) -> StoreResult<bool>;
    /// What the store holds of `month`'s budgets, by name.
    async fn budget_standings(&self, month: &str) -> StoreResult<Vec<BudgetStanding>>;
}

/// Where a walk through a listing stands: the request for its next page.
/// Every loop over a listing goes through it, so stopping early is a plain
/// `break` or `return`:
///
/// ```text
/// let mut pages = Pages::start();
/// while let Some(page) = pages.next_request() {
///     for item in pages.items(store.list_projects(&page).await?) {
///         // …
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Pages {
    next: Option<PageRequest>,
}

impl Pages {
    /// At the first page, asking for as many items as a page may hold.
    pub fn start() -> Self {
        Self {
            next: Some(PageRequest::first(PageRequest::MAX_LIMIT)),
        }
    }

    /// The request for the next page; `None` once the last has been read.
    pub fn next_request(&mut self) -> Option<PageRequest> {
        self.next.take()
    }

    /// A page's items, remembering where the page after it starts.
    pub fn items<T>(&mut self, page: Page<T>) -> Vec<T> {
        self.next = page.next_cursor.map(|cursor| PageRequest {
            cursor: Some(cursor),
            ..PageRequest::first(PageRequest::MAX_LIMIT)
        });
        page.items
    }
}

/// Every item of a listing: `all_pages!(|p| store.list_pools(None, p))`
/// (a failed page returns from the enclosing function, through `?`).
macro_rules! all_pages {
    ($list:expr) => {{
        let mut items = Vec::new();
        let mut pages = $crate::store::Pages::start();
        while let Some(page) = pages.next_request() {
            items.extend(pages.items($list(&page).await?));
        }
        items
    }};
}
pub(crate) use all_pages;

/// Every job `filter` selects, page after page: for tools, the bench and
/// tests (request paths page themselves).
pub async fn every_job(
    store: &(impl JobStore + ?Sized),
    filter: &JobFilter,
) -> StoreResult<Vec<Job>> {
    Ok(all_pages!(|p| store.list_jobs(filter, p)))
}

/// Every runner `filter` selects, page after page (see [`every_job`]).
pub async fn every_runner(
    store: &(impl RunnerStore + ?Sized),
    filter: &RunnerFilter,
) -> StoreResult<Vec<Runner>> {
    Ok(all_pages!(|p| store.list_runners(filter, p)))
}
