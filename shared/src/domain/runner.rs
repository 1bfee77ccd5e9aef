//! Runners: one machine with one ephemeral JIT registration.

use serde::{Deserialize, Serialize};

use super::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerState {
    /// Launched; has not traded its callback token for a JIT config yet.
    Pending,
    /// Holds its JIT config; GitHub may hand it a job.
    Registered,
    Busy,
    Done,
    Failed,
    /// Terminated by the reaper (boot deadline, idle, lifetime, orphan).
    Reaped,
}

impl RunnerState {
    pub const ALL: [RunnerState; 6] = [
        RunnerState::Pending,
        RunnerState::Registered,
        RunnerState::Busy,
        RunnerState::Done,
        RunnerState::Failed,
        RunnerState::Reaped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Pending => "pending",
            RunnerState::Registered => "registered",
            RunnerState::Busy => "busy",
            RunnerState::Done => "done",
            RunnerState::Failed => "failed",
            RunnerState::Reaped => "reaped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A live runner holds capacity in its pool.
    pub fn is_live(self) -> bool {
        matches!(self, RunnerState::Pending | RunnerState::Registered | RunnerState::Busy)
    }

    /// Runners only move forward; the three end states are final.
    pub fn can_move_to(self, to: RunnerState) -> bool {
        use RunnerState::*;
        match (self, to) {
            (a, b) if a == b => false,
            (Pending, _) => true,
            (Registered, Busy | Done | Failed | Reaped) => true,
            (Busy, Done | Failed | Reaped) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for RunnerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runner {
    pub id: String,
    pub pool_id: String,
    pub project_id: String,
    /// The job it was launched for (GitHub may give it another; see the job's `runner_id`).
    pub job_id: Option<String>,
    pub name: String,
    pub state: RunnerState,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub market: Option<String>,
    pub price_per_hour_usd: Option<f64>,
    pub github_runner_id: Option<i64>,
    pub callback_token_id: Option<String>,
    pub error_tail: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
    /// Bumped by every write; each write is conditional on the version it
    /// read, so concurrent writers (orchestrator, callbacks, webhooks,
    /// reaper) never erase each other's fields.
    #[serde(default)]
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::RunnerState::*;

    #[test]
    fn runners_move_forward_and_end_states_are_final() {
        assert!(Pending.can_move_to(Registered));
        assert!(Registered.can_move_to(Busy));
        assert!(Busy.can_move_to(Done));
        assert!(!Busy.can_move_to(Registered));
        for end in [Done, Failed, Reaped] {
            assert!(!end.is_live());
            for to in super::RunnerState::ALL {
                assert!(!end.can_move_to(to));
            }
        }
    }
}
