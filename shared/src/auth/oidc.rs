//! Console SSO: pacer as an OpenID Connect relying party (Authorization
//! Code + PKCE S256).
//!
//! - Discovery runs at start ([`Sso::at_start`]): an issuer that answers
//!   wrongly (not found, not a discovery document, another issuer's name)
//!   fails fast instead of on the first sign-in. One that does not answer
//!   (refused, timed out, 5xx) does not stop pacer: webhooks, runners and
//!   existing sessions need no IdP, so discovery is tried again at each
//!   sign-in until it works.
//! - `start` mints state, nonce and a PKCE verifier and packs them into a
//!   10-minute cookie signed with `auth.jwt_secret` (HMAC-SHA256).
//! - [`OidcClient::open_state`] checks that cookie against the returned
//!   state; the caller then makes sure the state is used once, and
//!   [`OidcClient::finish`] exchanges the code (with the verifier) and
//!   validates the ID token: signature through the IdP's JWKS (asymmetric
//!   algorithms only, the key's type must match the header; an unknown
//!   `kid` refetches the JWKS, at most once a minute, concurrent sign-ins
//!   sharing one refetch), `iss`, `aud` holding `client_id` and, when it
//!   names other audiences too, `azp == client_id`; `exp`, `iat` and `sub`
//!   present, the nonce.
//! - [`admit`] applies the allowlists.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::config::{OidcConfig, Secret};

/// The cookie carrying state, nonce and PKCE verifier across the IdP.
pub const STATE_COOKIE: &str = "pacer_oidc_state";
/// How long a sign-in may take at the IdP.
pub const STATE_TTL_SECS: i64 = 600;

/// What the relying party needs from `auth.oidc.*`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_url: String,
    pub scopes: Vec<String>,
    pub require_email_verified: bool,
    pub allowed_emails: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub groups_claim: Option<String>,
    pub allowed_groups: Vec<String>,
    pub admin_groups: Vec<String>,
}

