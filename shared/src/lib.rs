//! pacer's library: configuration, domain, ports and adapters, HTTP routers.
//!
//! Dependency rules (docs/architecture.md, which also follows a webhook through
//! these modules): `domain` depends on nothing; `service` on `domain` and the
//! port traits; adapters on the traits and domain types; `http` on `service`;
//! the binaries in `functions/` only wire.
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

// The domain: pacer's objects and their rules; no I/O.
pub mod domain; // projects, pools, jobs, runners, users, audit events, labels, ids, durations

// The use cases, over the ports.
pub mod service; // intake, the orchestrator, runner callbacks, the reaper, console objects

// The ports, each with its adapters beside its trait.
pub mod clock; // time, which tests set
pub mod fleet; // runner instances: EC2, and the simulated fleet of `make run`
pub mod github; // the GitHub App: REST, offline; webhook signatures and payloads
pub mod pricing; // instance prices: the AWS Pricing API, spot price history
pub mod queue; // the jobs queue: in process, SQS
pub mod store; // SQLite and DynamoDB, and the conformance suite both pass

// The edges, where requests and settings come in.
pub mod auth; // callback tokens, session JWTs, password hashing, OIDC sign-in
pub mod config; // every configuration key: schema, loading, validation, secret references
pub mod http; // the routers, `app()`, errors as answers, extractors, the console's files

// The hosts, which run the routers and the loops.
pub mod host; // `boot()` for every host; `local` (serve, admin, the loops), `lambda` (the functions)
pub mod runtime; // the adapters chosen from configuration, which `host::boot` builds
pub mod server; // the local listener: plain HTTP or TLS, connection limits, graceful stop

// Small helpers.
pub mod calls; // call counters, for the bench
pub mod error_text; // error chains as one line of text
pub mod failpoint; // crash points the tests arm, only with the `failpoints` feature
pub mod http_client; // every outbound HTTP client, and the one TLS stack under them
pub mod mac; // HMAC-SHA256
pub mod sync; // locks that survive a panic elsewhere

// Property-test strategies for hostile input, kept with the other test support.
#[cfg(test)]
#[path = "../../tests/support/src/arbitrary.rs"]
pub(crate) mod arbitrary;
