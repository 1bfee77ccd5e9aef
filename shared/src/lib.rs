//! pacer's library: configuration, domain, ports and adapters, HTTP routers.
//!
//! Dependency rules (DESIGN §3.1): `domain` depends on nothing; `service` on
//! `domain` and the port traits; adapters on the traits and domain types;
//! `http` on `service`; the binaries in `functions/` only wire.

pub mod config;
pub mod domain;
pub mod server;
pub mod store;
