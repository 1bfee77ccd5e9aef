//! Workload identity: whether to trust an OIDC ID token a machine outside
//! EC2 presents as its bearer (a GitHub Actions job's token, another CI
//! system's), and for which [`TrustedIdentity`].
//!
//! [`WorkloadVerifier::verify`] checks, in this order, and refuses at the
//! first check that fails:
//!
//! 1. the token's size (at most [`MAX_TOKEN_BYTES`]), before any parsing;
//! 2. its shape: a compact JWS whose header names RS256, PS256, ES256 or
//!    EdDSA. `none` and the HMAC algorithms are refused: an issuer's public
//!    key must never double as a shared secret. `jku`, `x5u`, `jwk` and
//!    `x5c` are ignored: keys come only from the issuer's configured JWKS.
//!    A `crit` header is refused: pacer understands no extension;
//! 3. its `iss`, compared byte for byte with each identity's issuer, then
//!    its `aud`, which must contain the identity's audience;
//! 4. its signature, with the issuer's key of the header's `kid` (see
//!    [Keys](#keys));
//! 5. its times, against the `now` the caller passes: `exp`, `iat` and
//!    `jti` required, `nbf` honoured, [`LEEWAY_SECS`] of clock skew either
//!    way, `iat` not in the future;
//! 6. for each identity of the issuer and audience, in order: the token's
//!    lifetime (`exp - iat`) within the identity's `max_token_lifetime`, its
//!    claim rules, and its identity claim (at most
//!    [`MAX_IDENTITY_VALUE_BYTES`]). The first identity all hold for wins.
//!
//! # Keys
//!
//! An issuer's keys come from its identity's `jwks_url`, or else from the
//! `jwks_uri` of its discovery document (`<issuer>/.well-known/openid-configuration`),
//! which must be on the issuer's own origin: a discovery document cannot
//! send pacer to keys somewhere else. Every fetch follows no redirect, waits
//! at most [`FETCH_TIMEOUT`] and reads at most [`MAX_FETCH_BYTES`].
//!
//! The keys are cached per issuer. A token naming a key the cache lacks, or
//! a cache older than [`KEYS_MAX_AGE`], fetches them again, but at most once
//! per [`REFETCH_EVERY`] per issuer, and concurrent verifications wait for
//! one fetch instead of each making their own: a storm of tokens naming
//! made-up keys costs the issuer one request a minute. The minute is
//! measured on the `now` callers pass, so tests need no sleeping. Each
//! fetch reads the discovery document again, so a moved `jwks_uri` is
//! followed. When a fetch fails, keys already cached still verify: an
//! issuer that is down for a while does not stop the runners it vouches for.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::domain::Time;
use crate::domain::self_service::{SecurityEventKind, TrustedIdentity};

/// The largest token pacer reads; a larger one is refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed between the issuer and pacer, either way.
pub const LEEWAY_SECS: i64 = 60;
/// The longest identity-claim value an owner may carry.
pub const MAX_IDENTITY_VALUE_BYTES: usize = 512;
/// The longest `jti` pacer keeps (it is stored to refuse replays).
pub const MAX_JTI_BYTES: usize = 512;
/// The largest discovery document or JWKS pacer reads.
pub const MAX_FETCH_BYTES: usize = 100 * 1024;
/// How long a discovery or JWKS fetch may take, connecting included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an issuer's keys may be fetched.
pub const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// How long fetched keys are used before they are fetched again, so a key
/// the issuer withdrew stops being trusted.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

/// The algorithms a workload token may be signed with.
const ACCEPTED_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Algorithm names a refusal may repeat: anything else a token says is
/// summarised, so a reason never carries arbitrary text from a token.
const KNOWN_ALGORITHM_NAMES: [&str; 15] = [
    "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA", "ES256K",
];

/// A token pacer trusts, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The name of the trusted identity that admitted it.
    pub trusted_identity: String,
    /// `<trusted identity name>:<identity claim value>`.
    pub owner: String,
    pub issuer: String,
    /// The token's id, for refusing a second use.
    pub jti: String,
    /// From `exp`.
    pub expires_at: Time,
    /// Every claim, as signed.
    pub claims: Map<String, Value>,
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
}

