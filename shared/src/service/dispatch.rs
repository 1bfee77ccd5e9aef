//! The orchestrator: turns a queued job into a launched runner (docs/architecture.md, "How a job flows").
//!
//! For each "look at job X" message, in one conditional store request:
//! claim the job (`queued → claimed`), reserve pool capacity (never above
//! `max_runners`) and record the runner with its one-time callback token.
//! Then launch, and mark the job `starting` with the runner's launch facts
//! (one request again). Any failure gives the reservation back.
//! A job waiting for capacity is handed back to `queued` and its message is
//! acknowledged: the store is the truth, and [`capacity::release`] re-enqueues
//! a waiting job the moment a slot frees, so waiting never drains a message
//! into a dead-letter queue. Only jobs marked waiting are woken (every
//! other queued job still has a message of its own), and a woken job that
//! launches wakes the next one if the pool still has room, so two slots
//! freed at once never leave a waiting job behind.

use std::time::Duration;

use serde_json::json;

use super::audit::record;
use super::budgets;
use super::capacity;
use super::jobs::{Advanced, advance, advance_with_runner, starting_on};
use super::runner_moves::update_runner;
use super::{Caller, Ports, ServiceError, ServiceResult, Which};
use crate::auth::callback_token::{self, Claims};
use crate::config::Secret;
use crate::domain::cost::volume_per_hour;
use crate::domain::ids::is_id_of;
use crate::domain::job::JobChanges;
use crate::domain::{Degraded, IdKind, Job, JobState, Pool, Runner, RunnerState, TransitionCause};
use crate::fleet::{FleetError, JobRef, LaunchRequest, RunnerCallback};
use crate::queue::{Delivery, Queue};
use crate::store::{Claim, StoreError};

/// What handling one message did; the host acknowledges all but `Retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    Launched {
        runner_id: String,
    },
    /// The job needs no runner (gone, not queued, claimed elsewhere, failed for good).
    NotNeeded(&'static str),
    /// No job has the id: a row still on its way (the webhook sends a hint
    /// beside its write), a write that failed, or a stray message.
    NotStored,
    /// The pool is full; the job is queued again and will be re-enqueued
    /// when capacity frees.
    WaitingForCapacity,
    /// A launch failed in a way that may pass; the job is queued again and
    /// the message should come back later.
    Retry(String),
    /// The pool is degraded (an account limit): the job is queued again and
    /// a delayed message will bring it back when the pool may launch.
    Deferred,
    /// An enforced budget over the pool is spent: the job stays queued,
    /// saying so on its timeline, and the reaper hands it back once the
    /// budget holds no more (a new month, a raised budget).
    Held,
}

/// Why a job whose pool is gone failed.
const POOL_DELETED: &str = "its pool was deleted before a runner was launched";

/// Receives of one message after which a job whose dispatch keeps failing
/// is failed rather than cycled forever (a poison message).
pub const POISON_RECEIVES: u32 = 10;

fn orchestrator() -> Caller {
    Caller::system("orchestrator")
}

pub use crate::domain::runner::runner_name;

