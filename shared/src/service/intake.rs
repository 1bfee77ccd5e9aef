//! Taking in a job that needs a runner, however pacer learnt of it: a
//! `queued` or `waiting` webhook delivery, or the reaper finding a queued job
//! whose delivery never came. A job becomes a row once (idempotent on
//! GitHub's job id), is matched to a pool, and its id is enqueued. Which
//! project serves it, and that project's pools, come from the catalog.

use serde_json::json;

use super::audit::record;
use super::jobs::{Advanced, advance};
use super::limits;
use super::{Caller, Ports, ServiceResult};
use crate::domain::job::JobChanges;
use crate::domain::{IdKind, Job, JobState, PendingJob, RepoName, TransitionCause, pick_pool};
use crate::store::Inserted;

/// What became of a job taken in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// pacer has the job (new, or already known): its id.
    Accepted { job_id: String },
    /// No project serves its repository: audited, nothing stored.
    NotServed,
    /// A job pacer will not run, by a rule the operator can change (a
    /// public repository its project does not allow), saying why.
    Refused(&'static str),
    /// Its repository's name is not one pacer can read.
    UnreadableRepository,
}

/// How long one refused job is audited once for, however often GitHub (or
/// the reaper's recovery) brings it again.
const REFUSAL_AUDITED_ONCE_PER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Takes in a job that needs a runner.
pub async fn intake(ports: &Ports, caller: &Caller, pending: &PendingJob) -> ServiceResult<Intake> {
    let gh = &pending.job;
    // A redelivery of a job this process queued: nothing to read or write.
    if !pending.awaiting_approval {
        if let Some(job_id) = ports.catalog.recent(gh.id) {
            return Ok(Intake::Accepted { job_id });
        }
    }
    let Ok(repo) = RepoName::parse(&gh.repo) else {
        tracing::warn!(repo = %gh.repo, "workflow_job for a repository name pacer cannot read");
        return Ok(Intake::UnreadableRepository);
    };
    // From memory in a warm process; a job pacer has already is found by
    // its insert, which GitHub's job id makes conditional.
    let Some((project, pools)) = ports.catalog.serving(ports, &repo).await? else {
        if ports.catalog.first_unserved(&repo, ports.clock.now()) {
            record(ports, caller, "job.repo_not_bound", Some(&repo.to_string()), json!({
                "github_job_id": gh.id, "labels": gh.labels,
                "hint": "bind the repository to a project, or create an org-scoped project for its owner",
            }))
            .await?;
        }
        return Ok(Intake::NotServed);
    };
    if gh.visibility.is_public() && !project.spec.allow_public_repos {
        // Anyone may open a pull request on a public repository; its
        // workflow would run on a machine in the operator's network.
        if limits::first_in_window(
            ports,
            &format!("public-refused:{}", gh.id),
            REFUSAL_AUDITED_ONCE_PER,
        )
        .await?
        {
            record(ports, caller, "job.public_repo_refused", Some(&repo.to_string()), json!({
                "github_job_id": gh.id, "labels": gh.labels, "project": project.spec.name,
                "hint": "jobs of public repositories get no runner unless their project sets allow_public_repos",
            }))
            .await?;
            tracing::warn!(repo = %repo, github_job_id = gh.id, sender = %caller.actor.id, "refused a job of a public repository");
        }
        return Ok(Intake::Refused("public repository"));
    }
    let installation_id = match gh.installation_id {
        Some(id) => Some(id),
        // 3 of GitHub's 8 example payloads carry no installation: ask.
        None => match ports.github.repo_installation(&repo).await {
            Ok(id) => Some(id),
            Err(e) => {
                // Not fatal: registration looks it up again.
                tracing::warn!(repo = %repo, error = %crate::error_text::display_chain(&e), "could not look up the App installation; will retry at registration");
                None
            }
        },
    };
    let pool = pick_pool(&project, &pools, &gh.labels);
    let state = pending.initial_state(pool.is_some());
    let now = ports.clock.now();
    let job = Job {
        repo: repo.to_string(),
        installation_id,
        project_id: Some(project.id.clone()),
        pool_id: pool.map(|p| p.id.clone()),
        ..Job::first_seen(ports.ids.new_id(IdKind::Job, now), gh, state, now, None)
    };
    match write_with_hint(ports, &job).await? {
        Inserted::Existing(existing) => already_known(ports, caller, *existing, pending).await,
        Inserted::Created => {
            if state == JobState::Unmatched {
                audit_no_pool_match(ports, caller, &job, Some(project.spec.name.clone())).await?;
            }
            tracing::info!(job_id = %job.id, github_job_id = gh.id, repo = %job.repo, state = %state, "job accepted");
            Ok(Intake::Accepted { job_id: job.id })
        }
    }
}

