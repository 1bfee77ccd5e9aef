//! The reaper: level-triggered reconciliation of the store,
//! the fleet and GitHub. Each pass reads what is, decides, and acts through
//! the same conditional writes as everything else, so two reapers running
//! at once do each thing once, and a reaper racing a runner's `/complete`
//! never releases capacity twice.
//!
//! What one [`reconcile`] does, in order:
//! 1. live runners: past the pool's max lifetime → terminated even if busy;
//!    pending past the boot deadline → terminated, registration removed, job
//!    queued again (failed after `reaper.max_attempts`); registered and idle
//!    past the idle timeout → deregistered, then terminated — never while
//!    GitHub says busy, never when deregistration failed; still live past
//!    the idle timeout after GitHub said its job ended → terminated;
//! 2. orphans: this deployment's instances no live runner owns, older than
//!    `reaper.orphan_grace` → terminated (other deployments' are never seen);
//!    ghosts: GitHub runners named with this deployment's prefix that no
//!    live runner owns → deregistered (at most [`GHOST_TARGETS_PER_PASS`]
//!    repos or orgs a pass, in rotation, to stay within GitHub's rate limit);
//!    missed webhooks: failed App deliveries of `workflow_job` redelivered;
//!    queued self-hosted jobs on served repos pacer has no row for found
//!    through GitHub's runs API (a few repos a pass) and taken in;
//! 3. budgets: this month's spend counted, lines crossed audited once;
//!    stuck jobs: `queued` past `reaper.redrive_after` → enqueued again
//!    (not while an enforced budget holds their pool);
//!    `claimed` past it, or `starting` with no live runner → back to `queued`;
//! 4. unmatched jobs a pool now serves, still queued on GitHub → queued;
//! 5. capacity counters that drifted from the live runners → repaired.
//!
//! Every action is audited as `reaper.<what>` with its reason.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use super::audit::record;
use super::catalog::project_pools;
use super::intake::{Intake, intake};
use super::jobs::{Advanced, advance, advance_if, mark_starting};
use super::runner_moves::{finish, update_runner};
use super::runners::{github_target, retry_job_after_failed_runner};
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::domain::job::JobChanges;
use crate::domain::labels::asks_for_self_hosted;
use crate::domain::pick_pool;
use crate::domain::runner::is_runner_name_of;
use crate::domain::{
    Job, JobState, Pool, Project, RepoName, Runner, RunnerState, Scope, Time, TransitionCause,
};
use crate::github::RunnerTarget;
use crate::store::{JobFilter, PageRequest, Pages, RunnerFilter, all_pages};

/// One thing the reaper did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `reaper.<what>`, as audited.
    pub action: String,
    pub target: String,
    pub reason: String,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub actions: Vec<Action>,
    /// Steps that could not be taken this time (retried next pass).
    pub deferred: Vec<String>,
    /// What the pass did to self-service runners.
    pub self_service: super::self_service::Reaped,
}

impl Report {
    pub fn count(&self, action: &str) -> usize {
        self.actions.iter().filter(|a| a.action == action).count()
    }

    /// What a step run beside others did, after what came before it.
    fn append(&mut self, step: Report) {
        self.actions.extend(step.actions);
        self.deferred.extend(step.deferred);
    }
}

fn reaper() -> Caller {
    Caller::system("reaper")
}

fn elapsed(now: Time, since: Time) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

async fn act(
    ports: &Ports,
    report: &mut Report,
    action: &str,
    target: &str,
    reason: String,
) -> ServiceResult<()> {
    let full = format!("reaper.{action}");
    record(
        ports,
        &reaper(),
        &full,
        Some(target),
        json!({"reason": reason}),
    )
    .await?;
    tracing::info!(action = %full, target, reason, "reaper");
    report.actions.push(Action {
        action: full,
        target: target.to_string(),
        reason,
    });
    Ok(())
}

