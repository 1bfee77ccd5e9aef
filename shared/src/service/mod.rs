//! The use cases over the ports: where the rules of docs/architecture.md are
//! enforced. HTTP handlers call exactly one function here.

pub mod audit;
pub mod auth;
pub mod budgets;
pub mod capacity;
pub mod catalog;
pub mod config_objects;
pub mod dispatch;
pub mod intake;
pub mod jobs;
pub mod limits;
pub mod reaper;
pub mod runner_moves;
pub mod runners;
pub mod self_service;
pub mod stats;
pub mod usage;
pub mod webhook;

use std::net::IpAddr;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Secret;
use crate::domain::{Actor, IdSource, Invalid, Role};
use crate::fleet::Fleet;
use crate::github::{GitHub, GitHubError};
use crate::pricing::Pricing;
use crate::queue::Queue;
use crate::store::{Store, StoreError};

/// Who is calling, from where, and with which role: every mutation is
/// audited with the first two; the role gates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub actor: Actor,
    pub client_ip: Option<IpAddr>,
    pub role: Role,
}

impl Caller {
    /// pacer itself (orchestrator, reaper, runner callbacks): trusted.
    pub fn system(component: &str) -> Self {
        Self {
            actor: Actor::system(component),
            client_ip: None,
            role: Role::Admin,
        }
    }
}

/// Which job or runner a change is for: named by id (read fresh), or a
/// copy the caller read or wrote moments ago. A copy is tried first, saving
/// the read; one someone has written since is refused on its version and
/// the record read afresh, and only a fresh copy may refuse the change.
pub enum Which<'a, T> {
    Id(&'a str),
    Copy(&'a T),
}

impl<T> Clone for Which<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Which<'_, T> {}

/// A record [`Which`] can name.
pub trait Record: Clone {
    fn id(&self) -> &str;
}

impl Record for crate::domain::Job {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for crate::domain::Runner {
    fn id(&self) -> &str {
        &self.id
    }
}

impl<T: Record> Which<'_, T> {
    pub fn id(&self) -> &str {
        match self {
            Which::Id(id) => id,
            Which::Copy(record) => record.id(),
        }
    }

    /// The copy to try first, if any.
    fn copy(&self) -> Option<T> {
        match self {
            Which::Copy(record) => Some((*record).clone()),
            Which::Id(_) => None,
        }
    }
}

impl<'a, T> From<&'a str> for Which<'a, T> {
    fn from(id: &'a str) -> Self {
        Which::Id(id)
    }
}

impl<'a, T> From<&'a String> for Which<'a, T> {
    fn from(id: &'a String) -> Self {
        Which::Id(id)
    }
}

impl<'a, T: Record> From<&'a T> for Which<'a, T> {
    fn from(record: &'a T) -> Self {
        Which::Copy(record)
    }
}

/// The ports the use cases run on, chosen by `main` from config.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Makes every id, as the clock tells every time: tests may fix both.
    pub ids: Arc<dyn IdSource>,
    pub queue: Arc<dyn Queue>,
    pub fleet: Arc<dyn Fleet>,
    pub github: Arc<dyn GitHub>,
    pub pricing: Arc<dyn Pricing>,
    pub settings: Arc<Settings>,
    /// The projects, pools and bindings webhooks are taken in with, held
    /// for `database.config_cache_ttl`.
    pub catalog: Arc<catalog::Catalog>,
}