/// Handles one "look at job X" message.
#[tracing::instrument(skip(ports), fields(job_id = %job_id))]
pub async fn dispatch(ports: &Ports, job_id: &str) -> ServiceResult<Dispatched> {
    let Some(job) = stored_job(ports, job_id).await? else {
        return Ok(Dispatched::NotStored);
    };
    if job.state != JobState::Queued {
        return Ok(Dispatched::NotNeeded("not queued"));
    }
    let Some(pool_id) = job.pool_id.clone() else {
        return Ok(Dispatched::NotNeeded("no pool"));
    };
    let Some(pool) = ports.catalog.pool(ports, &pool_id).await? else {
        fail_job(ports, &job, POOL_DELETED).await?;
        return Ok(Dispatched::NotNeeded("pool deleted"));
    };
    if let Some(degraded) = pool
        .degraded
        .as_ref()
        .filter(|d| d.retry_at > ports.clock.now())
    {
        let wait = (degraded.retry_at - ports.clock.now())
            .to_std()
            .unwrap_or_default();
        ports.queue.send(job_id, Some(wait)).await?;
        return Ok(Dispatched::Deferred);
    }
    if let Some(note) = budgets::hold(ports, &pool).await? {
        // Told once: every pass of one hold writes the same note.
        let told = job.transitions.last().and_then(|t| t.note.as_deref()) == Some(note.as_str());
        if !told {
            let claimed = advance(
                ports,
                &job,
                JobState::Claimed,
                TransitionCause::Orchestrator,
                &JobChanges::default(),
            )
            .await?;
            if let Advanced::Moved(claimed) = claimed {
                let why = JobChanges {
                    note: Some(note),
                    ..Default::default()
                };
                hand_back(ports, &*claimed, &why).await?;
            }
        }
        return Ok(Dispatched::Held);
    }
    // The claim clears the mark; remember whether this job was woken by a freed slot.
    let was_waiting = job.waiting_for_capacity;
    let (job, runner, token) = match claim(ports, job, &pool).await? {
        Claimed::Launching(launching) => *launching,
        Claimed::Elsewhere => return Ok(Dispatched::NotNeeded("claimed elsewhere")),
        Claimed::PoolFull(job) => return wait_for_capacity(ports, *job, &pool).await,
    };
    match launch(ports, &job, &pool, runner, token).await {
        Ok(runner_id) => {
            if pool.degraded.is_some() {
                set_degraded(ports, &pool.id, None).await?;
            }
            // Another slot may have freed while this job was being woken.
            if was_waiting && capacity::has_room(ports, &pool.id).await? {
                capacity::wake_waiting(ports, &pool.id).await?;
            }
            Ok(Dispatched::Launched { runner_id })
        }
        Err(LaunchFailure::Fleet(FleetError::LimitExceeded(reason))) => {
            // The account, not the job: no attempt counted; the whole pool waits.
            capacity::release(ports, &pool.id).await?;
            let now = ports.clock.now();
            let cooldown = ports.settings.degraded_cooldown;
            let retry_at = now + chrono::Duration::from_std(cooldown).unwrap_or_default();
            set_degraded(
                ports,
                &pool.id,
                Some(Degraded {
                    reason: reason.clone(),
                    since: now,
                    retry_at,
                }),
            )
            .await?;
            let note = JobChanges {
                note: Some(format!("pool degraded: {reason}")),
                ..Default::default()
            };
            hand_back(ports, &job, &note).await?;
            ports.queue.send(job_id, Some(cooldown)).await?;
            Ok(Dispatched::Deferred)
        }
        Err(failure) => {
            capacity::release(ports, &pool.id).await?;
            handle_launch_failure(ports, &job, &pool, failure).await
        }
    }
}

/// What [`claim`] did.
enum Claimed {
    /// The job claimed, a unit of its pool taken and its runner recorded,
    /// with the runner's callback token: launch it.
    Launching(Box<(Job, Runner, Secret)>),
    /// The job is not queued any more.
    Elsewhere,
    /// The pool has no free slot; nothing was written. The job as read.
    PoolFull(Box<Job>),
}

/// Claims a queued job, takes a unit of its pool's capacity and records
/// the runner to launch for it, in one store request; a job that changed
/// since it was read is read again.
async fn claim(ports: &Ports, mut job: Job, pool: &Pool) -> ServiceResult<Claimed> {
    for _ in 0..8 {
        if job.state != JobState::Queued {
            return Ok(Claimed::Elsewhere);
        }
        let mut claimed = job.clone();
        let now = ports.clock.now();
        claimed.apply(
            JobState::Claimed,
            TransitionCause::Orchestrator,
            &JobChanges::default(),
            now,
        );
        let (runner, token) = new_runner(ports, &claimed, pool);
        match ports
            .store
            .claim_for_launch(job.state, &claimed, &runner)
            .await?
        {
            Claim::Claimed => return Ok(Claimed::Launching(Box::new((claimed, runner, token)))),
            Claim::PoolFull => return Ok(Claimed::PoolFull(Box::new(job))),
            Claim::Stale => match ports.store.get_job(&job.id).await? {
                Some(fresh) => job = fresh,
                None => return Ok(Claimed::Elsewhere),
            },
        }
    }
    Err(ServiceError::Conflict(format!(
        "job {} kept changing; try again",
        job.id
    )))
}

