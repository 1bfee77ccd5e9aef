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
//! Connections are served within the limits of `server.header_read_timeout`,
//! `server.request_timeout` and `server.max_connections`, so slow or idle clients cannot starve
//! the others (the `conn` module says how). On shutdown the listener closes at once, requests in
//! flight get a grace period (30 s by default) to finish, and connections still open after it
//! are dropped with a warning.
//!
//! In manual TLS mode the certificate and key files are read again every minute; when they have
//! changed (a renewal by certbot or cert-manager), the new pair is served from the next
//! handshake, and a pair that does not load (half-written, mismatched) is logged and the current
//! one kept.

mod acme;
mod client_ip;
mod conn;
mod tls;
mod x509;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use self::conn::Limits;
use crate::config::{ServerConfig, TlsMode};

pub use client_ip::{ClientIp, TrustedProxies, client_ip};

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
    limits: Limits,
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
        Ok(Self {
            config,
            leaf,
            files: None,
        })
    }
}

/// Serves the manual files anew whenever their contents change; a pair that does not load is
/// logged once and the certificate being served is kept.
async fn reload_manual_forever(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
) {
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
        let limits = Limits::of(cfg);

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
                Some(Tls {
                    files: Some((cert.clone(), key.clone())),
                    ..tls
                })
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
            TlsMode::Acme => {
                Some(acme::start(&cfg.tls.acme, limits, local_addr.port(), &mut background).await?)
            }
        };

        Ok(Self {
            listener,
            local_addr,
            router,
            trusted: TrustedProxies::new(cfg.trusted_proxies.clone()),
            tls,
            limits,
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
        let app = self.router.layer(self.trusted.layer());
        let tls = self.tls.map(|tls| {
            if let Some((cert, key)) = tls.files {
                let watch =
                    reload_manual_forever(tls.config.clone(), cert, key, self.tls_reload_interval);
                self.background.spawn(watch);
            }
            tls.config
        });
        conn::serve(
            self.listener,
            tls,
            app,
            self.limits,
            shutdown,
            self.grace_period,
        )
        .await;
        self.background.shutdown().await;
        Ok(())
    }
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
