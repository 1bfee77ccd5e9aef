//! The hosts: what runs pacer's routers and loops. [`boot`] builds the state
//! from a configuration the same way for every host; [`local`] is the single
//! `pacer` process (serve, the admin commands, the orchestrator and reaper
//! loops), [`lambda`] the five functions of the serverless deployment;
//! [`simulation`] lets the offline GitHub play GitHub's part for the
//! simulated fleet.

pub mod lambda;
pub mod local;
pub mod simulation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fleet::simulated::SimulatedFleet;
use crate::runtime;
use crate::service::Ports;

/// What [`boot`] built from a configuration.
pub struct Booted {
    /// The configuration, its secret references resolved.
    pub cfg: Config,
    pub ports: Ports,
    /// The fleet when it is simulated: the host tells it where pacer listens.
    pub simulated: Option<Arc<SimulatedFleet>>,
    /// How long resolving `ssm:` / `secretsmanager:` references took.
    pub secrets_took: Duration,
}

/// The state of a process, from its configuration: the TLS provider every
/// client uses, the AWS SDK configuration, secrets resolved once, every
/// adapter built once.
pub async fn boot(mut cfg: Config) -> anyhow::Result<Booted> {
    // The one place pacer makes aws-lc-rs the process's rustls provider,
    // before any client (reqwest, the AWS SDK, ACME) is built.
    crate::http_client::install_crypto_provider();
    let aws = runtime::aws_sdk_config(&cfg).await;
    let resolving = Instant::now();
    if let Some(aws) = &aws {
        cfg.resolve_secrets(aws).await?;
    }
    let secrets_took = resolving.elapsed();
    let (ports, simulated) = runtime::build_ports(&cfg, aws.as_ref()).await?;
    Ok(Booted {
        cfg,
        ports,
        simulated,
        secrets_took,
    })
}