/// What a refusal is, in the terms of a security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// A check of the token itself failed: size, shape, algorithm, issuer,
    /// audience, key, signature, times.
    InvalidToken,
    /// A valid token whose claims the trusted identity does not admit.
    ClaimMismatch,
}

impl RejectionKind {
    /// The security event this refusal is recorded as.
    pub fn event_kind(self) -> SecurityEventKind {
        match self {
            RejectionKind::InvalidToken => SecurityEventKind::InvalidToken,
            RejectionKind::ClaimMismatch => SecurityEventKind::ClaimMismatch,
        }
    }
}

/// Why a token was refused: enough for a security event, never the token
/// (nor its signature) itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TokenRejection {
    pub kind: RejectionKind,
    /// The trusted identity the token was judged against, when there was
    /// exactly one.
    pub trusted_identity: Option<String>,
    /// Which check failed.
    pub reason: String,
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
}

/// Checks workload tokens against the trusted identities (see the module
/// docs). Share one per process: it holds the key caches.
pub struct WorkloadVerifier {
    identities: Vec<TrustedIdentity>,
    /// By issuer.
    issuers: HashMap<String, IssuerKeys>,
    http: reqwest::Client,
}

impl fmt::Debug for WorkloadVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadVerifier")
            .field(
                "identities",
                &self.identities.iter().map(|i| &i.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Where an issuer's keys are.
#[derive(Debug, Clone)]
enum KeySource {
    /// The identity's `jwks_url`.
    Jwks(Url),
    /// The `jwks_uri` of the discovery document at `document`, which must
    /// name `issuer` (as configured) and keep its keys on `origin`.
    Discovery {
        document: Url,
        issuer: String,
        origin: url::Origin,
    },
}

/// One issuer's keys and the gate in front of fetching them.
struct IssuerKeys {
    source: KeySource,
    cache: Mutex<Option<Arc<CachedKeys>>>,
    /// When the keys were last fetched (or tried), held while fetching:
    /// verifications that need a fetch queue here and find its result.
    last_fetch: tokio::sync::Mutex<Option<Time>>,
}

struct CachedKeys {
    keys: Vec<Jwk>,
    fetched_at: Time,
}

/// What a token's header says, as far as pacer listens.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// A refusal, before the token's hash is added.
struct Refusal {
    kind: RejectionKind,
    trusted_identity: Option<String>,
    reason: String,
}

impl Refusal {
    /// A token check failed, for no identity in particular.
    fn invalid(reason: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::InvalidToken,
            trusted_identity: None,
            reason: reason.into(),
        }
    }

    fn naming(self, trusted_identity: Option<String>) -> Self {
        Self {
            trusted_identity,
            ..self
        }
    }
}

/// A token an identity admitted.
struct Admitted<'a> {
    identity: &'a TrustedIdentity,
    owner: String,
    claims: Map<String, Value>,
    jti: String,
    expires_at: Time,
}

impl WorkloadVerifier {
    /// A verifier for `identities`. Fails when an issuer's key location is
    /// not an http(s) URL, or identities sharing an issuer disagree on it.
    pub fn new(identities: Vec<TrustedIdentity>) -> anyhow::Result<Self> {
        let http = crate::http_client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut issuers: HashMap<String, IssuerKeys> = HashMap::new();
        for identity in &identities {
            let source = key_source(identity)?;
            match issuers.get(&identity.issuer) {
                Some(known) if known.source.describe() != source.describe() => anyhow::bail!(
                    "trusted identity {:?}: identities with issuer {:?} must take its keys from one place ({} or {})",
                    identity.name,
                    identity.issuer,
                    known.source.describe(),
                    source.describe()
                ),
                Some(_) => {}
                None => {
                    issuers.insert(identity.issuer.clone(), IssuerKeys::new(source));
                }
            }
        }
        Ok(Self {
            identities,
            issuers,
            http,
        })
    }

    /// The trusted identity of this name.
    pub fn identity(&self, name: &str) -> Option<&TrustedIdentity> {
        self.identities.iter().find(|i| i.name == name)
    }

