//! A real OpenID Provider for the SSO tests: npm `oidc-provider` (tests/oidc/provider.mjs) on
//! 127.0.0.1, on a port of its own (so the issuer and pacer's redirect URL differ in origin),
//! stopped on drop.
//!
//! [`OidcProvider::start`] runs it with one static confidential client ([`TestClient`]:
//! authorization code only, PKCE S256 required, `client_secret_basic`, and `client_secret_post`
//! accepted too) and test accounts ([`TestAccount`]: `sub`, `email`, `email_verified` and any
//! extra claims). With the scopes `openid email profile groups`, the ID token itself carries
//! `sub`, `email`, `email_verified`, the profile claims the account has and every other extra
//! claim (`groups`, `cognito:groups`, `roles`, …), not only the userinfo response.
//!
//! [`OidcProvider::sign_in`] is the browser: from an authorization URL (as pacer's
//! `/api/auth/oidc/start` redirects to) it follows the provider's redirects with a cookie jar of
//! its own, submits the built-in login form (`login` = the account's `sub`, any password) and the
//! consent form, and stops at the redirect to the client's redirect URI, returning that URL
//! (`code`, `state`, `iss`) without fetching it. The other helpers (PKCE pair, authorization URL,
//! code exchange, JWT payload) let a test play the relying party itself.
//!
//! The tests at the bottom check the provider alone (no pacer code): discovery, JWKS, the whole
//! code flow with PKCE and the claims in the ID token, and the PKCE and code checks it enforces.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Url, redirect};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// How long the provider may take to listen (Node and oidc-provider load in well under a second
/// on an idle machine; CI runs it beside hundreds of other tests on two cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long generating the test process's one RSA signing key may take: RSA key generation has a
/// long tail, and once took more than 20 s on a loaded CI machine.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(180);

/// The one RSA signing key (a private JWK) every provider of this test process signs with.
static SIGNING_KEY: tokio::sync::OnceCell<Value> = tokio::sync::OnceCell::const_new();
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects and form posts one sign-in may take: authorize → login → authorize → consent →
/// authorize → redirect URI is about 8.
const MAX_SIGN_IN_STEPS: usize = 20;

/// The provider's one static client: confidential, authorization code with PKCE S256.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    /// More client metadata merged over the defaults (e.g. `{"id_token_signed_response_alg":
    /// "ES256"}`); `Value::Null` for none.
    pub extra: Value,
}

impl TestClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        TestClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            extra: Value::Null,
        }
    }
}

/// A machine client of the provider: it gets JWT access tokens for itself
/// (client credentials) for one resource, as a workload identity provider
/// issues them.
#[derive(Debug, Clone)]
pub struct MachineClient {
    pub client_id: String,
    pub client_secret: String,
    /// The resource indicator (RFC 8707) it asks for: an absolute URI.
    pub resource: String,
    /// The tokens' `aud`.
    pub audience: String,
}

/// A user of the provider. `sub` is also what its login form takes.
#[derive(Debug, Clone)]
pub struct TestAccount {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Extra claims: `groups`, `cognito:groups`, `roles`, `name`, … (any JSON).
    pub claims: Map<String, Value>,
}

impl TestAccount {
    /// An account with a verified email and no extra claims.
    pub fn new(sub: &str, email: &str) -> Self {
        TestAccount {
            sub: sub.into(),
            email: Some(email.into()),
            email_verified: true,
            claims: Map::new(),
        }
    }

    pub fn email_verified(mut self, verified: bool) -> Self {
        self.email_verified = verified;
        self
    }

    /// Adds a claim, e.g. `.claim("groups", json!(["ci-admins"]))`.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "sub": self.sub,
            "email": self.email,
            "email_verified": self.email_verified,
            "claims": self.claims,
        })
    }
}

/// A PKCE pair: the verifier the relying party keeps, the S256 challenge it sends.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = base64url(&rand::random::<[u8; 32]>());
        let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// oidc-provider running as a child process; killed on drop (and it exits by itself when the
