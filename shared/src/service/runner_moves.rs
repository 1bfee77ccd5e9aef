//! Moves of a runner record, the one way any use case changes a runner:
//! conditional on the version read, retried when another writer got in
//! between. Moving a runner out of a live state gives its pool's capacity
//! back, exactly once: whoever wins the move releases it.

use super::{Ports, ServiceError, ServiceResult, Which};
use super::{capacity, usage};
use crate::domain::{Runner, RunnerState};
use crate::store::StoreError;

/// Every change to a runner: lets `edit` change a fresh copy (returning
/// `false` leaves it alone), and writes it conditionally on the version
/// read, retrying when another writer got in between — so no writer ever
/// erases another's fields. Returns the state it was in and the runner as
/// written, or `None` if it is gone or `edit` declined.
pub(crate) async fn update_runner<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Runner>>,
    mut edit: impl FnMut(&mut Runner) -> bool,
) -> ServiceResult<Option<(RunnerState, Runner)>> {
    let which = which.into();
    let mut copy = which.copy();
    for _ in 0..16 {
        let (mut runner, fresh) = match copy.take() {
            Some(runner) => (runner, false),
            None => match ports.store.get_runner(which.id()).await? {
                Some(runner) => (runner, true),
                None => return Ok(None),
            },
        };
        let from = runner.state;
        if !edit(&mut runner) {
            if fresh {
                return Ok(None);
            }
            continue;
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
        "runner {} kept changing; try again",
        which.id()
    )))
}

/// Moves a live runner to `to`, writing what its life cost; whoever
/// succeeds releases its capacity and settles the job it ran. Returns the
/// runner as written, or `None` if it was not live any more.
pub(crate) async fn finish<'a>(
    ports: &Ports,
    which: impl Into<Which<'a, Runner>>,
    to: RunnerState,
    edit: impl Fn(&mut Runner),
) -> ServiceResult<Option<Runner>> {
    let ended = update_runner(ports, which, |runner| {
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