/// The configuration the use cases read, resolved once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `deployment.name`: prefixes runner names, tags instances.
    pub deployment: String,
    /// Where runners call back: `server.public_url` (or the local address).
    pub callback_url: String,
    /// `github.callback_hmac_secret`.
    pub callback_secret: Secret,
    /// `github.webhook_secret`, then `github.webhook_secret_previous`.
    pub webhook_secrets: Vec<Secret>,
    /// `reaper.max_attempts`: launches per job before it fails.
    pub max_attempts: u32,
    /// `reaper.redrive_after`: a job queued (or claimed) this long without
    /// progress is put on the queue again.
    pub redrive_after: std::time::Duration,
    /// `reaper.orphan_grace`: how old an instance pacer does not know must
    /// be before it is terminated.
    pub orphan_grace: std::time::Duration,
    /// `reaper.degraded_cooldown`: how long a pool that hit an account
    /// limit waits before it launches again.
    pub degraded_cooldown: std::time::Duration,
    /// `pricing.ebs_gb_month` in micro-dollars: what a GB of a runner's root
    /// volume costs a month.
    pub ebs_micro_usd_per_gb_month: crate::domain::cost::MicroUsd,
    /// `self_service.*`.
    pub self_service: self_service::SelfServiceSettings,
    /// `budgets`, checked.
    pub budgets: Vec<crate::domain::budget::Budget>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A well-formed request with an invalid field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The request itself is malformed (a bad cursor or query value).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// A unique field's value is taken: 409, naming the field.
    #[error(transparent)]
    Duplicate(Invalid),
    /// A service pacer depends on (GitHub, EC2) failed the request; the
    /// text says what it answered.
    #[error("{0}")]
    Upstream(String),
    /// GitHub failed the request; its kind (rate limit, outage, missing
    /// permission, …) is kept for whoever decides what to answer.
    #[error("{doing}: {source}")]
    GitHub {
        /// What pacer asked of GitHub, in words an operator reads.
        doing: &'static str,
        #[source]
        source: GitHubError,
    },
    /// Something broke; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<crate::queue::QueueError> for ServiceError {
    fn from(err: crate::queue::QueueError) -> Self {
        ServiceError::Internal(err.into())
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ServiceError::NotFound("object"),
            StoreError::Conflict(m) | StoreError::InUse(m) => ServiceError::Conflict(m),
            StoreError::MissingParent(what) => ServiceError::Invalid(Invalid::new(
                format!("{what}_id"),
                format!("no {what} with this id"),
            )),
            StoreError::Stale => {
                ServiceError::Conflict("the object changed while this request ran; retry".into())
            }
            StoreError::BadCursor => {
                ServiceError::BadRequest("cursor: not a cursor this list returned".into())
            }
            StoreError::Backend(e) => ServiceError::Internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Which modules of `service/` each one names, from its source.
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service");
        let modules: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .filter(|name| name != "mod")
            .collect();
        modules
            .iter()
            .map(|module| {
                let text = std::fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap();
                let mut named = BTreeSet::new();
                for prefix in ["super::", "crate::service::"] {
                    for (at, _) in text.match_indices(prefix) {
                        let rest = &text[at + prefix.len()..];
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if modules.contains(&name) && &name != module {
                            named.insert(name);
                        }
                    }
                }
                (module.clone(), named)
            })
            .collect()
    }

    /// The use cases call each other one way only: two modules that need each
    /// other are one concern split in two, and a rule in either gets a second
    /// home. What both need (a runner's state moves, a pool's capacity) lives
    /// in a module of its own that both call.
    #[test]
    fn no_use_case_module_reaches_back_to_itself() {
        let uses = uses();
        assert!(
            uses["dispatch"].contains("capacity"),
            "the graph is read from the source: {uses:?}"
        );
        fn path_back(
            uses: &BTreeMap<String, BTreeSet<String>>,
            from: &str,
            seen: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            for next in &uses[from] {
                if seen.first() == Some(next) {
                    return Some(seen.clone());
                }
                if !seen.contains(next) {
                    seen.push(next.clone());
                    if let Some(cycle) = path_back(uses, next, seen) {
                        return Some(cycle);
                    }
                    seen.pop();
                }
            }
            None
        }
        for module in uses.keys() {
            let cycle = path_back(&uses, module, &mut vec![module.clone()]);
            assert_eq!(
                cycle, None,
                "service/{module} reaches itself through these modules"
            );
        }
    }
}
