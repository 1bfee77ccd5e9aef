//! A hand-made, scriptable OpenID Provider for pacer's relying-party negative tests: the real
//! provider ([`crate::oidc_provider`]) behaves correctly and has one key, so it cannot mint the bad
//! ID tokens the OpenID Foundation's RP conformance cases need. This one can.
//!
//! [`TestIdp::start`] serves, on 127.0.0.1 (a free port, stopped on drop):
//! - `GET /.well-known/openid-configuration`: issuer = its own base URL `http://127.0.0.1:PORT`
//!   (no trailing slash), the endpoints below, code flow, `public` subjects, RS256 and ES256,
//!   PKCE S256, `client_secret_basic`. Fields can be changed or removed
//!   ([`TestIdp::set_discovery_field`]), e.g. an issuer that does not match.
//! - `GET /authorize`: records the query ([`TestIdp::authorize_requests`]), checks `client_id`,
//!   `response_type=code`, `redirect_uri` and a PKCE S256 challenge (required), and answers 302 to
//!   `redirect_uri?code=…&state=…&iss=…` (RFC 9207 `iss`, as oidc-provider sends it), remembering
//!   the nonce, the challenge and the redirect URI for that code.
//! - `POST /token`: `client_secret_basic` with the configured client (else 401
//!   `invalid_client`), `grant_type=authorization_code`, the code (single use: a replay, or any
//!   unknown code, is 400 `invalid_grant`), the same `redirect_uri`, and the PKCE
//!   `code_verifier` against the recorded S256 challenge (else 400 `invalid_grant`). It answers
//!   `{"access_token","token_type":"Bearer","expires_in":300,"id_token"}`, the ID token minted by
//!   the current [`TokenScript`] ([`TestIdp::script`]).
//! - `GET /jwks`: the JWK set currently published ([`TestIdp::publish`] and friends; by default
//!   key A and the EC key, each with its kid), counting fetches ([`TestIdp::jwks_fetches`]).
//!
//! Keys, generated per IdP at start: RSA 2048 key A (`kid` [`KID_A`]), RSA 2048 key B
//! ([`KID_B`], not published unless a test publishes it) and an EC P-256 key ([`KID_EC`]).
//! The JWKs are derived by hand from the public keys (RSA `n`/`e` from the PKCS#1 DER, EC `x`/`y`
//! from the uncompressed point), and the self-tests verify signatures against them.
//!
//! [`TestIdp::follow_authorize`] is the browser: it GETs an authorization URL without following
//! redirects and returns the `Location` to the client's redirect URI (a test may edit it, e.g. to
//! replay or change `state`).
//!
//! The tests at the bottom check the IdP alone (no pacer code).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Url, redirect};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The kid of RSA key A (published by default).
pub const KID_A: &str = "test-idp-rsa-a";
/// The kid of RSA key B (not published by default: the rotation target, or a rogue key).
pub const KID_B: &str = "test-idp-rsa-b";
/// The kid of the EC P-256 key (published by default).
pub const KID_EC: &str = "test-idp-ec-p256";

/// Default claims of the ID token the IdP mints (a test overrides them with [`TokenScript::set`]).
pub const DEFAULT_SUB: &str = "test-idp-user-1";
pub const DEFAULT_EMAIL: &str = "sso.user@example.com";
/// Lifetime of minted ID tokens and access tokens, seconds.
pub const TOKEN_TTL_SECS: i64 = 300;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The IdP's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyName {
    /// RSA 2048, RS256, kid [`KID_A`].
    A,
    /// RSA 2048, RS256, kid [`KID_B`].
    B,
    /// EC P-256, ES256, kid [`KID_EC`].
    Ec,
}

impl KeyName {
    pub fn kid(self) -> &'static str {
        match self {
            KeyName::A => KID_A,
            KeyName::B => KID_B,
            KeyName::Ec => KID_EC,
        }
    }
}

/// How the ID token is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// RS256 with key A (published by default): a good signature.
    RsaA,
    /// RS256 with key B (not published unless the test publishes it).
    RsaB,
    /// ES256 with the EC key (published by default).
    Ec,
    /// HS256 keyed with key A's public key PEM ([`TestIdp::rsa_a_public_pem`], SPKI
    /// `-----BEGIN PUBLIC KEY-----`, LF line ends): the classic algorithm-confusion attack.
    /// Its own kid is key A's.
    Hs256WithPublicKey,
    /// HS256 with any secret (e.g. the client secret, which OIDC allows for HS256 but pacer must
    /// not accept when it pins asymmetric algorithms). No kid of its own.
    Hs256(Vec<u8>),
    /// `alg: none`: `base64url(header).base64url(claims).` with an empty signature. Its own kid is
    /// key A's (so an RP that looks the kid up finds a key).
    AlgNone,
}

/// The `kid` in the ID token's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kid {
    /// The signing key's own kid (see [`Signer`]); none for [`Signer::Hs256`].
    Signer,
    /// No `kid` in the header.
    Absent,
    /// This kid, whatever the signer (e.g. key A's kid on a token signed by key B).
    Value(String),
}

/// What the ID tokens look like. Sticky: it applies to every token minted until the next
/// [`TestIdp::script`]. Claims are built in this order: the defaults (`iss`, `aud` = client id
/// as a string, `sub`, `email`, `email_verified: true`, `iat` = now, `exp` = now + 300, `nonce` =
/// the one recorded for the code, if any), then [`TokenScript::set`], then
/// [`TokenScript::remove`].
#[derive(Debug, Clone)]
pub struct TokenScript {
    pub signer: Signer,
    pub kid: Kid,
    /// Claims set over the defaults (any JSON, e.g. `aud` as an array, `groups`).
    pub set: Map<String, Value>,
    /// Claims removed after `set`.
    pub remove: Vec<String>,
    /// Header fields set (or, with `Value::Null`, removed) over `{"alg","typ":"JWT","kid"}`.
    pub header: Map<String, Value>,
    /// Sign correctly, then flip a bit of the signature (a bad RS256 / ES256 signature under a
    /// published key and kid).
    pub corrupt_signature: bool,
}

