//! The configuration a webhook needs — which project serves a repository,
//! and that project's pools — held in memory for `database.config_cache_ttl`,
//! so a warm process takes in a job without reading the store first.
//!
//! A process reads every project, binding and pool at most once per
//! interval (three listings, whatever the traffic) and answers every webhook
//! in between from what it read. A change made through this process's API
//! is seen at once (its writes drop the copy); another process sees it
//! within the interval. What the staleness can cost is recovered, never
//! lost: a job for a repository bound a moment ago is refused as unserved
//! and taken in by the reaper's scan for missed webhooks, and a job no pool
//! served yet is `unmatched` until the reaper matches it to the new pool.
//!
//! The orchestrator and the runners' callbacks take a pool or project by id
//! from the same copy (its launch template, its labels), so an edit made in
//! another process reaches launches within the interval too; one the copy
//! does not hold (created since) is read from the store.
//!
//! With a zero interval nothing is held: each webhook reads its binding,
//! project and pools from the store, as the reaper always does.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Ports, ServiceResult};
use crate::domain::{Pool, Project, RepoName, Scope, Time};
use crate::store::{Pages, all_pages};

/// What one reading of the configuration found.
#[derive(Debug, Default)]
struct Snapshot {
    projects: HashMap<String, Project>,
    /// Lower-cased `owner/name` → project id.
    bindings: HashMap<String, String>,
    pools: HashMap<String, Vec<Pool>>,
}

impl Snapshot {
    /// The project serving `repo`: its binding's, else an org-scoped
    /// project of its owner (the first by id, as the store lists them).
    fn serving(&self, repo: &RepoName) -> Option<&Project> {
        if let Some(id) = self.bindings.get(&repo.key()) {
            return self.projects.get(id);
        }
        let mut orgs: Vec<&Project> = self
            .projects
            .values()
            .filter(|p| {
                p.spec.scope == Scope::Org
                    && p.spec
                        .org
                        .as_deref()
                        .is_some_and(|o| o.eq_ignore_ascii_case(repo.owner()))
            })
            .collect();
        orgs.sort_by(|a, b| a.id.cmp(&b.id));
        orgs.first().copied()
    }

    fn pool(&self, id: &str) -> Option<&Pool> {
        self.pools.values().flatten().find(|p| p.id == id)
    }
}

struct Held {
    read_at: Time,
    snapshot: Arc<Snapshot>,
}

/// The configuration a process took in webhooks with, and when it read it.
pub struct Catalog {
    ttl: Duration,
    held: Mutex<Option<Held>>,
    /// Counts invalidations, so a reading that began before a change is
    /// not kept after it.
    generation: AtomicU64,
    /// One reading at a time: webhooks arriving while the copy is read wait
    /// for it instead of reading it too.
    reading: tokio::sync::Mutex<()>,
    /// The GitHub job ids this process took in as queued, newest last, with
    /// pacer's job ids: a redelivery of one is answered without the store.
    recent: Mutex<Recent>,
    /// Repositories no project serves, with when this process last audited
    /// one of their jobs.
    unserved: Mutex<HashMap<String, Time>>,
}

/// How long one audited delivery stands for a repository's next ones.
const UNSERVED_AUDITED_ONCE_PER: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// How many jobs taken in a process remembers.
const RECENT_JOBS: usize = 4096;

#[derive(Default)]
struct Recent {
    ids: HashMap<i64, String>,
    order: VecDeque<i64>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("ttl", &self.ttl).finish()
    }
}

