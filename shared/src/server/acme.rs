//! `server.tls.mode: acme`: a certificate for `server.tls.acme.hosts` from an ACME CA (RFC 8555)
//! by HTTP-01, kept in `cache_dir` across restarts and renewed in the background.
//!
//! What runs, and why:
//! - A plain-HTTP listener on `acme.http_addr` answers the CA's
//!   `/.well-known/acme-challenge/{token}` requests and 308-redirects everything else to the
//!   HTTPS listener (308, unlike 301, keeps a misdirected `POST` a `POST`).
//! - At start a cached certificate that has not expired is served at once; only when there is
//!   none is one ordered before the server accepts connections, so a CA outage cannot take down
//!   a server that still has a good certificate.
//! - A background task renews the certificate when it is due (30 days before expiry, see
//!   [`Validity::renew_at`]) and swaps it into the running TLS configuration.
//! - Only the configured hosts are ever ordered; nothing a client sends (SNI, `Host`) can make
//!   pacer ask the CA for another name, which protects the CA's rate limits.
//!
//! The cache holds two JSON files, written atomically with mode 0600: `account.json` (the
//! account key and id, per directory URL) and `certificate.json` (the chain and its key, with
//! the directory and hosts it was issued for, so a changed configuration orders afresh).

use std::collections::HashMap;
use std::future::pending;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls_rustls::RustlsConfig;
use chrono::Utc;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::conn::{self, Limits};
use super::tls::{self, Identity};
use super::x509::Validity;
use super::{Tls, bind_listener};
use crate::config::AcmeConfig;

/// How long to wait before trying a failed renewal again.
const RENEWAL_RETRY: Duration = Duration::from_secs(60 * 60);

/// The longest the renewal task sleeps in one go, so a suspended machine or a clock that jumps
/// is noticed within hours rather than at the next planned renewal.
const RENEWAL_RECHECK: Duration = Duration::from_secs(12 * 60 * 60);

/// The most one whole order may take; the HTTP client has no timeout of its own, and a CA that
/// never answers must not hold the start (or the renewal task) forever.
const ORDER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long the CA may take to validate the challenges, and then to issue.
const ORDER_POLLING: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .timeout(Duration::from_secs(120));

/// Starts ACME for a TLS listener on `https_port`: the challenge listener (serving within
/// `limits`) and the renewal task go into `background` (they stop with the server), the
/// certificate to start with is returned.
pub(super) async fn start(
    cfg: &AcmeConfig,
    limits: Limits,
    https_port: u16,
    background: &mut JoinSet<()>,
) -> anyhow::Result<Tls> {
    // The ACME client's TLS uses the process's provider, which `host::boot`
    // installed before the server was bound.
    let acme = Arc::new(Acme::new(cfg)?);

    let listener = bind_listener(&cfg.http_addr, "server.tls.acme.http_addr").await?;
    let http_addr = listener
        .local_addr()
        .context("server.tls.acme.http_addr: reading the bound address")?;
    let challenge_app = challenge_router(acme.clone(), https_port);
    // It stops when `background` is aborted, with the server.
    let serving = conn::serve(
        listener,
        None,
        challenge_app,
        limits,
        pending(),
        Duration::ZERO,
    );
    background.spawn(serving);
    info!(addr = %http_addr, "ACME HTTP-01 listener up; it redirects everything else to https");

    acme.cache.prepare().await?;
    let cached = acme
        .cache
        .load_certificate(&acme.directory_url, &acme.hosts)
        .await;
    let Issued { identity, validity } = match cached {
        Ok(Some(cached)) if cached.validity.not_after > Utc::now() => {
            info!(
                hosts = ?acme.hosts,
                expires = %cached.validity.not_after,
                "using the cached ACME certificate",
            );
            cached
        }
        other => {
            if let Err(err) = other {
                warn!(
                    error = format!("{err:#}"),
                    "ignoring an unreadable ACME certificate cache"
                );
            }
            acme.issue().await?
        }
    };

    let leaf = identity.leaf().clone();
    let config = RustlsConfig::from_config(Arc::new(tls::server_config(identity)?));
    background.spawn(renew_forever(acme, config.clone(), validity));
    Ok(Tls {
        config,
        leaf,
        files: None,
    })
}