impl Default for TokenScript {
    fn default() -> Self {
        TokenScript {
            signer: Signer::RsaA,
            kid: Kid::Signer,
            set: Map::new(),
            remove: Vec::new(),
            header: Map::new(),
            corrupt_signature: false,
        }
    }
}

impl TokenScript {
    /// A good token: RS256 with key A, its kid, the default claims.
    pub fn new() -> Self {
        TokenScript::default()
    }

    pub fn signer(mut self, signer: Signer) -> Self {
        self.signer = signer;
        self
    }

    pub fn kid(mut self, kid: Kid) -> Self {
        self.kid = kid;
        self
    }

    pub fn no_kid(self) -> Self {
        self.kid(Kid::Absent)
    }

    /// Sets (or overrides) a claim.
    pub fn set(mut self, claim: &str, value: Value) -> Self {
        self.set.insert(claim.to_string(), value);
        self
    }

    /// Removes a claim (default or set).
    pub fn remove(mut self, claim: &str) -> Self {
        self.remove.push(claim.to_string());
        self
    }

    /// Overrides the nonce (the recorded one is the default).
    pub fn nonce(self, nonce: &str) -> Self {
        self.set("nonce", Value::String(nonce.to_string()))
    }

    /// Sets a header field; `Value::Null` removes it (even `alg` or `typ`).
    pub fn header(mut self, field: &str, value: Value) -> Self {
        self.header.insert(field.to_string(), value);
        self
    }

    pub fn corrupt_signature(mut self) -> Self {
        self.corrupt_signature = true;
        self
    }
}

/// A `POST /token` as the IdP received it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The form fields.
    pub form: HashMap<String, String>,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    /// The status the IdP answered.
    pub status: u16,
    /// The `error` it answered, if any.
    pub error: Option<String>,
}

/// What `/authorize` remembered for a code.
#[derive(Debug, Clone)]
struct Grant {
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
}

struct KeyMaterial {
    name: KeyName,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK without `kid`.
    jwk: Map<String, Value>,
}

struct Keys {
    a: KeyMaterial,
    b: KeyMaterial,
    ec: KeyMaterial,
    a_public_pem: String,
}

impl Keys {
    fn generate() -> Keys {
        let rsa = |name| {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
                .expect("rcgen generates an RSA key");
            let (n, e) = rsa_public_components(pair.public_key_raw())
                .expect("rcgen's RSA public key is a PKCS#1 RSAPublicKey");
            let mut jwk = Map::new();
            jwk.insert("kty".into(), json!("RSA"));
            jwk.insert("use".into(), json!("sig"));
            jwk.insert("alg".into(), json!("RS256"));
            jwk.insert("n".into(), json!(base64url(&n)));
            jwk.insert("e".into(), json!(base64url(&e)));
            let material = KeyMaterial {
                name,
                alg: Algorithm::RS256,
                encoding: EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
                    .expect("jsonwebtoken takes rcgen's PKCS#8 RSA key"),
                jwk,
            };
            (material, pair.public_key_pem())
        };
        let (a, a_public_pem) = rsa(KeyName::A);
        let (b, _) = rsa(KeyName::B);
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("rcgen generates a P-256 key");
        let point = pair.public_key_raw();
        assert!(
            point.len() == 65 && point[0] == 0x04,
            "a P-256 public key is an uncompressed point"
        );
        let mut jwk = Map::new();
        jwk.insert("kty".into(), json!("EC"));
        jwk.insert("use".into(), json!("sig"));
        jwk.insert("alg".into(), json!("ES256"));
        jwk.insert("crv".into(), json!("P-256"));
        jwk.insert("x".into(), json!(base64url(&point[1..33])));
        jwk.insert("y".into(), json!(base64url(&point[33..65])));
        let ec = KeyMaterial {
            name: KeyName::Ec,
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
                .expect("jsonwebtoken takes rcgen's PKCS#8 EC key"),
            jwk,
        };
        Keys {
            a,
            b,
            ec,
            a_public_pem,
        }
    }

    fn get(&self, name: KeyName) -> &KeyMaterial {
        match name {
            KeyName::A => &self.a,
            KeyName::B => &self.b,
            KeyName::Ec => &self.ec,
        }
    }

    fn jwk(&self, name: KeyName, with_kid: bool) -> Value {
        let key = self.get(name);
        let mut jwk = key.jwk.clone();
        if with_kid {
            jwk.insert("kid".into(), json!(key.name.kid()));
        }
        Value::Object(jwk)
    }
}

struct Inner {
    script: TokenScript,
    jwks: Value,
    discovery: Map<String, Value>,
    codes: HashMap<String, Grant>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<TokenRequest>,
    id_tokens: Vec<String>,
}

struct Shared {
    issuer: String,
    client_id: String,
    client_secret: String,
    keys: Keys,
    jwks_fetches: AtomicUsize,
    inner: Mutex<Inner>,
}

