//! Console authentication over HTTP: the one middleware that decides who
//! the caller is and what they may do, and the `/api/auth/*` and
//! `/api/users` routes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonObject, Query};
use crate::auth::oidc::OidcClient;
use crate::auth::session::{COOKIE as SESSION_COOKIE, SessionClaims};
use crate::domain::{Actor, Invalid, Role};
use crate::service::auth::{self as auth_service, AuthError, AuthSettings, UserView};
use crate::service::{Caller, limits};
use crate::store::PageRequest;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/info", get(info))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/auth/password", post(change_password))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{id}", patch(update_user))
        .route("/api/auth/oidc/start", get(oidc_start))
        .route("/api/auth/oidc/callback", get(oidc_callback))
}

/// Routes anyone may call.
const OPEN: &[&str] = &[
    "/api/version",
    "/api/auth/info",
    "/api/auth/login",
    "/api/auth/oidc/start",
    "/api/auth/oidc/callback",
];
/// Mutations a viewer may make: about their own session.
const SELF_SERVICE: &[&str] = &["/api/auth/logout", "/api/auth/password"];
/// Routes for admins only, reads included.
const ADMIN_ONLY: &[&str] = &["/api/audit", "/api/users", "/api/v1/admin"];

fn client_ip(state: &AppState, req: &Request) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)?;
    Some(crate::server::client_ip(
        peer,
        req.headers(),
        &state.trusted_proxies,
    ))
}

/// The session token: the `pacer_session` cookie, or `Authorization: Bearer`.
fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_string());
    }
    cookie_value(headers, SESSION_COOKIE)
}

/// Decides who the caller is (session cookie or bearer; everyone is an
/// anonymous admin under `auth.disabled`) and enforces roles for every
/// route in one place: reads need a session, mutations need an admin,
/// the audit log and users need an admin even to read.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&state, &req);
    let path = req.uri().path().to_string();
    let Some(auth) = state.auth.clone() else {
        req.extensions_mut().insert(Caller {
            actor: Actor::user("anonymous"),
            client_ip: ip,
            role: Role::Admin,
        });
        return next.run(req).await;
    };
    if OPEN.contains(&path.as_str()) {
        req.extensions_mut().insert(Caller {
            actor: Actor::user("anonymous"),
            client_ip: ip,
            role: Role::Viewer,
        });
        return next.run(req).await;
    }
    let Some(token) = session_token(req.headers()) else {
        return ApiError::from(AuthError::NoSession).into_response();
    };
    let (caller, claims) = match auth_service::authenticate(&state.ports, &auth, &token, ip).await {
        Ok(found) => found,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let admin_only = ADMIN_ONLY
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let allowed = caller.role == Role::Admin
        || (reading && !admin_only)
        || SELF_SERVICE.contains(&path.as_str());
    if !allowed {
        return ApiError::Forbidden("this needs the admin role".into()).into_response();
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(claims);
    next.run(req).await
}

fn settings(state: &AppState) -> Result<&AuthSettings, ApiError> {
    state.auth.as_deref().ok_or_else(|| {
        ApiError::NotFound("console authentication is turned off (auth.disabled)".into())
    })
}

/// A header value pacer composed. Its parts are pacer's own tokens (base64 and JWT
/// characters) and URLs the `url` crate serialised (percent-encoded), which a header always
/// carries; should one ever not, the header goes out empty rather than the process down.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| {
        tracing::error!("a header value pacer composed holds a character headers cannot carry");
        HeaderValue::from_static("")
    })
}

