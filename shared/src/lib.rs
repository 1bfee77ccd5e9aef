//! pacer's library: configuration, domain, ports and adapters, HTTP routers.
//!
//! Dependency rules (docs/architecture.md): `domain` depends on nothing; `service` on
//! `domain` and the port traits; adapters on the traits and domain types;
//! `http` on `service`; the binaries in `functions/` only wire.
//!
//! Outside input (webhooks, headers, tokens, configuration, query strings)
//! reaches much of this crate, and a release build aborts on a panic: one
//! bad label would take the whole process down. So the non-test code may
//! not index, slice, `unwrap` or `expect`; where an invariant makes one
//! safe, it is allowed on the spot with a comment saying why.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::string_slice
    )
)]

#[cfg(test)]
pub(crate) mod arbitrary;
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
pub mod mac;
pub mod pricing;
pub mod queue;
pub mod runtime;
pub mod server;
pub mod service;
pub mod store;
pub mod sync;