    /// Whether `token` is trusted at `now`, and for whom.
    pub async fn verify(&self, token: &str, now: Time) -> Result<VerifiedToken, TokenRejection> {
        let token_sha256 = hex::encode(Sha256::digest(token.as_bytes()));
        match self.check(token, now).await {
            Ok(admitted) => Ok(VerifiedToken {
                trusted_identity: admitted.identity.name.clone(),
                owner: admitted.owner,
                issuer: admitted.identity.issuer.clone(),
                jti: admitted.jti,
                expires_at: admitted.expires_at,
                claims: admitted.claims,
                token_sha256,
            }),
            Err(refusal) => Err(TokenRejection {
                kind: refusal.kind,
                trusted_identity: refusal.trusted_identity,
                reason: refusal.reason,
                token_sha256,
            }),
        }
    }

    /// The checks of the module docs, in their order.
    async fn check(&self, token: &str, now: Time) -> Result<Admitted<'_>, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::invalid(format!(
                "the token is larger than {} KiB",
                MAX_TOKEN_BYTES / 1024
            )));
        }
        let (header, unverified) = read_unverified(token).map_err(Refusal::invalid)?;
        let issuer = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::invalid("the token has no iss"))?;
        let of_issuer: Vec<&TrustedIdentity> = self
            .identities
            .iter()
            .filter(|i| i.issuer == issuer)
            .collect();
        let keys = match (of_issuer.as_slice(), self.issuers.get(issuer)) {
            ([_, ..], Some(keys)) => keys,
            _ => {
                return Err(Refusal::invalid(format!(
                    "no trusted identity has the token's issuer {}",
                    quoted(issuer)
                )));
            }
        };
        let candidates: Vec<&TrustedIdentity> = of_issuer
            .iter()
            .copied()
            .filter(|i| audience_contains(&unverified, &i.audience))
            .collect();
        if candidates.is_empty() {
            return Err(Refusal::invalid(
                "the token's aud does not name the audience of a trusted identity of its issuer",
            )
            .naming(only(&of_issuer)));
        }
        let refuse = |reason: String| Refusal::invalid(reason).naming(only(&candidates));

        let key = keys
            .key_for(&header, now, &self.http)
            .await
            .map_err(refuse)?;
        let claims = verify_signature(token, &header, &key, issuer).map_err(refuse)?;
        let times = TokenTimes::check(&claims, now).map_err(refuse)?;
        let jti = jti(&claims).map_err(refuse)?;

        let mut failures = Vec::new();
        for identity in &candidates {
            match admit(identity, &claims, &times) {
                Ok(owner) => {
                    return Ok(Admitted {
                        identity,
                        owner,
                        claims,
                        jti,
                        expires_at: times.expires_at,
                    });
                }
                Err((kind, reason)) => failures.push((identity.name.as_str(), kind, reason)),
            }
        }
        Err(no_identity_admits(&failures).naming(only(&candidates)))
    }
}

/// The identity a refusal names: the one left, when the issuer (and
/// audience) leave no doubt which the token meant.
fn only(candidates: &[&TrustedIdentity]) -> Option<String> {
    match candidates {
        [one] => Some(one.name.clone()),
        _ => None,
    }
}