impl OidcSettings {
    /// From validated config (`auth.oidc.enabled` with its required peers).
    pub fn from_config(cfg: &OidcConfig) -> Option<Self> {
        if !cfg.enabled {
            return None;
        }
        Some(Self {
            issuer: cfg
                .issuer
                .as_ref()?
                .as_str()
                .trim_end_matches('/')
                .to_string(),
            client_id: cfg.client_id.clone()?,
            client_secret: cfg.client_secret.clone()?,
            redirect_url: cfg.redirect_url.as_ref()?.to_string(),
            scopes: cfg.scopes.clone(),
            require_email_verified: cfg.require_email_verified,
            allowed_emails: cfg
                .allowed_emails
                .iter()
                .map(|e| e.to_lowercase())
                .collect(),
            allowed_domains: cfg
                .allowed_domains
                .iter()
                .map(|d| d.to_lowercase())
                .collect(),
            groups_claim: cfg.groups_claim.clone(),
            allowed_groups: cfg.allowed_groups.clone(),
            admin_groups: cfg.admin_groups.clone(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// Who the IdP says signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub sub: String,
    /// Lower-cased.
    pub email: Option<String>,
    pub email_verified: bool,
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The sign-in failed technically (bad state, token, IdP answer): the
    /// reason is for the audit log; the browser sees a generic page.
    #[error("{0}")]
    Failed(String),
}

fn failed(reason: impl Into<String>) -> OidcError {
    OidcError::Failed(reason.into())
}

/// Why discovery failed, and whether trying again later may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DiscoveryError {
    pub message: String,
    /// The IdP did not answer, or answered 429/5xx: it may be down for a
    /// while. Otherwise it answered wrongly, which is a configuration error.
    pub transient: bool,
}

/// GETs JSON from the IdP, saying whether a failure may pass.
async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    what: &str,
) -> Result<T, DiscoveryError> {
    let transient_status =
        |s: reqwest::StatusCode| s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS;
    let response = http.get(url).send().await.map_err(|e| DiscoveryError {
        message: format!("{what} at {url}: no answer ({e})"),
        transient: true,
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(DiscoveryError {
            message: format!("{what} at {url}: HTTP {status}"),
            transient: transient_status(status),
        });
    }
    response.json().await.map_err(|e| DiscoveryError {
        message: format!("{url} is not a readable {what}: {e}"),
        transient: e.is_timeout() || e.is_body(),
    })
}

/// The relying party of a pacer with SSO on: discovered at start when the
/// IdP answers, else at the first sign-in that finds it answering.
pub struct Sso {
    settings: OidcSettings,
    client: tokio::sync::OnceCell<Arc<OidcClient>>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("issuer", &self.settings.issuer)
            .field("discovered", &self.client.initialized())
            .finish()
    }
}

impl Sso {
    /// Discovery at start: a wrong answer is an error; no answer is logged
    /// and left to the first sign-in.
    pub async fn at_start(settings: OidcSettings) -> anyhow::Result<Self> {
        match OidcClient::discover(settings.clone()).await {
            Ok(client) => Ok(Self::discovered(client)),
            Err(e) if e.transient => {
                tracing::warn!(error = %crate::error_text::display_chain(&e), "the identity provider is not answering; SSO sign-ins will try discovery again");
                Ok(Self {
                    settings,
                    client: tokio::sync::OnceCell::new(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An SSO whose discovery has been done.
    pub fn discovered(client: OidcClient) -> Self {
        Self {
            settings: client.settings.clone(),
            client: tokio::sync::OnceCell::new_with(Some(Arc::new(client))),
        }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The discovered relying party, discovering now if need be (one
    /// attempt at a time; a failure leaves the next sign-in to try again).
    pub async fn client(&self) -> Result<Arc<OidcClient>, DiscoveryError> {
        self.client
            .get_or_try_init(|| async {
                let client = OidcClient::discover(self.settings.clone()).await?;
                tracing::info!(issuer = %self.settings.issuer, "discovered the identity provider");
                Ok(Arc::new(client))
            })
            .await
            .cloned()
    }
}

/// How often an unknown `kid` may make pacer fetch the IdP's keys again:
/// tokens naming made-up keys must not turn pacer into a flood of requests
/// to the IdP.
pub const JWKS_REFETCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub struct OidcClient {
    settings: OidcSettings,
    discovery: Discovery,
    /// When the keys were last fetched again for an unknown `kid`; held
    /// while fetching, so concurrent sign-ins wait for one fetch.
    refetched: tokio::sync::Mutex<Option<std::time::Instant>>,
    refetch_every: std::time::Duration,
    /// `discovery.authorization_endpoint`, parsed once: the IdP wrote it.
    authorization_endpoint: url::Url,
    jwks: RwLock<Arc<JwkSet>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

/// What `start` hands the browser.
pub struct Started {
    pub authorize_url: String,
    /// The signed value of the [`STATE_COOKIE`].
    pub cookie: String,
}

/// A callback's state, checked against the cookie that started the sign-in.
pub struct OpenedState(StateCookie);

impl OpenedState {
    /// The state value, for single-use bookkeeping.
    pub fn state(&self) -> &str {
        &self.0.state
    }
}

#[derive(Serialize, Deserialize)]
struct StateCookie {
    state: String,
    nonce: String,
    verifier: String,
    exp: i64,
}

fn random_token() -> String {
    B64.encode(rand::random::<[u8; 32]>())
}

fn sign(secret: &[u8], payload: &str) -> String {
    let mac = crate::mac::hmac_sha256_of(secret, &[b"pacer-oidc-state.", payload.as_bytes()]);
    B64.encode(mac.finalize().into_bytes())
}

impl OidcClient {
    /// Fetches the discovery document and the JWKS; fails with a clear
    /// error that says whether the IdP may simply be down.
    pub async fn discover(settings: OidcSettings) -> Result<Self, DiscoveryError> {
        let named = |e: DiscoveryError| DiscoveryError {
            message: format!("auth.oidc.issuer: {}", e.message),
            ..e
        };
        let http = crate::http_client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| DiscoveryError {
                message: format!("building the HTTP client: {e}"),
                transient: false,
            })?;
        let url = format!("{}/.well-known/openid-configuration", settings.issuer);
        let discovery: Discovery = fetch_json(&http, &url, "OpenID discovery document")
            .await
            .map_err(named)?;
        if discovery.issuer.trim_end_matches('/') != settings.issuer {
            return Err(named(DiscoveryError {
                message: format!(
                    "the IdP calls itself {:?}, not {:?}",
                    discovery.issuer, settings.issuer
                ),
                transient: false,
            }));
        }
        // The IdP writes these; one that is not a URL is a configuration
        // error to report now, not a panic at the first sign-in.
        let endpoint = |name: &str, value: &str| {
            url::Url::parse(value)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .ok_or_else(|| {
                    named(DiscoveryError {
                        message: format!(
                            "the discovery document's {name} {value:?} is not an http(s) URL"
                        ),
                        transient: false,
                    })
                })
        };
        let authorization_endpoint =
            endpoint("authorization_endpoint", &discovery.authorization_endpoint)?;
        endpoint("token_endpoint", &discovery.token_endpoint)?;
        endpoint("jwks_uri", &discovery.jwks_uri)?;
        let jwks: JwkSet = fetch_json(&http, &discovery.jwks_uri, "JWKS (the IdP's signing keys)")
            .await
            .map_err(named)?;
        Ok(Self {
            jwks: RwLock::new(Arc::new(jwks)),
            refetched: tokio::sync::Mutex::new(None),
            refetch_every: JWKS_REFETCH_EVERY,
            settings,
            discovery,
            authorization_endpoint,
            http,
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Replaces [`JWKS_REFETCH_EVERY`] (tests shorten it).
    pub fn with_jwks_refetch_every(mut self, every: std::time::Duration) -> Self {
        self.refetch_every = every;
        self
    }

    /// The key for `header` after fetching the IdP's keys again — unless
    /// they were fetched less than [`JWKS_REFETCH_EVERY`] ago. Concurrent
    /// callers queue on the lock: the first fetches, the rest find its keys.
    async fn refetch_and_pick(
        &self,
        header: &jsonwebtoken::Header,
    ) -> Result<Option<DecodingKey>, OidcError> {
        let mut last = self.refetched.lock().await;
        if let Some(found) = self.pick_key(header).await? {
            return Ok(Some(found));
        }
        if last.is_some_and(|at| at.elapsed() < self.refetch_every) {
            return Ok(None);
        }
        *last = Some(std::time::Instant::now());
        let set: JwkSet = fetch_json(
            &self.http,
            &self.discovery.jwks_uri,
            "JWKS (the IdP's signing keys)",
        )
        .await
        .map_err(|e| failed(e.message))?;
        *self.jwks.write().await = Arc::new(set);
        self.pick_key(header).await
    }

    /// Begins a sign-in: where to send the browser, and the cookie to set.
    pub fn start(&self, secret: &[u8], now: chrono::DateTime<chrono::Utc>) -> Started {
        let state = StateCookie {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            exp: now.timestamp() + STATE_TTL_SECS,
        };
        let challenge = B64.encode(Sha256::digest(state.verifier.as_bytes()));
        let mut url = self.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_url)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", &state.state)
            .append_pair("nonce", &state.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        // Four strings and a number: serialising cannot fail.
        #[allow(clippy::expect_used)]
        let payload = B64.encode(serde_json::to_vec(&state).expect("serialises"));
        let cookie = format!("{payload}.{}", sign(secret, &payload));
        Started {
            authorize_url: url.to_string(),
            cookie,
        }
    }

    /// The state a callback carries, checked against the browser's cookie:
    /// signed by this pacer, not expired, for this very state. The caller
    /// makes sure a state is used once before it [`finish`](Self::finish)es.
    pub fn open_state(
        secret: &[u8],
        cookie: &str,
        state: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<OpenedState, OidcError> {
        Self::open_cookie(secret, cookie, state, now).map(OpenedState)
    }

    fn open_cookie(
        secret: &[u8],
        cookie: &str,
        state: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<StateCookie, OidcError> {
        let (payload, mac) = cookie
            .split_once('.')
            .ok_or_else(|| failed("malformed state cookie"))?;
        let expected = sign(secret, payload);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            mac.as_bytes(),
        )) {
            return Err(failed("the state cookie's signature does not match"));
        }
        let opened: StateCookie = serde_json::from_slice(
            &B64.decode(payload)
                .map_err(|_| failed("malformed state cookie"))?,
        )
        .map_err(|_| failed("malformed state cookie"))?;
        if now.timestamp() >= opened.exp {
            return Err(failed("the sign-in took longer than 10 minutes"));
        }
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            opened.state.as_bytes(),
            state.as_bytes(),
        )) {
            return Err(failed(
                "the state does not match the sign-in this browser started",
            ));
        }
        Ok(opened)
    }

    /// Completes a sign-in whose state was opened (and used once): trades
    /// the code for the ID token and validates it.
    pub async fn finish(&self, opened: &OpenedState, code: &str) -> Result<Identity, OidcError> {
        let opened = &opened.0;
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
        }
        let response = self
            .http
            .post(&self.discovery.token_endpoint)
            .basic_auth(
                &self.settings.client_id,
                Some(self.settings.client_secret.expose()),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.settings.redirect_url),
                ("code_verifier", &opened.verifier),
            ])
            .send()
            .await
            .map_err(|e| failed(format!("exchanging the code: {e}")))?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "the IdP refused the code: HTTP {}",
                response.status()
            )));
        }
        let tokens: TokenResponse = response
            .json()
            .await
            .map_err(|e| failed(format!("the token answer is not readable: {e}")))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| failed("the IdP answered without an ID token"))?;
        self.validate_id_token(&id_token, &opened.nonce).await
    }

    /// Validates an ID token (see the module docs for the rules).
    pub async fn validate_id_token(&self, token: &str, nonce: &str) -> Result<Identity, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| failed(format!("the ID token's header: {e}")))?;
        let key = match self.pick_key(&header).await? {
            Some(k) => k,
            // A key pacer has not seen: the IdP may have rotated.
            None => self
                .refetch_and_pick(&header)
                .await?
                .ok_or_else(|| failed("no key of the IdP's JWKS verifies this ID token"))?,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer, &format!("{}/", self.settings.issuer)]);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_required_spec_claims(&["iss", "aud", "exp", "iat", "sub"]);
        validation.leeway = 60;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| failed(format!("the ID token is not valid: {e}")))?
            .claims;
        if claims.get("iat").and_then(|v| v.as_i64()).is_none() {
            return Err(failed("the ID token has no iat"));
        }
        check_authorized_party(&claims, &self.settings.client_id)?;
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| failed("the ID token has no sub"))?;
        if claims.get("nonce").and_then(|v| v.as_str()) != Some(nonce) {
            return Err(failed("the ID token's nonce does not match this sign-in"));
        }
        let groups = self
            .settings
            .groups_claim
            .as_deref()
            .and_then(|c| claims.get(c))
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Identity {
            sub: sub.to_string(),
            email: claims
                .get("email")
                .and_then(|v| v.as_str())
                .map(|e| e.trim().to_lowercase()),
            email_verified: claims
                .get("email_verified")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            groups,
        })
    }

    /// The JWKS key for a header: by `kid`, or the only key of a matching
    /// type when the token names none. Symmetric algorithms are refused: an
    /// IdP's public key must never double as an HMAC secret.
    async fn pick_key(
        &self,
        header: &jsonwebtoken::Header,
    ) -> Result<Option<DecodingKey>, OidcError> {
        let family = match header.alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => "RSA",
            Algorithm::ES256 | Algorithm::ES384 => "EC",
            Algorithm::EdDSA => "OKP",
            other => {
                return Err(failed(format!(
                    "the ID token uses {other:?}; pacer accepts only the IdP's public-key signatures"
                )));
            }
        };
        let set = self.jwks.read().await.clone();
        let of_family = |k: &&jsonwebtoken::jwk::Jwk| match &k.algorithm {
            AlgorithmParameters::RSA(_) => family == "RSA",
            AlgorithmParameters::EllipticCurve(_) => family == "EC",
            AlgorithmParameters::OctetKeyPair(_) => family == "OKP",
            AlgorithmParameters::OctetKey(_) => false,
        };
        let candidates: Vec<&jsonwebtoken::jwk::Jwk> = match &header.kid {
            Some(kid) => set
                .keys
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
                .filter(of_family)
                .collect(),
            None => set.keys.iter().filter(of_family).collect(),
        };
        match candidates.as_slice() {
            [one] => {
                Ok(Some(DecodingKey::from_jwk(one).map_err(|e| {
                    failed(format!("the IdP's key is not usable: {e}"))
                })?))
            }
            [] => Ok(None),
            _ => Err(failed(
                "the ID token names no key and the IdP publishes several",
            )),
        }
    }
}

