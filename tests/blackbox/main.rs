//! pacer's black-box tests: one test binary (each extra one would relink the
//! AWS SDK). It belongs to the `pacer` package so cargo builds the `pacer`
//! binary first and names it in `CARGO_BIN_EXE_pacer`.

mod b64;
mod dynamodb_store;
mod moto;
mod store_conformance;
mod support;
mod api_crud;
mod process;
mod lifecycle_local;
mod aws_adapters;
mod lifecycle_aws;
mod webhook_examples;
mod reaper;
mod auth;
mod sso;
mod sso_rp_negatives;
mod acme_pebble;
mod ec2_fleet;
mod bootstrap_script;
mod fake_github;
mod github_client;
mod pricing;
mod burst;
mod call_counts;
mod fault_proxy;
mod ec2_faults;
mod oidc_provider;
mod test_idp;
mod template;
mod lambda_handlers;
mod lambda_runtime;
mod stats;
mod capacity_wake;
mod hardening;
mod hostile;
mod hostile_input;
// pacer-shared's hostile-input strategies, included by path (see the file);
// its unit tests use the parts these tests do not.
#[path = "../../shared/src/arbitrary.rs"]
#[allow(dead_code)]
mod arbitrary;
