//! The verifier against a stand-in issuer on loopback: discovery and JWKS
//! served by axum, every fetch counted, tokens minted with GitHub Actions'
//! claim set and keys generated here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{TimeZone, Utc};
use jsonwebtoken::{EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::domain::Scope;
use crate::domain::self_service::{AnchoredRegex, ClaimRule, ClaimTest, Placement};

/// When the test tokens are issued; every `now` is counted from it.
const T0: i64 = 1_750_000_000;
const AUDIENCE: &str = "https://github.com/octo-org";

fn at(offset: i64) -> Time {
    Utc.timestamp_opt(T0 + offset, 0).unwrap()
}

/// A signing key and its public half as a JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key as PEM: what an attacker would try as an HMAC secret.
    public_pem: String,
}

impl TestKey {
    /// The same key under another kid and algorithm (RSA serves RS256 and PS256).
    fn as_alg(&self, kid: &str, alg: Algorithm) -> TestKey {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(format!("{alg:?}"));
        TestKey {
            kid: kid.into(),
            alg,
            encoding: self.encoding.clone(),
            jwk,
            public_pem: self.public_pem.clone(),
        }
    }
}

fn rsa() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("rsa-1".into());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        TestKey {
            kid: "rsa-1".into(),
            alg: Algorithm::RS256,
            encoding,
            jwk: serde_json::to_value(jwk).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    })
}

fn ec() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The uncompressed point: 0x04, x, y.
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65);
        TestKey {
            kid: "ec-1".into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
            }),
            public_pem: pair.public_key_pem(),
        }
    })
}

fn ed() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| ed25519("ed-1"))
}

fn ed25519(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
            "x": B64.encode(pair.public_key_raw()),
        }),
        public_pem: pair.public_key_pem(),
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// What the stand-in issuer serves, and what it was asked.
#[derive(Default)]
struct IdpState {
    issuer: String,
    jwks: Mutex<Value>,
    /// Replaces the discovery document when set.
    discovery: Mutex<Option<Value>>,
    /// Answer every request with HTTP 500.
    failing: AtomicBool,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    /// Requests anywhere else (where a token's `jku` or `x5u` points).
    other_fetches: AtomicUsize,
}

/// An OpenID Provider's key endpoints on 127.0.0.1, on a free port.
struct Idp {
    url: String,
    state: Arc<IdpState>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Idp {
    async fn start(keys: &[&TestKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState {
            issuer: url.clone(),
            jwks: Mutex::new(jwks(keys)),
            ..IdpState::default()
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(serve_jwks))
            .route("/big-jwks", get(big_jwks))
            .route("/streamed-big-jwks", get(streamed_big_jwks))
            .route("/moved-jwks", get(|| async { Redirect::to("/jwks") }))
            .fallback(elsewhere)
            .with_state(Arc::clone(&state));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    stopped.await.ok();
                })
                .await
                .unwrap();
        });
        Idp {
            url,
            state,
            stop: Some(stop),
            server,
        }
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

    fn other_fetches(&self) -> usize {
        self.state.other_fetches.load(Ordering::SeqCst)
    }

    async fn stop(mut self) {
        self.stop.take().map(|s| s.send(()));
        self.server.await.unwrap();
    }
}

async fn discovery(State(idp): State<Arc<IdpState>>) -> Response {
    idp.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if idp.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let document = idp.discovery.lock().unwrap().clone().unwrap_or_else(|| {
        json!({
            "issuer": idp.issuer,
            "jwks_uri": format!("{}/jwks", idp.issuer),
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
        })
    });
    axum::Json(document).into_response()
}

async fn serve_jwks(State(idp): State<Arc<IdpState>>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if idp.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    axum::Json(idp.jwks.lock().unwrap().clone()).into_response()
}

/// A JWKS that would be valid but for its size: padded past the cap.
fn oversized_jwks(idp: &IdpState) -> Vec<u8> {
    let mut set = idp.jwks.lock().unwrap().clone();
    set["padding"] = json!("x".repeat(MAX_FETCH_BYTES));
    serde_json::to_vec(&set).unwrap()
}

async fn big_jwks(State(idp): State<Arc<IdpState>>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    oversized_jwks(&idp).into_response()
}

/// The same, streamed in chunks without a length up front.
async fn streamed_big_jwks(State(idp): State<Arc<IdpState>>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = oversized_jwks(&idp)
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
}

async fn elsewhere(State(idp): State<Arc<IdpState>>) -> StatusCode {
    idp.other_fetches.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND
}

fn rule(claim: &str, test: ClaimTest) -> ClaimRule {
    ClaimRule {
        claim: claim.into(),
        test,
    }
}