/// The scriptable IdP; stopped on drop.
pub struct TestIdp {
    /// `http://127.0.0.1:PORT`, exactly as discovery and the tokens say it (unless a test
    /// changes discovery's `issuer` or the token's `iss`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    shared: Arc<Shared>,
    http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestIdp {
    /// Starts the IdP with one confidential client (any redirect URI is accepted at
    /// `/authorize`; `/token` wants the same one again).
    pub async fn start(client_id: &str, client_secret: &str) -> TestIdp {
        // reqwest (here and in the tests) needs the process-wide rustls provider.
        pacer_shared::http_client::install_crypto_provider();
        let keys = tokio::task::spawn_blocking(Keys::generate)
            .await
            .expect("key generation");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the test IdP binds 127.0.0.1");
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = default_discovery(&issuer);
        let jwks = json!({"keys": [keys.jwk(KeyName::A, true), keys.jwk(KeyName::Ec, true)]});
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            keys,
            jwks_fetches: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                script: TokenScript::default(),
                jwks,
                discovery,
                codes: HashMap::new(),
                authorize_requests: Vec::new(),
                token_requests: Vec::new(),
                id_tokens: Vec::new(),
            }),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery_handler))
            .route("/authorize", get(authorize_handler))
            .route("/token", post(token_handler))
            .route("/jwks", get(jwks_handler))
            .with_state(shared.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the test IdP serves");
        });
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        TestIdp {
            issuer,
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            shared,
            http,
            shutdown: Some(shutdown),
            server,
        }
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// What the ID tokens minted from now on look like.
    pub fn script(&self, script: TokenScript) {
        self.shared.inner.lock().unwrap().script = script;
    }

    /// Publishes exactly these keys, each with its kid (an empty slice publishes an empty set).
    pub fn publish(&self, keys: &[KeyName]) {
        let jwks: Vec<Value> = keys.iter().map(|k| self.jwk(*k, true)).collect();
        self.publish_jwks(json!({ "keys": jwks }));
    }

    /// Publishes exactly these keys, without kids.
    pub fn publish_without_kids(&self, keys: &[KeyName]) {
        let jwks: Vec<Value> = keys.iter().map(|k| self.jwk(*k, false)).collect();
        self.publish_jwks(json!({ "keys": jwks }));
    }

    /// Publishes any document at `/jwks` (build entries with [`TestIdp::jwk`]).
    pub fn publish_jwks(&self, jwks: Value) {
        self.shared.inner.lock().unwrap().jwks = jwks;
    }

    /// A key's public JWK (`kty`, `use`, `alg`, `n`/`e` or `crv`/`x`/`y`, and `kid` if asked).
    pub fn jwk(&self, key: KeyName, with_kid: bool) -> Value {
        self.shared.keys.jwk(key, with_kid)
    }

    /// The JWK set published now.
    pub fn published_jwks(&self) -> Value {
        self.shared.inner.lock().unwrap().jwks.clone()
    }

    /// How many times `/jwks` was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Key A's public key as SPKI PEM: the HMAC secret of [`Signer::Hs256WithPublicKey`].
    pub fn rsa_a_public_pem(&self) -> String {
        self.shared.keys.a_public_pem.clone()
    }

    /// Sets (`Some`) or removes (`None`) a field of the discovery document.
    pub fn set_discovery_field(&self, field: &str, value: Option<Value>) {
        let mut inner = self.shared.inner.lock().unwrap();
        match value {
            Some(value) => inner.discovery.insert(field.to_string(), value),
            None => inner.discovery.remove(field),
        };
    }

    /// Every `/authorize` query received, in order.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.shared.inner.lock().unwrap().authorize_requests.clone()
    }

    /// Every `/token` request received, in order, with the IdP's answer.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared.inner.lock().unwrap().token_requests.clone()
    }

    /// Every ID token minted, in order.
    pub fn issued_id_tokens(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().id_tokens.clone()
    }

    /// Mints an ID token now under the current script, outside any code flow (`nonce` only if
    /// given or scripted).
    pub fn mint_id_token(&self, nonce: Option<&str>) -> String {
        mint(&self.shared, nonce)
    }

    /// The browser: GETs an authorization URL (as pacer's `/api/auth/oidc/start` redirects to)
    /// without following redirects and returns the `Location` the IdP sends back to the client's
    /// redirect URI (`code`, `state`, `iss`). Panics if the IdP does not redirect.
    pub async fn follow_authorize(&self, authorize_url: &str) -> String {
        let response = self
            .http
            .get(authorize_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {authorize_url}: {e}"));
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match location {
            Some(location) if status.is_redirection() => location,
            _ => panic!(
                "the test IdP did not redirect ({status}): {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.server.abort();
    }
}

fn default_discovery(issuer: &str) -> Map<String, Value> {
    let Value::Object(doc) = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified"],
        "authorization_response_iss_parameter_supported": true,
    }) else {
        unreachable!()
    };
    doc
}

async fn discovery_handler(State(shared): State<Arc<Shared>>) -> Response {
    let doc = shared.inner.lock().unwrap().discovery.clone();
    axum::Json(Value::Object(doc)).into_response()
}

async fn jwks_handler(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let jwks = shared.inner.lock().unwrap().jwks.clone();
    let mut response = axum::Json(jwks).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    response
}