/// One reconciliation pass.
pub async fn reconcile(ports: &Ports) -> ServiceResult<Report> {
    let mut report = Report::default();
    // Steps that only read, or act on what no other step of theirs
    // touches, go out together, so a pass costs a handful of round trips
    // rather than one per listing; their reports join in the order below.
    // (The capacity check keeps its listings in order: its reasoning needs
    // it.)
    let (pools, live) = futures::try_join!(
        async { Ok::<_, ServiceError>(all_pages!(|p| ports.store.list_pools(None, p))) },
        Live::list(ports),
    )?;
    let pools: HashMap<String, Pool> = pools.into_iter().map(|p: Pool| (p.id.clone(), p)).collect();
    runners(ports, &pools, &live, &mut report).await?;
    let (mut found_orphans, mut found_ghosts, mut missed) =
        (Report::default(), Report::default(), Report::default());
    let (orphaned, ghosted, redelivered, counted) = futures::join!(
        orphans(ports, &live, &mut found_orphans),
        ghosts(ports, &live, &mut found_ghosts),
        missed_webhooks(ports, &mut missed),
        super::budgets::count(ports),
    );
    orphaned?;
    ghosted?;
    redelivered?;
    report.append(found_orphans);
    report.append(found_ghosts);
    report.append(missed);
    // A count that fails is retried next pass; the orchestrator still holds
    // by the spend counted before.
    let held = match counted {
        Ok(count) => count.held_pools,
        Err(e) => {
            report.deferred.push(format!("budgets: {e}"));
            Default::default()
        }
    };
    stuck_jobs(ports, &held, &live, &mut report).await?;
    unmatched_jobs(ports, &mut report).await?;
    capacity(ports, &pools, &mut report).await?;
    if ports.settings.self_service.enabled {
        // Self-service runners are their own concern: a failure there is
        // retried next pass and does not fail the EC2 runners' pass.
        match super::self_service::reap(ports).await {
            Ok(reaped) => report.self_service = reaped,
            Err(e) => report.deferred.push(format!("self-service runners: {e}")),
        }
    }
    Ok(report)
}

fn live_filter(pool_id: Option<&str>) -> RunnerFilter {
    RunnerFilter {
        pool_id: pool_id.map(str::to_string),
        states: vec![
            RunnerState::Pending,
            RunnerState::Registered,
            RunnerState::Busy,
        ],
    }
}

/// The live runners as the pass began, listed once: they answer "does a
/// live runner own this?" for every instance, GitHub registration and job
/// the pass looks at, whatever their number. A runner launched since is not
/// here, so a "no" is confirmed with the store before anything is acted on;
/// one that ended since still is, which leaves what it owned to the next
/// pass.
struct Live {
    runners: Vec<Runner>,
    ids: HashSet<String>,
    names: HashSet<String>,
}

impl Live {
    async fn list(ports: &Ports) -> ServiceResult<Self> {
        let filter = live_filter(None);
        let runners: Vec<Runner> = all_pages!(|p| ports.store.list_runners(&filter, p));
        let ids = runners.iter().map(|r| r.id.clone()).collect();
        let names = runners.iter().map(|r| r.name.clone()).collect();
        Ok(Self {
            runners,
            ids,
            names,
        })
    }