/// A trusted identity for GitHub Actions tokens of `octo-org`'s `infra`
/// workflows on `main`, as an operator would write one.
fn identity(issuer: &str) -> TrustedIdentity {
    TrustedIdentity {
        name: "gha".into(),
        issuer: issuer.into(),
        jwks_url: None,
        audience: AUDIENCE.into(),
        identity_claim: "repository".into(),
        claims: vec![
            rule("repository_owner_id", ClaimTest::Exact("1234567".into())),
            rule("sub", ClaimTest::Prefix("repo:octo-org/".into())),
            rule(
                "job_workflow_ref",
                ClaimTest::Regex(
                    AnchoredRegex::new(
                        r"octo-org/infra/\.github/workflows/[a-z-]+\.yml@refs/heads/main",
                    )
                    .unwrap(),
                ),
            ),
        ],
        source_cidrs: vec![],
        max_token_lifetime: Duration::from_secs(900),
        runners: Placement {
            scope: Scope::Org,
            org: Some("octo-org".into()),
            repo: None,
            runner_group_id: 1,
            name_prefix: "gha-".into(),
        },
        label_policy: None,
    }
}

/// The claims of a GitHub Actions OIDC token for a push to `main` of
/// `octo-org/infra`, issued at `T0` (GitHub's own lifetimes: `nbf` ten
/// minutes before `iat`, `exp` five minutes after).
fn github_claims(issuer: &str) -> Map<String, Value> {
    let claims = json!({
        "jti": "6f3b2c4e-9a51-4d7e-8c1f-2b9d7e4a0c13",
        "sub": "repo:octo-org/infra:ref:refs/heads/main",
        "aud": AUDIENCE,
        "ref": "refs/heads/main",
        "sha": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4",
        "repository": "octo-org/infra",
        "repository_owner": "octo-org",
        "repository_owner_id": "1234567",
        "repository_id": "7654321",
        "repository_visibility": "private",
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "self-hosted",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "deploy",
        "workflow_ref": "octo-org/infra/.github/workflows/deploy.yml@refs/heads/main",
        "workflow_sha": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4",
        "job_workflow_ref": "octo-org/infra/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_sha": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4",
        "event_name": "push",
        "ref_type": "branch",
        "ref_protected": "true",
        "head_ref": "",
        "base_ref": "",
        "iss": issuer,
        "nbf": T0 - 600,
        "iat": T0,
        "exp": T0 + 300,
    });
    match claims {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

fn with(mut claims: Map<String, Value>, changes: &[(&str, Value)]) -> Map<String, Value> {
    for (name, value) in changes {
        claims.insert(name.to_string(), value.clone());
    }
    claims
}

fn without(mut claims: Map<String, Value>, name: &str) -> Map<String, Value> {
    claims.remove(name);
    claims
}

fn header(key: &TestKey) -> Header {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header
}

fn mint(key: &TestKey, claims: &Map<String, Value>) -> String {
    jsonwebtoken::encode(&header(key), claims, &key.encoding).unwrap()
}

fn verifier(identities: Vec<TrustedIdentity>) -> WorkloadVerifier {
    WorkloadVerifier::new(identities).unwrap()
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token's signature part.
fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

/// A refusal's reason, checked to hold neither the token nor its signature.
async fn refused(v: &WorkloadVerifier, token: &str, now: Time) -> TokenRejection {
    let rejection = v.verify(token, now).await.unwrap_err();
    assert_eq!(rejection.token_sha256, sha256_hex(token));
    let shown = format!("{rejection:?} {rejection}");
    assert!(!shown.contains(token), "{shown}");
    let signature = signature_of(token);
    if signature.len() > 8 {
        assert!(!shown.contains(signature), "{shown}");
    }
    rejection
}

fn expect_reason(rejection: &TokenRejection, part: &str) {
    assert!(
        rejection.reason.contains(part),
        "{:?} lacks {part:?}",
        rejection.reason
    );
}

#[tokio::test]
async fn github_actions_tokens_signed_with_rs256_ps256_es256_or_eddsa_are_trusted() {
    let pss = rsa().as_alg("rsa-pss", Algorithm::PS256);
    let idp = Idp::start(&[rsa(), &pss, ec(), ed()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);

    for key in [rsa(), &pss, ec(), ed()] {
        let token = mint(key, &claims);
        let verified = v.verify(&token, at(30)).await.unwrap_or_else(|e| {
            panic!("{:?}: {}", key.alg, e.reason);
        });
        assert_eq!(verified.trusted_identity, "gha");
        assert_eq!(verified.owner, "gha:octo-org/infra");
        assert_eq!(verified.issuer, idp.url);
        assert_eq!(verified.jti, "6f3b2c4e-9a51-4d7e-8c1f-2b9d7e4a0c13");
        assert_eq!(verified.expires_at, at(300));
        assert_eq!(verified.claims, claims);
        assert_eq!(verified.token_sha256, sha256_hex(&token));
        let shown = format!("{verified:?}");
        assert!(!shown.contains(signature_of(&token)), "{shown}");
    }
    // One discovery and one JWKS served all four keys.
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));
    idp.stop().await;
}

#[tokio::test]
async fn none_and_hmac_algorithms_are_refused_before_any_key_is_fetched() {
    let idp = Idp::start(&[rsa()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);
    let body = B64.encode(serde_json::to_vec(&claims).unwrap());

    for none in [
        format!("{}.{body}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#)),
        format!(
            "{}.{body}.c2ln",
            B64.encode(r#"{"alg":"none","kid":"rsa-1"}"#)
        ),
    ] {
        let rejection = refused(&v, &none, at(30)).await;
        assert_eq!(rejection.kind, RejectionKind::InvalidToken);
    }
    let alg_none = format!("{}.{body}.c2ln", B64.encode(r#"{"alg":"none"}"#));
    expect_reason(&refused(&v, &alg_none, at(30)).await, "\"none\"");

    // The classic confusion: HS256 with the issuer's public key as the
    // secret, in each form the key is published in.
    let jwk_text = serde_json::to_vec(&rsa().jwk).unwrap();
    let n = B64.decode(rsa().jwk["n"].as_str().unwrap()).unwrap();
    for secret in [rsa().public_pem.as_bytes(), &jwk_text, &n] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut h = Header::new(alg);
            h.kid = Some("rsa-1".into());
            let forged =
                jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap();
            let rejection = refused(&v, &forged, at(30)).await;
            expect_reason(&rejection, &format!("{alg:?}"));
        }
    }
    let unknown = format!("{}.{body}.c2ln", B64.encode(r#"{"alg":"my-own\n!"}"#));
    let rejection = refused(&v, &unknown, at(30)).await;
    assert!(!rejection.reason.contains("my-own"), "{}", rejection.reason);

    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (0, 0));
    // The same claims, properly signed, pass: only the algorithm was wrong.
    assert!(v.verify(&mint(rsa(), &claims), at(30)).await.is_ok());
    idp.stop().await;
}

#[tokio::test]
async fn keys_named_in_the_header_are_ignored() {
    let idp = Idp::start(&[rsa()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);
    let attacker = ed25519("attacker");
    let evil = format!("{}/evil-keys", idp.url);

    // Signed with the attacker's key, which the header carries and points at.
    let mut h = header(&attacker);
    h.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
    h.jku = Some(evil.clone());
    h.x5u = Some(evil.clone());
    let forged = jsonwebtoken::encode(&h, &claims, &attacker.encoding).unwrap();
    let rejection = refused(&v, &forged, at(30)).await;
    expect_reason(&rejection, "kid");
    // Still refused with the kid of the issuer's real key.
    h.kid = Some("rsa-1".into());
    h.alg = Algorithm::EdDSA;
    let forged = jsonwebtoken::encode(&h, &claims, &attacker.encoding).unwrap();
    refused(&v, &forged, at(30)).await;

    // A genuine token carrying the same hints verifies with the JWKS key.
    let mut h = header(rsa());
    h.jku = Some(evil.clone());
    h.x5u = Some(evil);
    h.x5c = Some(vec![B64.encode(b"not a certificate")]);
    h.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
    let genuine = jsonwebtoken::encode(&h, &claims, &rsa().encoding).unwrap();
    assert!(v.verify(&genuine, at(30)).await.is_ok());

    assert_eq!(
        idp.other_fetches(),
        0,
        "nothing fetched from the header's URLs"
    );
    idp.stop().await;
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_once_a_minute_at_most() {
    let idp = Idp::start(&[rsa()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);
    let stranger = ed25519("stranger");

    assert!(v.verify(&mint(rsa(), &claims), at(0)).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 1);

    // The issuer rotates in a new key; a token signed with it refetches once.
    idp.publish(&[rsa(), ec()]);
    let verified = v.verify(&mint(ec(), &claims), at(61)).await.unwrap();
    assert_eq!(verified.owner, "gha:octo-org/infra");
    assert_eq!(idp.jwks_fetches(), 2);
    // Both keys are cached now.
    assert!(v.verify(&mint(rsa(), &claims), at(62)).await.is_ok());
    assert!(v.verify(&mint(ec(), &claims), at(62)).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 2);

    // A kid the issuer never published: no second fetch within the minute.
    let rejection = refused(&v, &mint(&stranger, &claims), at(100)).await;
    expect_reason(&rejection, "kid");
    assert_eq!(rejection.trusted_identity.as_deref(), Some("gha"));
    assert_eq!(idp.jwks_fetches(), 2);
    // A minute after the last fetch, one more.
    refused(&v, &mint(&stranger, &claims), at(121)).await;
    assert_eq!(idp.jwks_fetches(), 3);
    refused(&v, &mint(&stranger, &claims), at(122)).await;
    assert_eq!(idp.jwks_fetches(), 3);
    // Discovery is read again with each fetch of the keys.
    assert_eq!(idp.discovery_fetches(), 3);
    idp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_share_one_fetch_and_a_storm_of_made_up_kids_costs_one_a_minute() {
    let idp = Idp::start(&[rsa()]).await;
    let v = Arc::new(verifier(vec![identity(&idp.url)]));
    let claims = github_claims(&idp.url);
    let made_up = |claims: &Map<String, Value>| {
        let mut h = header(rsa());
        h.kid = Some(format!("made-up-{}", rand::random::<u64>()));
        jsonwebtoken::encode(&h, claims, &rsa().encoding).unwrap()
    };
    let all_at = |tokens: Vec<String>, now: Time| {
        let v = Arc::clone(&v);
        async move {
            let running = tokens.into_iter().map(|token| {
                let v = Arc::clone(&v);
                tokio::spawn(async move { v.verify(&token, now).await })
            });
            futures::future::join_all(running)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        }
    };

    // Fifty tokens of a key the cache has not seen, all at once: one fetch.
    let results = all_at(vec![mint(rsa(), &claims); 50], at(0)).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(idp.jwks_fetches(), 1);

    // A hundred made-up kids at once: one fetch between them.
    let results = all_at((0..100).map(|_| made_up(&claims)).collect(), at(61)).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(idp.jwks_fetches(), 2);

    // One a second for four minutes: one fetch a minute.
    for second in 62..=300 {
        refused(&v, &made_up(&claims), at(second)).await;
    }
    assert_eq!(idp.jwks_fetches(), 2 + 3, "at 121, 181 and 241");
    idp.stop().await;
}

#[tokio::test]
async fn keys_are_fetched_again_after_an_hour_so_a_withdrawn_key_stops_verifying() {
    let idp = Idp::start(&[rsa(), ec()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    assert!(
        v.verify(&mint(rsa(), &github_claims(&idp.url)), at(0))
            .await
            .is_ok()
    );

    // An hour on, the issuer has withdrawn the RSA key.
    idp.publish(&[ec()]);
    let later = |claims: Map<String, Value>| {
        with(
            claims,
            &[
                ("iat", json!(T0 + 3600)),
                ("nbf", json!(T0 + 3000)),
                ("exp", json!(T0 + 3900)),
            ],
        )
    };
    let claims = later(github_claims(&idp.url));
    assert!(v.verify(&mint(ec(), &claims), at(3599)).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 1, "within the hour, the cache");
    refused(&v, &mint(rsa(), &claims), at(3601)).await;
    assert_eq!(idp.jwks_fetches(), 2);
    assert!(v.verify(&mint(ec(), &claims), at(3602)).await.is_ok());

    // When the issuer fails, stale keys still serve (one try a minute).
    idp.state.failing.store(true, Ordering::SeqCst);
    let claims = with(
        claims,
        &[
            ("iat", json!(T0 + 7300)),
            ("nbf", json!(T0 + 7000)),
            ("exp", json!(T0 + 7500)),
        ],
    );
    assert!(v.verify(&mint(ec(), &claims), at(7300)).await.is_ok());
    assert!(v.verify(&mint(ec(), &claims), at(7301)).await.is_ok());
    assert_eq!(idp.discovery_fetches(), 3);
    let rejection = refused(&v, &mint(ed(), &claims), at(7400)).await;
    assert_eq!(idp.discovery_fetches(), 4);
    expect_reason(&rejection, "could not be fetched");
    expect_reason(&rejection, "HTTP 500");
    idp.stop().await;
}

#[tokio::test]
async fn the_times_are_checked_against_the_callers_now_with_a_minute_of_leeway() {
    let idp = Idp::start(&[ed()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);
    let token = mint(ed(), &claims);

    // exp is T0 + 300: valid through 360, expired from 361.
    assert!(v.verify(&token, at(360)).await.is_ok());
    expect_reason(&refused(&v, &token, at(361)).await, "expired");
    // Issued at T0: not yet at T0 - 61 (a clock that far behind the issuer).
    assert!(v.verify(&token, at(-60)).await.is_ok());
    expect_reason(&refused(&v, &token, at(-61)).await, "issued in the future");

    let cases: Vec<(Map<String, Value>, i64, &str)> = vec![
        (
            with(claims.clone(), &[("nbf", json!(T0 + 100))]),
            30,
            "not valid before",
        ),
        (
            with(claims.clone(), &[("iat", json!(T0 + 200))]),
            30,
            "issued in the future",
        ),
        (
            with(claims.clone(), &[("exp", json!(T0 + 901))]),
            30,
            "longer than the 900 s allowed",
        ),
        (
            with(claims.clone(), &[("exp", json!(T0 - 1))]),
            -60,
            "expires before it was issued",
        ),
        (without(claims.clone(), "exp"), 30, "no exp"),
        (without(claims.clone(), "iat"), 30, "no iat"),
        (without(claims.clone(), "jti"), 30, "no jti"),
        (
            with(claims.clone(), &[("jti", json!(""))]),
            30,
            "jti is empty",
        ),
        (
            with(claims.clone(), &[("jti", json!(7))]),
            30,
            "jti is not a string",
        ),
        (
            with(claims.clone(), &[("jti", json!("j".repeat(513)))]),
            30,
            "jti is longer",
        ),
        (
            with(claims.clone(), &[("exp", json!("soon"))]),
            30,
            "exp is not a number",
        ),
        (
            with(claims.clone(), &[("exp", json!(i64::MAX))]),
            30,
            "exp is out of range",
        ),
        (
            with(
                claims.clone(),
                &[("exp", json!(i64::MAX)), ("iat", json!(i64::MAX - 10))],
            ),
            30,
            "issued in the future",
        ),
    ];
    for (claims, now, reason) in cases {
        let rejection = refused(&v, &mint(ed(), &claims), at(now)).await;
        expect_reason(&rejection, reason);
        assert_eq!(rejection.kind, RejectionKind::InvalidToken);
        assert_eq!(rejection.trusted_identity.as_deref(), Some("gha"));
    }
    // Exactly the largest lifetime, and a fractional time, pass.
    let longest = with(claims.clone(), &[("exp", json!(T0 + 900))]);
    assert!(v.verify(&mint(ed(), &longest), at(30)).await.is_ok());
    let fractional = with(claims.clone(), &[("exp", json!(T0 as f64 + 300.5))]);
    let verified = v.verify(&mint(ed(), &fractional), at(30)).await.unwrap();
    assert_eq!(verified.expires_at, at(300));
    idp.stop().await;
}

#[tokio::test]
async fn the_issuer_is_compared_byte_for_byte_and_the_audience_must_be_named() {
    let idp = Idp::start(&[rsa()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);

    for iss in [
        json!("https://token.actions.githubusercontent.com"),
        json!(format!("{}/", idp.url)),
        json!(idp.url.to_uppercase()),
        json!([idp.url.clone()]),
        json!(null),
    ] {
        let rejection = refused(
            &v,
            &mint(rsa(), &with(claims.clone(), &[("iss", iss)])),
            at(30),
        )
        .await;
        assert_eq!(rejection.kind, RejectionKind::InvalidToken);
        assert_eq!(rejection.trusted_identity, None);
    }
    let rejection = refused(&v, &mint(rsa(), &without(claims.clone(), "iss")), at(30)).await;
    expect_reason(&rejection, "no iss");
    // An issuer pacer does not trust is named, cut short when long.
    let long = "https://x.example/".to_string() + &"a".repeat(500);
    let rejection = refused(
        &v,
        &mint(rsa(), &with(claims.clone(), &[("iss", json!(long))])),
        at(30),
    )
    .await;
    expect_reason(&rejection, "https://x.example/");
    assert!(rejection.reason.len() < 300, "{}", rejection.reason);
    assert_eq!(
        idp.jwks_fetches(),
        0,
        "no keys fetched for an untrusted issuer"
    );

    for aud in [
        json!("https://github.com/someone-else"),
        json!(["https://github.com/someone-else"]),
        json!([]),
        json!([{"aud": AUDIENCE}]),
        json!(7),
    ] {
        let rejection = refused(
            &v,
            &mint(rsa(), &with(claims.clone(), &[("aud", aud)])),
            at(30),
        )
        .await;
        expect_reason(&rejection, "aud");
        assert_eq!(rejection.trusted_identity.as_deref(), Some("gha"));
    }
    let rejection = refused(&v, &mint(rsa(), &without(claims.clone(), "aud")), at(30)).await;
    expect_reason(&rejection, "aud");
    let several = with(
        claims.clone(),
        &[("aud", json!(["sts.amazonaws.com", AUDIENCE]))],
    );
    assert!(v.verify(&mint(rsa(), &several), at(30)).await.is_ok());
    idp.stop().await;
}

#[tokio::test]
async fn each_claim_rule_kind_and_the_identity_claim_can_refuse_a_token() {
    let idp = Idp::start(&[ec()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let claims = github_claims(&idp.url);

    let cases: Vec<(Map<String, Value>, &str)> = vec![
        (
            with(claims.clone(), &[("repository_owner_id", json!("7654321"))]),
            "claim \"repository_owner_id\" is not the value required",
        ),
        (
            with(
                claims.clone(),
                &[("sub", json!("repo:evil-org/infra:ref:refs/heads/main"))],
            ),
            "claim \"sub\" lacks the prefix",
        ),
        (
            with(
                claims.clone(),
                &[(
                    "job_workflow_ref",
                    json!("octo-org/infra/.github/workflows/deploy.yml@refs/heads/feature"),
                )],
            ),
            "claim \"job_workflow_ref\" does not match the pattern",
        ),
        (
            without(claims.clone(), "repository_owner_id"),
            "claim \"repository_owner_id\" is missing",
        ),
        (
            without(claims.clone(), "repository"),
            "claim \"repository\" is missing",
        ),
        (
            with(claims.clone(), &[("repository", json!(""))]),
            "claim \"repository\" is empty",
        ),
        (
            with(claims.clone(), &[("repository", json!("r".repeat(513)))]),
            "claim \"repository\" is longer than 512 bytes",
        ),
    ];
    for (claims, reason) in cases {
        let rejection = refused(&v, &mint(ec(), &claims), at(30)).await;
        assert_eq!(rejection.reason, reason);
        assert_eq!(rejection.kind, RejectionKind::ClaimMismatch);
        assert_eq!(
            rejection.kind.event_kind(),
            SecurityEventKind::ClaimMismatch
        );
        assert_eq!(rejection.trusted_identity.as_deref(), Some("gha"));
    }
    let longest = with(claims, &[("repository", json!("r".repeat(512)))]);
    assert!(v.verify(&mint(ec(), &longest), at(30)).await.is_ok());
    idp.stop().await;
}

#[tokio::test]
async fn identities_sharing_an_issuer_are_told_apart_by_audience_then_by_their_rules() {
    let idp = Idp::start(&[ed()]).await;
    let release = TrustedIdentity {
        name: "gha-release".into(),
        claims: vec![rule("ref", ClaimTest::Prefix("refs/tags/v".into()))],
        ..identity(&idp.url)
    };
    let main = TrustedIdentity {
        name: "gha-main".into(),
        ..identity(&idp.url)
    };
    let sts = TrustedIdentity {
        name: "gha-sts".into(),
        audience: "sts.amazonaws.com".into(),
        claims: vec![],
        ..identity(&idp.url)
    };
    let v = verifier(vec![release, main, sts]);
    let claims = github_claims(&idp.url);

    let picked = |claims: Map<String, Value>| {
        let v = &v;
        async move {
            v.verify(&mint(ed(), &claims), at(30))
                .await
                .map(|t| (t.trusted_identity, t.owner))
        }
    };
    assert_eq!(
        picked(claims.clone()).await.unwrap(),
        ("gha-main".into(), "gha-main:octo-org/infra".into())
    );
    let tagged = with(claims.clone(), &[("ref", json!("refs/tags/v1.2.0"))]);
    assert_eq!(picked(tagged).await.unwrap().0, "gha-release");
    let for_sts = with(claims.clone(), &[("aud", json!("sts.amazonaws.com"))]);
    assert_eq!(picked(for_sts).await.unwrap().0, "gha-sts");

    // Neither identity of the audience admits it: both say why.
    let other_org = with(claims, &[("repository_owner_id", json!("1"))]);
    let rejection = refused(&v, &mint(ed(), &other_org), at(30)).await;
    assert_eq!(rejection.kind, RejectionKind::ClaimMismatch);
    assert_eq!(rejection.trusted_identity, None);
    assert_eq!(
        rejection.reason,
        "gha-release: claim \"ref\" lacks the prefix; \
         gha-main: claim \"repository_owner_id\" is not the value required"
    );
    idp.stop().await;
}

#[tokio::test]
async fn a_token_over_16_kib_is_refused_unread() {
    let idp = Idp::start(&[rsa()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let padded = with(
        github_claims(&idp.url),
        &[("padding", json!("p".repeat(MAX_TOKEN_BYTES)))],
    );
    let big = mint(rsa(), &padded);
    assert!(big.len() > MAX_TOKEN_BYTES);
    let rejection = refused(&v, &big, at(30)).await;
    assert_eq!(rejection.reason, "the token is larger than 16 KiB");
    assert_eq!(rejection.trusted_identity, None);

    let junk = "a".repeat(MAX_TOKEN_BYTES + 1);
    expect_reason(&refused(&v, &junk, at(30)).await, "larger than 16 KiB");
    // At the limit, it is read (and found not to be a JWT).
    let junk = "a".repeat(MAX_TOKEN_BYTES);
    expect_reason(&refused(&v, &junk, at(30)).await, "not a signed JWT");
    assert_eq!(idp.jwks_fetches(), 0);
    idp.stop().await;
}

#[tokio::test]
async fn a_discovery_document_cannot_send_pacer_to_keys_elsewhere() {
    let idp = Idp::start(&[rsa()]).await;
    let v = verifier(vec![identity(&idp.url)]);
    let token = mint(rsa(), &github_claims(&idp.url));
    let port = idp.url.rsplit(':').next().unwrap();

    // The same server by another name is another origin.
    *idp.state.discovery.lock().unwrap() = Some(json!({
        "issuer": idp.url,
        "jwks_uri": format!("http://localhost:{port}/jwks"),
    }));
    let rejection = refused(&v, &token, at(30)).await;
    expect_reason(&rejection, "another origin");
    assert_eq!(idp.jwks_fetches(), 0);

    // Nor may it name another issuer.
    *idp.state.discovery.lock().unwrap() = Some(json!({
        "issuer": "https://token.actions.githubusercontent.com",
        "jwks_uri": format!("{}/jwks", idp.url),
    }));
    let rejection = refused(&v, &token, at(91)).await;
    expect_reason(&rejection, "does not name that issuer");
    assert_eq!(idp.jwks_fetches(), 0);

    *idp.state.discovery.lock().unwrap() = None;
    assert!(v.verify(&token, at(152)).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 1);
    idp.stop().await;
}

#[tokio::test]
async fn a_jwks_over_100_kib_or_behind_a_redirect_is_refused() {
    let idp = Idp::start(&[rsa()]).await;
    let claims = github_claims(&idp.url);
    let token = mint(rsa(), &claims);
    let at_url = |path: &str| TrustedIdentity {
        jwks_url: Some(format!("{}{path}", idp.url)),
        ..identity(&idp.url)
    };

    for path in ["/big-jwks", "/streamed-big-jwks"] {
        let v = verifier(vec![at_url(path)]);
        expect_reason(&refused(&v, &token, at(30)).await, "larger than 100 KiB");
    }
    let v = verifier(vec![at_url("/moved-jwks")]);
    expect_reason(
        &refused(&v, &token, at(30)).await,
        "redirects are not followed",
    );
    assert_eq!(idp.jwks_fetches(), 2, "/jwks itself was never reached");

    // A configured jwks_url needs no discovery.
    let v = verifier(vec![at_url("/jwks")]);
    assert!(v.verify(&token, at(30)).await.is_ok());
    assert_eq!(idp.discovery_fetches(), 0);
    idp.stop().await;
}

#[tokio::test]
async fn an_issuer_that_cannot_be_reached_refuses_with_the_reason() {
    let idp = Idp::start(&[rsa()]).await;
    let url = idp.url.clone();
    idp.stop().await;
    let v = verifier(vec![identity(&url)]);
    let token = mint(rsa(), &github_claims(&url));
    let rejection = refused(&v, &token, at(30)).await;
    expect_reason(&rejection, "could not be fetched");
    assert_eq!(rejection.kind, RejectionKind::InvalidToken);
}

#[test]
fn identities_of_one_issuer_must_take_its_keys_from_one_place() {
    let a = identity("https://token.actions.githubusercontent.com");
    let b = TrustedIdentity {
        name: "other".into(),
        jwks_url: Some("https://token.actions.githubusercontent.com/.well-known/jwks".into()),
        ..a.clone()
    };
    let err = WorkloadVerifier::new(vec![a.clone(), b]).unwrap_err();
    assert!(err.to_string().contains("one place"), "{err}");
    let bad_url = TrustedIdentity {
        jwks_url: Some("file:///etc/keys".into()),
        ..a.clone()
    };
    assert!(WorkloadVerifier::new(vec![bad_url]).is_err());
    let not_url = identity("token.actions.githubusercontent.com");
    assert!(WorkloadVerifier::new(vec![not_url]).is_err());
    let v = WorkloadVerifier::new(vec![a.clone(), a]).unwrap();
    assert!(v.identity("gha").is_some() && v.identity("nobody").is_none());
}

// Property tests: whatever arrives as a token gets an answer, never a panic.

const PROP_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// A verifier whose issuer's keys (Ed25519, for fast signing) are cached
/// and were fetched at `at(1000)`: at any earlier `now` they are fresh and
/// may not be fetched again, so these tests make no request. Were one
/// made, the runtime, which has no I/O driver, would fail the test.
fn seeded_verifier() -> &'static WorkloadVerifier {
    static VERIFIER: OnceLock<WorkloadVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let v = verifier(vec![TrustedIdentity {
            jwks_url: Some("http://127.0.0.1:9/jwks".into()),
            ..identity(PROP_ISSUER)
        }]);
        let keys = v.issuers.get(PROP_ISSUER).unwrap();
        let jwk = serde_json::from_value(ed().jwk.clone()).unwrap();
        *crate::sync::lock(&keys.cache) = Some(Arc::new(CachedKeys {
            keys: vec![jwk],
            fetched_at: at(1000),
        }));
        *keys.last_fetch.try_lock().unwrap() = Some(at(1000));
        v
    })
}

fn verify_now(token: &str, now: Time) -> Result<VerifiedToken, TokenRejection> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(seeded_verifier().verify(token, now))
}

/// Claims as GitHub writes them, at their edges, or any JSON at all.
fn any_claims() -> impl Strategy<Value = Map<String, Value>> {
    let real = github_claims(PROP_ISSUER);
    let example = |name: &str| real.get(name).cloned().unwrap();
    let times = |base: i64| {
        vec![
            json!(base),
            json!(base + 61),
            json!(base - 61),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(-1),
            json!(1e300),
            json!("1750000000"),
        ]
    };
    crate::arbitrary::object_with(vec![
        (
            "iss",
            vec![json!(PROP_ISSUER), json!(format!("{PROP_ISSUER}/"))],
        ),
        (
            "aud",
            vec![json!(AUDIENCE), json!([AUDIENCE, "x"]), json!(["x"])],
        ),
        (
            "sub",
            vec![example("sub"), json!("repo:evil/x:ref:refs/heads/main")],
        ),
        (
            "repository",
            vec![example("repository"), json!(""), json!("r".repeat(600))],
        ),
        (
            "repository_owner_id",
            vec![example("repository_owner_id"), json!(1234567)],
        ),
        ("job_workflow_ref", vec![example("job_workflow_ref")]),
        ("jti", vec![example("jti"), json!(""), json!(1)]),
        ("iat", times(T0)),
        ("nbf", times(T0 - 600)),
        ("exp", times(T0 + 300)),
    ])
}

/// Headers a forger might write.
fn any_header() -> impl Strategy<Value = Map<String, Value>> {
    crate::arbitrary::object_with(vec![
        (
            "alg",
            vec![
                json!("EdDSA"),
                json!("RS256"),
                json!("none"),
                json!("HS256"),
                json!("ES512"),
            ],
        ),
        ("kid", vec![json!("ed-1"), json!("rsa-1"), json!("")]),
        ("typ", vec![json!("JWT")]),
        ("jku", vec![json!("http://127.0.0.1:9/evil")]),
        ("crit", vec![json!(["exp"])]),
    ])
}

/// GitHub's claims with up to two of them changed (to an edge value or any
/// JSON at all) or removed: near enough to valid that many verify.
fn near_github_claims() -> impl Strategy<Value = Map<String, Value>> {
    let fields = vec![
        "iss",
        "aud",
        "sub",
        "repository",
        "repository_owner_id",
        "job_workflow_ref",
        "jti",
        "iat",
        "nbf",
        "exp",
    ];
    let edge = prop_oneof![
        proptest::sample::select(vec![
            json!(T0 - 1000),
            json!(T0 + 1000),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(""),
            json!([AUDIENCE]),
            json!(format!("{PROP_ISSUER}/")),
            json!("r".repeat(600)),
        ]),
        crate::arbitrary::any_json(),
    ];
    let change = (
        proptest::sample::select(fields),
        proptest::option::weighted(0.8, edge),
    );
    proptest::collection::vec(change, 0..3).prop_map(|changes| {
        let mut claims = github_claims(PROP_ISSUER);
        for (field, value) in changes {
            match value {
                Some(value) => claims.insert(field.to_string(), value),
                None => claims.remove(field),
            };
        }
        claims
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_as_a_token_is_refused(
        token in prop_oneof![
            crate::arbitrary::hostile_text(),
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,90}",
            "eyJ[A-Za-z0-9_=.+/-]{0,300}",
        ],
        now in -1000i64..1000,
    ) {
        let rejection = verify_now(&token, at(now)).unwrap_err();
        prop_assert_eq!(rejection.kind, RejectionKind::InvalidToken);
        prop_assert_eq!(rejection.token_sha256, sha256_hex(&token));
    }

    #[test]
    fn any_header_and_claims_without_a_valid_signature_are_refused(
        header in any_header(),
        claims in any_claims(),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let token = format!(
            "{}.{}.{}",
            B64.encode(Value::Object(header).to_string()),
            B64.encode(Value::Object(claims).to_string()),
            B64.encode(&signature),
        );
        prop_assert!(verify_now(&token, at(30)).is_err());
    }

    #[test]
    fn any_json_as_header_or_claims_is_refused(header in crate::arbitrary::any_json(), claims in crate::arbitrary::any_json()) {
        let token = format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string()),
            B64.encode([7u8; 64]),
        );
        prop_assert!(verify_now(&token, at(30)).is_err());
    }

    #[test]
    fn signed_claims_verify_only_when_every_check_holds(
        claims in prop_oneof![any_claims(), near_github_claims()],
        now in -100i64..1000,
    ) {
        // What the issuer itself could sign: never a panic, trust only for
        // claims that pass every rule, and always for GitHub's own.
        let token = mint(ed(), &claims);
        let result = verify_now(&token, at(now));
        if claims == github_claims(PROP_ISSUER) && (-60..=360).contains(&now) {
            prop_assert!(result.is_ok(), "{:?}", result);
        }
        if let Ok(verified) = result {
            let number = |name: &str| numeric_date(&claims, name).unwrap();
            let (exp, iat) = (number("exp").unwrap(), number("iat").unwrap());
            prop_assert_eq!(claims.get("iss"), Some(&json!(PROP_ISSUER)));
            prop_assert!(audience_contains(&claims, AUDIENCE));
            prop_assert!(T0 + now <= exp + LEEWAY_SECS && iat <= T0 + now + LEEWAY_SECS);
            prop_assert!(iat <= exp && exp - iat <= 900);
            prop_assert!(number("nbf").is_none_or(|nbf| nbf <= T0 + now + LEEWAY_SECS));
            prop_assert!(identity(PROP_ISSUER).check_claims(&claims).is_ok());
            // A number names its owner as JSON writes it.
            let repository = match &claims["repository"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            prop_assert_eq!(&verified.owner, &format!("gha:{repository}"));
            prop_assert_eq!(Some(&json!(verified.jti)), claims.get("jti"));
            prop_assert_eq!(verified.claims, claims);
        }
    }

    #[test]
    fn a_token_verifies_only_untouched(tampering in crate::auth::tampering::tamper(any_claims().prop_map(Value::Object))) {
        let token = mint(ed(), &github_claims(PROP_ISSUER));
        let changed = tampering.apply(&token);
        match verify_now(&changed, at(30)) {
            Ok(_) => prop_assert_eq!(changed, token),
            Err(_) => prop_assert_ne!(changed, token),
        }
    }
}