/// The refusal when every candidate identity turned the token down: one
/// identity's own reason, or each identity's, named.
fn no_identity_admits(failures: &[(&str, RejectionKind, String)]) -> Refusal {
    let kind = if failures
        .iter()
        .all(|(_, kind, _)| *kind == RejectionKind::ClaimMismatch)
    {
        RejectionKind::ClaimMismatch
    } else {
        RejectionKind::InvalidToken
    };
    let reason = match failures {
        [(_, _, reason)] => reason.clone(),
        _ => failures
            .iter()
            .map(|(name, _, reason)| format!("{name}: {reason}"))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Refusal {
        kind,
        trusted_identity: None,
        reason,
    }
}

/// Whether `identity` admits a token with valid signature and times, and
/// the owner it speaks for.
fn admit(
    identity: &TrustedIdentity,
    claims: &Map<String, Value>,
    times: &TokenTimes,
) -> Result<String, (RejectionKind, String)> {
    let lifetime = times.expires.saturating_sub(times.issued);
    let max = i64::try_from(identity.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
    if lifetime > max {
        return Err((
            RejectionKind::InvalidToken,
            format!("the token lives {lifetime} s (exp - iat), longer than the {max} s allowed"),
        ));
    }
    let mismatch = |reason: String| (RejectionKind::ClaimMismatch, reason);
    identity.check_claims(claims).map_err(mismatch)?;
    let owner = identity.owner(claims).map_err(mismatch)?;
    let value_len = owner.len().saturating_sub(identity.name.len() + 1);
    if value_len > MAX_IDENTITY_VALUE_BYTES {
        return Err(mismatch(format!(
            "claim {:?} is longer than {MAX_IDENTITY_VALUE_BYTES} bytes",
            identity.identity_claim
        )));
    }
    Ok(owner)
}

/// The header and the claims, before any signature check: enough to pick
/// the identity and the key, trusted for nothing else.
fn read_unverified(token: &str) -> Result<(TokenHeader, Map<String, Value>), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let (header, claims) = match parts.as_slice() {
        [header, claims, signature] if !signature.is_empty() => (*header, *claims),
        _ => return Err("the token is not a signed JWT (three base64url parts)".into()),
    };
    let header = decode_object(header).ok_or("the token's header is not base64url JSON")?;
    let header = read_header(&header)?;
    let claims =
        decode_object(claims).ok_or("the token's claims are not a base64url JSON object")?;
    Ok((header, claims))
}

/// A base64url part holding a JSON object.
fn decode_object(part: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&B64.decode(part).ok()?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The algorithm and key id, refusing what pacer does not accept. The
/// header's own key hints (`jku`, `x5u`, `jwk`, `x5c`) are never read.
fn read_header(header: &Map<String, Value>) -> Result<TokenHeader, String> {
    let named = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or("the token's header names no alg")?;
    let alg = Algorithm::from_str(named)
        .ok()
        .filter(|alg| ACCEPTED_ALGORITHMS.contains(alg))
        .ok_or_else(|| {
            let shown = if KNOWN_ALGORITHM_NAMES.contains(&named) {
                format!("{named:?}")
            } else {
                "an unknown one".to_string()
            };
            format!("the token's alg is {shown}; pacer accepts RS256, PS256, ES256 and EdDSA")
        })?;
    // A critical extension is one pacer would have to understand to verify
    // the token; it understands none.
    if header.contains_key("crit") {
        return Err("the token's header has crit extensions, which pacer does not support".into());
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("the token's kid is not a string".into()),
    };
    Ok(TokenHeader { alg, kid })
}

/// Whether the token's `aud`, a string or an array of strings, names
/// `audience`.
fn audience_contains(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

/// The claims, once the signature verifies. jsonwebtoken checks the
/// signature only: times are checked against the caller's `now`
/// ([`TokenTimes`]), never the system clock, and the audience was matched
/// per identity already.
fn verify_signature(
    token: &str,
    header: &TokenHeader,
    key: &DecodingKey,
    issuer: &str,
) -> Result<Map<String, Value>, String> {
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| signature_failure(e.kind()).to_string())
}

/// A jsonwebtoken error as a reason: by its kind only, since some kinds
/// carry text from the token.
fn signature_failure(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify with the issuer's key",
        ErrorKind::InvalidIssuer => "the token's iss is not its issuer",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's alg does not fit its key"
        }
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::RsaFailedSigning => "the issuer's key cannot verify the token",
        _ => "the token is malformed",
    }
}

/// The times a token states, checked against `now`.
struct TokenTimes {
    issued: i64,
    expires: i64,
    expires_at: Time,
}

impl TokenTimes {
    fn check(claims: &Map<String, Value>, now: Time) -> Result<Self, String> {
        let now = now.timestamp();
        let expires = numeric_date(claims, "exp")?.ok_or("the token has no exp")?;
        let issued = numeric_date(claims, "iat")?.ok_or("the token has no iat")?;
        if now > expires.saturating_add(LEEWAY_SECS) {
            return Err(format!("the token expired at {expires}"));
        }
        let not_before = numeric_date(claims, "nbf")?;
        if let Some(not_before) = not_before.filter(|nbf| now.saturating_add(LEEWAY_SECS) < *nbf) {
            return Err(format!("the token is not valid before {not_before}"));
        }
        if issued > now.saturating_add(LEEWAY_SECS) {
            return Err(format!("the token was issued in the future (iat {issued})"));
        }
        if expires < issued {
            return Err("the token expires before it was issued".into());
        }
        let expires_at =
            Time::from_timestamp(expires, 0).ok_or("the token's exp is out of range")?;
        Ok(Self {
            issued,
            expires,
            expires_at,
        })
    }
}

