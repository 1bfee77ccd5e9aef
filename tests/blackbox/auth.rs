//! Console authentication in process: local login, sessions (cookie and
//! bearer), logout, disabled users, roles enforced in one place, the
//! login rate limit, and the users an admin manages.

use std::time::Duration;

use pacer_shared::config::Secret;
use pacer_shared::service::auth::{AuthSettings, bootstrap};
use serde_json::{Value, json};

use crate::support::{LocalPacer, local_ports};

const ADMIN: &str = "admin@example.com";

fn settings(attempts: u32) -> AuthSettings {
    AuthSettings {
        jwt_secret: Secret::new("test-jwt-secret-0123456789abcdef-0123456789"),
        session_ttl: Duration::from_secs(3600),
        local: true,
        login_attempts: attempts,
        login_window: Duration::from_secs(300),
        oidc_issuer_host: None,
        secure_cookie: false,
    }
}

/// pacer with console auth on and its bootstrap admin; returns the admin's password.
async fn pacer(attempts: u32) -> (LocalPacer, String) {
    let dir = tempfile::tempdir().unwrap();
    let (ports, fleet) = local_ports(dir.path());
    let password = bootstrap(&ports, ADMIN)
        .await
        .unwrap()
        .expect("the first user");
    assert_eq!(
        bootstrap(&ports, ADMIN).await.unwrap(),
        None,
        "bootstrap runs once"
    );
    (
        LocalPacer::serve_with_auth(ports, fleet, dir, Some(settings(attempts))).await,
        password,
    )
}