/// Everything ordering needs, shared by the start and the renewal task.
struct Acme {
    /// The configured names, lower-cased: the only ones ever ordered.
    hosts: Vec<String>,
    email: Option<String>,
    directory_url: String,
    ca_cert: Option<PathBuf>,
    cache: Cache,
    /// HTTP-01 responses being offered: token → key authorization.
    challenges: Mutex<HashMap<String, String>>,
}

impl Acme {
    fn new(cfg: &AcmeConfig) -> anyhow::Result<Self> {
        ensure!(
            !cfg.hosts.is_empty(),
            "server.tls.acme.hosts: at least one host name is required in acme mode"
        );
        let mut hosts = Vec::with_capacity(cfg.hosts.len());
        for host in &cfg.hosts {
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            ensure!(
                !host.contains('*') && host.parse::<std::net::IpAddr>().is_err(),
                "server.tls.acme.hosts: {host:?} cannot be validated over HTTP-01 \
                 (wildcards and addresses cannot)"
            );
            rustls::pki_types::DnsName::try_from(host.as_str())
                .map_err(|_| anyhow!("server.tls.acme.hosts: {host:?} is not a DNS name"))?;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        Ok(Self {
            hosts,
            email: cfg.email.clone().filter(|email| !email.trim().is_empty()),
            directory_url: cfg.directory_url.to_string(),
            ca_cert: cfg.ca_cert.clone(),
            cache: Cache {
                dir: cfg.cache_dir.clone(),
            },
            challenges: Mutex::new(HashMap::new()),
        })
    }

    /// Orders a certificate for the configured hosts and caches it.
    async fn issue(&self) -> anyhow::Result<Issued> {
        info!(
            hosts = ?self.hosts,
            directory = %self.directory_url,
            "ordering a certificate by ACME HTTP-01",
        );
        let ordering = async {
            match self.order(&self.account().await?).await {
                // The CA forgot the cached account (deactivated, or a test CA
                // reset): make a new one once rather than failing forever.
                Err(err) if account_unknown(&err) => {
                    warn!("the ACME CA no longer knows the cached account; creating a new one");
                    self.cache.forget_account().await?;
                    self.order(&self.account().await?).await
                }
                other => other,
            }
        };
        let (chain_pem, key_pem) = tokio::time::timeout(ORDER_TIMEOUT, ordering)
            .await
            .map_err(|_| anyhow!("no certificate within {ORDER_TIMEOUT:?}"))
            .and_then(|ordered| ordered)
            .with_context(|| format!("ordering a certificate from {}", self.directory_url))?;
        let issued =
            Issued::parse(&chain_pem, &key_pem).context("the certificate the ACME CA issued")?;
        info!(
            hosts = ?self.hosts,
            expires = %issued.validity.not_after,
            fingerprint_sha256 = %tls::fingerprint(issued.identity.leaf()),
            "obtained an ACME certificate",
        );
        let cached = CachedCertificate {
            directory_url: self.directory_url.clone(),
            hosts: self.hosts.clone(),
            chain_pem,
            key_pem,
        };
        // The certificate is good whether or not it reaches the disk: serve it, but say loudly
        // that the next start will have to order again.
        if let Err(err) = self.cache.store_certificate(&cached).await {
            warn!(
                error = format!("{err:#}"),
                "could not cache the ACME certificate"
            );
        }
        Ok(issued)
    }

    /// The cached account for this directory, or a new one (then cached).
    async fn account(&self) -> anyhow::Result<Account> {
        let builder = || match &self.ca_cert {
            Some(path) => Account::builder_with_root(path)
                .with_context(|| format!("server.tls.acme.ca_cert: cannot use {}", path.display())),
            None => Account::builder().context("building the ACME HTTP client"),
        };

        if let Some(credentials) = self.cache.load_account(&self.directory_url).await? {
            return builder()?
                .from_credentials(credentials)
                .await
                .with_context(|| {
                    format!(
                        "restoring the cached ACME account for {}",
                        self.directory_url
                    )
                });
        }

        let contact = self.email.as_ref().map(|email| format!("mailto:{email}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()?
            .create(&new_account, self.directory_url.clone(), None)
            .await
            .with_context(|| format!("creating an ACME account at {}", self.directory_url))?;
        self.cache
            .store_account(&self.directory_url, credentials)
            .await?;
        info!(directory = %self.directory_url, id = account.id(), "created an ACME account");
        Ok(account)
    }

    /// One order, start to finish: offer each HTTP-01 response, wait for the CA to validate,
    /// send a CSR for a fresh key, and collect the chain. Returns (chain PEM, key PEM).
    async fn order(&self, account: &Account) -> anyhow::Result<(String, String)> {
        let identifiers: Vec<Identifier> =
            self.hosts.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut offered = OfferedChallenges {
            acme: self,
            tokens: Vec::new(),
        };

        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("the CA holds an authorization in state {other:?}"),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| anyhow!("the CA offers no HTTP-01 challenge"))?;
            offered.offer(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            );
            challenge.set_ready().await?;
        }

        let status = order.poll_ready(&ORDER_POLLING).await?;
        if status != OrderStatus::Ready {
            let urls = self
                .hosts
                .iter()
                .map(|host| format!("http://{host}/.well-known/acme-challenge/"));
            bail!(
                "the order ended {status:?}: could the CA fetch {}…?",
                urls.collect::<Vec<_>>().join(", ")
            );
        }
        drop(offered);

        let key = rcgen::KeyPair::generate().context("generating the certificate key")?;
        let mut params = rcgen::CertificateParams::new(self.hosts.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).context("building the CSR")?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&ORDER_POLLING).await?;
        Ok((chain_pem, key.serialize_pem()))
    }

