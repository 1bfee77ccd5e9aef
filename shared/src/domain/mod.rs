//! pacer's domain: the entities of docs/architecture.md ("Domain"), their validation, the job and
//! runner state machines and label matching. Pure: no I/O, no clock, no
//! adapters — callers pass the time in.

pub mod audit;
pub mod budget;
pub mod cost;
pub mod duration;
pub mod fields;
pub mod github_job;
pub mod ids;
pub mod job;
pub mod labels;
pub mod pool;
pub mod project;
pub mod runner;
pub mod self_service;
pub mod text;
pub mod usage;
pub mod user;

pub use audit::{Actor, ActorKind, AuditEvent};
pub use cost::{JobTimings, JobUsage, Price, PriceSource, RunnerCost};
pub use github_job::{GithubJob, PendingJob, Reported};
pub use ids::{IdKind, IdSource, SequentialIds, Ulids};
pub use job::{Job, JobChanges, JobState, Transition, TransitionCause, transition_allowed};
pub use labels::{Label, LabelSet, PoolCandidate, PoolMatch, match_pool};
pub use pool::{Degraded, Market, Pool, PoolSpec, pick_pool};
pub use project::{BindingSpec, Project, ProjectSpec, RepoBinding, RepoName, Scope, Visibility};
pub use runner::{Runner, RunnerState, peak_overlap};
pub use user::{Role, User};

/// A field that failed validation: the field's name and why, in words a
/// person can act on. HTTP maps it to 422 with `field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Times are UTC everywhere.
pub type Time = chrono::DateTime<chrono::Utc>;
