//! Answering GitHub App webhook deliveries, once the HTTP edge has verified
//! and read them.
//!
//! Only `workflow_job` matters. A `queued` or `waiting` job that asks for
//! `self-hosted` goes to [`intake`](super::intake::intake); later actions
//! move a job forward only; duplicates and late deliveries are answered 2xx
//! and change nothing.

use super::catalog::serving_project;
use super::intake::{Intake, intake};
use super::jobs::{Advanced, advance, advance_with_runner};
use super::{Caller, Ports, ServiceResult};
use crate::domain::Runner;
use crate::domain::job::JobChanges;
use crate::domain::labels::asks_for_self_hosted;
use crate::domain::runner::is_runner_name_of;
use crate::domain::{
    Actor, ActorKind, GithubJob, IdKind, Job, JobState, PendingJob, RepoName, Reported,
    RunnerState, TransitionCause,
};
use crate::store::Inserted;

/// A delivery whose signature holds, as the HTTP edge read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// `ping`.
    Ping,
    /// A `workflow_job` delivery: the job and what GitHub reports of it.
    WorkflowJob {
        job: Box<GithubJob>,
        reported: Reported,
    },
    /// Another event: not pacer's business.
    Other { event: String },
}

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

impl From<Intake> for Outcome {
    fn from(taken: Intake) -> Self {
        match taken {
            Intake::Accepted { job_id } => Outcome::Accepted { job_id },
            Intake::NotServed => Outcome::Recorded,
            Intake::Refused(why) => Outcome::Refused(why),
            Intake::UnreadableRepository => Outcome::Ignored("repository"),
        }
    }
}

/// Handles one verified delivery; `caller_ip` is who sent it.
pub async fn handle(
    ports: &Ports,
    caller_ip: Option<std::net::IpAddr>,
    delivery: Delivery,
) -> ServiceResult<Outcome> {
    match delivery {
        Delivery::Ping => Ok(Outcome::Pong),
        Delivery::WorkflowJob { job, reported } => {
            let caller = Caller {
                actor: Actor {
                    kind: ActorKind::GithubSender,
                    id: job.sender.clone().unwrap_or_else(|| "github".into()),
                },
                client_ip: caller_ip,
                role: crate::domain::Role::Viewer,
            };
            workflow_job(ports, &caller, *job, reported).await
        }
        Delivery::Other { event } => {
            tracing::debug!(
                event,
                "webhook event dropped: pacer only needs workflow_job"
            );
            Ok(Outcome::Ignored("event"))
        }
    }
}

async fn workflow_job(
    ports: &Ports,
    caller: &Caller,
    job: GithubJob,
    reported: Reported,
) -> ServiceResult<Outcome> {
    if !asks_for_self_hosted(&job.labels) {
        return Ok(Outcome::Ignored("not self-hosted"));
    }
    let awaiting_approval = match reported {
        Reported::Queued => false,
        Reported::Waiting => true,
        Reported::InProgress => return progressed(ports, &job, JobState::Running).await,
        Reported::Completed => return progressed(ports, &job, JobState::Completed).await,
        Reported::Other(action) => {
            tracing::debug!(action, "workflow_job action dropped");
            return Ok(Outcome::Ignored("action"));
        }
    };
    let pending = PendingJob {
        job,
        awaiting_approval,
    };
    Ok(intake(ports, caller, &pending).await?.into())
}

