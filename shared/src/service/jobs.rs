//! Moving jobs through their state machine, and reading them.
//!
//! Every state change goes through [`advance`]: it asks the domain whether
//! the move is allowed for its cause, then writes it conditionally on the
//! state and version it read; a lost race re-reads and asks again. A move
//! that is not allowed (late, repeated, backwards) is reported, never
//! applied. A caller that holds a copy of the job it read or wrote moments
//! ago passes it (a [`Which::Copy`]) and saves the read.

use serde::Serialize;

use super::runner_moves::update_runner;
use super::{Ports, ServiceError, ServiceResult, Which};
use crate::domain::job::{JobChanges, transition_allowed};
use crate::domain::{Job, JobState, Runner, RunnerState, TransitionCause};
use crate::store::{JobFilter, Page, PageRequest, StoreError};

/// What [`advance`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Advanced {
    /// Moved; the job as written.
    Moved(Box<Job>),
    /// Not allowed from where the job is now (repeated, late, backwards).
    Refused(Box<Job>),
    NotFound,
}

/// Moves a job to `to` if `cause` may, applying `changes` with it.
pub async fn advance<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Job>>,
    to: JobState,
    cause: TransitionCause,
    changes: &JobChanges,
) -> ServiceResult<Advanced> {
    advance_inner(ports, which.into(), None, to, cause, changes).await
}

/// Like [`advance`], but only from `from`: for a step that is right only
/// where the caller left the job (say `claimed → starting`, which must not
/// happen to a job someone else handed back to the queue meanwhile).
pub async fn advance_from<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Job>>,
    from: JobState,
    to: JobState,
    cause: TransitionCause,
    changes: &JobChanges,
) -> ServiceResult<Advanced> {
    advance_if(ports, which, |job| job.state == from, to, cause, changes).await
}

/// A claimed job is starting on `runner_id`'s instance (one more attempt
/// counted) — unless the runner already failed and handed the job back to
/// the queue, which this must not undo.
pub async fn mark_starting<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Job>>,
    runner_id: &str,
    cause: TransitionCause,
    note: Option<String>,
) -> ServiceResult<Advanced> {
    advance_from(
        ports,
        which,
        JobState::Claimed,
        JobState::Starting,
        cause,
        &starting_on(runner_id, note),
    )
    .await
}

/// What a claimed job's move to `starting` on `runner_id`'s instance
/// writes: the runner, and one more attempt.
pub(crate) fn starting_on(runner_id: &str, note: Option<String>) -> JobChanges {
    JobChanges {
        runner_id: Some(runner_id.to_owned()),
        count_attempt: true,
        note,
        ..Default::default()
    }
}

/// Like [`advance`], but only while `still` holds for the job as read
/// fresh: for a decision made on an earlier snapshot (the reaper's), which
/// must not apply to a job that moved on meanwhile.
pub async fn advance_if<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Job>>,
    still: impl Fn(&Job) -> bool + Sync,
    to: JobState,
    cause: TransitionCause,
    changes: &JobChanges,
) -> ServiceResult<Advanced> {
    advance_inner(ports, which.into(), Some(&still), to, cause, changes).await
}

async fn advance_inner(
    ports: &Ports,
    which: Which<'_, Job>,
    still: Option<&(dyn Fn(&Job) -> bool + Sync)>,
    to: JobState,
    cause: TransitionCause,
    changes: &JobChanges,
) -> ServiceResult<Advanced> {
    // A handful of lost races in a row means heavy contention on one job;
    // each retry re-reads, so the answer stays correct.
    let id = which.id();
    let mut copy = which.copy();
    for _ in 0..8 {
        let (job, fresh) = match copy.take() {
            Some(job) => (job, false),
            None => match ports.store.get_job(id).await? {
                Some(job) => (job, true),
                None => return Ok(Advanced::NotFound),
            },
        };
        if still.is_some_and(|holds| !holds(&job)) || !transition_allowed(job.state, to, cause) {
            if fresh {
                return Ok(Advanced::Refused(Box::new(job)));
            }
            continue;
        }
        let from = job.state;
        let mut moved = job;
        moved.apply(to, cause, changes, ports.clock.now());
        match ports.store.transition_job(from, &moved).await {
            Ok(()) => {
                tracing::debug!(job_id = id, from = %from, to = %to, ?cause, "job moved");
                return Ok(Advanced::Moved(Box::new(moved)));
            }
            Err(StoreError::Stale) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Conflict(format!(
        "job {id} kept changing; try again"
    )))
}

/// Moves a job and its runner together, from copies the caller holds, in
/// one store request. When either copy is stale, or a change no longer
/// applies to it, each is moved on its own, as [`advance_if`] and
/// `update_runner` move them. `still` must hold for the job as it is moved.
/// Returns what became of each.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn advance_with_runner(
    ports: &Ports,
    job: &Job,
    still: impl Fn(&Job) -> bool + Sync,
    to: JobState,
    cause: TransitionCause,
    changes: &JobChanges,
    runner: &Runner,
    mut edit: impl FnMut(&mut Runner) -> bool,
) -> ServiceResult<(Advanced, Option<(RunnerState, Runner)>)> {
    if still(job) && transition_allowed(job.state, to, cause) {
        let mut moved_runner = runner.clone();
        if edit(&mut moved_runner) {
            let now = ports.clock.now();
            let mut moved = job.clone();
            moved.apply(to, cause, changes, now);
            moved_runner.version += 1;
            moved_runner.updated_at = now;
            match ports
                .store
                .transition_job_and_runner(job.state, &moved, runner.state, &moved_runner)
                .await
            {
                Ok(()) => {
                    return Ok((
                        Advanced::Moved(Box::new(moved)),
                        Some((runner.state, moved_runner)),
                    ));
                }
                Err(StoreError::Stale) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let advanced = advance_if(ports, job, still, to, cause, changes).await?;
    let moved_runner = update_runner(ports, runner, edit).await?;
    Ok((advanced, moved_runner))
}

/// A job with what the console shows beside it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    /// The runner that took it (or was launched for it), if any.
    pub runner: Option<Runner>,
}

pub async fn list(
    ports: &Ports,
    filter: &JobFilter,
    page: &PageRequest,
) -> ServiceResult<Page<Job>> {
    Ok(ports.store.list_jobs(filter, page).await?)
}

pub async fn get(ports: &Ports, id: &str) -> ServiceResult<JobView> {
    let job = ports
        .store
        .get_job(id)
        .await?
        .ok_or(ServiceError::NotFound("job"))?;
    let runner = match &job.runner_id {
        Some(rid) => ports.store.get_runner(rid).await?,
        None => None,
    };
    Ok(JobView { job, runner })
}
