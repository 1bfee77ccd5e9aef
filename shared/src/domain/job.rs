//! Jobs — one GitHub `workflow_job` each — and the state machine that keeps
//! them moving forward whatever order webhooks arrive in (docs/architecture.md, "Job states").

use serde::{Deserialize, Serialize};

use super::Time;
use super::cost::JobUsage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// No pool served its labels when it arrived; re-matched when pools change.
    Unmatched,
    /// GitHub holds it for an approval or a concurrency group; nothing launches.
    Waiting,
    Queued,
    /// An orchestrator holds a capacity reservation for it.
    Claimed,
    /// Its runner's instance was launched.
    Starting,
    Running,
    Completed,
    /// pacer gave up launching a runner for it (GitHub's conclusion is separate).
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Unmatched,
        JobState::Waiting,
        JobState::Queued,
        JobState::Claimed,
        JobState::Starting,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Unmatched => "unmatched",
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Claimed => "claimed",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// How far along a job is. Moves driven by GitHub only ever increase it.
    fn rank(self) -> u8 {
        match self {
            JobState::Unmatched | JobState::Waiting => 0,
            JobState::Queued => 1,
            JobState::Claimed => 2,
            JobState::Starting => 3,
            JobState::Running => 4,
            JobState::Failed => 5,
            JobState::Completed | JobState::Cancelled => 6,
        }
    }

    /// Nothing moves a job out of these.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking for a transition; the rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum TransitionCause {
    /// A GitHub webhook: forward only.
    Webhook,
    /// The orchestrator claiming, launching, or giving a job back.
    Orchestrator,
    /// The reaper re-driving or re-matching.
    Reaper,
    /// A runner's own callback.
    Runner,
    /// A person, through the console or its API (terminating a runner).
    Operator,
}

/// Whether `cause` may move a job from `from` to `to`. A repeat (`from ==
/// to`) is never a transition: the caller treats it as already done.
pub fn transition_allowed(from: JobState, to: JobState, cause: TransitionCause) -> bool {
    use JobState::*;
    if from == to || from.is_final() {
        return false;
    }
    match cause {
        // The only backward moves: a claim or launch that did not lead to a
        // running job goes back to the queue — given back by the orchestrator,
        // the reaper, a runner reporting that its bootstrap failed, or an
        // operator terminating the runner it waited for. Once
        // running, never; and GitHub's news only ever moves a job forward.
        TransitionCause::Orchestrator
        | TransitionCause::Reaper
        | TransitionCause::Runner
        | TransitionCause::Operator
            if matches!(from, Claimed | Starting) && to == Queued =>
        {
            true
        }
        // Re-matching an unmatched job when pools change.
        TransitionCause::Reaper if from == Unmatched && to == Queued => true,
        // GitHub released a waiting job that no pool serves: it is
        // unmatched now, as it would have been had it arrived queued.
        TransitionCause::Webhook if from == Waiting && to == Unmatched => true,
        // GitHub may report a job pacer gave up on as running or done
        // elsewhere; that is news, not a move backwards. Everything else
        // moves strictly forward.
        _ => {
            to.rank() > from.rank()
                || (from == Failed && matches!(to, Running | Completed | Cancelled))
        }
    }
}

/// One step of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Transition {
    pub state: JobState,
    pub at: Time,
    pub cause: TransitionCause,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Job {
    pub id: String,
    pub github_job_id: i64,
    pub run_id: i64,
    pub run_attempt: i64,
    pub repo: String,
    pub installation_id: Option<i64>,
    pub labels: Vec<String>,
    pub workflow_name: Option<String>,
    pub job_name: Option<String>,
    pub sender: Option<String>,
    pub html_url: Option<String>,
    pub project_id: Option<String>,
    pub pool_id: Option<String>,
    pub runner_id: Option<String>,
    pub runner_name: Option<String>,
    pub state: JobState,
    pub conclusion: Option<String>,
    pub attempts: u32,
    pub failure_reason: Option<String>,
    /// What it cost and how long it waited, once it is final and the runner
    /// that ran it has ended.
    #[serde(default)]
    pub usage: Option<JobUsage>,
    pub transitions: Vec<Transition>,
    /// Handed back to the queue because its pool was full, with no queue
    /// message of its own: a slot freed in the pool must wake it. Any later
    /// transition clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting_for_capacity: bool,
    /// Counts the job's writes: each is conditional on the state and the
    /// version read, so a writer holding an older copy (one the job left and
    /// came back to the same state since) never erases another's changes.
    #[serde(default)]
    pub version: u64,
    pub created_at: Time,
    pub updated_at: Time,
}

/// Fields a transition may set along with the new state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobChanges {
    pub pool_id: Option<String>,
    pub project_id: Option<String>,
    pub runner_id: Option<String>,
    pub runner_name: Option<String>,
    pub conclusion: Option<String>,
    pub failure_reason: Option<String>,
    /// Counts one more launch attempt.
    pub count_attempt: bool,
    /// Marks the job [`Job::waiting_for_capacity`] (else the mark is cleared).
    pub waiting_for_capacity: bool,
    pub note: Option<String>,
}