/// `in_progress` and `completed`: forward-only updates, linking the runner
/// that really took the job.
async fn progressed(ports: &Ports, wj: &GithubJob, to: JobState) -> ServiceResult<Outcome> {
    let ours = wj
        .runner_name
        .as_deref()
        .is_some_and(|n| is_runner_name_of(&ports.settings.deployment, n));
    let Some(job) = ports.store.job_by_github_id(wj.id).await? else {
        if ours {
            return record_unseen(ports, wj, to, None).await;
        }
        if to == JobState::Completed && wj.runner_name.is_none() {
            // Cancelled before any runner took it, and its `queued` not here
            // yet: deliveries come in any order. Remember it, so a late
            // `queued` finds a finished job and launches nothing.
            let served = match RepoName::parse(&wj.repo) {
                Ok(repo) => serving_project(ports, &repo).await?,
                Err(_) => None,
            };
            if let Some(project) = served {
                return record_unseen(ports, wj, to, Some(project.id)).await;
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
    let now = ports.clock.now();
    // The runner is busy with this job, whichever job it was launched for.
    let busy = |r: &mut Runner| {
        let busy = r.state.can_move_to(RunnerState::Busy);
        if busy {
            r.state = RunnerState::Busy;
            r.ran_job_id = Some(job.id.clone());
            r.job_started_at = Some(now);
        }
        busy
    };
    // Its job is over: the runner should call /complete and power off now;
    // the reaper reclaims it if it does not.
    let job_over = |r: &mut Runner| {
        let mark = r.state.is_live() && r.job_ended_at.is_none();
        if mark {
            r.job_ended_at = Some(now);
            if r.ran_job_id.is_none() {
                // Its `in_progress` never came: the job ran from when the
                // runner was ready, as far as pacer knows.
                r.ran_job_id = Some(job.id.clone());
                r.job_started_at = Some(r.registered_at.unwrap_or(r.created_at));
            }
        }
        mark
    };
    let cause = TransitionCause::Webhook;
    let (advanced, marked) = match (&runner, to) {
        (Some(r), JobState::Running) => {
            advance_with_runner(ports, &job, |_| true, to, cause, &changes, r, busy).await?
        }
        (Some(r), JobState::Completed | JobState::Cancelled) => {
            advance_with_runner(ports, &job, |_| true, to, cause, &changes, r, job_over).await?
        }
        _ => (advance(ports, &job, to, cause, &changes).await?, None),
    };
    if let Advanced::Refused(current) = advanced {
        tracing::debug!(job_id = %job.id, at = %current.state, wanted = %to, "late or repeated workflow_job delivery; nothing changed");
    }
    // Whether the job's runner, still live, settles the job's usage itself
    // when it ends (the job is final by then: it was written first).
    let runner_settles = to.is_final()
        && marked.is_some_and(|(_, r)| r.ran_job_id.as_deref() == Some(job.id.as_str()));
    if to.is_final() && !runner_settles {
        super::usage::settle(ports, &job.id, None).await?;
    }
    Ok(Outcome::Recorded)
}

/// A progress update for a job pacer never saw, run by one of this
/// deployment's runners (say the queued delivery was lost), or finished
/// before any runner took it on a repo `project` serves: record it.
async fn record_unseen(
    ports: &Ports,
    wj: &GithubJob,
    state: JobState,
    project: Option<String>,
) -> ServiceResult<Outcome> {
    let now = ports.clock.now();
    let runner = match &wj.runner_name {
        Some(name) => ports.store.runner_by_name(name).await?,
        None => None,
    };
    let note = match &wj.runner_name {
        Some(_) => "first seen in this state: the queued delivery never arrived",
        None => "finished before its queued delivery arrived: a late one launches nothing",
    };
    let job = Job {
        project_id: runner.as_ref().map(|r| r.project_id.clone()).or(project),
        pool_id: runner.as_ref().map(|r| r.pool_id.clone()),
        runner_id: runner.as_ref().map(|r| r.id.clone()),
        runner_name: wj.runner_name.clone(),
        conclusion: wj
            .conclusion
            .clone()
            .filter(|_| state == JobState::Completed),
        ..Job::first_seen(
            ports.ids.new_id(IdKind::Job, now),
            wj,
            state,
            now,
            Some(note.into()),
        )
    };
    if let Inserted::Existing(existing) = ports.store.insert_job(&job).await? {
        // Raced with another delivery for the same job: apply ours to it.
        advance(
            ports,
            &*existing,
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
