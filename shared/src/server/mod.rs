//! The single binary's front door: serving an axum [`Router`] on `server.addr` over plain HTTP or
//! TLS (`server.tls.mode`), stopping gracefully, and deciding which address a request came from.
//!
//! This module owns the listener and the connection lifecycle, not the routes: Lambda hosts
//! never come here, and tests of routes use `oneshot`. Binding is separate from running so a
//! caller (or a test on port 0) learns the bound address before the first request:
//!
//! ```no_run
//! # use pacer_shared::config::ServerConfig;
//! # async fn example(router: axum::Router, cfg: &ServerConfig) -> anyhow::Result<()> {
//! use pacer_shared::server::Server;
//! let server = Server::bind(router, cfg).await?;
//! println!("listening on {}", server.url());
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! On shutdown the listener closes at once, requests in flight get a grace period (30 s by
//! default) to finish, and connections still open after it are dropped with a warning.
//!
//! In manual TLS mode the certificate and key files are read again every minute; when they have
//! changed (a renewal by certbot or cert-manager), the new pair is served from the next
//! handshake, and a pair that does not load (half-written, mismatched) is logged and the current
//! one kept.

mod acme;
mod client_ip;
mod tls;
mod x509;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{ServerConfig, TlsMode};

pub use client_ip::{ClientIp, TrustedProxies, client_ip};
pub use tls::install_crypto_provider;

/// How long requests in flight may run on after shutdown begins.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// How often manual TLS files are checked for a renewed certificate.
pub const MANUAL_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Binds `cfg.addr`, prepares TLS, and serves `router` until `shutdown` resolves.
pub async fn serve(
    router: Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    Server::bind(router, cfg).await?.run(shutdown).await
}

/// A bound listener with its TLS material, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    trusted: TrustedProxies,
    tls: Option<Tls>,
    grace_period: Duration,
    tls_reload_interval: Duration,
    /// Work that lives exactly as long as the server (ACME's challenge listener and renewals);
    /// aborted when the server stops or is dropped unrun.
    background: JoinSet<()>,
}

/// What the TLS listener serves: the rustls configuration (ACME swaps certificates inside it)
/// and the certificate it started with.
struct Tls {
    config: RustlsConfig,
    leaf: CertificateDer<'static>,
    /// Manual mode's certificate and key files, watched for renewals.
    files: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    fn new(identity: tls::Identity) -> anyhow::Result<Self> {
        let leaf = identity.leaf().clone();
        let config = RustlsConfig::from_config(Arc::new(tls::server_config(identity)?));
        Ok(Self { config, leaf, files: None })
    }
}

/// Serves the manual files anew whenever their contents change; a pair that does not load is
/// logged once and the certificate being served is kept.
async fn reload_manual_forever(config: RustlsConfig, cert: PathBuf, key: PathBuf, interval: Duration) {
    let read = || (std::fs::read(&cert).ok(), std::fs::read(&key).ok());
    let mut seen = read();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = read();
        if now == seen {
            continue;
        }
        seen = now;
        match tls::load_manual(&cert, &key).and_then(tls::server_config) {
            Ok(server_config) => {
                config.reload_from_config(Arc::new(server_config));
                info!(cert = %cert.display(), "serving the renewed TLS certificate");
            }
            Err(err) => warn!(
                cert = %cert.display(),
                key = %key.display(),
                error = format!("{err:#}"),
                "the TLS files changed but do not load; still serving the previous certificate",
            ),
        }
    }
}

impl Server {
    /// Binds `cfg.addr` and prepares the certificate `cfg.tls` asks for. Fails, naming the
    /// configuration key, when the address is taken or the TLS material is unusable.
    pub async fn bind(router: Router, cfg: &ServerConfig) -> anyhow::Result<Self> {
        let listener = bind_listener(&cfg.addr, "server.addr").await?;
        let local_addr = listener
            .local_addr()
            .context("server.addr: reading the bound address")?;
        let mut background = JoinSet::new();

        let tls = match cfg.tls.mode {
            TlsMode::None => None,
            TlsMode::Manual => {
                let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) else {
                    bail!("server.tls.cert and server.tls.key are both required in manual mode");
                };
                let identity = tls::load_manual(cert, key)?;
                let tls = Tls::new(identity).with_context(|| {
                    format!(
                        "server.tls.key {} with server.tls.cert {}",
                        key.display(),
                        cert.display()
                    )
                })?;
                Some(Tls { files: Some((cert.clone(), key.clone())), ..tls })
            }
            TlsMode::SelfSigned => {
                let (fqdn, alg) = (cfg.tls.fqdn.clone(), cfg.tls.alg);
                // RSA key generation takes a noticeable moment of CPU; keep it off the reactor.
                let identity =
                    tokio::task::spawn_blocking(move || tls::self_signed(fqdn.as_deref(), alg))
                        .await
                        .context("generating the self-signed certificate")??;
                Some(Tls::new(identity)?)
            }
            TlsMode::Acme => Some(acme::start(&cfg.tls.acme, local_addr.port(), &mut background).await?),
        };