    fn has_id(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The live runner of `pool_id` holding `job_id` with no instance yet:
    /// from the listing, or, where the listing has none, from the store.
    async fn unlaunched_for(
        &self,
        ports: &Ports,
        pool_id: &str,
        job_id: &str,
    ) -> ServiceResult<Option<Runner>> {
        let holds = |r: &Runner| {
            r.pool_id == pool_id && r.job_id.as_deref() == Some(job_id) && r.instance_id.is_none()
        };
        if let Some(runner) = self.runners.iter().find(|r| holds(r)) {
            return Ok(Some(runner.clone()));
        }
        let filter = live_filter(Some(pool_id));
        let in_pool: Vec<Runner> = all_pages!(|p| ports.store.list_runners(&filter, p));
        Ok(in_pool.into_iter().find(|r| holds(r)))
    }
}

async fn runners(
    ports: &Ports,
    pools: &HashMap<String, Pool>,
    live: &Live,
    report: &mut Report,
) -> ServiceResult<()> {
    for runner in &live.runners {
        let Some(pool) = pools.get(&runner.pool_id) else {
            continue;
        };
        let now = ports.clock.now();
        let age = elapsed(now, runner.created_at);
        if age >= pool.spec.max_lifetime {
            let reason = format!(
                "alive for {}s, past the pool's max lifetime (a hard cap for hung jobs)",
                age.as_secs()
            );
            reap(ports, report, runner, "max_lifetime", reason).await?;
        } else if runner.state == RunnerState::Pending && age >= pool.spec.boot_timeout {
            let reason = format!(
                "not registered {}s after launch (boot timeout {}s)",
                age.as_secs(),
                pool.spec.boot_timeout.as_secs()
            );
            reap(ports, report, runner, "boot_deadline", reason).await?;
        } else if runner.state == RunnerState::Registered
            && elapsed(now, runner.updated_at) >= pool.spec.idle_timeout
        {
            idle(ports, report, runner, pool).await?;
        } else if let Some(ended) = runner
            .job_ended_at
            .filter(|t| elapsed(now, *t) >= pool.spec.idle_timeout)
        {
            let reason = format!(
                "its job ended {}s ago and it never reported /complete (idle timeout {}s)",
                elapsed(now, ended).as_secs(),
                pool.spec.idle_timeout.as_secs()
            );
            reap(ports, report, runner, "job_ended", reason).await?;
        }
    }
    Ok(())
}

/// Removes a runner: its GitHub registration, its instance, its capacity,
/// and gives its job another attempt. A step that fails leaves the runner
/// for the next pass.
async fn reap(
    ports: &Ports,
    report: &mut Report,
    runner: &Runner,
    what: &str,
    reason: String,
) -> ServiceResult<()> {
    if let Some(github_id) = runner.github_runner_id {
        match github_target(ports, runner).await {
            Ok((installation, target, _)) => {
                if let Err(e) = ports
                    .github
                    .delete_runner(installation, &target, github_id)
                    .await
                {
                    // Terminating anyway: a registration without a machine is
                    // a ghost GitHub drops, a machine past its deadline costs.
                    tracing::warn!(runner_id = %runner.id, error = %crate::error_text::display_chain(&e), "could not deregister a runner being reaped");
                }
            }
            Err(e) => {
                tracing::warn!(runner_id = %runner.id, error = %crate::error_text::display_chain(&e), "no GitHub target for a runner being reaped")
            }
        }
    }
    if let Some(instance) = &runner.instance_id {
        if let Err(e) = ports.fleet.terminate(instance).await {
            report
                .deferred
                .push(format!("terminate {instance} ({}): {e}", runner.id));
            return Ok(());
        }
    }
    let tail = reason.clone();
    let Some(reaped) = finish(ports, &runner.id, RunnerState::Reaped, |r| {
        r.error_tail = Some(
            r.error_tail
                .take()
                .map_or(tail.clone(), |t| format!("{t}\n{tail}")),
        );
    })
    .await?
    else {
        return Ok(()); // another reaper, or the runner itself, got there first
    };
    act(ports, report, what, &reaped.id, reason).await?;
    if let Some(job_id) = &reaped.job_id {
        retry_job_after_failed_runner(ports, job_id, &reaped, TransitionCause::Reaper).await?;
    }
    Ok(())
}

async fn idle(
    ports: &Ports,
    report: &mut Report,
    runner: &Runner,
    pool: &Pool,
) -> ServiceResult<()> {
    let Some(github_id) = runner.github_runner_id else {
        return Ok(());
    };
    let (installation, target, _) = match github_target(ports, runner).await {
        Ok(t) => t,
        Err(e) => {
            report
                .deferred
                .push(format!("idle check of {}: {e}", runner.id));
            return Ok(());
        }
    };
    match ports
        .github
        .get_runner(installation, &target, github_id)
        .await
    {
        Ok(Some(gh)) if gh.busy => {
            // Busy with a job whose webhook has not arrived (yet): keep it.
            update_runner(ports, &runner.id, |r| {
                let idle = r.state == RunnerState::Registered;
                if idle {
                    r.state = RunnerState::Busy;
                }
                idle
            })
            .await?;
            Ok(())
        }
        Ok(found) => {
            if found.is_some() {
                if let Err(e) = ports
                    .github
                    .delete_runner(installation, &target, github_id)
                    .await
                {
                    // It may have just been handed a job: never terminate a
                    // runner GitHub still holds.
                    report
                        .deferred
                        .push(format!("deregister idle {}: {e}", runner.id));
                    return Ok(());
                }
            }
            let reason = format!(
                "registered and idle past the pool's idle timeout ({}s){}",
                pool.spec.idle_timeout.as_secs(),
                if found.is_none() {
                    "; GitHub no longer knows it"
                } else {
                    ""
                }
            );
            let mut unregistered = runner.clone();
            unregistered.github_runner_id = None;
            reap(ports, report, &unregistered, "idle", reason).await
        }
        Err(e) => {
            report
                .deferred
                .push(format!("idle check of {}: {e}", runner.id));
            Ok(())
        }
    }
}

async fn orphans(ports: &Ports, live: &Live, report: &mut Report) -> ServiceResult<()> {
    let instances = match ports.fleet.list_instances().await {
        Ok(i) => i,
        Err(e) => {
            report.deferred.push(format!("list instances: {e}"));
            return Ok(());
        }
    };
    let grace = ports.settings.orphan_grace;
    for instance in instances {
        if matches!(instance.state.as_str(), "shutting-down" | "terminated") {
            continue;
        }
        let now = ports.clock.now();
        // Without a launch time, wait: the grace is what protects a launch
        // whose records are still being written.
        let Some(launched) = instance.launched_at else {
            continue;
        };
        if elapsed(now, launched) < grace {
            continue;
        }
        if instance
            .runner_id
            .as_deref()
            .is_some_and(|id| live.has_id(id))
        {
            continue;
        }
        let owner = match &instance.runner_id {
            Some(id) => ports.store.get_runner(id).await?,
            None => None,
        };
        if owner.as_ref().is_some_and(|r| r.state.is_live()) {
            continue;
        }
        if let Err(e) = ports.fleet.terminate(&instance.instance_id).await {
            report
                .deferred
                .push(format!("terminate orphan {}: {e}", instance.instance_id));
            continue;
        }
        let reason = match owner {
            Some(r) => format!("its runner {} is {}", r.id, r.state),
            None => "no runner record owns it".to_string(),
        };
        act(ports, report, "orphan", &instance.instance_id, reason).await?;
    }
    Ok(())
}

/// How many repos or orgs one pass lists runners of.
pub const GHOST_TARGETS_PER_PASS: usize = 20;

/// Where this deployment's runners may be registered, with the App
/// installation to ask with.
/// With `ask_github`, a bound repo no job has come from yet gets its
/// installation from GitHub (one call) instead of being left out.
async fn runner_targets(
    ports: &Ports,
    report: &mut Report,
    ask_github: bool,
) -> ServiceResult<Vec<(i64, RunnerTarget)>> {
    let mut targets = Vec::new();
    let projects: Vec<Project> = all_pages!(|p| ports.store.list_projects(p));
    for project in projects {
        let recent = |filter: JobFilter| async move {
            let page = ports
                .store
                .list_jobs(&filter, &PageRequest::first(1))
                .await?;
            Ok::<_, ServiceError>(
                page.items
                    .into_iter()
                    .next()
                    .and_then(|j| j.installation_id),
            )
        };
        match (project.spec.scope, &project.spec.org) {
            (Scope::Org, Some(org)) => {
                let filter = JobFilter {
                    project_id: Some(project.id.clone()),
                    ..Default::default()
                };
                // No job yet: no runner can have registered there.
                if let Some(installation) = recent(filter).await? {
                    targets.push((installation, RunnerTarget::Org(org.clone())));
                }
            }
            _ => {
                let bindings: Vec<crate::domain::RepoBinding> =
                    all_pages!(|p| ports.store.list_bindings(Some(&project.id), p));
                for binding in bindings {
                    let repo = binding.spec.repo.clone();
                    let filter = JobFilter {
                        repo: Some(repo.key()),
                        ..Default::default()
                    };
                    let installation = match recent(filter).await? {
                        Some(i) => i,
                        None if ask_github => match ports.github.repo_installation(&repo).await {
                            Ok(i) => i,
                            Err(e) => {
                                report.deferred.push(format!("installation of {repo}: {e}"));
                                continue;
                            }
                        },
                        None => continue,
                    };
                    targets.push((installation, RunnerTarget::Repo(repo)));
                }
            }
        }
    }
    if targets.len() > GHOST_TARGETS_PER_PASS {
        // Rotate through the targets, a window per pass.
        let start =
            (ports.clock.now().timestamp() / 60) as usize * GHOST_TARGETS_PER_PASS % targets.len();
        targets.rotate_left(start);
        targets.truncate(GHOST_TARGETS_PER_PASS);
        report.deferred.push(
            "ghost check: more repos and orgs than one pass lists; the rest follow in later passes"
                .into(),
        );
    }
    Ok(targets)
}

async fn ghosts(ports: &Ports, live: &Live, report: &mut Report) -> ServiceResult<()> {
    for (installation, target) in runner_targets(ports, report, false).await? {
        let listed = match ports.github.list_runners(installation, &target).await {
            Ok(l) => l,
            Err(e) => {
                report
                    .deferred
                    .push(format!("list runners of {target}: {e}"));
                continue;
            }
        };
        for gh in listed
            .into_iter()
            .filter(|r| is_runner_name_of(&ports.settings.deployment, &r.name))
        {
            if live.has_name(&gh.name) {
                continue;
            }
            if ports
                .store
                .runner_by_name(&gh.name)
                .await?
                .is_some_and(|r| r.state.is_live())
            {
                continue;
            }
            if gh.busy {
                report.deferred.push(format!(
                    "ghost {} is busy on GitHub; left for a later pass",
                    gh.name
                ));
                continue;
            }
            if let Err(e) = ports
                .github
                .delete_runner(installation, &target, gh.id)
                .await
            {
                report
                    .deferred
                    .push(format!("deregister ghost {}: {e}", gh.name));
                continue;
            }
            act(
                ports,
                report,
                "ghost",
                &gh.name,
                format!("registered at {target} but no live runner of pacer owns it"),
            )
            .await?;
        }
    }
    Ok(())
}

/// How far back a pass looks for failed deliveries.
pub const DELIVERY_LOOKBACK: Duration = Duration::from_secs(3600);
/// Failed attempts after which pacer stops asking GitHub to redeliver an event.
pub const MAX_REDELIVERIES: u32 = 5;
/// Repositories a pass scans for queued jobs, and runs looked at in each:
/// about `MISSED_REPOS_PER_PASS × (MISSED_RUNS_PER_REPO + 2)` GitHub calls.
pub const MISSED_REPOS_PER_PASS: usize = 5;
pub const MISSED_RUNS_PER_REPO: usize = 5;

async fn missed_webhooks(ports: &Ports, report: &mut Report) -> ServiceResult<()> {
    // 1. Deliveries GitHub failed to make: ask for them again (handlers
    // are idempotent, so a redelivery of something pacer has is harmless).
    let since =
        ports.clock.now() - chrono::Duration::from_std(DELIVERY_LOOKBACK).unwrap_or_default();
    match ports.github.failed_deliveries(since).await {
        Ok(deliveries) => {
            for d in deliveries
                .into_iter()
                .filter(|d| d.event == "workflow_job" && d.failed_attempts < MAX_REDELIVERIES)
            {
                match ports.github.redeliver(d.id).await {
                    Ok(()) => {
                        let reason = format!(
                            "GitHub's delivery answered {} ({}); attempt {}",
                            d.status_code, d.status, d.failed_attempts
                        );
                        act(ports, report, "redelivered", &d.guid, reason).await?;
                    }
                    Err(e) => report.deferred.push(format!("redeliver {}: {e}", d.guid)),
                }
            }
        }
        Err(e) => report.deferred.push(format!("list failed deliveries: {e}")),
    }

    // 2. Queued jobs of served repos that pacer has no row for.
    let mut repos: Vec<(i64, RepoName)> = runner_targets(ports, &mut Report::default(), true)
        .await?
        .into_iter()
        .filter_map(|(installation, target)| match target {
            RunnerTarget::Repo(repo) => Some((installation, repo)),
            RunnerTarget::Org(_) => None,
        })
        .collect();
    if repos.len() > MISSED_REPOS_PER_PASS {
        let start =
            (ports.clock.now().timestamp() / 60) as usize * MISSED_REPOS_PER_PASS % repos.len();
        repos.rotate_left(start);
        repos.truncate(MISSED_REPOS_PER_PASS);
    }
    for (installation, repo) in repos {
        let found = match ports
            .github
            .queued_jobs(installation, &repo, MISSED_RUNS_PER_REPO)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                report.deferred.push(format!("queued jobs of {repo}: {e}"));
                continue;
            }
        };
        for gh in found {
            if !asks_for_self_hosted(&gh.labels) {
                continue;
            }
            if ports.store.job_by_github_id(gh.id).await?.is_some() {
                continue;
            }
            let pending = gh.pending(&repo, installation);
            if let Intake::Accepted { job_id } = intake(ports, &reaper(), &pending).await? {
                act(
                    ports,
                    report,
                    "missed_webhook",
                    &job_id,
                    format!(
                        "GitHub has job {} queued on {repo}; its webhook never arrived",
                        gh.id
                    ),
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn jobs_in(ports: &Ports, state: JobState) -> ServiceResult<Vec<Job>> {
    let filter = JobFilter {
        state: Some(state),
        ..Default::default()
    };
    Ok(all_pages!(|p| ports.store.list_jobs(&filter, p)))
}

async fn stuck_jobs(
    ports: &Ports,
    held_pools: &HashSet<String>,
    live: &Live,
    report: &mut Report,
) -> ServiceResult<()> {
    let redrive_after = ports.settings.redrive_after;
    for job in jobs_in(ports, JobState::Queued).await? {
        if elapsed(ports.clock.now(), job.updated_at) < redrive_after {
            continue;
        }
        // A held job waits for its budget, not for a launch that failed.
        if job.pool_id.as_ref().is_some_and(|p| held_pools.contains(p)) {
            continue;
        }
        ports.queue.send(&job.id, None).await?;
        act(
            ports,
            report,
            "redrive",
            &job.id,
            format!(
                "queued for {}s without a launch",
                elapsed(ports.clock.now(), job.updated_at).as_secs()
            ),
        )
        .await?;
    }
    for job in jobs_in(ports, JobState::Claimed).await? {
        if elapsed(ports.clock.now(), job.updated_at) < redrive_after {
            continue;
        }
        stuck_claimed(ports, live, report, &job).await?;
    }
    for job in jobs_in(ports, JobState::Starting).await? {
        if job.runner_id.as_deref().is_some_and(|id| live.has_id(id))
            || elapsed(ports.clock.now(), job.updated_at) < redrive_after
        {
            continue;
        }
        let runner_live = match &job.runner_id {
            Some(id) => ports
                .store
                .get_runner(id)
                .await?
                .is_some_and(|r| r.state.is_live()),
            None => false,
        };
        if runner_live {
            continue;
        }
        let changes = JobChanges {
            note: Some("its runner ended before GitHub gave it the job".into()),
            ..Default::default()
        };
        requeue_as_listed(
            ports,
            report,
            &job,
            &changes,
            "stuck_starting",
            "starting with no live runner",
        )
        .await?;
    }
    Ok(())
}

/// Moves a job back to `queued`, enqueues it and reports `action` — only if
/// it is still as the reaper listed it (same state, not updated since): a
/// job that moved on meanwhile (a new runner, a launch) is left alone.
async fn requeue_as_listed(
    ports: &Ports,
    report: &mut Report,
    job: &Job,
    changes: &JobChanges,
    action: &str,
    reason: &str,
) -> ServiceResult<()> {
    let unchanged =
        |current: &Job| current.state == job.state && current.updated_at == job.updated_at;
    if let Advanced::Moved(_) = advance_if(
        ports,
        &job.id,
        unchanged,
        JobState::Queued,
        TransitionCause::Reaper,
        changes,
    )
    .await?
    {
        ports.queue.send(&job.id, None).await?;
        act(ports, report, action, &job.id, reason.into()).await?;
    }
    Ok(())
}

/// A job claimed long ago and never marked starting: its orchestrator died
/// somewhere between the claim and the launch's bookkeeping. If the launch
/// happened (an instance carries its runner's tag), finish the bookkeeping
/// rather than launch a second instance; otherwise give the runner's
/// capacity back and queue the job again.
async fn stuck_claimed(
    ports: &Ports,
    live: &Live,
    report: &mut Report,
    job: &Job,
) -> ServiceResult<()> {
    // A claim writes its runner in the same request, so a job claimed
    // before the pass began has its runner in the listing; the store is
    // asked only when it has none (a runner lost, or claimed since).
    let runner = match job.pool_id.as_deref() {
        Some(pool_id) => live.unlaunched_for(ports, pool_id, &job.id).await?,
        None => None,
    };
    if let Some(runner) = runner {
        match ports.fleet.instance_for_runner(&runner.id).await {
            Ok(Some(instance))
                if !matches!(instance.state.as_str(), "shutting-down" | "terminated") =>
            {
                let recorded = update_runner(ports, &runner.id, |r| {
                    let missing = r.instance_id.is_none() && r.state.is_live();
                    if missing {
                        r.instance_id = Some(instance.instance_id.clone());
                        r.launched_at = instance.launched_at.or(r.launched_at);
                    }
                    missing
                })
                .await?;
                if recorded.is_some() {
                    let note = "launch found by its runner tag after the orchestrator was lost";
                    mark_starting(
                        ports,
                        &job.id,
                        &runner.id,
                        TransitionCause::Reaper,
                        Some(note.into()),
                    )
                    .await?;
                    let reason = format!(
                        "instance {} was launched for runner {}; its record is complete now",
                        instance.instance_id, runner.id
                    );
                    act(ports, report, "recovered_launch", &job.id, reason).await?;
                }
                return Ok(());
            }
            Ok(_) => {
                let note =
                    "no instance was launched for it (its orchestrator was lost)".to_string();
                finish(ports, &runner.id, RunnerState::Failed, |r| {
                    r.error_tail = Some(note.clone())
                })
                .await?;
            }
            Err(e) => {
                report
                    .deferred
                    .push(format!("look up the instance of runner {}: {e}", runner.id));
                return Ok(());
            }
        }
    }
    // The lost claim counts as an attempt, so a job whose dispatch keeps
    // dying is bounded like one whose launches keep failing.
    if job.attempts + 1 >= ports.settings.max_attempts {
        let reason = format!(
            "claimed {} times without a launch (the orchestrator kept failing)",
            job.attempts + 1
        );
        let changes = JobChanges {
            failure_reason: Some(reason.clone()),
            count_attempt: true,
            ..Default::default()
        };
        let unchanged = |current: &Job| {
            current.state == JobState::Claimed && current.updated_at == job.updated_at
        };
        if let Advanced::Moved(_) = advance_if(
            ports,
            &job.id,
            unchanged,
            JobState::Failed,
            TransitionCause::Reaper,
            &changes,
        )
        .await?
        {
            act(ports, report, "stuck_claimed", &job.id, reason).await?;
        }
        return Ok(());
    }
    let changes = JobChanges {
        note: Some("claimed but never launched (orchestrator lost)".into()),
        count_attempt: true,
        ..Default::default()
    };
    requeue_as_listed(
        ports,
        report,
        job,
        &changes,
        "stuck_claimed",
        "claimed past reaper.redrive_after without a launch",
    )
    .await
}

async fn unmatched_jobs(ports: &Ports, report: &mut Report) -> ServiceResult<()> {
    for job in jobs_in(ports, JobState::Unmatched).await? {
        let Some(project) = (match &job.project_id {
            Some(id) => ports.store.get_project(id).await?,
            None => None,
        }) else {
            continue;
        };
        let pools = project_pools(ports, &project.id).await?;
        let Some(pool) = pick_pool(&project, &pools, &job.labels) else {
            continue;
        };
        // Only if GitHub still has it queued: a job that ran elsewhere or was
        // cancelled needs no runner.
        let (Some(installation), Ok(repo)) = (job.installation_id, RepoName::parse(&job.repo))
        else {
            continue;
        };
        match ports
            .github
            .get_job(installation, &repo, job.github_job_id)
            .await
        {
            Ok(Some(gh)) if gh.status == "queued" => {}
            Ok(_) => continue,
            Err(e) => {
                report.deferred.push(format!("re-match {}: {e}", job.id));
                continue;
            }
        }
        let changes = JobChanges {
            pool_id: Some(pool.id.clone()),
            ..Default::default()
        };
        if let Advanced::Moved(_) = advance(
            ports,
            &job.id,
            JobState::Queued,
            TransitionCause::Reaper,
            &changes,
        )
        .await?
        {
            ports.queue.send(&job.id, None).await?;
            act(
                ports,
                report,
                "rematched",
                &job.id,
                format!("pool {} now serves its labels", pool.spec.name),
            )
            .await?;
        }
    }
    Ok(())
}

/// How long after a runner ends its unit may still be counted: the state
/// change and the release are two writes, a moment apart.
const RELEASE_GRACE: Duration = Duration::from_secs(120);

/// Repairs drifted capacity counters without ever letting a pool exceed its
/// max. The counter is read first, then claimed jobs (a claim may hold a
/// unit before its runner exists), then runners — counting a runner that
/// ended within [`RELEASE_GRACE`] as still holding its unit, since its
/// release may not have landed yet. Whatever moves between the reads, a
/// counter is lowered only below what could be legitimately held, raised
/// only up to the live runners, and written only if unchanged since read.
async fn capacity(
    ports: &Ports,
    pools: &HashMap<String, Pool>,
    report: &mut Report,
) -> ServiceResult<()> {
    // Four listings whatever the number of pools, in the order the
    // reasoning above needs: counters, claimed jobs, live runners, runners
    // that ended a moment ago.
    let held: HashMap<String, u32> = all_pages!(|p| ports.store.list_pools(None, p))
        .into_iter()
        .map(|p: Pool| (p.id, p.active_runners))
        .collect();
    let claimed_filter = JobFilter {
        state: Some(JobState::Claimed),
        ..Default::default()
    };
    let mut claimed: HashMap<String, u32> = HashMap::new();
    for job in all_pages!(|p| ports.store.list_jobs(&claimed_filter, p)) {
        if let Some(pool_id) = job.pool_id {
            *claimed.entry(pool_id).or_default() += 1;
        }
    }
    let mut live: HashMap<String, u32> = HashMap::new();
    let live_anywhere = live_filter(None);
    for runner in all_pages!(|p| ports.store.list_runners(&live_anywhere, p)) {
        *live.entry(runner.pool_id).or_default() += 1;
    }
    // Newest first; a runner lives at most its pool's max lifetime, so
    // older ones cannot have just ended.
    let now = ports.clock.now();
    let horizon = |pool: &Pool| pool.spec.max_lifetime * 2 + RELEASE_GRACE;
    let furthest = pools.values().map(horizon).max().unwrap_or(RELEASE_GRACE);
    let mut recently_ended: HashMap<String, u32> = HashMap::new();
    let every = RunnerFilter {
        pool_id: None,
        states: vec![],
    };
    let mut pages = Pages::start();
    'pages: while let Some(page) = pages.next_request() {
        for r in pages.items(ports.store.list_runners(&every, &page).await?) {
            if elapsed(now, r.created_at) > furthest {
                break 'pages;
            }
            let within = pools
                .get(&r.pool_id)
                .is_some_and(|pool| elapsed(now, r.created_at) <= horizon(pool));
            if within && !r.state.is_live() && elapsed(now, r.updated_at) < RELEASE_GRACE {
                *recently_ended.entry(r.pool_id).or_default() += 1;
            }
        }
    }
    for pool_id in pools.keys() {
        let Some(&held) = held.get(pool_id) else {
            continue;
        };
        let count = |m: &HashMap<String, u32>| m.get(pool_id).copied().unwrap_or(0);
        let (claimed, live, recently_ended) =
            (count(&claimed), count(&live), count(&recently_ended));
        let repaired = if held > live + recently_ended + claimed {
            live + recently_ended + claimed
        } else if held < live {
            live
        } else {
            continue;
        };
        if ports.store.set_capacity(pool_id, held, repaired).await? {
            let reason = format!(
                "counter said {held}, {live} live runner(s) and {claimed} claimed job(s) hold capacity"
            );
            act(ports, report, "capacity_repaired", pool_id, reason).await?;
        }
    }
    Ok(())
}
