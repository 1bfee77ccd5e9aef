//! Moves of a runner record, the one way any use case changes a runner:
//! conditional on the version read, retried when another writer got in
//! between. Moving a runner out of a live state gives its pool's capacity
//! back, exactly once: whoever wins the move releases it.

use super::{Ports, ServiceError, ServiceResult};
use super::{capacity, usage};
use crate::domain::{Runner, RunnerState};
use crate::store::StoreError;

/// Every change to a runner: re-reads it, lets `edit` change the fresh copy
/// (returning `false` leaves it alone), and writes it conditionally on the
/// version read, retrying when another writer got in between — so no
/// writer ever erases another's fields. Returns the state it was in and the
/// runner as written, or `None` if it is gone or `edit` declined.
pub(crate) async fn update_runner(
    ports: &Ports,
    runner_id: &str,
    mut edit: impl FnMut(&mut Runner) -> bool,
) -> ServiceResult<Option<(RunnerState, Runner)>> {
    for _ in 0..16 {
        let Some(mut runner) = ports.store.get_runner(runner_id).await? else {
            return Ok(None);
        };
        let from = runner.state;
        if !edit(&mut runner) {
            return Ok(None);
        }
        runner.version += 1;
        runner.updated_at = ports.clock.now();
        match ports.store.transition_runner(from, &runner).await {
            Ok(()) => return Ok(Some((from, runner))),
            Err(StoreError::Stale) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Conflict(format!(
        "runner {runner_id} kept changing; try again"
    )))
}

/// Moves a live runner to `to`, writing what its life cost; whoever
/// succeeds releases its capacity and settles the job it ran. Returns the
/// runner as written, or `None` if it was not live any more.
pub(crate) async fn finish(
    ports: &Ports,
    runner_id: &str,
    to: RunnerState,
    edit: impl Fn(&mut Runner),
) -> ServiceResult<Option<Runner>> {
    let ended = update_runner(ports, runner_id, |runner| {
        if !runner.state.is_live() {
            return false;
        }
        runner.state = to;
        runner.cost = Some(runner.cost_until(ports.clock.now()));
        edit(runner);
        true
    })
    .await?;
    match ended {
        Some((_, runner)) => {
            capacity::release(ports, &runner.pool_id).await?;
            match &runner.ran_job_id {
                Some(job_id) => usage::settle(ports, job_id, Some(&runner)).await?,
                None => usage::add_idle(ports, &runner).await?,
            }
            Ok(Some(runner))
        }
        None => Ok(None),
    }
}