/// test process dies, since its stdin closes).
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, exactly as the discovery document and the tokens say it.
    pub issuer: String,
    pub client: TestClient,
    pub accounts: Vec<TestAccount>,
    pub machine: Option<MachineClient>,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    pub async fn start(client: TestClient, accounts: Vec<TestAccount>) -> OidcProvider {
        Self::start_on(0, client, accounts).await
    }

    /// Like [`OidcProvider::start`], on a given loopback port (0: any free one).
    pub async fn start_on(
        port: u16,
        client: TestClient,
        accounts: Vec<TestAccount>,
    ) -> OidcProvider {
        Self::launch(port, client, accounts, None).await
    }

    /// A provider that also serves `machine` its own tokens.
    pub async fn start_with_machine(machine: MachineClient) -> OidcProvider {
        let client = TestClient::new("console", "console-secret", "http://127.0.0.1:9/callback");
        Self::launch(0, client, vec![], Some(machine)).await
    }

    async fn launch(
        port: u16,
        client: TestClient,
        accounts: Vec<TestAccount>,
        machine: Option<MachineClient>,
    ) -> OidcProvider {
        pacer_shared::http_client::install_crypto_provider();
        let root = pacer_test_support::in_repo("");
        let script = root.join("tests/oidc/provider.mjs");
        let package = root.join("tests/node_modules/oidc-provider/package.json");
        if !package.exists() {
            panic!(
                "{} is missing: the SSO tests need npm `oidc-provider`. Run `make test` (or \
                 `make test-deps`), which installs tests/node_modules with `npm ci --prefix tests`",
                package.display()
            );
        }

        let signing_key = SIGNING_KEY
            .get_or_init(|| generate_signing_key(&root))
            .await
            .clone();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("oidc-provider.json");
        let body = json!({
            "port": port,
            "client": {
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "redirect_uris": client.redirect_uris,
                "extra": client.extra,
            },
            "accounts": accounts.iter().map(TestAccount::to_json).collect::<Vec<_>>(),
            "machine": machine.as_ref().map(|m| json!({
                "client_id": m.client_id,
                "client_secret": m.client_secret,
                "resource": m.resource,
                "audience": m.audience,
            })),
            "signing_key": signing_key,
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&body).unwrap()).unwrap();

        let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
        let mut child = Command::new(&node)
            .arg(&script)
            .arg(&config)
            .current_dir(root.join("tests"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{node}` ({e}): the SSO tests need Node.js and npm `oidc-provider`. \
                     Run `make test`, which installs what the tests need"
                )
            });
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(String::new()));

        // stderr: kept for error messages, for the whole life of the process.
        let mut stderr = child.stderr.take().unwrap();
        let sink = output.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        // stdout: notices, then the ready line; drained afterwards so the pipe never fills.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = output.clone();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["ready"] == true {
                        return v["issuer"].as_str().map(str::to_owned);
                    }
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
            None
        })
        .await;
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let issuer = match ready {
            Ok(Some(issuer)) => issuer,
            other => {
                let _ = child.start_kill();
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "oidc-provider did not start ({}); its output:\n{}",
                    if other.is_err() {
                        "timed out"
                    } else {
                        "exited"
                    },
                    output.lock().unwrap()
                );
            }
        };

        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        OidcProvider {
            issuer,
            client,
            accounts,
            machine,
            child,
            stdin,
            output,
            http,
            _dir: dir,
        }
    }

    /// A fresh access token for the machine client (client credentials).
    pub async fn machine_token(&self) -> String {
        let machine = self
            .machine
            .as_ref()
            .expect("started with a machine client");
        let res = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(&machine.client_id, Some(&machine.client_secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", machine.resource.as_str()),
                ("scope", "runners"),
            ])
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "client_credentials: {status} {body}\n{}",
            self.logs()
        );
        body["access_token"].as_str().unwrap().to_string()
    }

    /// What the provider wrote to stdout and stderr so far (its warnings and errors).
    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The provider's endpoints are fixed paths under the issuer (discovery says the same).
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// An authorization request as a relying party builds it: code flow, the client's first
    /// redirect URI, PKCE S256.
    pub fn authorize_url(&self, scope: &str, state: &str, nonce: &str, pkce: &Pkce) -> String {
        Url::parse_with_params(
            &self.authorization_endpoint(),
            &[
                ("response_type", "code"),
                ("client_id", self.client.client_id.as_str()),
                ("redirect_uri", self.client.redirect_uris[0].as_str()),
                ("scope", scope),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap()
        .into()
    }

    /// Exchanges a code at the token endpoint with `client_secret_basic`; answers the status
    /// and the JSON body (`id_token`, `access_token`, … or `error`).
    pub async fn exchange_code(&self, code: &str, verifier: &str) -> (u16, Value) {
        let res = self
            .http
            .post(self.token_endpoint())
            .basic_auth(&self.client.client_id, Some(&self.client.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.client.redirect_uris[0].as_str()),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}: {e}", self.token_endpoint()));
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Plays the browser from `authorize_url` (which must point at this provider) to the
    /// redirect back to one of the client's redirect URIs, signing in as the account whose
    /// `sub` is `account` and consenting. Answers that redirect URL unfetched: `code`, `state`
    /// and `iss` on success, or `error` (and `error_description`) when the provider refuses the
    /// request itself (e.g. no PKCE challenge). Each call is a fresh browser: its own cookies.
    /// An account the provider was not started with is an error here (oidc-provider itself
    /// would answer 500 after the login form).
    pub async fn sign_in(&self, authorize_url: &str, account: &str) -> Result<String, String> {
        if !self.accounts.iter().any(|a| a.sub == account) {
            return Err(format!("no test account {account:?} at {}", self.issuer));
        }
        let mut jar = CookieJar::default();
        let mut url = Url::parse(authorize_url)
            .map_err(|e| format!("bad authorize URL {authorize_url}: {e}"))?;
        let mut form: Option<Vec<(String, String)>> = None;
        let mut trail = Vec::new();
        for _ in 0..MAX_SIGN_IN_STEPS {
            if !self.same_origin(&url) {
                return Err(self.failure(&trail, &format!("the flow left the provider for {url}")));
            }
            let mut req = match &form {
                None => self.http.get(url.clone()),
                Some(fields) => self.http.post(url.clone()).form(fields),
            };
            if let Some(cookie) = jar.header(url.path()) {
                req = req.header(reqwest::header::COOKIE, cookie);
            }
            trail.push(format!(
                "{} {url}",
                if form.is_some() { "POST" } else { "GET" }
            ));
            let res = req
                .send()
                .await
                .map_err(|e| self.failure(&trail, &format!("request failed: {e}")))?;
            let status = res.status();
            for value in res.headers().get_all(reqwest::header::SET_COOKIE) {
                if let Ok(value) = value.to_str() {
                    jar.store(value);
                }
            }
            if status.is_redirection() {
                let location = res
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| self.failure(&trail, &format!("{status} without a Location")))?;
                let next = url
                    .join(location)
                    .map_err(|e| self.failure(&trail, &format!("bad Location {location}: {e}")))?;
                if self.is_redirect_uri(&next) {
                    return Ok(next.into());
                }
                url = next;
                form = None;
                continue;
            }
            let body = res.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::OK {
                return Err(self.failure(&trail, &format!("{status}: {}", excerpt(&body))));
            }
            let Some(page) = parse_form(&body) else {
                return Err(self.failure(
                    &trail,
                    &format!("a page without a form: {}", excerpt(&body)),
                ));
            };
            let action = url.join(&page.action).map_err(|e| {
                self.failure(&trail, &format!("bad form action {}: {e}", page.action))
            })?;
            if self.is_redirect_uri(&action) {
                return Err(self.failure(
                    &trail,
                    "the provider answered with a form_post response; use response_mode=query",
                ));
            }
            let mut fields = page.hidden;
            if page.inputs.iter().any(|name| name == "login") {
                fields.push(("login".into(), account.into()));
                fields.push(("password".into(), "x".into()));
            }
            url = action;
            form = Some(fields);
        }
        Err(self.failure(
            &trail,
            &format!("no redirect to the client after {MAX_SIGN_IN_STEPS} steps"),
        ))
    }

    fn same_origin(&self, url: &Url) -> bool {
        Url::parse(&self.issuer).is_ok_and(|issuer| issuer.origin() == url.origin())
    }

    fn is_redirect_uri(&self, url: &Url) -> bool {
        let mut bare = url.clone();
        bare.set_query(None);
        bare.set_fragment(None);
        self.client
            .redirect_uris
            .iter()
            .any(|r| Url::parse(r).is_ok_and(|r| r == bare))
    }

    fn failure(&self, trail: &[String], what: &str) -> String {
        format!(
            "sign-in at {} failed: {what}\nsteps:\n  {}\nprovider output:\n{}",
            self.issuer,
            trail.join("\n  "),
            self.logs()
        )
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.start_kill();
    }
}

/// Runs tests/oidc/signing-key.mjs for a fresh RSA private JWK.
async fn generate_signing_key(root: &std::path::Path) -> Value {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let run = Command::new(&node)
        .arg(root.join("tests/oidc/signing-key.mjs"))
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(KEYGEN_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run `{node}` for the test signing key: {e}"),
        Err(_) => panic!("tests/oidc/signing-key.mjs took more than {KEYGEN_TIMEOUT:?}"),
    };
    assert!(
        out.status.success(),
        "tests/oidc/signing-key.mjs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let key: Value = serde_json::from_slice(&out.stdout).expect("signing-key.mjs prints one JWK");
    assert_eq!(key["kty"], "RSA", "signing-key.mjs printed {key}");
    key
}

/// A one-host cookie jar: name and path to value; enough for oidc-provider's cookies.
#[derive(Default)]
struct CookieJar {
    cookies: BTreeMap<(String, String), String>,
}

impl CookieJar {
    fn store(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let mut path = "/".to_string();
        let mut expired = value.is_empty();
        for attr in parts {
            let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
            match key.to_ascii_lowercase().as_str() {
                "path" if val.starts_with('/') => path = val.to_string(),
                "max-age" => expired |= val.parse::<i64>().is_ok_and(|age| age <= 0),
                "expires" => expired |= val.contains("1970"),
                _ => {}
            }
        }
        let key = (name.to_string(), path);
        if expired {
            self.cookies.remove(&key);
        } else {
            self.cookies.insert(key, value.to_string());
        }
    }

    fn header(&self, request_path: &str) -> Option<String> {
        let sent: Vec<String> = self
            .cookies
            .iter()
            .filter(|((_, path), _)| {
                request_path == path
                    || (request_path.starts_with(path.as_str())
                        && (path.ends_with('/') || request_path[path.len()..].starts_with('/')))
            })
            .map(|((name, _), value)| format!("{name}={value}"))
            .collect();
        (!sent.is_empty()).then(|| sent.join("; "))
    }
}

/// The first form of a page: its action, its hidden fields, the names of its other inputs.
struct Form {
    action: String,
    hidden: Vec<(String, String)>,
    inputs: Vec<String>,
}

fn parse_form(html: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form = &html[start..end];
    let tag_end = form.find('>')?;
    let action = html_unescape(&attr(&form[..tag_end], "action")?);
    let mut hidden = Vec::new();
    let mut inputs = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        if let Some(name) = attr(tag, "name") {
            if attr(tag, "type").as_deref() == Some("hidden") {
                hidden.push((
                    html_unescape(&name),
                    html_unescape(&attr(tag, "value").unwrap_or_default()),
                ));
            } else {
                inputs.push(html_unescape(&name));
            }
        }
        rest = &rest[i + 6..];
    }
    Some(Form {
        action,
        hidden,
        inputs,
    })
}

/// A double-quoted attribute's raw value within one tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let i = tag.find(&needle)? + needle.len();
    let len = tag[i..].find('"')?;
    Some(tag[i..i + len].to_string())
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn excerpt(body: &str) -> String {
    body.chars().take(800).collect()
}

/// Base64url without padding (RFC 7636, RFC 7515).
pub fn base64url(bytes: &[u8]) -> String {
    crate::b64::encode_url(bytes)
}

/// Decodes base64url, with or without padding.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    crate::b64::decode_url(s)
}

/// The payload of a compact JWS, unverified.
pub fn jwt_payload(token: &str) -> Value {
    let part = token
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes =
        base64url_decode(part).unwrap_or_else(|| panic!("JWT payload is not base64url: {token}"));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("JWT payload is not JSON ({e}): {token}"))
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_ID: &str = "pacer-console";
    const CLIENT_SECRET: &str = "test-client-secret-0123456789";

    /// A client whose redirect URI is on another loopback port than the provider (nothing
    /// listens there: the flow stops before fetching it).
    fn client() -> TestClient {
        let port = crate::process::free_port();
        TestClient::new(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("http://127.0.0.1:{port}/api/auth/oidc/callback"),
        )
    }

    fn accounts() -> Vec<TestAccount> {
        vec![
            TestAccount::new("alice", "Alice@Example.com")
                .claim("name", json!("Alice Admin"))
                .claim("groups", json!(["ci-admins", "everyone"])),
            TestAccount::new("bob", "bob@corp.example")
                .email_verified(false)
                .claim("cognito:groups", json!(["pacer-viewers"]))
                .claim("roles", json!(["Pacer.Admin"]))
                .claim("custom:team", json!("infra")),
        ]
    }

    #[tokio::test]
    async fn oidc_provider_serves_discovery_for_its_issuer_and_a_signing_key() {
        let provider = OidcProvider::start(client(), accounts()).await;
        assert!(
            provider.issuer.starts_with("http://127.0.0.1:"),
            "{}",
            provider.issuer
        );
        let http = reqwest::Client::new();

        let res = http.get(provider.discovery_url()).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let doc: Value = res.json().await.unwrap();
        assert_eq!(doc["issuer"], provider.issuer.as_str());
        assert_eq!(
            doc["authorization_endpoint"],
            provider.authorization_endpoint().as_str()
        );
        assert_eq!(doc["token_endpoint"], provider.token_endpoint().as_str());
        assert_eq!(doc["jwks_uri"], provider.jwks_uri().as_str());
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        for scope in ["openid", "email", "profile", "groups"] {
            assert!(
                doc["scopes_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(scope)),
                "{scope}: {doc}"
            );
        }
        for claim in [
            "email",
            "email_verified",
            "groups",
            "cognito:groups",
            "roles",
            "custom:team",
        ] {
            assert!(
                doc["claims_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(claim)),
                "{claim}: {doc}"
            );
        }

        let res = http.get(provider.jwks_uri()).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let jwks: Value = res.json().await.unwrap();
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1, "{jwks}");
        let key = &keys[0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()), "{key}");
        assert!(key["n"].is_string() && key["e"].is_string(), "{key}");
        assert!(
            key.get("d").is_none() && key.get("p").is_none(),
            "private parts served: {key}"
        );
    }

    #[tokio::test]
    async fn oidc_provider_code_flow_with_pkce_gives_an_id_token_with_the_account_claims() {
        let provider = OidcProvider::start(client(), accounts()).await;
        let redirect_uri = provider.client.redirect_uris[0].clone();
        let scope = "openid email profile groups";

        // alice: verified email, `groups`, a profile claim
        let pkce = Pkce::new();
        let authorize = provider.authorize_url(scope, "state-alice", "nonce-alice", &pkce);
        let back = provider.sign_in(&authorize, "alice").await.unwrap();
        assert!(back.starts_with(&format!("{redirect_uri}?")), "{back}");
        assert_eq!(
            query_param(&back, "state").as_deref(),
            Some("state-alice"),
            "{back}"
        );
        assert_eq!(
            query_param(&back, "iss").as_deref(),
            Some(provider.issuer.as_str()),
            "{back}"
        );
        let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));

        let (status, tokens) = provider.exchange_code(&code, &pkce.verifier).await;
        assert_eq!(status, 200, "{tokens}\n{}", provider.logs());
        assert_eq!(tokens["token_type"], "Bearer");
        let id = jwt_payload(tokens["id_token"].as_str().expect("id_token"));
        assert_eq!(id["iss"], provider.issuer.as_str());
        assert_eq!(id["aud"], CLIENT_ID);
        assert_eq!(id["sub"], "alice");
        assert_eq!(id["nonce"], "nonce-alice");
        assert_eq!(id["email"], "Alice@Example.com");
        assert_eq!(id["email_verified"], true);
        assert_eq!(id["name"], "Alice Admin");
        assert_eq!(id["groups"], json!(["ci-admins", "everyone"]));
        assert!(id["iat"].is_number() && id["exp"].is_number(), "{id}");
        let header = base64url_decode(
            tokens["id_token"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap(),
        )
        .unwrap();
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert!(header["kid"].is_string(), "{header}");

        // bob, in a fresh browser: unverified email, `cognito:groups`, `roles`, a custom claim
        let pkce = Pkce::new();
        let authorize = provider.authorize_url(scope, "state-bob", "nonce-bob", &pkce);
        let back = provider.sign_in(&authorize, "bob").await.unwrap();
        let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let (status, tokens) = provider.exchange_code(&code, &pkce.verifier).await;
        assert_eq!(status, 200, "{tokens}");
        let id = jwt_payload(tokens["id_token"].as_str().unwrap());
        assert_eq!(id["sub"], "bob");
        assert_eq!(id["nonce"], "nonce-bob");
        assert_eq!(id["email"], "bob@corp.example");
        assert_eq!(id["email_verified"], false);
        assert_eq!(id["cognito:groups"], json!(["pacer-viewers"]));
        assert_eq!(id["roles"], json!(["Pacer.Admin"]));
        assert_eq!(id["custom:team"], "infra");
        assert!(id.get("groups").is_none(), "{id}");

        // without the `groups` scope the group claims stay out
        let pkce = Pkce::new();
        let authorize = provider.authorize_url("openid email", "s", "n", &pkce);
        let back = provider.sign_in(&authorize, "bob").await.unwrap();
        let (_, tokens) = provider
            .exchange_code(&query_param(&back, "code").unwrap(), &pkce.verifier)
            .await;
        let id = jwt_payload(tokens["id_token"].as_str().unwrap());
        assert_eq!(id["email"], "bob@corp.example");
        assert!(
            id.get("roles").is_none() && id.get("cognito:groups").is_none(),
            "{id}"
        );
    }

    #[tokio::test]
    async fn oidc_provider_enforces_pkce_and_single_use_codes() {
        let provider = OidcProvider::start(client(), accounts()).await;

        // an authorization request without a challenge comes back with an error, no code
        let mut no_pkce =
            Url::parse(&provider.authorize_url("openid", "st", "n", &Pkce::new())).unwrap();
        let kept: Vec<(String, String)> = no_pkce
            .query_pairs()
            .filter(|(k, _)| !k.starts_with("code_challenge"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        no_pkce.query_pairs_mut().clear().extend_pairs(kept);
        let back = provider.sign_in(no_pkce.as_str(), "alice").await.unwrap();
        assert_eq!(
            query_param(&back, "error").as_deref(),
            Some("invalid_request"),
            "{back}"
        );
        assert_eq!(query_param(&back, "state").as_deref(), Some("st"), "{back}");
        assert!(query_param(&back, "code").is_none(), "{back}");

        // a wrong verifier is refused, and so is the code afterwards (it is consumed)...
        let pkce = Pkce::new();
        let back = provider
            .sign_in(&provider.authorize_url("openid", "s", "n", &pkce), "alice")
            .await
            .unwrap();
        let code = query_param(&back, "code").unwrap();
        let (status, body) = provider.exchange_code(&code, &Pkce::new().verifier).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );

        // ...the right verifier works once, and a replayed code is refused
        let pkce = Pkce::new();
        let back = provider
            .sign_in(&provider.authorize_url("openid", "s", "n", &pkce), "alice")
            .await
            .unwrap();
        let code = query_param(&back, "code").unwrap();
        let (status, body) = provider.exchange_code(&code, &pkce.verifier).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = provider.exchange_code(&code, &pkce.verifier).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );

        // client_secret_post is accepted as well; a wrong secret is not
        let pkce = Pkce::new();
        let back = provider
            .sign_in(&provider.authorize_url("openid", "s", "n", &pkce), "alice")
            .await
            .unwrap();
        let code = query_param(&back, "code").unwrap();
        let post = |secret: &'static str, code: String, verifier: String| {
            let http = reqwest::Client::new();
            let url = provider.token_endpoint();
            let redirect_uri = provider.client.redirect_uris[0].clone();
            async move {
                let res = http
                    .post(url)
                    .form(&[
                        ("grant_type", "authorization_code"),
                        ("code", code.as_str()),
                        ("redirect_uri", redirect_uri.as_str()),
                        ("code_verifier", verifier.as_str()),
                        ("client_id", CLIENT_ID),
                        ("client_secret", secret),
                    ])
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap())
            }
        };
        let (status, body) = post("wrong-secret", code.clone(), pkce.verifier.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
        let (status, body) = post(CLIENT_SECRET, code, pkce.verifier.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["id_token"].is_string(), "{body}");

        // an account the provider does not have cannot sign in
        let err = provider
            .sign_in(
                &provider.authorize_url("openid", "s", "n", &Pkce::new()),
                "nobody",
            )
            .await;
        assert!(
            err.as_ref().is_err_and(|e| e.contains("no test account")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oidc_provider_stops_when_dropped() {
        let provider = OidcProvider::start(client(), accounts()).await;
        let discovery = provider.discovery_url();
        let http = reqwest::Client::new();
        assert_eq!(http.get(&discovery).send().await.unwrap().status(), 200);
        drop(provider);
        for _ in 0..100 {
            if http.get(&discovery).send().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("oidc-provider still answers at {discovery} after drop");
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let encoded = base64url(&bytes);
            assert!(!encoded.contains('='));
            assert_eq!(base64url_decode(&encoded).unwrap(), bytes, "{encoded}");
        }
        // RFC 7636 appendix B
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            base64url(&Sha256::digest(verifier.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