async fn login(p: &LocalPacer, email: &str, password: &str) -> reqwest::Response {
    p.http
        .post(format!("{}/api/auth/login", p.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn token(p: &LocalPacer, email: &str, password: &str) -> String {
    let res = login(p, email, password).await;
    assert_eq!(res.status().as_u16(), 200);
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn call(
    p: &LocalPacer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = p.http.request(method, format!("{}{path}", p.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_sets_a_strict_http_only_cookie_that_works_like_the_bearer_token() {
    let (p, password) = pacer(10).await;
    let res = login(&p, "  Admin@Example.com ", &password).await;
    assert_eq!(res.status().as_u16(), 200);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("pacer_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag");
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(body["expires_at"].is_string());

    let session = cookie.split(';').next().unwrap().to_string();
    let by_cookie = p
        .http
        .get(format!("{}/api/auth/me", p.base))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status().as_u16(), 200);
    let me: Value = by_cookie.json().await.unwrap();
    assert_eq!(
        (me["email"].as_str(), me["role"].as_str()),
        (Some(ADMIN), Some("admin"))
    );
    assert!(me.get("password_hash").is_none());
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/projects", Some(token), None)
            .await
            .0,
        200
    );
    let (s, err) = call(&p, reqwest::Method::GET, "/api/projects", None, None).await;
    assert_eq!((s, err["error"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let (p, _) = pacer(10).await;
    let wrong = login(&p, ADMIN, "not-the-password").await;
    let unknown = login(&p, "nobody@example.com", "whatever").await;
    assert_eq!(
        (wrong.status().as_u16(), unknown.status().as_u16()),
        (401, 401)
    );
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        unknown.json::<Value>().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_attempts_from_one_address_are_429_with_retry_after() {
    let (p, password) = pacer(3).await;
    for _ in 0..3 {
        assert_eq!(login(&p, ADMIN, "wrong").await.status().as_u16(), 401);
    }
    let limited = login(&p, ADMIN, &password).await;
    assert_eq!(
        limited.status().as_u16(),
        429,
        "even the right password waits out the window"
    );
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_sign_ins_do_not_use_up_the_allowance() {
    // Given a limit of 3, an address that signs in 5 times and fails twice
    let (p, password) = pacer(3).await;
    for _ in 0..5 {
        assert_eq!(login(&p, ADMIN, &password).await.status().as_u16(), 200);
    }
    for _ in 0..2 {
        assert_eq!(login(&p, ADMIN, "wrong").await.status().as_u16(), 401);
    }
    // Then one more attempt is still allowed, and after that one failure too many is refused
    assert_eq!(login(&p, ADMIN, "wrong").await.status().as_u16(), 401);
    assert_eq!(login(&p, ADMIN, &password).await.status().as_u16(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_an_edited_token_is_refused() {
    let (p, password) = pacer(10).await;
    let t = token(&p, ADMIN, &password).await;
    let (s, _) = call(
        &p,
        reqwest::Method::POST,
        "/api/auth/logout",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/projects", Some(&t), None)
            .await
            .0,
        401
    );

    let t = token(&p, ADMIN, &password).await;
    let mut edited = t.clone();
    edited.insert(t.len() / 2, 'x');
    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&edited),
            None
        )
        .await
        .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_every_mutation_needs_an_admin() {
    let (p, password) = pacer(10).await;
    let admin = token(&p, ADMIN, &password).await;
    let (s, created) = call(
        &p,
        reqwest::Method::POST,
        "/api/users",
        Some(&admin),
        Some(json!({"email": "Viewer@Example.com"})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["role"], "viewer");
    let one_time = created["password"].as_str().unwrap().to_string();
    let viewer = token(&p, "viewer@example.com", &one_time).await;

    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&viewer),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/jobs", Some(&viewer), None)
            .await
            .0,
        200
    );
    let (s, err) = call(
        &p,
        reqwest::Method::POST,
        "/api/projects",
        Some(&viewer),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!((s, err["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/audit", Some(&viewer), None)
            .await
            .0,
        403,
        "the audit log is for admins"
    );
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/users", Some(&viewer), None)
            .await
            .0,
        403
    );
    // Their own password is theirs to change.
    let body = json!({"current_password": one_time, "new_password": "a-much-better-passphrase"});
    let (s, changed) = call(
        &p,
        reqwest::Method::POST,
        "/api/auth/password",
        Some(&viewer),
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{changed}");
    let viewer = changed["token"]
        .as_str()
        .expect("the session goes on with a new token")
        .to_string();
    assert_eq!(
        login(&p, "viewer@example.com", "a-much-better-passphrase")
            .await
            .status()
            .as_u16(),
        200
    );
    let short = json!({"current_password": "a-much-better-passphrase", "new_password": "short"});
    let (s, err) = call(
        &p,
        reqwest::Method::POST,
        "/api/auth/password",
        Some(&viewer),
        Some(short),
    )
    .await;
    assert_eq!((s, err["field"].as_str()), (422, Some("new_password")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_sessions_stop_at_once() {
    let (p, password) = pacer(10).await;
    let admin = token(&p, ADMIN, &password).await;
    let (_, created) = call(
        &p,
        reqwest::Method::POST,
        "/api/users",
        Some(&admin),
        Some(json!({"email": "ops@example.com", "role": "admin"})),
    )
    .await;
    let ops = token(&p, "ops@example.com", created["password"].as_str().unwrap()).await;
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/projects", Some(&ops), None)
            .await
            .0,
        200
    );

    let path = format!("/api/users/{}", created["id"].as_str().unwrap());
    let (s, updated) = call(
        &p,
        reqwest::Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!((s, updated["disabled"].as_bool()), (200, Some(true)));
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/projects", Some(&ops), None)
            .await
            .0,
        401,
        "its live session is dead"
    );
    assert_eq!(
        login(&p, "ops@example.com", created["password"].as_str().unwrap())
            .await
            .status()
            .as_u16(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_cannot_demote_or_disable_themselves() {
    let (p, password) = pacer(10).await;
    let admin = token(&p, ADMIN, &password).await;
    let (_, me) = call(&p, reqwest::Method::GET, "/api/auth/me", Some(&admin), None).await;
    let path = format!("/api/users/{}", me["id"].as_str().unwrap());
    for change in [json!({"role": "viewer"}), json!({"disabled": true})] {
        let (s, err) = call(
            &p,
            reqwest::Method::PATCH,
            &path,
            Some(&admin),
            Some(change),
        )
        .await;
        assert_eq!(s, 409, "{err}");
    }
    let (s, err) = call(
        &p,
        reqwest::Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!((s, err["field"].as_str()), (422, Some("role")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_info_says_which_sign_in_methods_are_on_without_a_session() {
    let (p, _) = pacer(10).await;
    let (s, info) = call(&p, reqwest::Method::GET, "/api/auth/info", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(info, json!({"enabled": true, "local": true, "oidc": null}));
    assert_eq!(
        call(&p, reqwest::Method::GET, "/api/version", None, None)
            .await
            .0,
        200
    );
    // Webhook and runner callbacks never take sessions: they keep their own auth.
    assert_eq!(
        call(
            &p,
            reqwest::Method::POST,
            "/api/runner/complete",
            None,
            None
        )
        .await
        .0,
        401
    );
}

/// Sessions once survived a password change: whoever had signed in with the
/// old password (a thief, a shared laptop) stayed signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_reset_password_ends_every_other_session_of_its_user() {
    let (p, password) = pacer(10).await;
    let admin = token(&p, ADMIN, &password).await;
    let (_, created) = call(
        &p,
        reqwest::Method::POST,
        "/api/users",
        Some(&admin),
        Some(json!({"email": "dev@example.com"})),
    )
    .await;
    let first = created["password"].as_str().unwrap().to_string();
    let laptop = token(&p, "dev@example.com", &first).await;
    let thief = token(&p, "dev@example.com", &first).await;

    let body = json!({"current_password": first, "new_password": "a-much-better-passphrase"});
    let res = p
        .http
        .post(format!("{}/api/auth/password", p.base))
        .bearer_auth(&laptop)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("pacer_session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let renewed = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&thief),
            None
        )
        .await
        .0,
        401,
        "the other session ended"
    );
    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&laptop),
            None
        )
        .await
        .0,
        401,
        "so did the old token"
    );
    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&renewed),
            None
        )
        .await
        .0,
        200,
        "the new one works"
    );
    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&admin),
            None
        )
        .await
        .0,
        200,
        "other users are untouched"
    );

    // An operator's reset (`pacer admin reset-password`) ends them all.
    pacer_shared::service::auth::reset_password(&p.ports, "dev@example.com")
        .await
        .unwrap();
    assert_eq!(
        call(
            &p,
            reqwest::Method::GET,
            "/api/projects",
            Some(&renewed),
            None
        )
        .await
        .0,
        401
    );
}

/// CSRF rested on `SameSite=Strict` alone: any content type was read as
/// JSON and no Origin was checked, so a cookie-carrying `text/plain` or form
/// POST from another site created projects, and login CSRF worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_another_site_or_without_json_are_refused() {
    let (p, password) = pacer(10).await;
    let res = login(&p, ADMIN, &password).await;
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let post = |path: &str, content_type: &str, headers: &[(&str, &str)]| {
        let mut req = p
            .http
            .post(format!("{}{path}", p.base))
            .header("cookie", &cookie)
            .header("content-type", content_type);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(json!({"name": "planted"}).to_string())
    };
    // A form or text/plain body (what a page elsewhere may send with the browser's cookies unasked): 415.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = post("/api/projects", content_type, &[])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{content_type}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"],
            "unsupported_media_type"
        );
    }
    // JSON, but sent by a page on another site: 403, whatever the body.
    let own = p.base.clone();
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "cross-site")],
    ] {
        let res = post("/api/projects", "application/json", &headers)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{headers:?}");
    }
    let evil_login = p
        .http
        .post(format!("{}/api/auth/login", p.base))
        .header("origin", "https://evil.example")
        .json(&json!({"email": ADMIN, "password": password}));
    assert_eq!(
        evil_login.send().await.unwrap().status(),
        403,
        "no login CSRF"
    );
    let (_, projects) = call(
        &p,
        reqwest::Method::GET,
        "/api/projects",
        Some(&token(&p, ADMIN, &password).await),
        None,
    )
    .await;
    assert_eq!(projects["items"], json!([]), "nothing was planted");

    // The console itself, and scripts, still write.
    let res = post(
        "/api/projects",
        "application/json",
        &[("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let localhost = own.replace("127.0.0.1", "localhost");
    let host = localhost.trim_start_matches("http://").to_string();
    let res = p
        .http
        .post(format!("{}/api/projects", p.base))
        .header("cookie", &cookie)
        .header("origin", &localhost)
        .header("host", &host)
        .json(&json!({"name": "by-another-name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "the same server reached as localhost");
    // Reads are not changes: a cross-site GET is answered (SameSite keeps the cookie off it in browsers).
    let res = p
        .http
        .get(format!("{}/api/projects", p.base))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A failed sign-in is audited with the email as sent, by a caller nobody
/// authenticated: a megabyte of it went to the audit log whole, and to a
/// store lookup DynamoDB would refuse. SSO callbacks on a pacer without SSO
/// counted against the sign-in limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_email_is_cut_in_the_audit_log_and_a_callback_without_sso_is_not_counted() {
    let (p, password) = pacer(2).await;
    let huge = format!("{}@example.com", "a".repeat(1_000_000));
    assert_eq!(login(&p, &huge, "wrong").await.status(), 401);
    let admin = token(&p, ADMIN, &password).await;
    let (_, audit) = call(
        &p,
        reqwest::Method::GET,
        "/api/audit?action=auth.login_failed",
        Some(&admin),
        None,
    )
    .await;
    let target = audit["items"][0]["target"].as_str().unwrap();
    assert!(
        target.chars().count() <= 255 && target.ends_with('…'),
        "{} characters",
        target.len()
    );
    for _ in 0..3 {
        let res = p
            .http
            .get(format!("{}/api/auth/oidc/callback?code=c&state=s", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "no SSO here");
    }
    assert_eq!(
        login(&p, ADMIN, &password).await.status(),
        200,
        "the sign-in allowance is untouched"
    );
}