/// A token for several audiences must name pacer as the party it was issued
/// to (`azp`), and an `azp` must always be pacer: otherwise a token the IdP
/// minted for another client, which merely lists pacer among its audiences,
/// would sign someone in here.
fn check_authorized_party(claims: &serde_json::Value, client_id: &str) -> Result<(), OidcError> {
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::Array(all)) => all.len(),
        _ => 1,
    };
    match claims.get("azp") {
        Some(azp) if azp.as_str() != Some(client_id) => Err(failed(format!(
            "the ID token was issued to another client (azp {azp})"
        ))),
        None if audiences > 1 => Err(failed("the ID token names several audiences but no azp")),
        _ => Ok(()),
    }
}

/// Whether the allowlists admit an identity; `Err(reason)` for the audit log.
/// An email in `allowed_emails` is admitted; otherwise every non-empty list
/// among `allowed_domains` and `allowed_groups` must pass; if only
/// `allowed_emails` is set and it does not match, denied; all empty, the
/// IdP is the gate. `require_email_verified` applies in every case.
pub fn admit(settings: &OidcSettings, identity: &Identity) -> Result<(), String> {
    if settings.require_email_verified && !identity.email_verified {
        return Err("the IdP does not vouch for the email (email_verified is not true)".into());
    }
    let email = identity.email.as_deref().unwrap_or("");
    if !email.is_empty() && settings.allowed_emails.iter().any(|e| e == email) {
        return Ok(());
    }
    let domains = !settings.allowed_domains.is_empty();
    let groups = !settings.allowed_groups.is_empty();
    if !domains && !groups {
        return if settings.allowed_emails.is_empty() {
            Ok(())
        } else {
            Err(format!("{email:?} is not in allowed_emails"))
        };
    }
    if domains {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !settings.allowed_domains.iter().any(|d| d == domain) {
            return Err(format!(
                "the email domain {domain:?} is not in allowed_domains"
            ));
        }
    }
    if groups {
        let theirs: HashSet<String> = identity.groups.iter().map(|g| g.to_lowercase()).collect();
        if !settings
            .allowed_groups
            .iter()
            .any(|g| theirs.contains(&g.to_lowercase()))
        {
            return Err("none of the user's groups is in allowed_groups".into());
        }
    }
    Ok(())
}

