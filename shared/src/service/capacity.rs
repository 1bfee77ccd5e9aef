//! A pool's capacity: the one place a unit of `max_runners` is taken or
//! given back.
//!
//! A unit is reserved conditionally before a launch (never above
//! `max_runners`) and released exactly once: when the launch fails, or by
//! whoever moves the runner out of a live state. A release wakes the pool's
//! oldest job waiting for capacity: such a job was handed back to `queued`
//! with its message acknowledged, so only a freed slot brings it back. Only
//! jobs marked waiting are woken; every other queued job still has a
//! message of its own.

use super::{Ports, ServiceResult};
use crate::domain::JobState;
use crate::store::{JobFilter, PageRequest};

/// Takes one unit of the pool's capacity; `false` when it is at `max_runners`.
pub async fn reserve(ports: &Ports, pool_id: &str) -> ServiceResult<bool> {
    Ok(ports.store.reserve_capacity(pool_id).await?)
}

/// Gives one unit of a pool's capacity back and, if it did, wakes the
/// oldest job waiting for it.
pub async fn release(ports: &Ports, pool_id: &str) -> ServiceResult<bool> {
    if !ports.store.release_capacity(pool_id).await? {
        return Ok(false);
    }
    wake_waiting(ports, pool_id).await?;
    Ok(true)
}

/// Whether the pool has a unit left (as last written: a reservation may take
/// it first).
pub async fn has_room(ports: &Ports, pool_id: &str) -> ServiceResult<bool> {
    Ok(ports
        .store
        .get_pool(pool_id)
        .await?
        .is_some_and(|p| p.active_runners < p.spec.max_runners))
}

/// How many of a pool's oldest queued jobs a wake looks through for one
/// marked waiting; the rest have messages of their own on the way.
const WAKE_LOOKS_AT: u32 = 25;

/// Enqueues the pool's oldest job waiting for capacity, if any.
pub async fn wake_waiting(ports: &Ports, pool_id: &str) -> ServiceResult<()> {
    let filter = JobFilter {
        state: Some(JobState::Queued),
        pool_id: Some(pool_id.to_string()),
        oldest_first: true,
        ..Default::default()
    };
    let queued = ports
        .store
        .list_jobs(&filter, &PageRequest::first(WAKE_LOOKS_AT))
        .await?;
    if let Some(job) = queued.items.iter().find(|j| j.waiting_for_capacity) {
        ports.queue.send(&job.id, None).await?;
    }
    Ok(())
}
