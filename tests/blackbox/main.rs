//! pacer's black-box tests: one test binary (each extra one would relink the
//! AWS SDK). It belongs to the `pacer` package so cargo builds the `pacer`
//! binary first and names it in `CARGO_BIN_EXE_pacer`.

mod acme_pebble;
mod api_crud;
mod auth;
mod aws_adapters;
mod b64;
mod bootstrap_script;
mod budgets;
mod burst;
mod call_counts;
mod capacity_wake;
mod catalog;
mod cost;
mod dynamodb_store;
mod ec2_faults;
mod ec2_fleet;
mod fake_github;
mod fault_proxy;
mod github_client;
mod hardening;
mod hint;
mod hostile;
mod hostile_input;
mod lambda_handlers;
mod lambda_runtime;
mod lifecycle_aws;
mod lifecycle_local;
mod moto;
mod oidc_provider;
mod pricing;
mod process;
mod reaper;
mod self_service;
mod self_service_admin;
mod self_service_cli;
mod self_service_script;
mod sso;
mod sso_rp_negatives;
mod stats;
mod store_conformance;
mod support;
mod template;
mod test_idp;
mod webhook_examples;