/// A time claim in whole seconds since the epoch (a fraction is dropped);
/// `None` when absent.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            // Bounded just above: the cast cannot saturate.
            .map(|f| f.floor() as i64)
    });
    seconds
        .map(Some)
        .ok_or_else(|| format!("the token's {name} is not a number of seconds"))
}

/// The token's `jti`: required, so a token can be refused a second time.
fn jti(claims: &Map<String, Value>) -> Result<String, String> {
    match claims.get("jti") {
        Some(Value::String(jti)) if jti.is_empty() => Err("the token's jti is empty".into()),
        Some(Value::String(jti)) if jti.len() > MAX_JTI_BYTES => Err(format!(
            "the token's jti is longer than {MAX_JTI_BYTES} bytes"
        )),
        Some(Value::String(jti)) => Ok(jti.clone()),
        Some(_) => Err("the token's jti is not a string".into()),
        None => Err("the token has no jti".into()),
    }
}

/// Text from a token for a reason: quoted, and cut short when long.
fn quoted(text: &str) -> String {
    const SHOWN: usize = 100;
    if text.chars().count() <= SHOWN {
        format!("{text:?}")
    } else {
        let start: String = text.chars().take(SHOWN).collect();
        format!("{start:?}… ({} bytes)", text.len())
    }
}

/// Whether less than `span` passed from `since` to `now`; a `now` before
/// `since` counts as no time at all.
fn less_than(span: Duration, since: Time, now: Time) -> bool {
    let span = chrono::TimeDelta::from_std(span).unwrap_or(chrono::TimeDelta::MAX);
    now.signed_duration_since(since) < span
}

/// Where `identity`'s issuer keeps its keys.
fn key_source(identity: &TrustedIdentity) -> anyhow::Result<KeySource> {
    let http_url = |what: &str, raw: &str| {
        Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.has_host())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "trusted identity {:?}: {what} {raw:?} is not an http(s) URL",
                    identity.name
                )
            })
    };
    if let Some(jwks) = &identity.jwks_url {
        return Ok(KeySource::Jwks(http_url("jwks_url", jwks)?));
    }
    let issuer = http_url("issuer", &identity.issuer)?;
    // Discovery appends to the issuer's path, without doubling a slash.
    let document = http_url(
        "issuer",
        &format!(
            "{}/.well-known/openid-configuration",
            identity.issuer.trim_end_matches('/')
        ),
    )?;
    Ok(KeySource::Discovery {
        document,
        issuer: identity.issuer.clone(),
        origin: issuer.origin(),
    })
}

impl KeySource {
    fn describe(&self) -> String {
        match self {
            KeySource::Jwks(url) => format!("jwks_url {url}"),
            KeySource::Discovery { document, .. } => format!("discovery at {document}"),
        }
    }
}