impl Job {
    /// Applies an allowed transition in memory: what a store writes,
    /// conditional on the job still being in `self.state`.
    pub fn apply(&mut self, to: JobState, cause: TransitionCause, changes: &JobChanges, at: Time) {
        // One of pacer's runners moved a job its launcher had not yet marked
        // starting — it took the job, or failed and gave it back (an instance
        // quicker than the launcher's next write): that launch is the attempt
        // the `starting` step would have counted, and that step will now be
        // refused.
        let launch_overtaken = self.state == JobState::Claimed
            && to != JobState::Starting
            && changes.runner_id.is_some();
        self.state = to;
        self.updated_at = at;
        self.version += 1;
        let set = |field: &mut Option<String>, value: &Option<String>| {
            if value.is_some() {
                field.clone_from(value);
            }
        };
        set(&mut self.pool_id, &changes.pool_id);
        set(&mut self.project_id, &changes.project_id);
        set(&mut self.runner_id, &changes.runner_id);
        set(&mut self.runner_name, &changes.runner_name);
        set(&mut self.conclusion, &changes.conclusion);
        set(&mut self.failure_reason, &changes.failure_reason);
        if changes.count_attempt || launch_overtaken {
            self.attempts += 1;
        }
        self.waiting_for_capacity = changes.waiting_for_capacity;
        self.transitions.push(Transition {
            state: to,
            at,
            cause,
            note: changes.note.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::TransitionCause::*;
    use super::*;

    #[test]
    fn webhooks_move_jobs_forward_only() {
        assert!(
            transition_allowed(Queued, Running, Webhook),
            "in_progress may skip claimed/starting"
        );
        assert!(transition_allowed(Starting, Completed, Webhook));
        assert!(transition_allowed(Waiting, Queued, Webhook));
        assert!(
            transition_allowed(Waiting, Unmatched, Webhook),
            "released, and no pool serves it"
        );
        assert!(!transition_allowed(Unmatched, Waiting, Webhook));
        assert!(
            !transition_allowed(Completed, Queued, Webhook),
            "a late queued after completed changes nothing"
        );
        assert!(!transition_allowed(Running, Queued, Webhook));
        assert!(!transition_allowed(Running, Starting, Webhook));
    }

    #[test]
    fn a_launch_overtaken_by_its_runner_still_counts_one_attempt() {
        let t = crate::store::conformance::t0();
        let runner = |id: &str| JobChanges {
            runner_id: Some(id.into()),
            ..Default::default()
        };
        // Given a claimed job whose runner reports in_progress before the
        // launcher marks it starting
        let mut job = crate::store::conformance::job(7, "acme/app", t);
        job.apply(Claimed, Orchestrator, &JobChanges::default(), t);
        job.apply(Running, Webhook, &runner("run_1"), t);
        assert_eq!(job.attempts, 1, "the launch counted");

        // The usual path counts it once, at starting
        let mut usual = crate::store::conformance::job(8, "acme/app", t);
        usual.apply(Claimed, Orchestrator, &JobChanges::default(), t);
        let starting = JobChanges {
            count_attempt: true,
            ..runner("run_2")
        };
        usual.apply(Starting, Orchestrator, &starting, t);
        usual.apply(Running, Webhook, &runner("run_2"), t);
        assert_eq!(usual.attempts, 1, "counted at starting only");

        // A runner that failed before its launcher marked the job starting
        // gives it back with its attempt counted
        let mut failed_early = crate::store::conformance::job(10, "acme/app", t);
        failed_early.apply(Claimed, Orchestrator, &JobChanges::default(), t);
        failed_early.apply(Queued, Runner, &runner("run_3"), t);
        assert_eq!(failed_early.attempts, 1);

        // A job taken from the queue by a runner pacer did not launch for it
        // (no runner of ours named) is no attempt
        let mut elsewhere = crate::store::conformance::job(9, "acme/app", t);
        elsewhere.apply(Claimed, Orchestrator, &JobChanges::default(), t);
        elsewhere.apply(Running, Webhook, &JobChanges::default(), t);
        assert_eq!(elsewhere.attempts, 0);
    }

    #[test]
    fn a_repeated_transition_is_not_a_transition() {
        for s in JobState::ALL {
            for c in [Webhook, Orchestrator, Reaper, Runner, Operator] {
                assert!(!transition_allowed(s, s, c), "{s} → {s} by {c:?}");
            }
        }
    }

    #[test]
    fn a_job_is_given_back_only_by_pacer_and_its_runners_and_never_once_running() {
        for from in [Claimed, Starting] {
            assert!(transition_allowed(from, Queued, Orchestrator));
            assert!(transition_allowed(from, Queued, Reaper));
            assert!(
                transition_allowed(from, Queued, Runner),
                "a runner whose bootstrap failed"
            );
            assert!(
                transition_allowed(from, Queued, Operator),
                "an operator terminating its runner"
            );
            assert!(!transition_allowed(from, Queued, Webhook));
        }
        for c in [Orchestrator, Reaper, Runner, Operator] {
            assert!(!transition_allowed(Running, Queued, c));
        }
    }

    #[test]
    fn final_states_are_final() {
        for to in JobState::ALL {
            for c in [Webhook, Orchestrator, Reaper, Runner, Operator] {
                assert!(!transition_allowed(Completed, to, c));
                assert!(!transition_allowed(Cancelled, to, c));
            }
        }
    }

    #[test]
    fn github_news_about_a_failed_job_is_recorded() {
        assert!(transition_allowed(Failed, Completed, Webhook));
        assert!(transition_allowed(Failed, Running, Webhook));
        assert!(!transition_allowed(Failed, Queued, Webhook));
    }

    #[test]
    fn states_parse_from_their_names() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(JobState::parse("done"), None);
    }
}