/// Whether the identity's groups make it an admin (`auth.oidc.admin_groups`).
pub fn is_admin_by_group(settings: &OidcSettings, identity: &Identity) -> bool {
    identity.groups.iter().any(|g| {
        settings
            .admin_groups
            .iter()
            .any(|a| a.eq_ignore_ascii_case(g))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "https://idp.example".into(),
            client_id: "pacer".into(),
            client_secret: Secret::new("s"),
            redirect_url: "https://pacer.example/api/auth/oidc/callback".into(),
            scopes: vec!["openid".into()],
            require_email_verified: true,
            allowed_emails: vec![],
            allowed_domains: vec![],
            groups_claim: Some("groups".into()),
            allowed_groups: vec![],
            admin_groups: vec![],
        }
    }

    fn who(email: &str, verified: bool, groups: &[&str]) -> Identity {
        Identity {
            sub: "s".into(),
            email: Some(email.into()),
            email_verified: verified,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn with_no_allowlist_the_idp_is_the_gate_but_the_email_must_be_verified() {
        assert!(admit(&settings(), &who("a@x.com", true, &[])).is_ok());
        assert!(admit(&settings(), &who("a@x.com", false, &[])).is_err());
        let lax = OidcSettings {
            require_email_verified: false,
            ..settings()
        };
        assert!(admit(&lax, &who("a@x.com", false, &[])).is_ok());
    }

    #[test]
    fn an_allowed_email_passes_alone_and_only_emails_set_denies_the_rest() {
        let s = OidcSettings {
            allowed_emails: vec!["a@x.com".into()],
            allowed_domains: vec!["y.com".into()],
            ..settings()
        };
        assert!(
            admit(&s, &who("a@x.com", true, &[])).is_ok(),
            "emails win over the domain list"
        );
        assert!(admit(&s, &who("b@y.com", true, &[])).is_ok());
        assert!(admit(&s, &who("b@x.com", true, &[])).is_err());
        let only = OidcSettings {
            allowed_emails: vec!["a@x.com".into()],
            ..settings()
        };
        assert!(admit(&only, &who("b@x.com", true, &[])).is_err());
    }

    #[test]
    fn every_non_empty_list_among_domains_and_groups_must_pass_ignoring_case() {
        let s = OidcSettings {
            allowed_domains: vec!["x.com".into()],
            allowed_groups: vec!["Pacer-Admins".into()],
            ..settings()
        };
        assert!(admit(&s, &who("a@x.com", true, &["PACER-ADMINS"])).is_ok());
        assert!(admit(&s, &who("a@x.com", true, &["other"])).is_err());
        assert!(admit(&s, &who("a@z.com", true, &["pacer-admins"])).is_err());
    }

    #[test]
    fn admin_groups_make_admins() {
        let s = OidcSettings {
            admin_groups: vec!["ops".into()],
            ..settings()
        };
        assert!(is_admin_by_group(&s, &who("a@x.com", true, &["OPS"])));
        assert!(!is_admin_by_group(&s, &who("a@x.com", true, &["dev"])));
    }

    #[test]
    fn a_token_for_several_audiences_must_be_issued_to_pacer() {
        let check = |claims: serde_json::Value| {
            check_authorized_party(&claims, "pacer").map_err(|e| e.to_string())
        };
        assert!(check(serde_json::json!({"aud": "pacer"})).is_ok());
        assert!(check(serde_json::json!({"aud": ["pacer"]})).is_ok());
        assert!(check(serde_json::json!({"aud": ["pacer", "other"], "azp": "pacer"})).is_ok());
        assert!(
            check(serde_json::json!({"aud": ["pacer", "other"]}))
                .unwrap_err()
                .contains("no azp")
        );
        assert!(
            check(serde_json::json!({"aud": ["pacer", "other"], "azp": "other"}))
                .unwrap_err()
                .contains("another client")
        );
        assert!(
            check(serde_json::json!({"aud": "pacer", "azp": "other"})).is_err(),
            "an azp is always pacer"
        );
        assert!(check(serde_json::json!({"aud": "pacer", "azp": 7})).is_err());
    }

    #[test]
    fn the_state_cookie_is_signed_bound_to_its_state_and_expires() {
        let now = chrono::Utc::now();
        let state = StateCookie {
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            exp: now.timestamp() + 600,
        };
        let payload = B64.encode(serde_json::to_vec(&state).unwrap());
        let cookie = format!("{payload}.{}", sign(b"k", &payload));
        assert!(OidcClient::open_cookie(b"k", &cookie, "st", now).is_ok());
        assert!(
            OidcClient::open_cookie(b"other", &cookie, "st", now).is_err(),
            "signed with auth.jwt_secret"
        );
        assert!(
            OidcClient::open_cookie(b"k", &cookie, "forged", now).is_err(),
            "bound to its state"
        );
        assert!(
            OidcClient::open_cookie(b"k", &cookie, "st", now + chrono::Duration::seconds(601))
                .is_err(),
            "10 minutes"
        );
    }
}
