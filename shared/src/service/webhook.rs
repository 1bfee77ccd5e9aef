//! Accepting GitHub App webhooks.
//!
//! Only `workflow_job` matters. A queued job that asks for `self-hosted` on a
//! repo some project serves becomes a job row (idempotent on GitHub's job
//! id), is matched to a pool, and its id is enqueued. Later actions move it
//! forward only; duplicates and late deliveries are answered 2xx and change
//! nothing.

use serde_json::json;

use super::audit::record;
use super::jobs::{Advanced, advance};
use super::limits;
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::domain::job::JobChanges;
use crate::domain::labels::{PoolCandidate, asks_for_self_hosted, job_labels, offered_labels};
use crate::domain::runner::is_runner_name_of;
use crate::domain::{
    Actor, ActorKind, IdKind, Job, JobState, Pool, Project, RepoName, RunnerState, Scope,
    Transition, TransitionCause, match_pool,
};
use crate::github::webhook::{
    SignatureError, WorkflowJobAction, WorkflowJobEvent, verify_signature,
};
use crate::store::{Inserted, Pages, all_pages};

/// How a delivery was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `ping`.
    Pong,
    /// Not pacer's business (another event, a GitHub-hosted job, an
    /// unknown action, a job of another deployment): 200.
    Ignored(&'static str),
    /// Recorded without launching anything (a progress update, a repo no
    /// project serves, a refused backward move): 200.
    Recorded,
    /// A queued job was taken in: 202.
    Accepted { job_id: String },
    /// A job pacer will not run, by a rule the operator can change (a public
    /// repository its project does not allow): 200, saying why, so GitHub's
    /// delivery log shows it.
    Refused(&'static str),
}

/// How long one refused job is audited once for, however often GitHub (or
/// the reaper's recovery) brings it again.
const REFUSAL_AUDITED_ONCE_PER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the body is not a {event} payload pacer can read: {message}")]
    Malformed { event: String, message: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Verifies and handles one delivery.
pub async fn accept(
    ports: &Ports,
    caller_ip: Option<std::net::IpAddr>,
    event: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Outcome, WebhookError> {
    let secrets: Vec<&[u8]> = ports
        .settings
        .webhook_secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect();
    verify_signature(&secrets, body, signature)?;
    match event {
        "ping" => Ok(Outcome::Pong),
        "workflow_job" => {
            let ev: WorkflowJobEvent =
                serde_json::from_slice(body).map_err(|e| WebhookError::Malformed {
                    event: event.into(),
                    message: e.to_string(),
                })?;
            let sender = ev
                .sender
                .as_ref()
                .map_or("github", |s| s.login.as_str())
                .to_string();
            let caller = Caller {
                actor: Actor {
                    kind: ActorKind::GithubSender,
                    id: sender,
                },
                client_ip: caller_ip,
                role: crate::domain::Role::Viewer,
            };
            Ok(workflow_job(ports, &caller, &ev).await?)
        }
        other => {
            tracing::debug!(
                event = other,
                "webhook event dropped: pacer only needs workflow_job"
            );
            Ok(Outcome::Ignored("event"))
        }
    }
}

async fn workflow_job(
    ports: &Ports,
    caller: &Caller,
    ev: &WorkflowJobEvent,
) -> ServiceResult<Outcome> {
    if !asks_for_self_hosted(&ev.workflow_job.labels) {
        return Ok(Outcome::Ignored("not self-hosted"));
    }
    match &ev.action {
        WorkflowJobAction::Queued => queued(ports, caller, ev, JobState::Queued).await,
        WorkflowJobAction::Waiting => queued(ports, caller, ev, JobState::Waiting).await,
        WorkflowJobAction::InProgress => progressed(ports, ev, JobState::Running).await,
        WorkflowJobAction::Completed => progressed(ports, ev, JobState::Completed).await,
        WorkflowJobAction::Unknown(action) => {
            tracing::debug!(action, "workflow_job action dropped");
            Ok(Outcome::Ignored("action"))
        }
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

/// The pool a job's labels pick among a project's pools.
pub fn pick_pool<'a>(project: &Project, pools: &'a [Pool], labels: &[String]) -> Option<&'a Pool> {
    let candidates: Vec<PoolCandidate<'_>> = pools
        .iter()
        .map(|p| PoolCandidate {
            id: &p.id,
            name: &p.spec.name,
            priority: p.spec.priority,
            offered: offered_labels(&p.spec.labels, &project.spec.label),
        })
        .collect();
    let chosen = match_pool(&job_labels(labels)?, &candidates)?;
    pools.iter().find(|p| p.id == chosen.pool_id)
}

pub(crate) async fn queued(
    ports: &Ports,
    caller: &Caller,
    ev: &WorkflowJobEvent,
    arrived_as: JobState,
) -> ServiceResult<Outcome> {
    let wj = &ev.workflow_job;
    if let Some(existing) = ports.store.job_by_github_id(wj.id).await? {
        return already_known(ports, caller, existing, arrived_as).await;
    }
    let Ok(repo) = RepoName::parse(&ev.repository.full_name) else {
        tracing::warn!(repo = %ev.repository.full_name, "workflow_job for a repository name pacer cannot read");
        return Ok(Outcome::Ignored("repository"));
    };
    let Some(project) = serving_project(ports, &repo).await? else {
        record(ports, caller, "job.repo_not_bound", Some(&repo.to_string()), json!({
            "github_job_id": wj.id, "labels": wj.labels,
            "hint": "bind the repository to a project, or create an org-scoped project for its owner",
        }))
        .await?;
        return Ok(Outcome::Recorded);
    };
    if ev.repository.visibility().is_public() && !project.spec.allow_public_repos {
        // Anyone may open a pull request on a public repository; its
        // workflow would run on a machine in the operator's network.
        if limits::first_in_window(
            ports,
            &format!("public-refused:{}", wj.id),
            REFUSAL_AUDITED_ONCE_PER,
        )
        .await?
        {
            record(ports, caller, "job.public_repo_refused", Some(&repo.to_string()), json!({
                "github_job_id": wj.id, "labels": wj.labels, "project": project.spec.name,
                "hint": "jobs of public repositories get no runner unless their project sets allow_public_repos",
            }))
            .await?;
            tracing::warn!(repo = %repo, github_job_id = wj.id, sender = %caller.actor.id, "refused a job of a public repository");
        }
        return Ok(Outcome::Refused("public repository"));
    }
    let installation_id = match &ev.installation {
        Some(i) => Some(i.id),
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
    let pools = project_pools(ports, &project.id).await?;
    let pool = pick_pool(&project, &pools, &wj.labels);
    let state = match (arrived_as, pool) {
        (JobState::Waiting, _) => JobState::Waiting,
        (_, Some(_)) => JobState::Queued,
        (_, None) => JobState::Unmatched,
    };
    let now = ports.clock.now();
    let job = Job {
        id: ports.ids.new_id(IdKind::Job, now),
        github_job_id: wj.id,
        run_id: wj.run_id,
        run_attempt: wj.run_attempt.unwrap_or(1),
        repo: repo.to_string(),
        installation_id,
        labels: wj.labels.clone(),
        workflow_name: wj.workflow_name.clone(),
        job_name: wj.name.clone(),
        sender: ev.sender.as_ref().map(|s| s.login.clone()),
        html_url: wj.html_url.clone(),
        project_id: Some(project.id.clone()),
        pool_id: pool.map(|p| p.id.clone()),
        runner_id: None,
        runner_name: None,
        state,
        conclusion: None,
        attempts: 0,
        failure_reason: None,
        cost_usd: None,
        waiting_for_capacity: false,
        transitions: vec![Transition {
            state,
            at: now,
            cause: TransitionCause::Webhook,
            note: None,
        }],
        created_at: now,
        updated_at: now,
    };
    match ports.store.insert_job(&job).await? {
        Inserted::Existing(existing) => already_known(ports, caller, *existing, arrived_as).await,
        Inserted::Created => {
            crate::failpoint::hit("after_job_insert");
            match state {
                JobState::Unmatched => {
                    audit_no_pool_match(ports, caller, &job, Some(project.spec.name.clone()))
                        .await?
                }
                JobState::Queued => {
                    ports
                        .queue
                        .send(&job.id, None)
                        .await
                        .map_err(ServiceError::Internal)?;
                }
                _ => {}
            }
            tracing::info!(job_id = %job.id, github_job_id = wj.id, repo = %job.repo, state = %state, "job accepted");
            Ok(Outcome::Accepted { job_id: job.id })
        }
    }
}

/// A queued/waiting delivery for a job pacer has: a redelivery changes
/// nothing, but a job GitHub releases from `waiting` moves to `queued`.
async fn already_known(
    ports: &Ports,
    caller: &Caller,
    job: Job,
    arrived_as: JobState,
) -> ServiceResult<Outcome> {
    if arrived_as == JobState::Queued && job.state == JobState::Waiting {
        let to = if job.pool_id.is_some() {
            JobState::Queued
        } else {
            JobState::Unmatched
        };
        if let Advanced::Moved(moved) = advance(
            ports,
            &job.id,
            to,
            TransitionCause::Webhook,
            &JobChanges::default(),
        )
        .await?
        {
            match moved.state {
                JobState::Queued => ports
                    .queue
                    .send(&moved.id, None)
                    .await
                    .map_err(ServiceError::Internal)?,
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
    Ok(Outcome::Accepted { job_id: job.id })
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

/// `in_progress` and `completed`: forward-only updates, linking the runner
/// that really took the job.
async fn progressed(ports: &Ports, ev: &WorkflowJobEvent, to: JobState) -> ServiceResult<Outcome> {
    let wj = &ev.workflow_job;
    let ours = wj
        .runner_name
        .as_deref()
        .is_some_and(|n| is_runner_name_of(&ports.settings.deployment, n));
    let Some(job) = ports.store.job_by_github_id(wj.id).await? else {
        if ours {
            return record_unseen(ports, ev, to, None).await;
        }
        if to == JobState::Completed && wj.runner_name.is_none() {
            // Cancelled before any runner took it, and its `queued` not here
            // yet: deliveries come in any order. Remember it, so a late
            // `queued` finds a finished job and launches nothing.
            let served = match RepoName::parse(&ev.repository.full_name) {
                Ok(repo) => serving_project(ports, &repo).await?,
                Err(_) => None,
            };
            if let Some(project) = served {
                return record_unseen(ports, ev, to, Some(project.id)).await;
            }
        }
        return Ok(Outcome::Ignored("unknown job"));
    };
    let runner = match wj.runner_name.as_deref().filter(|_| ours) {
        Some(name) => ports.store.runner_by_name(name).await?,
        None => None,
    };
    let changes = JobChanges {
        runner_id: runner.as_ref().map(|r| r.id.clone()),
        runner_name: wj.runner_name.clone(),
        conclusion: wj.conclusion.clone().filter(|_| to == JobState::Completed),
        ..Default::default()
    };
    if let Advanced::Refused(current) =
        advance(ports, &job.id, to, TransitionCause::Webhook, &changes).await?
    {
        tracing::debug!(job_id = %job.id, at = %current.state, wanted = %to, "late or repeated workflow_job delivery; nothing changed");
    }
    match (runner, to) {
        (Some(runner), JobState::Running) => {
            // The runner is busy with this job, whichever job it was launched for.
            super::runner_moves::update_runner(ports, &runner.id, |r| {
                let busy = r.state.can_move_to(RunnerState::Busy);
                if busy {
                    r.state = RunnerState::Busy;
                }
                busy
            })
            .await?;
        }
        (Some(runner), JobState::Completed | JobState::Cancelled) => {
            // Its job is over: the runner should call /complete and power
            // off now; the reaper reclaims it if it does not.
            let now = ports.clock.now();
            super::runner_moves::update_runner(ports, &runner.id, |r| {
                let mark = r.state.is_live() && r.job_ended_at.is_none();
                if mark {
                    r.job_ended_at = Some(now);
                }
                mark
            })
            .await?;
        }
        _ => {}
    }
    Ok(Outcome::Recorded)
}

/// A progress update for a job pacer never saw, run by one of this
/// deployment's runners (say the queued delivery was lost), or finished
/// before any runner took it on a repo `project` serves: record it.
async fn record_unseen(
    ports: &Ports,
    ev: &WorkflowJobEvent,
    state: JobState,
    project: Option<String>,
) -> ServiceResult<Outcome> {
    let wj = &ev.workflow_job;
    let now = ports.clock.now();
    let runner = match &wj.runner_name {
        Some(name) => ports.store.runner_by_name(name).await?,
        None => None,
    };
    let job = Job {
        id: ports.ids.new_id(IdKind::Job, now),
        github_job_id: wj.id,
        run_id: wj.run_id,
        run_attempt: wj.run_attempt.unwrap_or(1),
        repo: ev.repository.full_name.clone(),
        installation_id: ev.installation.as_ref().map(|i| i.id),
        labels: wj.labels.clone(),
        workflow_name: wj.workflow_name.clone(),
        job_name: wj.name.clone(),
        sender: ev.sender.as_ref().map(|s| s.login.clone()),
        html_url: wj.html_url.clone(),
        project_id: runner.as_ref().map(|r| r.project_id.clone()).or(project),
        pool_id: runner.as_ref().map(|r| r.pool_id.clone()),
        runner_id: runner.as_ref().map(|r| r.id.clone()),
        runner_name: wj.runner_name.clone(),
        state,
        conclusion: wj
            .conclusion
            .clone()
            .filter(|_| state == JobState::Completed),
        attempts: 0,
        failure_reason: None,
        cost_usd: None,
        waiting_for_capacity: false,
        transitions: vec![Transition {
            state,
            at: now,
            cause: TransitionCause::Webhook,
            note: Some(match &wj.runner_name {
                Some(_) => "first seen in this state: the queued delivery never arrived".into(),
                None => "finished before its queued delivery arrived: a late one launches nothing"
                    .into(),
            }),
        }],
        created_at: now,
        updated_at: now,
    };
    if let Inserted::Existing(existing) = ports.store.insert_job(&job).await? {
        // Raced with another delivery for the same job: apply ours to it.
        advance(
            ports,
            &existing.id,
            state,
            TransitionCause::Webhook,
            &JobChanges {
                runner_name: wj.runner_name.clone(),
                conclusion: job.conclusion.clone(),
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(Outcome::Recorded)
}

/// A `queued` workflow_job delivery shaped like GitHub's, for
/// `pacer admin send-test-job` and tests: the least a real one carries.
pub fn sample_queued_payload(
    github_job_id: i64,
    repo: &RepoName,
    labels: &[String],
    installation_id: i64,
) -> serde_json::Value {
    let run_id = github_job_id / 2 + 1;
    json!({
        "action": "queued",
        "workflow_job": {
            "id": github_job_id,
            "run_id": run_id,
            "run_attempt": 1,
            "status": "queued",
            "conclusion": null,
            "name": "pacer test job",
            "workflow_name": "pacer send-test-job",
            "html_url": format!("https://github.com/{repo}/actions/runs/{run_id}/job/{github_job_id}"),
            "labels": labels,
            "runner_id": null,
            "runner_name": null,
        },
        "repository": {
            "full_name": repo.to_string(), "name": repo.name(), "owner": {"login": repo.owner()},
            "private": true, "visibility": "private",
        },
        "installation": {"id": installation_id},
        "sender": {"login": "pacer-send-test-job"},
    })
}
