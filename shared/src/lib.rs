//! pacer's library: configuration, domain, ports and adapters, HTTP routers.
//!
//! Dependency rules (DESIGN §3.1): `domain` depends on nothing; `service` on
//! `domain` and the port traits; adapters on the traits and domain types;
//! `http` on `service`; the binaries in `functions/` only wire.

pub mod auth;
pub mod calls;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error_text;
pub mod failpoint;
pub mod fleet;
pub mod github;
pub mod http;
pub mod lambda;
pub mod pricing;
pub mod queue;
pub mod runtime;
pub mod server;
pub mod service;
pub mod store;