    fn key_authorization(&self, token: &str) -> Option<String> {
        crate::sync::lock(&self.challenges).get(token).cloned()
    }
}

/// The challenge responses one order offers; withdrawn when the order is done or abandoned.
struct OfferedChallenges<'a> {
    acme: &'a Acme,
    tokens: Vec<String>,
}

impl OfferedChallenges<'_> {
    fn offer(&mut self, token: String, key_authorization: String) {
        crate::sync::lock(&self.acme.challenges).insert(token.clone(), key_authorization);
        self.tokens.push(token);
    }
}

impl Drop for OfferedChallenges<'_> {
    fn drop(&mut self) {
        let mut challenges = crate::sync::lock(&self.acme.challenges);
        for token in &self.tokens {
            challenges.remove(token);
        }
    }
}

/// Sleeps until the certificate is due, renews it, swaps it in; forever (until aborted with the
/// server). A failed renewal is logged and retried hourly while the old certificate lasts.
async fn renew_forever(acme: Arc<Acme>, config: RustlsConfig, mut validity: Validity) {
    loop {
        let due = validity.renew_at();
        let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(RENEWAL_RECHECK)).await;
            continue;
        }

        let renewed = async {
            let Issued { identity, validity } = acme.issue().await?;
            anyhow::Ok((tls::server_config(identity)?, validity))
        };
        match renewed.await {
            Ok((server_config, renewed)) => {
                config.reload_from_config(Arc::new(server_config));
                validity = renewed;
                info!(
                    hosts = ?acme.hosts,
                    expires = %validity.not_after,
                    "renewed the ACME certificate; new connections get it",
                );
            }
            Err(err) => {
                error!(
                    error = format!("{err:#}"),
                    expires = %validity.not_after,
                    retry_in = ?RENEWAL_RETRY,
                    "renewing the ACME certificate failed",
                );
                tokio::time::sleep(RENEWAL_RETRY).await;
            }
        }
    }
}

// --- the HTTP-01 listener ------------------------------------------------------------------------

struct Redirect {
    acme: Arc<Acme>,
    https_port: u16,
}

fn challenge_router(acme: Arc<Acme>, https_port: u16) -> Router {
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            get(challenge_response),
        )
        .fallback(redirect_to_https)
        .with_state(Arc::new(Redirect { acme, https_port }))
}