/// Writes a new job's row and, for a queued job, sends its hint.
///
/// A queue service's send is a round trip, so it goes out beside the write
/// rather than after it; no order of failures loses the job or runs it
/// twice:
/// - the hint arrives before the row: the orchestrator looks again
///   ([`super::dispatch`], `Dispatched::NotStored`);
/// - the write fails after the send: the webhook answers an error, so
///   GitHub counts the delivery failed; the hint finds no row and is
///   dropped after a few receives;
/// - the send fails after the write: it is sent once more, and the reaper
///   redrives a queued job whose hint never went out;
/// - the row was there already (a redelivery): the extra hint finds the job
///   claimed or further on, and the orchestrator leaves it.
///
/// An in-process send costs nothing and its receiver could run before the
/// row lands, so there the row goes first.
async fn write_with_hint(ports: &Ports, job: &Job) -> ServiceResult<Inserted> {
    use crate::failpoint::{Failpoint, hit};
    if job.state != JobState::Queued {
        return Ok(ports.store.insert_job(job).await?);
    }
    let inserted = if ports.queue.sends_remotely() {
        let hint = async {
            let sent = ports.queue.send(&job.id, None).await;
            hit(Failpoint::AfterHintSent);
            sent
        };
        let (inserted, sent) = tokio::join!(ports.store.insert_job(job), hint);
        let inserted = inserted?;
        if matches!(inserted, Inserted::Created) {
            if let Err(first) = sent {
                send_hint(ports, &job.id, Some(first)).await;
            }
        }
        inserted
    } else {
        let inserted = ports.store.insert_job(job).await?;
        if matches!(inserted, Inserted::Created) {
            send_hint(ports, &job.id, None).await;
        }
        inserted
    };
    if matches!(inserted, Inserted::Created) {
        hit(Failpoint::AfterJobInsert);
        ports.catalog.remember(job.github_job_id, &job.id);
    }
    Ok(inserted)
}

/// Sends a stored job's queue hint, once more if the first send fails
/// (`failed`: a first send that already did). A stored job is accepted
/// either way: the reaper redrives a queued job whose hint never went out,
/// after `reaper.redrive_after`.
async fn send_hint(ports: &Ports, job_id: &str, failed: Option<crate::queue::QueueError>) {
    let first = match failed {
        Some(e) => e,
        None => match ports.queue.send(job_id, None).await {
            Ok(()) => return,
            Err(e) => e,
        },
    };
    if let Err(again) = ports.queue.send(job_id, None).await {
        tracing::warn!(job_id, error = %crate::error_text::display_chain(&again), first = %crate::error_text::display_chain(&first), "the job is stored but its queue hint failed twice; the reaper redrives it after reaper.redrive_after");
    }
}

/// A job pacer has, brought again: a redelivery changes nothing, but a job
/// GitHub releases from `waiting` moves to `queued`.
async fn already_known(
    ports: &Ports,
    caller: &Caller,
    job: Job,
    pending: &PendingJob,
) -> ServiceResult<Intake> {
    if !pending.awaiting_approval && job.state == JobState::Waiting {
        let to = if job.pool_id.is_some() {
            JobState::Queued
        } else {
            JobState::Unmatched
        };
        if let Advanced::Moved(moved) = advance(
            ports,
            &job,
            to,
            TransitionCause::Webhook,
            &JobChanges::default(),
        )
        .await?
        {
            match moved.state {
                JobState::Queued => ports.queue.send(&moved.id, None).await?,
                JobState::Unmatched => {
                    let project = match &moved.project_id {
                        Some(id) => ports.store.get_project(id).await?.map(|p| p.spec.name),
                        None => None,
                    };
                    audit_no_pool_match(ports, caller, &moved, project).await?;
                }
                _ => {}
            }
        }
    }
    Ok(Intake::Accepted { job_id: job.id })
}

/// The audit entry of a job no pool of `project` serves.
async fn audit_no_pool_match(
    ports: &Ports,
    caller: &Caller,
    job: &Job,
    project: Option<String>,
) -> ServiceResult<()> {
    record(ports, caller, "job.no_pool_match", Some(&job.id), json!({
        "github_job_id": job.github_job_id, "repo": job.repo, "labels": job.labels, "project": project,
    }))
    .await
}