/// A job its full pool turned away: marked waiting, so the next freed slot
/// wakes it (claimed and handed back, as a launch that did not happen is).
async fn wait_for_capacity(ports: &Ports, job: Job, pool: &Pool) -> ServiceResult<Dispatched> {
    let job = match advance(
        ports,
        &job,
        JobState::Claimed,
        TransitionCause::Orchestrator,
        &JobChanges::default(),
    )
    .await?
    {
        Advanced::Moved(job) => *job,
        _ => return Ok(Dispatched::NotNeeded("claimed elsewhere")),
    };
    let note = JobChanges {
        note: Some(format!("pool {} is at max_runners", pool.spec.name)),
        waiting_for_capacity: true,
        ..Default::default()
    };
    hand_back(ports, &job, &note).await?;
    // A slot may have freed between the reservation and the hand-back,
    // and its releaser found nothing queued: look once more. The pool
    // came from the catalog's copy, which may still hold one deleted
    // elsewhere since: then no slot ever frees.
    match ports.store.get_pool(&pool.id).await? {
        None => {
            fail_job(ports, &job, POOL_DELETED).await?;
            Ok(Dispatched::NotNeeded("pool deleted"))
        }
        Some(now) => {
            if now.active_runners < now.spec.max_runners {
                ports.queue.send(&job.id, None).await?;
            }
            Ok(Dispatched::WaitingForCapacity)
        }
    }
}

/// Pauses before each look for a job that is not there: a write in flight
/// lands within these, one that does not is retried by the queue. A
/// webhook whose queue is a service (SQS) sends the hint beside the row's
/// write, so its hint may come first.
const ROW_WAITS_MS: [u64; 4] = [0, 10, 40, 150];

/// Receives of a hint whose job is not stored after which it is dropped:
/// the write failed, and GitHub's redelivery (or the reaper) brings the job
/// again under an id of its own.
pub const NOT_STORED_RECEIVES: u32 = 3;

/// How long a hint whose job is not stored yet waits to be received again.
const NOT_STORED_RETRY: Duration = Duration::from_secs(2);