impl IssuerKeys {
    fn new(source: KeySource) -> Self {
        Self {
            source,
            cache: Mutex::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<Arc<CachedKeys>> {
        crate::sync::lock(&self.cache).clone()
    }

    /// The key that verifies a token with `header`, from the cache when it
    /// is fresh and holds it, else after one fetch (see the module docs).
    async fn key_for(
        &self,
        header: &TokenHeader,
        now: Time,
        http: &reqwest::Client,
    ) -> Result<DecodingKey, String> {
        if let Some(key) = self.fresh_key(header, now)? {
            return Ok(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another verification may have fetched while this one waited.
        if let Some(key) = self.fresh_key(header, now)? {
            return Ok(key);
        }
        let stale = self.cached();
        let recently = last_fetch.is_some_and(|at| less_than(REFETCH_EVERY, at, now));
        if recently {
            return match stale {
                Some(keys) => pick_key(&keys.keys, header)?,
                None => None,
            }
            .ok_or_else(|| {
                "no key of the issuer's JWKS matches the token's kid (the keys were fetched less than a minute ago)".to_string()
            });
        }
        *last_fetch = Some(now);
        match self.fetch(http).await {
            Ok(keys) => {
                let found = pick_key(&keys, header);
                *crate::sync::lock(&self.cache) = Some(Arc::new(CachedKeys {
                    keys,
                    fetched_at: now,
                }));
                found?.ok_or_else(|| {
                    "no key of the issuer's JWKS matches the token's kid".to_string()
                })
            }
            // An issuer that is down does not stop the tokens its keys,
            // fetched within the hour before, still verify.
            Err(e) => {
                tracing::warn!(source = %self.source.describe(), reason = %e, "fetching a workload issuer's keys failed");
                match stale {
                    Some(keys) => pick_key(&keys.keys, header)?,
                    None => None,
                }
                .ok_or_else(|| format!("the issuer's keys could not be fetched: {e}"))
            }
        }
    }

    /// The key for `header` from a cache younger than [`KEYS_MAX_AGE`].
    fn fresh_key(&self, header: &TokenHeader, now: Time) -> Result<Option<DecodingKey>, String> {
        match self.cached() {
            Some(keys) if less_than(KEYS_MAX_AGE, keys.fetched_at, now) => {
                pick_key(&keys.keys, header)
            }
            _ => Ok(None),
        }
    }

    /// The issuer's keys, from its JWKS (found through discovery when no
    /// `jwks_url` is configured).
    async fn fetch(&self, http: &reqwest::Client) -> Result<Vec<Jwk>, String> {
        let jwks_url = match &self.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery {
                document,
                issuer,
                origin,
            } => jwks_uri(&get_json(http, document).await?, issuer, origin)?,
        };
        parse_jwks(&get_json(http, &jwks_url).await?)
            .ok_or_else(|| format!("{jwks_url} is not a JWKS"))
    }
}

/// The `jwks_uri` of a discovery document, which must name `issuer`
/// exactly and stay on its `origin`.
fn jwks_uri(document: &Value, issuer: &str, origin: &url::Origin) -> Result<Url, String> {
    if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(format!(
            "the discovery document of {issuer} does not name that issuer"
        ));
    }
    let raw = document
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the discovery document of {issuer} has no jwks_uri"))?;
    let url = Url::parse(raw).map_err(|_| {
        format!("the discovery document of {issuer} has a jwks_uri that is not a URL")
    })?;
    if url.origin() != *origin {
        return Err(format!(
            "the discovery document of {issuer} puts its keys on another origin ({})",
            url.origin().ascii_serialization()
        ));
    }
    Ok(url)
}

/// The keys of a JWKS pacer can read; a key of a kind it does not know is
/// skipped rather than spoiling the others.
fn parse_jwks(set: &Value) -> Option<Vec<Jwk>> {
    let keys = set.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|key| serde_json::from_value(key.clone()).ok())
            .collect(),
    )
}

/// The one key that can verify a token with `header`: of the family its
/// algorithm needs, meant for signatures and for this algorithm when the
/// key says, and with the token's `kid` — or, when the token names none,
/// the issuer's only such key.
fn pick_key(keys: &[Jwk], header: &TokenHeader) -> Result<Option<DecodingKey>, String> {
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| fits_algorithm(k, header.alg))
        .filter(|k| match &header.kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .collect();
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => DecodingKey::from_jwk(one)
            .map(Some)
            .map_err(|_| "the issuer's key for the token is not usable".to_string()),
        _ if header.kid.is_none() => {
            Err("the token names no kid and the issuer has several keys that could fit".into())
        }
        _ => Err("the issuer's JWKS has several keys with the token's kid".into()),
    }
}

/// Whether `key` is one `alg` may be verified with.
fn fits_algorithm(key: &Jwk, alg: Algorithm) -> bool {
    let family = match (&key.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::PS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    let use_fits = matches!(
        key.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let alg_fits = key
        .common
        .key_algorithm
        .is_none_or(|named| Algorithm::from_str(&named.to_string()).ok() == Some(alg));
    family && use_fits && alg_fits
}

/// GETs a JSON document of at most [`MAX_FETCH_BYTES`], following no
/// redirect.
async fn get_json(http: &reqwest::Client, url: &Url) -> Result<Value, String> {
    let mut response = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", crate::error_text::display_chain(&e)))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(format!(
            "GET {url}: HTTP {status} (redirects are not followed)"
        ));
    }
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let too_large = || {
        format!(
            "GET {url}: the answer is larger than {} KiB",
            MAX_FETCH_BYTES / 1024
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_FETCH_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", crate::error_text::display_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_FETCH_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| format!("GET {url}: the answer is not JSON"))
}

#[cfg(test)]
mod tests;