        Ok(Self {
            listener,
            local_addr,
            router,
            trusted: TrustedProxies::new(cfg.trusted_proxies.clone()),
            tls,
            grace_period: DEFAULT_GRACE_PERIOD,
            tls_reload_interval: MANUAL_TLS_RELOAD_INTERVAL,
            background,
        })
    }

    /// The address actually bound (the real port when `server.addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https` when TLS is on, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `scheme://address` of the listener, for logs and tests.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.local_addr)
    }

    /// The certificate served at start (none over plain HTTP): what a client pins or trusts.
    pub fn certificate(&self) -> Option<&CertificateDer<'static>> {
        self.tls.as_ref().map(|tls| &tls.leaf)
    }

    /// Replaces [`MANUAL_TLS_RELOAD_INTERVAL`].
    pub fn with_tls_reload_interval(mut self, interval: Duration) -> Self {
        self.tls_reload_interval = interval;
        self
    }

    /// Replaces the [`DEFAULT_GRACE_PERIOD`] that requests in flight get after shutdown begins.
    pub fn with_grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish
    /// within the grace period, and returns. Handlers see the peer as
    /// `ConnectInfo<SocketAddr>` and the trusted proxies as a [`TrustedProxies`] extension, so
    /// [`ClientIp`] works.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        info!(addr = %self.local_addr, scheme = self.scheme(), "listening");
        let app = self
            .router
            .layer(self.trusted.layer())
            .into_make_service_with_connect_info::<SocketAddr>();
        let handle = Handle::new();
        let server = axum_server::Server::from_listener(self.listener).handle(handle.clone());

        let result = match self.tls {
            None => supervise(server.serve(app), &handle, shutdown, self.grace_period).await,
            Some(tls) => {
                if let Some((cert, key)) = tls.files {
                    let watch = reload_manual_forever(tls.config.clone(), cert, key, self.tls_reload_interval);
                    self.background.spawn(watch);
                }
                let server = server.acceptor(RustlsAcceptor::new(tls.config));
                supervise(server.serve(app), &handle, shutdown, self.grace_period).await
            }
        };
        self.background.shutdown().await;
        result
    }
}

/// Drives a serving future through shutdown: on `shutdown`, stop accepting and let connections
/// finish; when the grace period runs out first, close the ones left.
async fn supervise(
    serving: impl Future<Output = io::Result<()>>,
    handle: &Handle<SocketAddr>,
    shutdown: impl Future<Output = ()>,
    grace_period: Duration,
) -> anyhow::Result<()> {
    let mut serving = std::pin::pin!(serving);
    tokio::select! {
        result = &mut serving => return result.context("serving HTTP"),
        () = shutdown => {}
    }

    info!(
        open_connections = handle.connection_count(),
        ?grace_period,
        "shutting down: no new connections, letting requests in flight finish",
    );
    handle.graceful_shutdown(None);
    tokio::select! {
        result = &mut serving => result.context("serving HTTP while draining")?,
        () = tokio::time::sleep(grace_period) => {
            warn!(
                open_connections = handle.connection_count(),
                ?grace_period,
                "grace period over; dropping the connections still open",
            );
            // Connections close as they notice; nothing is left worth waiting for.
            handle.shutdown();
        }
    }
    info!("server stopped");
    Ok(())
}

/// Binds the address in configuration key `key`. `:port` means every IPv4 interface, the rule
/// [`ServerConfig::bind_addr`] states for `server.addr`, applied here to every listener.
async fn bind_listener(addr: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(bind_target(addr))
        .await
        .with_context(|| format!("{key}: cannot listen on {addr}"))
}

fn bind_target(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests;