async fn authorize_handler(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    shared
        .inner
        .lock()
        .unwrap()
        .authorize_requests
        .push(query.clone());
    // Errors before a trustworthy redirect URI is known are shown, never redirected.
    if query.get("client_id") != Some(&shared.client_id) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect_uri) = query.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is missing").into_response();
    };
    let Ok(mut location) = Url::parse(redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    let mut reply = |pairs: &[(&str, &str)]| {
        {
            let mut q = location.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = query.get("state") {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &shared.issuer);
        }
        let mut response = StatusCode::FOUND.into_response();
        response.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(location.as_str()).expect("a URL is a header value"),
        );
        response
    };
    if query.get("response_type").map(String::as_str) != Some("code") {
        return reply(&[("error", "unsupported_response_type")]);
    }
    let scopes = query.get("scope").map(String::as_str).unwrap_or("");
    if !scopes.split(' ').any(|s| s == "openid") {
        return reply(&[
            ("error", "invalid_scope"),
            ("error_description", "scope must include openid"),
        ]);
    }
    let challenge = match (
        query.get("code_challenge"),
        query.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(challenge), Some("S256")) => challenge.clone(),
        _ => {
            return reply(&[
                ("error", "invalid_request"),
                (
                    "error_description",
                    "PKCE is required: code_challenge with code_challenge_method=S256",
                ),
            ]);
        }
    };
    let code = random_token();
    shared.inner.lock().unwrap().codes.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            nonce: query.get("nonce").cloned(),
            code_challenge: challenge,
        },
    );
    reply(&[("code", &code)])
}

async fn token_handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let outcome = exchange(&shared, authorization.as_deref(), &form);
    let (status, body, error) = match outcome {
        Ok(body) => (StatusCode::OK, body, None),
        Err((status, error, description)) => (
            status,
            json!({"error": error, "error_description": description}),
            Some(error.to_string()),
        ),
    };
    shared
        .inner
        .lock()
        .unwrap()
        .token_requests
        .push(TokenRequest {
            form,
            authorization,
            status: status.as_u16(),
            error,
        });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"test-idp\""),
        );
    }
    response
}

type TokenError = (StatusCode, &'static str, String);

fn exchange(
    shared: &Shared,
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<Value, TokenError> {
    let bad = |error, description: &str| Err((StatusCode::BAD_REQUEST, error, description.into()));
    let client = authorization
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64_decode(b.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|raw| {
            let (id, secret) = raw.split_once(':')?;
            Some((percent_decode(id)?, percent_decode(secret)?))
        });
    if client != Some((shared.client_id.clone(), shared.client_secret.clone())) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_secret_basic with the configured client is required".into(),
        ));
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return bad("unsupported_grant_type", "only authorization_code");
    }
    let Some(code) = form.get("code") else {
        return bad("invalid_request", "code is missing");
    };
    // Single use: the code is spent by its first presentation, whatever happens next.
    let Some(grant) = shared.inner.lock().unwrap().codes.remove(code) else {
        return bad("invalid_grant", "unknown, expired or already used code");
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return bad(
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    let Some(verifier) = form.get("code_verifier") else {
        return bad("invalid_grant", "code_verifier is missing");
    };
    if base64url(&Sha256::digest(verifier.as_bytes())) != grant.code_challenge {
        return bad("invalid_grant", "PKCE verification failed");
    }
    let id_token = mint(shared, grant.nonce.as_deref());
    Ok(json!({
        "access_token": random_token(),
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_SECS,
        "scope": "openid email profile",
        "id_token": id_token,
    }))
}

/// Mints an ID token under the current script and records it.
fn mint(shared: &Shared, nonce: Option<&str>) -> String {
    let script = shared.inner.lock().unwrap().script.clone();
    let now = chrono::Utc::now().timestamp();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(shared.issuer));
    claims.insert("aud".into(), json!(shared.client_id));
    claims.insert("sub".into(), json!(DEFAULT_SUB));
    claims.insert("email".into(), json!(DEFAULT_EMAIL));
    claims.insert("email_verified".into(), json!(true));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + TOKEN_TTL_SECS));
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    for (claim, value) in &script.set {
        claims.insert(claim.clone(), value.clone());
    }
    for claim in &script.remove {
        claims.remove(claim);
    }

    let keys = &shared.keys;
    let (alg, own_kid): (&str, Option<&str>) = match &script.signer {
        Signer::RsaA => ("RS256", Some(KID_A)),
        Signer::RsaB => ("RS256", Some(KID_B)),
        Signer::Ec => ("ES256", Some(KID_EC)),
        Signer::Hs256WithPublicKey => ("HS256", Some(KID_A)),
        Signer::Hs256(_) => ("HS256", None),
        Signer::AlgNone => ("none", Some(KID_A)),
    };
    let mut head = Map::new();
    head.insert("alg".into(), json!(alg));
    head.insert("typ".into(), json!("JWT"));
    let kid = match &script.kid {
        Kid::Signer => own_kid.map(str::to_string),
        Kid::Absent => None,
        Kid::Value(kid) => Some(kid.clone()),
    };
    if let Some(kid) = kid {
        head.insert("kid".into(), json!(kid));
    }
    for (field, value) in &script.header {
        if value.is_null() {
            head.remove(field);
        } else {
            head.insert(field.clone(), value.clone());
        }
    }

    let signing_input = format!(
        "{}.{}",
        base64url(&serde_json::to_vec(&head).unwrap()),
        base64url(&serde_json::to_vec(&claims).unwrap())
    );
    let sign = |key: &EncodingKey, alg: Algorithm| {
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg).expect("signing")
    };
    let signature = match &script.signer {
        Signer::RsaA => sign(&keys.a.encoding, keys.a.alg),
        Signer::RsaB => sign(&keys.b.encoding, keys.b.alg),
        Signer::Ec => sign(&keys.ec.encoding, keys.ec.alg),
        Signer::Hs256WithPublicKey => sign(
            &EncodingKey::from_secret(keys.a_public_pem.as_bytes()),
            Algorithm::HS256,
        ),
        Signer::Hs256(secret) => sign(&EncodingKey::from_secret(secret), Algorithm::HS256),
        Signer::AlgNone => String::new(),
    };
    let signature = if script.corrupt_signature && !signature.is_empty() {
        let mut bytes = base64url_decode(&signature).expect("own signature is base64url");
        bytes[0] ^= 0x01;
        base64url(&bytes)
    } else {
        signature
    };
    let token = format!("{signing_input}.{signature}");
    shared.inner.lock().unwrap().id_tokens.push(token.clone());
    token
}

