//! Console SSO against a real OpenID Provider (npm `oidc-provider` on
//! loopback, on its own port so its origin differs from pacer's): the whole
//! redirect flow without a browser, the allowlists, provisioning and linking.

use std::time::Duration;

use pacer_shared::auth::oidc::{self, OidcClient, OidcSettings};
use pacer_shared::config::Secret;
use pacer_shared::service::auth::AuthSettings;
use serde_json::{Value, json};

use crate::oidc_provider::{OidcProvider, TestAccount, TestClient};
use crate::support::{LocalPacer, local_ports};

struct Sso {
    pacer: LocalPacer,
    idp: OidcProvider,
}

fn accounts() -> Vec<TestAccount> {
    vec![
        TestAccount::new("alice", "Alice@Example.com")
            .claim("groups", json!(["pacer-admins", "dev"])),
        TestAccount::new("bob", "bob@example.com").claim("groups", json!(["dev"])),
        TestAccount::new("carol", "carol@other.org").claim("cognito:groups", json!(["Ops"])),
        TestAccount::new("dave", "dave@example.com").claim("roles", json!(["pacer-admins"])),
        TestAccount::new("eve", "eve@example.com").email_verified(false),
    ]
}

/// The relying party's settings for an IdP at `issuer`, pacer at `port`.
fn settings(issuer: &str, port: u16) -> OidcSettings {
    OidcSettings {
        issuer: issuer.trim_end_matches('/').to_string(),
        client_id: "pacer-console".into(),
        client_secret: Secret::new("console-secret"),
        redirect_url: redirect_url(port),
        scopes: vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "groups".into(),
        ],
        require_email_verified: true,
        allowed_emails: vec![],
        allowed_domains: vec![],
        groups_claim: Some("groups".into()),
        allowed_groups: vec![],
        admin_groups: vec![],
    }
}

fn redirect_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/api/auth/oidc/callback")
}

fn console_client(port: u16) -> TestClient {
    TestClient::new("pacer-console", "console-secret", &redirect_url(port))
}

/// pacer on `port` with SSO through `sso` and local login off.
async fn serve(port: u16, sso: oidc::Sso) -> LocalPacer {
    let dir = tempfile::tempdir().unwrap();
    let (ports, fleet) = local_ports(dir.path());
    let auth = AuthSettings {
        jwt_secret: Secret::new("sso-test-jwt-secret-0123456789abcdef-0123"),
        session_ttl: Duration::from_secs(3600),
        local: false,
        login_attempts: 10,
        login_window: Duration::from_secs(300),
        oidc_issuer_host: Some("127.0.0.1".into()),
        secure_cookie: false,
    };
    LocalPacer::serve_on(port, ports, fleet, dir, Some(auth), Some(sso)).await
}

async fn sso(change: impl FnOnce(&mut OidcSettings)) -> Sso {
    let port = crate::process::free_port();
    let idp = OidcProvider::start(console_client(port), accounts()).await;
    let mut settings = settings(&idp.issuer, port);
    change(&mut settings);
    let client = OidcClient::discover(settings)
        .await
        .expect("discovery at start");
    let pacer = serve(port, oidc::Sso::discovered(client)).await;
    Sso { pacer, idp }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs the whole flow for `account`; returns the callback's status and the
/// session cookie it set, if any.
async fn sign_in(s: &Sso, account: &str) -> (u16, Option<String>) {
    let http = no_redirects();
    let started = http
        .get(format!("{}/api/auth/oidc/start", s.pacer.base))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 302);
    let state_cookie = started
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        state_cookie.contains("SameSite=Lax")
            && state_cookie.contains("Path=/api/auth/oidc")
            && state_cookie.contains("HttpOnly"),
        "{state_cookie}"
    );
    let authorize = started
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    let callback = s
        .idp
        .sign_in(&authorize, account)
        .await
        .expect("the IdP signs the account in");
    let cookie = state_cookie.split(';').next().unwrap().to_string();
    let res = http
        .get(&callback)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let session = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("pacer_session=") && !v.starts_with("pacer_session=;"))
        .map(|v| v.split(';').next().unwrap().to_string());
    (status, session)
}