/// The job a hint names, looked for again over a fraction of a second when
/// it is not there yet.
async fn stored_job(ports: &Ports, job_id: &str) -> ServiceResult<Option<Job>> {
    for pause in ROW_WAITS_MS {
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if let Some(job) = ports.store.get_job(job_id).await? {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// Gives a claimed job back to the queue's state without launching, saying
/// why; the caller decides when it is looked at again.
async fn hand_back<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Job>>,
    why: &JobChanges,
) -> ServiceResult<Advanced> {
    advance(
        ports,
        which,
        JobState::Queued,
        TransitionCause::Orchestrator,
        why,
    )
    .await
}

/// Marks a pool degraded (with the reason the API shows) or recovered, and
/// audits the change.
async fn set_degraded(
    ports: &Ports,
    pool_id: &str,
    degraded: Option<Degraded>,
) -> ServiceResult<()> {
    let Some(mut pool) = ports.store.get_pool(pool_id).await? else {
        return Ok(());
    };
    if pool.degraded == degraded {
        return Ok(());
    }
    let (action, detail) = match &degraded {
        Some(d) => (
            "pool.degraded",
            json!({"reason": d.reason, "retry_at": d.retry_at}),
        ),
        None => ("pool.recovered", json!({})),
    };
    pool.degraded = degraded;
    ports.store.update_pool(&pool).await?;
    ports.catalog.invalidate();
    record(ports, &orchestrator(), action, Some(pool_id), detail).await
}

/// Why a launch did not happen.
enum LaunchFailure {
    Fleet(FleetError),
    Store(ServiceError),
}

impl From<ServiceError> for LaunchFailure {
    fn from(e: ServiceError) -> Self {
        LaunchFailure::Store(e)
    }
}

impl From<StoreError> for LaunchFailure {
    fn from(e: StoreError) -> Self {
        LaunchFailure::Store(e.into())
    }
}

/// The runner to launch for a claimed job, not stored yet, and its
/// callback token.
fn new_runner(ports: &Ports, job: &Job, pool: &Pool) -> (Runner, Secret) {
    let now = ports.clock.now();
    let runner_id = ports.ids.new_id(IdKind::Runner, now);
    let token_id = hex::encode(rand::random::<[u8; 12]>());
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = Claims {
        runner_id: runner_id.clone(),
        token_id: token_id.clone(),
        issued_at: now.timestamp(),
        register_by: now.timestamp() + secs(pool.spec.boot_timeout),
        expires_at: now.timestamp() + secs(pool.spec.max_lifetime),
    };
    let token = Secret::new(callback_token::mint(
        ports.settings.callback_secret.expose().as_bytes(),
        &claims,
    ));
    let runner = Runner {
        callback_token_id: Some(token_id),
        repo: Some(job.repo.clone()),
        installation_id: job.installation_id,
        ..Runner::pending(
            runner_id.clone(),
            runner_name(&ports.settings.deployment, &runner_id),
            (&pool.id, &pool.spec.project_id),
            Some(job.id.clone()),
            now,
        )
    };
    (runner, token)
}

/// Launches the instance of a runner recorded with its job's claim and
/// moves the job to `starting`. Capacity is already reserved.
async fn launch(
    ports: &Ports,
    job: &Job,
    pool: &Pool,
    runner: Runner,
    token: Secret,
) -> Result<String, LaunchFailure> {
    let runner_id = runner.id.clone();
    let request = LaunchRequest {
        pool: pool.clone(),
        runner_id: runner_id.clone(),
        runner_name: runner.name.clone(),
        job: Some(JobRef {
            id: job.id.clone(),
            github_job_id: job.github_job_id,
            run_id: job.run_id,
            repo: job.repo.clone(),
            labels: job.labels.clone(),
            installation_id: job.installation_id,
        }),
        callback: RunnerCallback {
            url: ports.settings.callback_url.clone(),
            token,
        },
        attempt: job.attempts + 1,
        first_launch: true,
    };
    let launched = match ports.fleet.launch(&request).await {
        Ok(l) => {
            crate::failpoint::hit(crate::failpoint::Failpoint::AfterLaunch);
            l
        }
        Err(e) => {
            let tail = format!("launch failed: {e}");
            let failed = update_runner(ports, &runner, |r| {
                r.state = RunnerState::Failed;
                r.error_tail = Some(tail.clone());
                true
            })
            .await;
            if let Err(store_err) = failed {
                tracing::warn!(runner_id, error = %crate::error_text::display_chain(&store_err), "could not mark the runner failed");
            }
            return Err(LaunchFailure::Fleet(e));
        }
    };
    let launched_at = ports.clock.now();
    // A quote never blocks a launch: `None` when prices are unavailable.
    let price = ports
        .pricing
        .quote(
            &launched.instance_type,
            &launched.market,
            launched.availability_zone.as_deref(),
        )
        .await;
    let volume = volume_per_hour(
        pool.spec.root_volume_gb,
        ports.settings.ebs_micro_usd_per_gb_month,
    );
    // The job starting and the runner's launch facts, in one request. The
    // instance may already have called back: then the facts go on whatever
    // state the runner reached, and a job its runner already reported
    // running stays so.
    advance_with_runner(
        ports,
        job,
        // Only this launch's claim: a job handed back and claimed again by
        // another launch since is at a later version.
        |j| j.state == JobState::Claimed && j.version == job.version,
        JobState::Starting,
        TransitionCause::Orchestrator,
        &starting_on(&runner_id, None),
        &runner,
        |current| {
            current.launched_at = Some(launched_at);
            current.instance_id = Some(launched.instance_id.clone());
            current.instance_type = Some(launched.instance_type.clone());
            current
                .availability_zone
                .clone_from(&launched.availability_zone);
            current.market = Some(launched.market.clone());
            current.price = price;
            current.volume_micro_usd_per_hour = volume;
            true
        },
    )
    .await?;
    tracing::info!(job_id = %job.id, runner_id, instance_id = %launched.instance_id, instance_type = %launched.instance_type, "runner launched");
    Ok(runner_id)
}

async fn handle_launch_failure(
    ports: &Ports,
    job: &Job,
    pool: &Pool,
    failure: LaunchFailure,
) -> ServiceResult<Dispatched> {
    let (reason, permanent) = match failure {
        LaunchFailure::Store(e) => {
            // Give the job back so nothing is stuck in `claimed`, then fail the message.
            requeue(ports, job, JobChanges::default()).await?;
            return Err(e);
        }
        LaunchFailure::Fleet(FleetError::Throttled(reason)) => {
            // EC2 throttling the account is not the job's attempt: try later.
            let note = format!("throttled by EC2: {reason}");
            let changes = JobChanges {
                note: Some(note.clone()),
                ..Default::default()
            };
            requeue(ports, job, changes).await?;
            return Ok(Dispatched::Retry(note));
        }
        LaunchFailure::Fleet(e) => {
            let permanent = matches!(e, FleetError::InvalidPool(_) | FleetError::Permanent(_));
            (e.to_string(), permanent)
        }
    };
    let attempts = job.attempts + 1;
    let give_up = permanent || attempts >= ports.settings.max_attempts;
    let caller = orchestrator();
    record(
        ports,
        &caller,
        "job.launch_failed",
        Some(&job.id),
        json!({
            "pool": pool.spec.name, "attempt": attempts, "reason": reason, "final": give_up,
        }),
    )
    .await?;
    if give_up {
        let why = if permanent {
            format!("launch failed: {reason}")
        } else {
            format!("launch failed {attempts} times; last: {reason}")
        };
        fail_job_counting(ports, job, &why, true).await?;
        return Ok(Dispatched::NotNeeded("failed"));
    }
    let changes = JobChanges {
        count_attempt: true,
        note: Some(reason.clone()),
        ..Default::default()
    };
    requeue(ports, job, changes).await?;
    Ok(Dispatched::Retry(reason))
}

/// Gives a job whose launch did not happen back to the queue.
async fn requeue(ports: &Ports, job: &Job, changes: JobChanges) -> ServiceResult<()> {
    advance(
        ports,
        job,
        JobState::Queued,
        TransitionCause::Orchestrator,
        &changes,
    )
    .await?;
    Ok(())
}

async fn fail_job(ports: &Ports, job: &Job, reason: &str) -> ServiceResult<()> {
    fail_job_counting(ports, job, reason, false).await
}

/// Fails a job with its reason; `count_attempt` when a launch attempt is
/// what failed.
async fn fail_job_counting(
    ports: &Ports,
    job: &Job,
    reason: &str,
    count_attempt: bool,
) -> ServiceResult<()> {
    let changes = JobChanges {
        failure_reason: Some(reason.to_string()),
        count_attempt,
        ..Default::default()
    };
    if let Advanced::Moved(_) = advance(
        ports,
        job,
        JobState::Failed,
        TransitionCause::Orchestrator,
        &changes,
    )
    .await?
    {
        record(
            ports,
            &orchestrator(),
            "job.failed",
            Some(&job.id),
            json!({"reason": reason}),
        )
        .await?;
    }
    Ok(())
}

/// How long a message waits before it comes back after a failed launch:
/// exponential in the receive count, capped.
pub fn retry_delay(receive_count: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << receive_count.min(6)).min(300))
}

