//! Settling a job: once it is final and the runner that ran it (if one of
//! pacer's did) has ended, the job gets its [`JobUsage`] — the durations it
//! waited and that runner's cost. Two events finish a job's story, in either
//! order: GitHub's `completed` (or a cancellation) and the runner's end. Each
//! writes its own half, then calls [`settle`], which writes the usage only
//! when both halves are there; the store orders the writes, so whichever
//! comes second sees both. Settling twice writes the same usage.
//!
//! A final job is never moved again, so the write conditioned on its state
//! cannot erase another writer's change.
//!
//! Settling also adds the job to the usage roll-ups, and a runner that ends
//! without a job adds its idle time there; each contribution is counted
//! once, however many writers try.

use super::{Ports, ServiceResult};
use crate::domain::usage::Contribution;
use crate::domain::{Job, JobTimings, JobUsage, Runner};
use crate::store::StoreError;

/// Writes job `job_id`'s usage if it is due. `ended` is the runner the
/// caller has just finished, if it has one (saves reading it again).
pub(crate) async fn settle(
    ports: &Ports,
    job_id: &str,
    ended: Option<&Runner>,
) -> ServiceResult<()> {
    let Some(job) = ports.store.get_job(job_id).await? else {
        return Ok(());
    };
    if !job.state.is_final() || job.usage.is_some() {
        return Ok(());
    }
    let runner = match (&job.runner_id, ended) {
        (Some(id), Some(r)) if r.id == *id => Some(r.clone()),
        (Some(id), _) => ports.store.get_runner(id).await?,
        (None, _) => None,
    };
    // The runner linked to the job ran it only if GitHub said so; the one
    // launched for it may have gone to another job, or to none.
    let ran = runner.filter(|r| r.ran_job_id.as_deref() == Some(job.id.as_str()));
    let Some(usage) = usage_of(&job, ran.as_ref()) else {
        return Ok(()); // its runner is still running; its end settles the job
    };
    // Into the roll-ups first (once, whoever settles), then onto the job.
    let contribution = Contribution::of_job(&job, &usage, ran.as_ref());
    ports.store.add_usage(&contribution).await?;
    let mut settled = job.clone();
    settled.usage = Some(usage);
    settled.version += 1;
    match ports.store.transition_job(job.state, &settled).await {
        Ok(()) | Err(StoreError::Stale) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A runner that ended without a job: its cost is its pool's idle time.
pub(crate) async fn add_idle(ports: &Ports, runner: &Runner) -> ServiceResult<()> {
    if let (None, Some(cost)) = (&runner.ran_job_id, &runner.cost) {
        ports
            .store
            .add_usage(&Contribution::of_idle_runner(runner, cost))
            .await?;
    }
    Ok(())
}

/// A final job's usage, or `None` while the runner that ran it lives.
fn usage_of(job: &Job, ran: Option<&Runner>) -> Option<JobUsage> {
    let cost = match ran {
        Some(runner) => Some(runner.cost?),
        None => None,
    };
    Some(JobUsage {
        runner_id: ran.map(|r| r.id.clone()),
        timings: JobTimings::of(
            &job.transitions,
            ran.map(|r| (r.created_at, r.registered_at)),
        ),
        cost,
    })
}