fn random_token() -> String {
    base64url(&rand::random::<[u8; 24]>())
}

/// The modulus and public exponent of a PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER,
/// publicExponent INTEGER }` (DER), unsigned big-endian without leading zeros.
fn rsa_public_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (len_bytes, after) = rest.split_at(count);
            rest = after;
            len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        if rest.len() < len {
            return None;
        }
        Some(rest.split_at(len))
    }
    fn unsigned(int: &[u8]) -> Vec<u8> {
        let start = int.iter().position(|b| *b != 0).unwrap_or(int.len());
        int[start..].to_vec()
    }
    let (sequence, trailing) = element(der, 0x30)?;
    if !trailing.is_empty() {
        return None;
    }
    let (n, rest) = element(sequence, 0x02)?;
    let (e, rest) = element(rest, 0x02)?;
    if !rest.is_empty() {
        return None;
    }
    Some((unsigned(n), unsigned(e)))
}

/// base64url without padding (JWT parts, JWK members, PKCE).
pub fn base64url(bytes: &[u8]) -> String {
    crate::b64::encode_url(bytes)
}

/// base64url, padded or not.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    crate::b64::decode_url(text)
}

/// Either alphabet (`+/` or `-_`), padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    crate::b64::decode_any(text)
}

/// `application/x-www-form-urlencoded` decoding of one value (RFC 6749 §2.3.1 encodes the
/// client id and secret so before base64).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A PKCE pair (verifier, S256 challenge), for tests that play the relying party.
pub fn pkce_pair() -> (String, String) {
    let verifier = base64url(&rand::random::<[u8; 32]>());
    let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A JWT's header and payload, decoded without any check.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = |what| {
        let text = parts
            .next()
            .unwrap_or_else(|| panic!("JWT without {what}: {token}"));
        let bytes = base64url_decode(text)
            .unwrap_or_else(|| panic!("JWT {what} is not base64url: {token}"));
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|e| panic!("JWT {what} is not JSON ({e}): {token}"))
    };
    let header = part("header");
    let payload = part("payload");
    (header, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{DecodingKey, Validation};

    const CLIENT_ID: &str = "pacer-rp-test";
    const CLIENT_SECRET: &str = "rp secret/with:odd&chars";
    const REDIRECT_URI: &str = "http://127.0.0.1:9/api/auth/oidc/callback";

    struct Flow {
        verifier: String,
        nonce: String,
        state: String,
        code: String,
    }

    fn authorize_url(idp: &TestIdp, state: &str, nonce: &str, challenge: &str) -> String {
        Url::parse_with_params(
            &idp.authorization_endpoint(),
            &[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid email profile"),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap()
        .to_string()
    }

    async fn authorize(idp: &TestIdp) -> Flow {
        let (verifier, challenge) = pkce_pair();
        let state = random_token();
        let nonce = random_token();
        let location = idp
            .follow_authorize(&authorize_url(idp, &state, &nonce, &challenge))
            .await;
        assert!(
            location.starts_with(REDIRECT_URI),
            "redirects to the client: {location}"
        );
        let query: HashMap<String, String> = Url::parse(&location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(query.get("state"), Some(&state));
        assert_eq!(query.get("iss"), Some(&idp.issuer));
        Flow {
            verifier,
            nonce,
            state,
            code: query["code"].clone(),
        }
    }

    /// RFC 6749 §2.3.1: id and secret form-urlencoded, then base64.
    fn basic(id: &str, secret: &str) -> String {
        let encode = |s: &str| -> String {
            Url::parse_with_params("http://x/", &[("v", s)])
                .unwrap()
                .query()
                .unwrap()["v=".len()..]
                .to_string()
        };
        let raw = format!("{}:{}", encode(id), encode(secret));
        // Standard alphabet with padding, as HTTP Basic wants.
        let mut b = base64url(raw.as_bytes())
            .replace('-', "+")
            .replace('_', "/");
        while b.len() % 4 != 0 {
            b.push('=');
        }
        format!("Basic {b}")
    }

    async fn exchange_with(
        idp: &TestIdp,
        authorization: &str,
        code: &str,
        verifier: &str,
    ) -> (u16, Value) {
        let response = idp
            .http
            .post(idp.token_endpoint())
            .header(header::AUTHORIZATION, authorization)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn exchange(idp: &TestIdp, flow: &Flow) -> (u16, Value) {
        exchange_with(
            idp,
            &basic(CLIENT_ID, CLIENT_SECRET),
            &flow.code,
            &flow.verifier,
        )
        .await
    }

    /// A whole code flow under the current script: the ID token and the flow's nonce.
    async fn id_token(idp: &TestIdp) -> (String, String) {
        let flow = authorize(idp).await;
        let (status, body) = exchange(idp, &flow).await;
        assert_eq!(status, 200, "{body}");
        (body["id_token"].as_str().unwrap().to_string(), flow.nonce)
    }

    async fn fetch_jwks(idp: &TestIdp) -> Value {
        reqwest::get(idp.jwks_uri())
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Verifies the token's signature (and `exp`, `aud`, `iss`) with jsonwebtoken against a JWK
    /// as served at `/jwks`.
    fn verify_with(token: &str, jwk: &Value, alg: Algorithm, idp: &TestIdp) -> Value {
        let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(alg);
        validation.set_audience(&[CLIENT_ID]);
        validation.set_issuer(&[&idp.issuer]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .unwrap_or_else(|e| panic!("{token} does not verify: {e}"))
            .claims
    }

    fn verifies(token: &str, jwk: &Value, alg: Algorithm) -> bool {
        let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        jsonwebtoken::crypto::verify(signature, input.as_bytes(), &key, alg).unwrap_or(false)
    }

    fn served_jwk(jwks: &Value, kid: &str) -> Value {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("{kid} is not in {jwks}"))
            .clone()
    }

    #[tokio::test]
    async fn test_idp_discovery_serves_its_issuer() {
        let idp = TestIdp::start(CLIENT_ID, CLIENT_SECRET).await;
        let doc: Value = reqwest::get(idp.discovery_url())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], json!(idp.issuer));
        assert!(idp.issuer.starts_with("http://127.0.0.1:"));
        assert_eq!(
            doc["authorization_endpoint"],
            json!(idp.authorization_endpoint())
        );
        assert_eq!(doc["token_endpoint"], json!(idp.token_endpoint()));
        assert_eq!(doc["jwks_uri"], json!(idp.jwks_uri()));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256"])
        );
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));

        idp.set_discovery_field("issuer", Some(json!("https://elsewhere.example")));
        idp.set_discovery_field("jwks_uri", None);
        let doc: Value = reqwest::get(idp.discovery_url())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], json!("https://elsewhere.example"));
        assert!(doc.get("jwks_uri").is_none());
    }

    #[tokio::test]
    async fn test_idp_code_flow_mints_the_scripted_token() {
        let idp = TestIdp::start(CLIENT_ID, CLIENT_SECRET).await;
        let flow = authorize(&idp).await;
        let recorded = idp.authorize_requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0]["state"], flow.state);
        assert_eq!(recorded[0]["nonce"], flow.nonce);
        assert_eq!(recorded[0]["redirect_uri"], REDIRECT_URI);
        assert_eq!(recorded[0]["code_challenge_method"], "S256");

        let (status, body) = exchange(&idp, &flow).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 300);
        assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        let token = body["id_token"].as_str().unwrap();
        let (head, claims) = jwt_parts(token);
        assert_eq!(head, json!({"alg": "RS256", "typ": "JWT", "kid": KID_A}));
        assert_eq!(claims["iss"], json!(idp.issuer));
        assert_eq!(claims["aud"], json!(CLIENT_ID));
        assert_eq!(claims["sub"], json!(DEFAULT_SUB));
        assert_eq!(claims["email"], json!(DEFAULT_EMAIL));
        assert_eq!(claims["email_verified"], json!(true));
        assert_eq!(claims["nonce"], json!(flow.nonce));
        let iat = claims["iat"].as_i64().unwrap();
        assert!((iat - chrono::Utc::now().timestamp()).abs() < 60);
        assert_eq!(claims["exp"].as_i64().unwrap(), iat + TOKEN_TTL_SECS);
        let jwks = fetch_jwks(&idp).await;
        verify_with(token, &served_jwk(&jwks, KID_A), Algorithm::RS256, &idp);
        assert_eq!(idp.issued_id_tokens(), vec![token.to_string()]);

        // Extra and overridden claims, ES256.
        idp.script(
            TokenScript::new()
                .signer(Signer::Ec)
                .set("groups", json!(["ops", "dev"]))
                .set("email", json!("Other@Example.com"))
                .set("email_verified", json!(false)),
        );
        let (token, nonce) = id_token(&idp).await;
        let (head, _) = jwt_parts(&token);
        assert_eq!(head, json!({"alg": "ES256", "typ": "JWT", "kid": KID_EC}));
        let claims = verify_with(&token, &served_jwk(&jwks, KID_EC), Algorithm::ES256, &idp);
        assert_eq!(claims["groups"], json!(["ops", "dev"]));
        assert_eq!(claims["email"], json!("Other@Example.com"));
        assert_eq!(claims["email_verified"], json!(false));
        assert_eq!(claims["nonce"], json!(nonce));

        let requests = idp.token_requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].status, 200);
        assert_eq!(requests[0].form["code_verifier"], flow.verifier);
    }

    #[tokio::test]
    async fn test_idp_signature_faults() {
        let idp = TestIdp::start(CLIENT_ID, CLIENT_SECRET).await;
        let jwks = fetch_jwks(&idp).await;
        let jwk_a = served_jwk(&jwks, KID_A);
        let jwk_ec = served_jwk(&jwks, KID_EC);
        assert_eq!(jwk_a["kty"], "RSA");
        assert_eq!(jwk_a["alg"], "RS256");
        assert_eq!(jwk_a["e"], "AQAB");
        assert_eq!(
            base64url_decode(jwk_a["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
        assert_eq!(jwk_ec["kty"], "EC");
        assert_eq!(jwk_ec["crv"], "P-256");
        assert_eq!(jwk_ec["alg"], "ES256");
        assert_eq!(
            jwks["keys"].as_array().unwrap().len(),
            2,
            "B is not published"
        );
        let jwk_b = idp.jwk(KeyName::B, true);

        // RS256 with key B: B's kid, and it verifies under B's JWK only.
        idp.script(TokenScript::new().signer(Signer::RsaB));
        let (token, _) = id_token(&idp).await;
        assert_eq!(jwt_parts(&token).0["kid"], KID_B);
        assert!(verifies(&token, &jwk_b, Algorithm::RS256));
        assert!(!verifies(&token, &jwk_a, Algorithm::RS256));

        // Key B under key A's kid.
        idp.script(
            TokenScript::new()
                .signer(Signer::RsaB)
                .kid(Kid::Value(KID_A.into())),
        );
        let (token, _) = id_token(&idp).await;
        assert_eq!(jwt_parts(&token).0["kid"], KID_A);
        assert!(!verifies(&token, &jwk_a, Algorithm::RS256));

        // Corrupted RS256 and ES256 signatures under the published keys.
        idp.script(TokenScript::new().corrupt_signature());
        let (token, _) = id_token(&idp).await;
        assert_eq!(jwt_parts(&token).0["alg"], "RS256");
        assert!(!verifies(&token, &jwk_a, Algorithm::RS256));
        idp.script(TokenScript::new().signer(Signer::Ec).corrupt_signature());
        let (token, _) = id_token(&idp).await;
        assert_eq!(jwt_parts(&token).0["alg"], "ES256");
        assert!(!verifies(&token, &jwk_ec, Algorithm::ES256));
        idp.script(TokenScript::new().signer(Signer::Ec));
        let (token, _) = id_token(&idp).await;
        assert!(verifies(&token, &jwk_ec, Algorithm::ES256));

        // HS256 keyed with key A's public key PEM, under A's kid.
        idp.script(TokenScript::new().signer(Signer::Hs256WithPublicKey));
        let (token, _) = id_token(&idp).await;
        let (head, _) = jwt_parts(&token);
        assert_eq!(head, json!({"alg": "HS256", "typ": "JWT", "kid": KID_A}));
        let pem = idp.rsa_a_public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let secret = DecodingKey::from_secret(pem.as_bytes());
        let (input, signature) = token.rsplit_once('.').unwrap();
        assert!(
            jsonwebtoken::crypto::verify(signature, input.as_bytes(), &secret, Algorithm::HS256)
                .unwrap()
        );

        // HS256 with the client secret.
        idp.script(TokenScript::new().signer(Signer::Hs256(CLIENT_SECRET.as_bytes().to_vec())));
        let (token, _) = id_token(&idp).await;
        let (head, _) = jwt_parts(&token);
        assert_eq!(head, json!({"alg": "HS256", "typ": "JWT"}));
        let secret = DecodingKey::from_secret(CLIENT_SECRET.as_bytes());
        let (input, signature) = token.rsplit_once('.').unwrap();
        assert!(
            jsonwebtoken::crypto::verify(signature, input.as_bytes(), &secret, Algorithm::HS256)
                .unwrap()
        );

        // alg: none, unsigned, without kid.
        idp.script(TokenScript::new().signer(Signer::AlgNone).no_kid());
        let (token, nonce) = id_token(&idp).await;
        assert!(token.ends_with('.'), "empty signature: {token}");
        assert_eq!(token.matches('.').count(), 2);
        let (head, claims) = jwt_parts(&token);
        assert_eq!(head, json!({"alg": "none", "typ": "JWT"}));
        assert_eq!(claims["nonce"], json!(nonce));

        // Header fields.
        idp.script(
            TokenScript::new()
                .header("typ", Value::Null)
                .header("jku", json!("http://127.0.0.1:9/evil")),
        );
        let (token, _) = id_token(&idp).await;
        let (head, _) = jwt_parts(&token);
        assert_eq!(
            head,
            json!({"alg": "RS256", "kid": KID_A, "jku": "http://127.0.0.1:9/evil"})
        );
    }

    /// Checks a minted token's claims, given the flow's nonce.
    type ClaimCheck = Box<dyn Fn(&Map<String, Value>, &str)>;

    #[tokio::test]
    async fn test_idp_claim_faults() {
        let idp = TestIdp::start(CLIENT_ID, CLIENT_SECRET).await;
        let cases: Vec<(TokenScript, ClaimCheck)> = vec![
            (
                TokenScript::new().set("iss", json!("https://evil.example")),
                Box::new(|c, _| assert_eq!(c["iss"], "https://evil.example")),
            ),
            (
                TokenScript::new().set("aud", json!("someone-else")),
                Box::new(|c, _| assert_eq!(c["aud"], "someone-else")),
            ),
            (
                TokenScript::new().set("aud", json!([CLIENT_ID, "someone-else"])),
                Box::new(|c, _| assert_eq!(c["aud"], json!([CLIENT_ID, "someone-else"]))),
            ),
            (
                TokenScript::new().remove("aud"),
                Box::new(|c, _| assert!(!c.contains_key("aud"))),
            ),
            (
                TokenScript::new().remove("iat"),
                Box::new(|c, _| assert!(!c.contains_key("iat") && c.contains_key("exp"))),
            ),
            (
                TokenScript::new().remove("sub"),
                Box::new(|c, _| assert!(!c.contains_key("sub"))),
            ),
            (
                TokenScript::new().nonce("not-the-nonce"),
                Box::new(|c, nonce| {
                    assert_eq!(c["nonce"], "not-the-nonce");
                    assert_ne!(c["nonce"], nonce);
                }),
            ),
            (
                TokenScript::new().remove("nonce"),
                Box::new(|c, _| assert!(!c.contains_key("nonce"))),
            ),
            (
                TokenScript::new().set("exp", json!(1_000_000)),
                Box::new(|c, _| assert_eq!(c["exp"], 1_000_000)),
            ),
        ];
        let jwk_a = idp.jwk(KeyName::A, true);
        // Outside a code flow.
        let (_, claims) = jwt_parts(&idp.mint_id_token(None));
        assert!(claims.get("nonce").is_none());
        assert_eq!(claims["sub"], DEFAULT_SUB);
        let (_, claims) = jwt_parts(&idp.mint_id_token(Some("n-1")));
        assert_eq!(claims["nonce"], "n-1");
        for (script, check) in cases {
            idp.script(script.clone());
            let (token, nonce) = id_token(&idp).await;
            let (_, claims) = jwt_parts(&token);
            let Value::Object(claims) = claims else {
                panic!("claims are an object")
            };
            check(&claims, &nonce);
            // Everything else is still the default, and well signed.
            for claim in [
                "iss",
                "aud",
                "sub",
                "email",
                "email_verified",
                "iat",
                "exp",
                "nonce",
            ] {
                let touched =
                    script.set.contains_key(claim) || script.remove.iter().any(|r| r == claim);
                if !touched {
                    assert!(claims.contains_key(claim), "{claim} kept in {claims:?}");
                }
            }
            assert!(verifies(&token, &jwk_a, Algorithm::RS256), "{script:?}");
        }
    }

    #[tokio::test]
    async fn test_idp_codes_are_single_use_and_pkce_is_checked() {
        let idp = TestIdp::start(CLIENT_ID, CLIENT_SECRET).await;
        let good = basic(&idp.client_id, &idp.client_secret);

        // Replayed code.
        let flow = authorize(&idp).await;
        let (status, _) = exchange(&idp, &flow).await;
        assert_eq!(status, 200);
        let (status, body) = exchange(&idp, &flow).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");

        // Wrong PKCE verifier (and the code is spent by the attempt).
        let flow = authorize(&idp).await;
        let (wrong_verifier, _) = pkce_pair();
        let (status, body) = exchange_with(&idp, &good, &flow.code, &wrong_verifier).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
        let (status, _) = exchange(&idp, &flow).await;
        assert_eq!(status, 400);

        // Wrong client secret, no client authentication.
        let flow = authorize(&idp).await;
        let (status, body) =
            exchange_with(&idp, &basic(CLIENT_ID, "wrong"), &flow.code, &flow.verifier).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client");
        let response = idp
            .http
            .post(idp.token_endpoint())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", flow.code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", flow.verifier.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        // A bad client does not spend the code.
        let (status, body) = exchange(&idp, &flow).await;
        assert_eq!(status, 200, "{body}");

        // Unknown code.
        let (status, body) = exchange_with(&idp, &good, "made-up", &flow.verifier).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");

        // No PKCE at /authorize: an error redirect, no code.
        let url = Url::parse_with_params(
            &idp.authorization_endpoint(),
            &[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid"),
                ("state", "s1"),
            ],
        )
        .unwrap();
        let location = idp.follow_authorize(url.as_str()).await;
        let query: HashMap<String, String> = Url::parse(&location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(query["error"], "invalid_request");
        assert_eq!(query["state"], "s1");
        assert!(!query.contains_key("code"));

        let requests = idp.token_requests();
        assert_eq!(requests[1].error.as_deref(), Some("invalid_grant"));
        assert_eq!(requests[4].error.as_deref(), Some("invalid_client"));
        assert_eq!(requests[0].error, None);
        assert_eq!(requests[0].authorization.as_deref(), Some(good.as_str()));
        assert_eq!(requests[5].authorization, None);
        let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![200, 400, 400, 400, 401, 401, 200, 400]);
    }

    #[tokio::test]
    async fn test_idp_jwks_publication_and_fetch_count() {
        let idp = TestIdp::start(CLIENT_ID, CLIENT_SECRET).await;
        assert_eq!(idp.jwks_fetches(), 0);
        let jwks = fetch_jwks(&idp).await;
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, vec![KID_A, KID_EC]);
        assert_eq!(idp.jwks_fetches(), 1);

        // Rotation: B in, A out. Tokens signed by B verify under the served JWK.
        idp.publish(&[KeyName::B]);
        idp.script(TokenScript::new().signer(Signer::RsaB));
        let (token, _) = id_token(&idp).await;
        let jwks = fetch_jwks(&idp).await;
        assert_eq!(idp.jwks_fetches(), 2);
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        verify_with(&token, &served_jwk(&jwks, KID_B), Algorithm::RS256, &idp);

        // One key without kid; several keys without kids.
        idp.publish_without_kids(&[KeyName::A]);
        let jwks = fetch_jwks(&idp).await;
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert!(jwks["keys"][0].get("kid").is_none());
        idp.script(TokenScript::new().no_kid());
        let (token, _) = id_token(&idp).await;
        assert!(jwt_parts(&token).0.get("kid").is_none());
        assert!(verifies(&token, &jwks["keys"][0], Algorithm::RS256));
        idp.publish_without_kids(&[KeyName::A, KeyName::B, KeyName::Ec]);
        let jwks = fetch_jwks(&idp).await;
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| k.get("kid").is_none()));
        assert_eq!(idp.jwks_fetches(), 4);
        assert_eq!(idp.published_jwks(), jwks);

        // Anything at all.
        idp.publish_jwks(json!({"keys": []}));
        assert_eq!(fetch_jwks(&idp).await, json!({"keys": []}));
        assert_eq!(idp.jwks_fetches(), 5);
    }

    #[test]
    fn test_idp_der_and_base64_helpers() {
        // SEQUENCE { INTEGER 0x00c3 (leading zero), INTEGER 65537 }
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xc3, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        assert_eq!(
            rsa_public_components(&der),
            Some((vec![0xc3], vec![0x01, 0x00, 0x01]))
        );
        assert_eq!(rsa_public_components(&der[..10]), None);
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url(&bytes);
            assert!(!text.contains(['=', '+', '/']));
            assert_eq!(base64url_decode(&text), Some(bytes));
        }
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64_decode("dXNlcjpwYXNz"), Some(b"user:pass".to_vec()));
        assert_eq!(percent_decode("a%2Fb+c%3A"), Some("a/b c:".into()));
    }
}