async fn me(s: &Sso, session: &str) -> Value {
    let res = s
        .pacer
        .http
        .get(format!("{}/api/auth/me", s.pacer.base))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sso_user_is_an_admin_and_later_ones_are_viewers() {
    let s = sso(|_| {}).await;
    let (status, session) = sign_in(&s, "alice").await;
    assert_eq!(status, 302, "back to the console");
    let alice = me(&s, &session.expect("a session")).await;
    assert_eq!(
        (
            alice["email"].as_str(),
            alice["role"].as_str(),
            alice["sso"].as_bool()
        ),
        (Some("alice@example.com"), Some("admin"), Some(true))
    );
    let (_, session) = sign_in(&s, "bob").await;
    assert_eq!(me(&s, &session.unwrap()).await["role"], "viewer");
    // Signing in again finds the same user by subject.
    let (_, session) = sign_in(&s, "alice").await;
    assert_eq!(me(&s, &session.unwrap()).await["id"], alice["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_is_denied_with_a_generic_page_and_an_audited_reason() {
    let s = sso(|_| {}).await;
    let (status, session) = sign_in(&s, "eve").await;
    assert_eq!((status, session), (403, None));
    // (The audit log needs an admin: alice.)
    let (_, admin) = sign_in(&s, "alice").await;
    let res = s
        .pacer
        .http
        .get(format!(
            "{}/api/audit?action=auth.oidc.login_denied",
            s.pacer.base
        ))
        .header("cookie", admin.unwrap())
        .send()
        .await
        .unwrap();
    let audit: Value = res.json().await.unwrap();
    assert!(
        audit["items"][0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("email_verified"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlists_admit_by_email_else_by_every_listed_domain_and_group() {
    let s = sso(|o| {
        o.allowed_emails = vec!["carol@other.org".into()];
        o.allowed_domains = vec!["example.com".into()];
        o.allowed_groups = vec!["PACER-ADMINS".into()];
    })
    .await;
    assert_eq!(
        sign_in(&s, "alice").await.0,
        302,
        "domain and group (case-insensitive) both pass"
    );
    assert_eq!(
        sign_in(&s, "bob").await.0,
        403,
        "the domain passes, the group does not"
    );
    assert_eq!(
        sign_in(&s, "carol").await.0,
        302,
        "an allowed email passes alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_read_through_the_configured_claim_and_admin_groups_make_admins() {
    for (claim, account) in [("cognito:groups", "carol"), ("roles", "dave")] {
        let s = sso(|o| {
            o.groups_claim = Some(claim.into());
            o.allowed_groups = vec!["ops".into(), "pacer-admins".into()];
            o.admin_groups = vec!["ops".into(), "pacer-admins".into()];
        })
        .await;
        // Someone else signs in first, so the admin role comes from the group.
        let (status, session) = sign_in(&s, account).await;
        assert_eq!(status, 302, "{claim}");
        assert_eq!(me(&s, &session.unwrap()).await["role"], "admin", "{claim}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_is_refused() {
    let s = sso(|_| {}).await;
    let http = no_redirects();
    let started = http
        .get(format!("{}/api/auth/oidc/start", s.pacer.base))
        .send()
        .await
        .unwrap();
    let cookie = started
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = started
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let callback = s.idp.sign_in(&authorize, "alice").await.unwrap();
    assert_eq!(
        http.get(&callback)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        302
    );
    assert_eq!(
        http.get(&callback)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403,
        "state and code are single-use"
    );
    // And a callback without the browser's state cookie is refused.
    assert_eq!(
        http.get(&callback).send().await.unwrap().status().as_u16(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_is_linked_by_verified_email_on_their_first_sso_sign_in() {
    let s = sso(|_| {}).await;
    let (_, admin) = sign_in(&s, "alice").await;
    let admin = admin.unwrap();
    let res = s
        .pacer
        .http
        .post(format!("{}/api/users", s.pacer.base))
        .header("cookie", &admin)
        .json(&json!({"email": "bob@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let local: Value = res.json().await.unwrap();

    let (_, session) = sign_in(&s, "bob").await;
    let bob = me(&s, &session.unwrap()).await;
    assert_eq!(bob["id"], local["id"], "the same user, now with SSO");
    assert_eq!(bob["sso"], true);
    let res = s
        .pacer
        .http
        .get(format!(
            "{}/api/audit?action=user.oidc_linked",
            s.pacer.base
        ))
        .header("cookie", &admin)
        .send()
        .await
        .unwrap();
    let audit: Value = res.json().await.unwrap();
    assert_eq!(audit["items"][0]["target"], local["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_info_names_the_idp_for_the_sso_button() {
    let s = sso(|_| {}).await;
    let res = s
        .pacer
        .http
        .get(format!("{}/api/auth/info", s.pacer.base))
        .send()
        .await
        .unwrap();
    let info: Value = res.json().await.unwrap();
    assert_eq!(
        info,
        json!({"enabled": true, "local": false, "oidc": {"issuer_host": "127.0.0.1"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_allowlist_denies_everyone_it_does_not_name() {
    let only_emails = sso(|o| o.allowed_emails = vec!["bob@example.com".into()]).await;
    assert_eq!(sign_in(&only_emails, "bob").await.0, 302);
    assert_eq!(
        sign_in(&only_emails, "alice").await.0,
        403,
        "only allowed_emails set, and not in it"
    );
    let only_domains = sso(|o| o.allowed_domains = vec!["other.org".into()]).await;
    assert_eq!(sign_in(&only_domains, "carol").await.0, 302);
    assert_eq!(
        sign_in(&only_domains, "bob").await.0,
        403,
        "example.com is not listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_cannot_sign_in_through_the_idp() {
    let s = sso(|_| {}).await;
    let (_, admin) = sign_in(&s, "alice").await;
    let admin = admin.unwrap();
    let (_, bob) = sign_in(&s, "bob").await;
    let bob_id = me(&s, &bob.unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = s
        .pacer
        .http
        .patch(format!("{}/api/users/{bob_id}", s.pacer.base))
        .header("cookie", &admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(sign_in(&s, "bob").await, (403, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_down_at_start_is_discovered_by_the_first_sign_in_that_finds_it_up() {
    // Given pacer started while nothing answers at its issuer's address
    let (port, idp_port) = (crate::process::free_port(), crate::process::free_port());
    let sso = oidc::Sso::at_start(settings(&format!("http://127.0.0.1:{idp_port}"), port))
        .await
        .expect("an IdP that does not answer does not stop pacer");
    let pacer = serve(port, sso).await;
    assert_eq!(
        pacer
            .http
            .get(format!("{}/healthz", pacer.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // When someone tries to sign in, they are told the IdP is not answering
    let started = no_redirects()
        .get(format!("{}/api/auth/oidc/start", pacer.base))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 502);
    let page = started.text().await.unwrap();
    assert!(page.contains("127.0.0.1 is not answering pacer"), "{page}");

    // Then once the IdP is up at that address, the next sign-in discovers it and works
    let idp = OidcProvider::start_on(idp_port, console_client(port), accounts()).await;
    let s = Sso { pacer, idp };
    let (status, session) = sign_in(&s, "alice").await;
    assert_eq!(status, 302);
    assert_eq!(
        me(&s, &session.expect("a session")).await["email"],
        "alice@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_that_answers_wrongly_at_start_stops_pacer() {
    // An address that answers, but is no OpenID Provider: pacer's own healthz server.
    let s = sso(|_| {}).await;
    let err = oidc::Sso::at_start(settings(&s.pacer.base, crate::process::free_port()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("auth.oidc.issuer") && err.to_string().contains("HTTP 404"),
        "{err}"
    );
}

/// The audit entries an action left, read from the store.
async fn audited(s: &Sso, action: &str) -> usize {
    let filter = pacer_shared::store::AuditFilter {
        action: Some(action.into()),
        ..Default::default()
    };
    let page = pacer_shared::store::PageRequest::first(500);
    s.pacer
        .ports
        .store
        .list_audit(&filter, &page)
        .await
        .unwrap()
        .items
        .len()
}

/// Fifty forged callbacks once wrote fifty audit rows in a fifth of a second:
/// the callback is unauthenticated, and nothing counted its failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_callbacks_count_against_the_sign_in_limit_and_stop_being_audited_past_it() {
    let s = sso(|_| {}).await;
    let http = no_redirects();
    let mut answers = Vec::new();
    for n in 0..50 {
        let res = http
            .get(format!(
                "{}/api/auth/oidc/callback?code=c&state=forged-{n}",
                s.pacer.base
            ))
            .send()
            .await
            .unwrap();
        answers.push((
            res.status().as_u16(),
            res.headers().get("retry-after").is_some(),
        ));
    }
    assert_eq!(
        answers.iter().filter(|a| **a == (403, false)).count(),
        10,
        "the limit's ten attempts fail as before"
    );
    assert_eq!(
        answers.iter().filter(|a| **a == (429, true)).count(),
        40,
        "then 429 with Retry-After: {answers:?}"
    );
    assert_eq!(
        audited(&s, "auth.oidc.login_failed").await,
        10,
        "one audit entry per counted attempt, no more"
    );

    // The limit is shared with password sign-ins from the same address.
    let login = s
        .pacer
        .http
        .post(format!("{}/api/auth/login", s.pacer.base))
        .json(&json!({"email": "a@b.c", "password": "x"}));
    assert_ne!(login.send().await.unwrap().status().as_u16(), 200);
}