fn session_cookie(auth: &AuthSettings, value: &str, max_age: i64) -> HeaderValue {
    let secure = if auth.secure_cookie { "; Secure" } else { "" };
    header_value(format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
}

fn state_cookie(auth: &AuthSettings, value: &str, max_age: i64) -> HeaderValue {
    // Lax, not Strict: the IdP's redirect back is a cross-site navigation.
    let secure = if auth.secure_cookie { "; Secure" } else { "" };
    header_value(format!(
        "{}={value}; Path=/api/auth/oidc; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        crate::auth::oidc::STATE_COOKIE
    ))
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

fn redirect(to: &str) -> Response {
    let mut res = StatusCode::FOUND.into_response();
    res.headers_mut()
        .insert(axum::http::header::LOCATION, header_value(to.to_owned()));
    res
}

/// The browser's answer to a refused sign-in: nothing about why.
fn access_denied(auth: &AuthSettings) -> Response {
    let mut res = (StatusCode::FORBIDDEN, axum::response::Html("<!doctype html><title>Access denied</title><h1>Access denied</h1><p><a href=\"/login\">Back to sign-in</a></p>")).into_response();
    res.headers_mut()
        .insert(SET_COOKIE, state_cookie(auth, "", 0));
    res
}

/// The browser's answer when the IdP cannot be reached (or discovered):
/// what happened and what still works; the detail goes to the log.
fn idp_unavailable(auth: &AuthSettings, error: &crate::auth::oidc::DiscoveryError) -> Response {
    tracing::warn!(error = %crate::error_text::display_chain(&error), "SSO sign-in: the identity provider could not be discovered");
    let host = auth
        .oidc_issuer_host
        .as_deref()
        .unwrap_or("the identity provider");
    let page = format!(
        "<!doctype html><title>Sign-in unavailable</title><h1>Sign-in is unavailable</h1>\
         <p>{host} is not answering pacer, so nobody can sign in right now. Try again in a minute; \
         people already signed in are not affected.</p><p><a href=\"/login\">Back to sign-in</a></p>"
    );
    (StatusCode::BAD_GATEWAY, axum::response::Html(page)).into_response()
}

/// The relying party, discovered now if it was not at start.
async fn sso_client(
    s: &AppState,
    auth: &AuthSettings,
) -> Result<Result<Arc<OidcClient>, Response>, ApiError> {
    let sso = s.sso.as_ref().ok_or_else(sso_not_configured)?;
    Ok(sso.client().await.map_err(|e| idp_unavailable(auth, &e)))
}

fn sso_not_configured() -> ApiError {
    ApiError::NotFound("SSO is not configured (auth.oidc.enabled)".into())
}

async fn oidc_start(State(s): State<AppState>) -> Result<Response, ApiError> {
    let auth = settings(&s)?;
    let client = match sso_client(&s, auth).await? {
        Ok(client) => client,
        Err(unavailable) => return Ok(unavailable),
    };
    let started = client.start(auth.jwt_secret.expose().as_bytes(), s.ports.clock.now());
    let mut res = redirect(&started.authorize_url);
    res.headers_mut().insert(
        SET_COOKIE,
        state_cookie(auth, &started.cookie, crate::auth::oidc::STATE_TTL_SECS),
    );
    Ok(res)
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The browser's answer when an address made too many sign-in attempts.
fn too_many_sign_ins(retry_after: std::time::Duration) -> Response {
    let seconds = retry_after.as_secs().max(1);
    let page = format!(
        "<!doctype html><title>Too many sign-in attempts</title><h1>Too many sign-in attempts</h1>\
         <p>Too many sign-ins failed from this address. Try again in {seconds} seconds.</p><p><a href=\"/login\">Back to sign-in</a></p>"
    );
    let mut res = (StatusCode::TOO_MANY_REQUESTS, axum::response::Html(page)).into_response();
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    res
}

async fn oidc_callback(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(p): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let auth = settings(&s)?.clone();
    if s.sso.is_none() {
        return Err(sso_not_configured());
    }
    // Callbacks count against `auth.login_rate_limit` like passwords do,
    // before anything is looked up or written: a flood of forged callbacks
    // is turned away without touching the IdP or the audit log.
    let attempt = match auth_service::count_attempt(&s.ports, &auth, caller.client_ip).await {
        Ok(counted) => counted,
        Err(AuthError::RateLimited { retry_after }) => return Ok(too_many_sign_ins(retry_after)),
        Err(e) => return Ok(ApiError::from(e).into_response()),
    };
    let client = match sso_client(&s, &auth).await? {
        Ok(client) => client,
        Err(unavailable) => return Ok(unavailable),
    };
    let p = CallbackParams {
        code: p.get("code").cloned(),
        state: p.get("state").cloned(),
        error: p.get("error").cloned(),
    };
    let fail = |reason: String| {
        let (ports, caller, auth) = (s.ports.clone(), caller.clone(), auth.clone());
        async move {
            crate::service::audit::record_unauthenticated(
                &ports,
                &caller,
                "auth.oidc.login_failed",
                None,
                json!({"reason": reason}),
            )
            .await?;
            Ok::<Response, ApiError>(access_denied(&auth))
        }
    };
    if let Some(error) = p.error {
        return fail(format!("the IdP answered error={error}")).await;
    }
    let (Some(code), Some(state)) = (p.code, p.state) else {
        return fail("the callback carries no code or state".into()).await;
    };
    let Some(cookie) = cookie_value(&headers, crate::auth::oidc::STATE_COOKIE) else {
        return fail(
            "no state cookie: the sign-in did not start in this browser, or took too long".into(),
        )
        .await;
    };
    let now = s.ports.clock.now();
    let opened =
        match OidcClient::open_state(auth.jwt_secret.expose().as_bytes(), &cookie, &state, now) {
            Ok(opened) => opened,
            Err(e) => return fail(e.to_string()).await,
        };
    // A state works once, on every instance: claimed in one atomic step
    // before the code is traded, so two racing callbacks cannot both pass.
    let until = now + chrono::Duration::seconds(crate::auth::oidc::STATE_TTL_SECS);
    if !limits::claim_once(&s.ports, &format!("oidc-state:{}", opened.state()), until).await? {
        return fail("this sign-in was completed already (a replayed callback)".into()).await;
    }
    let identity = match client.finish(&opened, &code).await {
        Ok(identity) => identity,
        Err(e) => return fail(e.to_string()).await,
    };
    match auth_service::oidc_sign_in(
        &s.ports,
        &auth,
        client.settings(),
        &identity,
        caller.client_ip,
    )
    .await
    {
        Ok(signed) => {
            attempt.succeeded(&s.ports).await;
            let mut res = redirect("/");
            res.headers_mut().append(
                SET_COOKIE,
                session_cookie(&auth, &signed.token, signed.claims.exp - signed.claims.iat),
            );
            res.headers_mut()
                .append(SET_COOKIE, state_cookie(&auth, "", 0));
            Ok(res)
        }
        Err(AuthError::BadCredentials) => Ok(access_denied(&auth)),
        Err(e) => Ok(ApiError::from(e).into_response()),
    }
}

/// `GET /api/auth/info`: the sign-in methods the console offers.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AuthInfo {
    /// false under `auth.disabled`: no sign-in at all.
    enabled: bool,
    local: bool,
    oidc: Option<OidcInfo>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct OidcInfo {
    issuer_host: String,
}

async fn info(State(s): State<AppState>) -> Json<AuthInfo> {
    Json(match s.auth.as_deref() {
        None => AuthInfo {
            enabled: false,
            local: false,
            oidc: None,
        },
        Some(a) => AuthInfo {
            enabled: true,
            local: a.local,
            oidc: a.oidc_issuer_host.as_ref().map(|host| OidcInfo {
                issuer_host: host.clone(),
            }),
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

async fn login(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Response {
    let auth = match settings(&s) {
        Ok(a) => a.clone(),
        Err(e) => return e.into_response(),
    };
    let body: LoginBody = match serde_json::from_value(serde_json::Value::Object(body)) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::BadRequest(format!("the login body needs email and password: {e}"))
                .into_response();
        }
    };
    match auth_service::login(
        &s.ports,
        &auth,
        caller.client_ip,
        &body.email,
        &body.password,
    )
    .await
    {
        Ok(signed) => signed_in(&auth, &signed),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn logout(
    State(s): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let auth = settings(&s)?.clone();
    if let Some(claims) = req.extensions().get::<SessionClaims>() {
        auth_service::logout(&s.ports, &caller, claims).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(SET_COOKIE, session_cookie(&auth, "", 0));
    Ok(res)
}

/// `GET /api/auth/me`: who is signed in.
#[derive(Serialize)]
#[serde(untagged)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum Me {
    User(UserView),
    /// Under `auth.disabled`, every caller.
    Anonymous(Anonymous),
}

/// The admin every caller is while console auth is disabled.
#[derive(Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Anonymous {
    #[cfg_attr(test, ts(type = "\"anonymous\""))]
    id: &'static str,
    #[cfg_attr(test, ts(type = "null"))]
    email: Option<String>,
    role: Role,
    disabled: bool,
    sso: bool,
}

async fn me(State(s): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    let me = match s.auth {
        None => Me::Anonymous(Anonymous {
            id: "anonymous",
            email: None,
            role: Role::Admin,
            disabled: false,
            sso: false,
        }),
        Some(_) => Me::User(auth_service::me(&s.ports, &caller).await?),
    };
    Ok(Json(
        serde_json::to_value(me).map_err(|e| ApiError::Internal(e.into()))?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password; every other session of theirs ends, and
/// this one goes on with the new session the answer carries (cookie and
/// body, as a login's).
async fn change_password(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let auth = settings(&s)?.clone();
    let body: PasswordBody =
        serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body needs current_password and new_password: {e}"
            ))
        })?;
    let signed = auth_service::change_password(
        &s.ports,
        &auth,
        &caller,
        &body.current_password,
        &body.new_password,
    )
    .await?;
    Ok(signed_in(&auth, &signed))
}

/// A login's answer: the session as a cookie and in the body.
fn signed_in(auth: &AuthSettings, signed: &auth_service::SignedIn) -> Response {
    let max_age = signed.claims.exp - signed.claims.iat;
    let expires_at = chrono::DateTime::from_timestamp(signed.claims.exp, 0);
    let mut res = Json(json!({"token": signed.token, "expires_at": expires_at})).into_response();
    res.headers_mut()
        .insert(SET_COOKIE, session_cookie(auth, &signed.token, max_age));
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_users(
    State(s): State<AppState>,
    Query(p): Query<PageParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    Ok(Json(auth_service::list_users(&s.ports, &page).await?))
}

fn parse_role(field: &str, value: Option<&serde_json::Value>) -> Result<Option<Role>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(r)) if r == "admin" => Ok(Some(Role::Admin)),
        Some(serde_json::Value::String(r)) if r == "viewer" => Ok(Some(Role::Viewer)),
        Some(_) => Err(ApiError::Invalid(Invalid::new(
            field,
            "must be \"admin\" or \"viewer\"",
        ))),
    }
}

fn only_fields(
    body: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
) -> Result<(), ApiError> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::Invalid(Invalid::new(
            k.clone(),
            "is not a known field",
        ))),
        None => Ok(()),
    }
}

async fn create_user(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    settings(&s)?;
    only_fields(&body, &["email", "role"])?;
    let email = body
        .get("email")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::Invalid(Invalid::new("email", "is required")))?;
    let role = parse_role("role", body.get("role"))?.unwrap_or(Role::Viewer);
    let (user, password) = auth_service::create_user(&s.ports, &caller, email, role).await?;
    let mut value = serde_json::to_value(user).map_err(|e| ApiError::Internal(e.into()))?;
    // Shown once: pacer keeps only its hash.
    if let Some(fields) = value.as_object_mut() {
        fields.insert("password".into(), password.into());
    }
    Ok((StatusCode::CREATED, Json(value)))
}

async fn update_user(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    settings(&s)?;
    only_fields(&body, &["role", "disabled"])?;
    let role = parse_role("role", body.get("role"))?;
    let disabled = match body.get("disabled") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::Invalid(Invalid::new(
                "disabled",
                "must be true or false",
            )));
        }
    };
    Ok(Json(
        auth_service::update_user(&s.ports, &caller, &id, role, disabled).await?,
    ))
}