async fn challenge_response(
    State(state): State<Arc<Redirect>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    match state.acme.key_authorization(&token) {
        Some(key_authorization) => key_authorization.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// 308 to the same path and query on the HTTPS listener. The host is the request's own when it
/// is one of the configured names (the only ones the certificate covers), else the first of them.
async fn redirect_to_https(
    State(state): State<Arc<Redirect>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let hosts = &state.acme.hosts;
    let requested = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(|host| {
            host.rsplit_once(':')
                .filter(|(_, port)| port.parse::<u16>().is_ok())
                .map_or(host, |(name, _)| name)
        })
        .map(|host| host.trim_end_matches('.').to_ascii_lowercase());
    let host = requested
        .filter(|host| hosts.contains(host))
        .or_else(|| hosts.first().cloned())
        .unwrap_or_default();
    let port = match state.https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, format!("https://{host}{port}{path}"))],
    )
        .into_response()
}

// --- the cache -----------------------------------------------------------------------------------

/// A certificate from the CA (or the cache), ready to serve.
struct Issued {
    identity: Identity,
    validity: Validity,
}

impl Issued {
    fn parse(chain_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let identity = Identity {
            chain: tls::parse_chain(chain_pem.as_bytes())?,
            key: tls::parse_key(key_pem.as_bytes())?,
        };
        let validity = Validity::of(identity.leaf())?;
        Ok(Self { identity, validity })
    }
}

#[derive(Serialize, Deserialize)]
struct CachedAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

#[derive(Serialize, Deserialize)]
struct CachedCertificate {
    directory_url: String,
    hosts: Vec<String>,
    chain_pem: String,
    key_pem: String,
}

struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Creates the directory (mode 0700) before anything is ordered, so an unwritable cache
    /// fails the start instead of wasting an order.
    async fn prepare(&self) -> anyhow::Result<()> {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(&self.dir).await.with_context(|| {
            format!(
                "server.tls.acme.cache_dir: cannot create {}",
                self.dir.display()
            )
        })
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// Drops the cached account so the next order creates a new one.
    async fn forget_account(&self) -> anyhow::Result<()> {
        match tokio::fs::remove_file(self.account_path()).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| {
                format!(
                    "server.tls.acme.cache_dir: removing {}",
                    self.account_path().display()
                )
            }),
            _ => Ok(()),
        }
    }

    fn certificate_path(&self) -> PathBuf {
        self.dir.join("certificate.json")
    }

    async fn load_account(
        &self,
        directory_url: &str,
    ) -> anyhow::Result<Option<AccountCredentials>> {
        let Some(cached) = read_json::<CachedAccount>(&self.account_path()).await? else {
            return Ok(None);
        };
        Ok((cached.directory_url == directory_url).then_some(cached.credentials))
    }

    async fn store_account(
        &self,
        directory_url: &str,
        credentials: AccountCredentials,
    ) -> anyhow::Result<()> {
        let cached = CachedAccount {
            directory_url: directory_url.to_owned(),
            credentials,
        };
        write_json(&self.account_path(), &cached).await
    }

    /// The cached certificate, when it was issued by `directory_url` for exactly `hosts`.
    async fn load_certificate(
        &self,
        directory_url: &str,
        hosts: &[String],
    ) -> anyhow::Result<Option<Issued>> {
        let Some(cached) = read_json::<CachedCertificate>(&self.certificate_path()).await? else {
            return Ok(None);
        };
        let same_hosts = {
            let (mut cached_hosts, mut hosts) = (cached.hosts.clone(), hosts.to_vec());
            cached_hosts.sort();
            hosts.sort();
            cached_hosts == hosts
        };
        if cached.directory_url != directory_url || !same_hosts {
            info!(
                cached_hosts = ?cached.hosts,
                "the cached ACME certificate is for another directory or other hosts",
            );
            return Ok(None);
        }
        let issued = Issued::parse(&cached.chain_pem, &cached.key_pem)
            .with_context(|| self.certificate_path().display().to_string())?;
        Ok(Some(issued))
    }

    async fn store_certificate(&self, certificate: &CachedCertificate) -> anyhow::Result<()> {
        write_json(&self.certificate_path(), certificate).await
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err)
            .with_context(|| format!("server.tls.acme.cache_dir: reading {}", path.display())),
    }
}

/// Whether an ACME error says the CA does not know the account.
fn account_unknown(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(cause.downcast_ref::<instant_acme::Error>(),
            Some(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
    })
}

