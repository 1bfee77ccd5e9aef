//! The use cases over the ports: where DESIGN §2 and §4's rules are
//! enforced. HTTP handlers call exactly one function here.

pub mod audit;
pub mod config_objects;

use std::net::IpAddr;
use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::{Actor, Invalid};
use crate::store::{Store, StoreError};

/// Who is calling and from where: every mutation is audited with both.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub actor: Actor,
    pub client_ip: Option<IpAddr>,
}

/// The ports a use case needs.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
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
    /// A unique field's value is taken: 409, naming the field.
    #[error(transparent)]
    Duplicate(Invalid),
    /// Something broke; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ServiceError::NotFound("object"),
            StoreError::Conflict(m) | StoreError::InUse(m) => ServiceError::Conflict(m),
            StoreError::MissingParent(what) => ServiceError::Invalid(Invalid::new(
                format!("{what}_id"),
                format!("no {what} with this id"),
            )),
            StoreError::Stale => ServiceError::Conflict("the object changed while this request ran; retry".into()),
            StoreError::BadCursor => ServiceError::BadRequest("cursor: not a cursor this list returned".into()),
            StoreError::Backend(e) => ServiceError::Internal(e),
        }
    }
}