impl Default for Catalog {
    /// Holds nothing: every lookup reads the store.
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl Catalog {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            held: Mutex::new(None),
            generation: AtomicU64::new(0),
            reading: tokio::sync::Mutex::new(()),
            recent: Mutex::new(Recent::default()),
            unserved: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a job of `repo`, which no project serves, is the first this
    /// process has seen in the last hour, so the one to audit: its next ones
    /// cost no store write. With a zero interval every one is audited.
    pub fn first_unserved(&self, repo: &RepoName, now: Time) -> bool {
        if self.ttl.is_zero() {
            return true;
        }
        let Ok(mut seen) = self.unserved.lock() else {
            return true;
        };
        let key = repo.key();
        if seen
            .get(&key)
            .is_some_and(|at| now - *at < UNSERVED_AUDITED_ONCE_PER)
        {
            return false;
        }
        if seen.len() >= RECENT_JOBS {
            seen.retain(|_, at| now - *at < UNSERVED_AUDITED_ONCE_PER);
            if seen.len() >= RECENT_JOBS {
                seen.clear();
            }
        }
        seen.insert(key, now);
        true
    }

    /// Remembers a job this process took in as queued (when it holds a copy
    /// at all: a zero interval remembers nothing).
    pub fn remember(&self, github_job_id: i64, job_id: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        if recent
            .ids
            .insert(github_job_id, job_id.to_string())
            .is_none()
        {
            recent.order.push_back(github_job_id);
        }
        while recent.order.len() > RECENT_JOBS {
            if let Some(oldest) = recent.order.pop_front() {
                recent.ids.remove(&oldest);
            }
        }
    }

    /// pacer's id of a job this process took in as queued, by GitHub's.
    pub fn recent(&self, github_job_id: i64) -> Option<String> {
        self.recent.lock().ok()?.ids.get(&github_job_id).cloned()
    }

    /// Drops the copy: the next lookup reads the store. Every change to a
    /// project, pool or binding through this process calls it.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut held) = self.held.lock() {
            *held = None;
        }
    }

    /// The project serving `repo` and its pools.
    pub async fn serving(
        &self,
        ports: &Ports,
        repo: &RepoName,
    ) -> ServiceResult<Option<(Project, Vec<Pool>)>> {
        if self.ttl.is_zero() {
            let Some(project) = serving_project(ports, repo).await? else {
                return Ok(None);
            };
            let pools = project_pools(ports, &project.id).await?;
            return Ok(Some((project, pools)));
        }
        let snapshot = self.snapshot(ports).await?;
        Ok(snapshot.serving(repo).map(|project| {
            let pools = snapshot.pools.get(&project.id).cloned().unwrap_or_default();
            (project.clone(), pools)
        }))
    }

    /// Pool `id`, from the copy held; read from the store when the copy
    /// does not have it or nothing is held.
    pub async fn pool(&self, ports: &Ports, id: &str) -> ServiceResult<Option<Pool>> {
        if !self.ttl.is_zero() {
            if let Some(pool) = self.snapshot(ports).await?.pool(id) {
                return Ok(Some(pool.clone()));
            }
        }
        Ok(ports.store.get_pool(id).await?)
    }

    /// Project `id`, as [`Catalog::pool`] finds a pool.
    pub async fn project(&self, ports: &Ports, id: &str) -> ServiceResult<Option<Project>> {
        if !self.ttl.is_zero() {
            if let Some(project) = self.snapshot(ports).await?.projects.get(id) {
                return Ok(Some(project.clone()));
            }
        }
        Ok(ports.store.get_project(id).await?)
    }

    fn fresh(&self, now: Time) -> Option<Arc<Snapshot>> {
        let held = self.held.lock().ok()?;
        let held = held.as_ref()?;
        let age = (now - held.read_at).to_std().unwrap_or(Duration::MAX);
        (age < self.ttl).then(|| held.snapshot.clone())
    }

    async fn snapshot(&self, ports: &Ports) -> ServiceResult<Arc<Snapshot>> {
        if let Some(snapshot) = self.fresh(ports.clock.now()) {
            return Ok(snapshot);
        }
        let _reading = self.reading.lock().await;
        // Another webhook may have read it while this one waited.
        if let Some(snapshot) = self.fresh(ports.clock.now()) {
            return Ok(snapshot);
        }
        let read_at = ports.clock.now();
        let generation = self.generation.load(Ordering::SeqCst);
        let mut snapshot = Snapshot::default();
        for project in all_pages!(|p| ports.store.list_projects(p)) {
            snapshot.projects.insert(project.id.clone(), project);
        }
        for binding in all_pages!(|p| ports.store.list_bindings(None, p)) {
            snapshot
                .bindings
                .insert(binding.spec.repo.key(), binding.spec.project_id);
        }
        for pool in all_pages!(|p| ports.store.list_pools(None, p)) {
            snapshot
                .pools
                .entry(pool.spec.project_id.clone())
                .or_default()
                .push(pool);
        }
        let snapshot = Arc::new(snapshot);
        if let Ok(mut held) = self.held.lock()
            && self.generation.load(Ordering::SeqCst) == generation
        {
            *held = Some(Held {
                read_at,
                snapshot: snapshot.clone(),
            });
        }
        Ok(snapshot)
    }
}

/// The project serving `repo`: its binding's, else an org-scoped project of
/// its owner.
pub async fn serving_project(ports: &Ports, repo: &RepoName) -> ServiceResult<Option<Project>> {
    if let Some(binding) = ports.store.binding_for_repo(&repo.key()).await? {
        return Ok(ports.store.get_project(&binding.spec.project_id).await?);
    }
    let mut pages = Pages::start();
    while let Some(page) = pages.next_request() {
        let listed = ports.store.list_projects(&page).await?;
        let found = pages.items(listed).into_iter().find(|p| {
            p.spec.scope == Scope::Org
                && p.spec
                    .org
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(repo.owner()))
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Every pool of a project.
pub async fn project_pools(ports: &Ports, project_id: &str) -> ServiceResult<Vec<Pool>> {
    Ok(all_pages!(|p| ports.store.list_pools(Some(project_id), p)))
}