/// Writes `value` to `path` readable only by us, replacing the old file in one rename so a crash
/// never leaves half a key behind.
async fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let context = || format!("server.tls.acme.cache_dir: writing {}", path.display());
    let temporary = path.with_extension("json.tmp");
    // A leftover temporary file could carry wider permissions: start afresh.
    let _ = tokio::fs::remove_file(&temporary).await;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&temporary).await.with_context(context)?;
    file.write_all(&serde_json::to_vec_pretty(value)?)
        .await
        .with_context(context)?;
    file.sync_all().await.with_context(context)?;
    tokio::fs::rename(&temporary, path)
        .await
        .with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    fn config(hosts: &[&str], cache_dir: PathBuf) -> AcmeConfig {
        AcmeConfig {
            hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
            cache_dir,
            ..AcmeConfig::default()
        }
    }

    fn acme(hosts: &[&str]) -> Arc<Acme> {
        Arc::new(Acme::new(&config(hosts, PathBuf::from("unused"))).unwrap())
    }

    async fn send(router: Router, method: Method, uri: &str, host: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (
            status,
            location.unwrap_or_else(|| String::from_utf8(body.to_vec()).unwrap()),
        )
    }

    #[test]
    fn hosts_are_normalised_and_http01_impossible_names_refused() {
        let acme = acme(&["Pacer.Example.com.", "pacer.example.com", "www.example.com"]);
        assert_eq!(acme.hosts, ["pacer.example.com", "www.example.com"]);
        for bad in ["*.example.com", "192.0.2.1", "::1", "not a host"] {
            let err = Acme::new(&config(&[bad], PathBuf::new())).err().expect(bad);
            assert!(err.to_string().contains("server.tls.acme.hosts"), "{err}");
        }
        assert!(Acme::new(&config(&[], PathBuf::new())).is_err());
    }

    #[tokio::test]
    async fn other_requests_are_redirected_to_https_keeping_method_path_and_query() {
        let router = challenge_router(acme(&["pacer.example.com", "www.example.com"]), 8443);
        let (status, location) = send(
            router,
            Method::POST,
            "/api/webhook?x=1",
            "www.example.com:80",
        )
        .await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(location, "https://www.example.com:8443/api/webhook?x=1");
    }

    #[tokio::test]
    async fn a_redirect_never_names_a_host_outside_the_list() {
        let router = challenge_router(acme(&["pacer.example.com"]), 443);
        let (_, location) = send(router, Method::GET, "/", "evil.example").await;
        assert_eq!(location, "https://pacer.example.com/");
    }

    #[tokio::test]
    async fn offered_challenges_are_answered_until_withdrawn() {
        let acme = acme(&["pacer.example.com"]);
        let router = challenge_router(acme.clone(), 443);
        let path = "/.well-known/acme-challenge/token-1";
        {
            let mut offered = OfferedChallenges {
                acme: &acme,
                tokens: Vec::new(),
            };
            offered.offer("token-1".to_owned(), "token-1.thumbprint".to_owned());
            let answer = send(router.clone(), Method::GET, path, "pacer.example.com").await;
            assert_eq!(answer, (StatusCode::OK, "token-1.thumbprint".to_owned()));
        }
        let (status, _) = send(router, Method::GET, path, "pacer.example.com").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_cache_returns_a_certificate_only_for_the_same_directory_and_hosts() {
        let dir = std::env::temp_dir().join(format!("pacer-acme-cache-{}", std::process::id()));
        let cache = Cache { dir: dir.clone() };
        cache.prepare().await.unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let hosts = vec!["a.example".to_owned(), "b.example".to_owned()];
        let cached = CachedCertificate {
            directory_url: "https://ca.example/dir".to_owned(),
            hosts: hosts.clone(),
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        cache.store_certificate(&cached).await.unwrap();

        let reversed: Vec<String> = hosts.iter().rev().cloned().collect();
        let found = cache
            .load_certificate("https://ca.example/dir", &reversed)
            .await
            .unwrap();
        assert_eq!(found.unwrap().identity.leaf(), cert.der());
        let other_ca = cache
            .load_certificate("https://other.example/dir", &hosts)
            .await
            .unwrap();
        assert!(other_ca.is_none());
        let fewer_hosts = cache
            .load_certificate("https://ca.example/dir", &hosts[..1])
            .await
            .unwrap();
        assert!(fewer_hosts.is_none());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.certificate_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