/// What becomes of a queue message once [`handle`] is through with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Handled, or never going to be: remove it.
    Done,
    /// Not handled yet: show it again after this long.
    RetryAfter(Duration),
}

/// Handles one delivery. A message that is not a job id is logged and
/// done; a job whose dispatch keeps failing is failed after
/// [`POISON_RECEIVES`] tries.
pub async fn handle(ports: &Ports, delivery: &Delivery) -> Settlement {
    if !is_id_of(IdKind::Job, delivery.job_id.trim()) {
        tracing::warn!(body = %delivery.job_id.chars().take(80).collect::<String>(), "dropping a queue message that is not a job id");
        return Settlement::Done;
    }
    let result = dispatch(ports, delivery.job_id.trim()).await;
    if let Err(e) = &result {
        if delivery.receive_count >= POISON_RECEIVES {
            let reason = format!(
                "dispatch failed {} times; last: {e}",
                delivery.receive_count
            );
            tracing::error!(job_id = %delivery.job_id, reason, "giving up on a poison job");
            if let Ok(Some(job)) = ports.store.get_job(&delivery.job_id).await {
                if let Err(fail) = fail_job(ports, &job, &reason).await {
                    tracing::warn!(error = %crate::error_text::display_chain(&fail), "could not fail the poison job");
                }
            }
            return Settlement::Done;
        }
    }
    match &result {
        Ok(Dispatched::NotStored) if delivery.receive_count < NOT_STORED_RECEIVES => {
            Settlement::RetryAfter(NOT_STORED_RETRY)
        }
        Ok(Dispatched::NotStored) => {
            tracing::warn!(job_id = %delivery.job_id, receives = delivery.receive_count, "dropping a hint for a job that was never stored");
            Settlement::Done
        }
        Ok(Dispatched::Retry(reason)) => {
            tracing::info!(job_id = %delivery.job_id, reason, "launch will be retried");
            Settlement::RetryAfter(retry_delay(delivery.receive_count))
        }
        Ok(_) => Settlement::Done,
        Err(e) => {
            tracing::error!(job_id = %delivery.job_id, error = %crate::error_text::display_chain(&e), "dispatch failed; the message will come back");
            Settlement::RetryAfter(retry_delay(delivery.receive_count))
        }
    }
}

/// [`handle`]s one delivery and settles it with the queue.
pub async fn settle(ports: &Ports, queue: &dyn Queue, delivery: &Delivery) {
    let settled = match handle(ports, delivery).await {
        Settlement::Done => queue.ack(delivery).await,
        Settlement::RetryAfter(after) => queue.retry_later(delivery, after).await,
    };
    if let Err(e) = settled {
        tracing::warn!(job_id = %delivery.job_id, error = %crate::error_text::display_chain(&e), "could not settle the queue message");
    }
}
