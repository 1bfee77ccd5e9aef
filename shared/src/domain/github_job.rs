//! A workflow job as GitHub describes it, however pacer learnt of it — a
//! `workflow_job` delivery, or a listing of a repository's queued jobs when
//! the delivery never came — and the job that needs a runner, which both
//! ways produce and one intake takes in.

use super::job::{Job, JobState, Transition, TransitionCause};
use super::{Time, Visibility};

/// What GitHub says of one workflow job.
#[derive(Debug, Clone, PartialEq)]
pub struct GithubJob {
    /// GitHub's job id: pacer keeps one job per id.
    pub id: i64,
    pub run_id: i64,
    /// 1 for a run's first attempt, higher after a re-run.
    pub run_attempt: i64,
    /// `owner/name` as GitHub spells it; read with `RepoName::parse` where it matters.
    pub repo: String,
    pub visibility: Visibility,
    /// The App installation that sent or listed it, when known.
    pub installation_id: Option<i64>,
    /// Its `runs-on` labels as GitHub sent them (not yet case-folded).
    pub labels: Vec<String>,
    pub workflow_name: Option<String>,
    pub name: Option<String>,
    /// Who triggered the run.
    pub sender: Option<String>,
    /// The job's page on github.com.
    pub html_url: Option<String>,
    /// The runner GitHub gave it, once it runs.
    pub runner_name: Option<String>,
    /// GitHub's conclusion (`success`, `failure`, `cancelled`, …), once it completed.
    pub conclusion: Option<String>,
}

/// What GitHub reports a job is doing: a `workflow_job` delivery's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Queued,
    /// Held for an environment's approval or a concurrency group.
    Waiting,
    InProgress,
    Completed,
    /// An action GitHub added that pacer does not know: kept for the log, changes nothing.
    Other(String),
}

/// A job that needs a runner: GitHub has it queued, or holds it waiting for
/// an approval (recorded now, launched once GitHub queues it).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingJob {
    pub job: GithubJob,
    pub awaiting_approval: bool,
}

impl PendingJob {
    /// The state a new job row starts in: waiting for its approval, queued
    /// for a pool, or unmatched when no pool serves its labels.
    pub fn initial_state(&self, has_pool: bool) -> JobState {
        match (self.awaiting_approval, has_pool) {
            (true, _) => JobState::Waiting,
            (false, true) => JobState::Queued,
            (false, false) => JobState::Unmatched,
        }
    }
}

impl Job {
    /// A job pacer sees for the first time, in `state`, as GitHub describes
    /// it; the caller fills in what pacer decided (project, pool, runner).
    pub fn first_seen(
        id: String,
        gh: &GithubJob,
        state: JobState,
        now: Time,
        note: Option<String>,
    ) -> Job {
        Job {
            id,
            github_job_id: gh.id,
            run_id: gh.run_id,
            run_attempt: gh.run_attempt,
            repo: gh.repo.clone(),
            installation_id: gh.installation_id,
            labels: gh.labels.clone(),
            workflow_name: gh.workflow_name.clone(),
            job_name: gh.name.clone(),
            sender: gh.sender.clone(),
            html_url: gh.html_url.clone(),
            project_id: None,
            pool_id: None,
            runner_id: None,
            runner_name: None,
            state,
            conclusion: None,
            attempts: 0,
            failure_reason: None,
            usage: None,
            waiting_for_capacity: false,
            version: 0,
            transitions: vec![Transition {
                state,
                at: now,
                cause: TransitionCause::Webhook,
                note,
            }],
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> GithubJob {
        GithubJob {
            id: 7,
            run_id: 3,
            run_attempt: 2,
            repo: "acme/app".into(),
            visibility: Visibility::Private,
            installation_id: Some(9),
            labels: vec!["self-hosted".into()],
            workflow_name: Some("ci".into()),
            name: Some("build".into()),
            sender: Some("octocat".into()),
            html_url: None,
            runner_name: None,
            conclusion: None,
        }
    }

    #[test]
    fn a_pending_job_waits_for_its_approval_before_it_needs_a_pool() {
        let waiting = PendingJob {
            job: job(),
            awaiting_approval: true,
        };
        assert_eq!(waiting.initial_state(true), JobState::Waiting);
        assert_eq!(waiting.initial_state(false), JobState::Waiting);
        let queued = PendingJob {
            awaiting_approval: false,
            ..waiting
        };
        assert_eq!(queued.initial_state(true), JobState::Queued);
        assert_eq!(queued.initial_state(false), JobState::Unmatched);
    }

    #[test]
    fn a_first_seen_job_carries_githubs_description_and_one_transition() {
        let now = chrono::Utc::now();
        let j = Job::first_seen("job_1".into(), &job(), JobState::Queued, now, None);
        assert_eq!(
            (j.github_job_id, j.run_id, j.run_attempt, j.repo.as_str()),
            (7, 3, 2, "acme/app")
        );
        assert_eq!(j.installation_id, Some(9));
        assert_eq!(j.job_name.as_deref(), Some("build"));
        assert_eq!(j.sender.as_deref(), Some("octocat"));
        assert_eq!(j.transitions.len(), 1);
        assert_eq!(
            j.transitions.first().map(|t| t.state),
            Some(JobState::Queued)
        );
        assert_eq!((j.created_at, j.updated_at), (now, now));
    }
}
