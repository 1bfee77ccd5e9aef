//! The audit log: an append-only record of who did what, from where.

use serde::{Deserialize, Serialize};

use super::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A console user (or `anonymous` while console auth is disabled).
    User,
    /// The GitHub account whose action sent a webhook.
    GithubSender,
    /// A machine presenting a workload identity token.
    Workload,
    /// pacer itself: orchestrator, reaper.
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn system(component: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: component.into(),
        }
    }

    pub fn user(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::User,
            id: id.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AuditEvent {
    pub id: String,
    pub at: Time,
    pub actor: Actor,
    pub client_ip: Option<String>,
    /// Dotted verb, e.g. `project.created`, `job.no_pool_match`.
    pub action: String,
    /// The id or name of what the action was about.
    pub target: Option<String>,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub detail: serde_json::Value,
}
