//! `/api/v1/*`: self-service runners for machines outside EC2.
//!
//! `/api/v1/runners*` is authenticated by a workload OIDC token (a bearer
//! the [`Workload`] extractor verifies, admits and uses up); nothing else
//! in pacer accepts such a token, and these routes accept nothing else.
//! `/api/v1/admin/*` is console API: an admin's session.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonObject, Query};
use crate::domain::Time;
use crate::domain::self_service::{SecurityEventKind, SelfRunnerStatus, SelfServiceRunner};
use crate::service::Caller;
use crate::service::self_service::{
    self as self_service, PolicyRequest, Presented, ProvisionRequest, Refusal, SelfServiceError,
    Workload,
};
use crate::store::{Page, PageRequest, SecurityEventFilter, SelfRunnerFilter};

type ApiResult<T> = Result<T, ApiError>;

/// Bodies of `/api/v1/runners*`: a runner name and its labels.
pub const WORKLOAD_BODY_LIMIT: usize = 16 * 1024;

/// The routes a workload token opens.
pub fn workload_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runners/provision", post(provision))
        .route("/api/v1/runners", get(list))
        .route("/api/v1/runners/{name}", get(show).delete(remove))
        .route("/api/v1/runners/{name}/refresh", post(refresh))
}

/// The administrators' routes, behind the console's authentication.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/admin/label-policies",
            get(list_policies).post(put_policy),
        )
        .route(
            "/api/v1/admin/label-policies/{identity}",
            get(get_policy).delete(delete_policy),
        )
        .route("/api/v1/admin/security-events", get(security_events))
        .route("/api/v1/admin/trusted-identities", get(trusted_identities))
        .route("/api/v1/admin/runners", get(all_runners))
}

/// What `/api/v1/admin/trusted-identities` answers while self-service is
/// off: what to change, since the console shows it as it is.
pub const SELF_SERVICE_OFF: &str = "self-service is off: set self_service.enabled in the configuration, with at least one of self_service.trusted_identities";

/// Every answer of the workload routes is for one caller, some hold a
/// credential: no cache on the way (CloudFront included) may keep one.
pub async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl From<SelfServiceError> for ApiError {
    fn from(e: SelfServiceError) -> Self {
        match e {
            SelfServiceError::Unauthorized(m) => ApiError::InvalidToken(m),
            SelfServiceError::Forbidden(m) => ApiError::Forbidden(m),
            SelfServiceError::Service(e) => e.into(),
        }
    }
}

/// The caller's address as the host saw the connection: the peer locally,
/// API Gateway's source address or CloudFront's viewer address (only with
/// the origin secret) in Lambda. Never a forwarding header.
fn source_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Workload {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(verifier) = state.workload.clone() else {
            return Err(ApiError::NotFound(
                "self-service runners are not enabled (self_service.enabled)".into(),
            ));
        };
        let endpoint = format!("{} {}", parts.method, parts.uri.path());
        let ip = source_ip(parts);
        let Some(token) = bearer(parts) else {
            return Err(ApiError::BearerRequired(
                "send a workload OIDC token as Authorization: Bearer <token>".into(),
            ));
        };
        let now = state.ports.clock.now();
        let verified = match verifier.verify(token, now).await {
            Ok(v) => v,
            Err(rejection) => {
                let message = format!("the token was refused: {}", rejection.reason);
                let refusal = Refusal {
                    kind: rejection.kind.event_kind(),
                    trusted_identity: rejection.trusted_identity,
                    identity: None,
                    source_ip: ip,
                    endpoint,
                    reason: rejection.reason,
                    token_sha256: Some(rejection.token_sha256),
                };
                self_service::record_refusal(&state.ports, refusal).await;
                return Err(ApiError::InvalidToken(message));
            }
        };
        let presented = Presented {
            trusted_identity: verified.trusted_identity,
            owner: verified.owner,
            issuer: verified.issuer,
            jti: verified.jti,
            expires_at: verified.expires_at,
            token_sha256: verified.token_sha256,
        };
        Ok(self_service::admit(&state.ports, presented, ip, endpoint).await?)
    }
}

/// A self-service runner as its owner and administrators see it.
#[derive(Debug, Serialize)]
struct RunnerView {
    /// `ssr_<ULID>`: tells apart runners that had one name in turn.
    id: String,
    runner_name: String,
    labels: Vec<String>,
    github_runner_id: Option<i64>,
    status: SelfRunnerStatus,
    owner: String,
    trusted_identity: String,
    created_at: Time,
    registered_at: Option<Time>,
    deleted_at: Option<Time>,
}

impl From<SelfServiceRunner> for RunnerView {
    fn from(r: SelfServiceRunner) -> Self {
        Self {
            id: r.id,
            runner_name: r.name,
            labels: r.labels,
            github_runner_id: r.github_runner_id,
            status: r.status,
            owner: r.owner,
            trusted_identity: r.trusted_identity,
            created_at: r.created_at,
            registered_at: r.registered_at,
            deleted_at: r.deleted_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct ProvisionedView {
    id: String,
    runner_name: String,
    labels: Vec<String>,
    /// For `run.sh --jitconfig`; a credential, shown once.
    encoded_jit_config: String,
    github_runner_id: Option<i64>,
    /// The runner must come online by then.
    expires_at: Time,
    status: SelfRunnerStatus,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl PageParams {
    fn request(self) -> PageRequest {
        PageRequest {
            limit: self.limit.unwrap_or(0),
            cursor: self.cursor,
        }
    }
}

async fn provision(
    State(s): State<AppState>,
    caller: Workload,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let request = ProvisionRequest::from_body(body).map_err(ApiError::Invalid)?;
    let done = self_service::provision(&s.ports, &caller, request).await?;
    let view = ProvisionedView {
        id: done.runner.id,
        runner_name: done.runner.name,
        labels: done.runner.labels,
        encoded_jit_config: done.encoded_jit_config,
        github_runner_id: done.runner.github_runner_id,
        expires_at: done.expires_at,
        status: done.runner.status,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(
    State(s): State<AppState>,
    caller: Workload,
    Query(p): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let page = self_service::list(&s.ports, &caller, &p.request()).await?;
    Ok(Json(Page {
        items: page.items.into_iter().map(RunnerView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn show(
    State(s): State<AppState>,
    caller: Workload,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let runner = self_service::get(&s.ports, &caller, &name).await?;
    Ok(Json(RunnerView::from(runner)))
}

async fn refresh(
    State(s): State<AppState>,
    caller: Workload,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let runner = self_service::refresh(&s.ports, &caller, &name).await?;
    Ok(Json(RunnerView::from(runner)))
}

async fn remove(
    State(s): State<AppState>,
    caller: Workload,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let runner = self_service::delete(&s.ports, &caller, &name).await?;
    Ok(Json(RunnerView::from(runner)))
}

async fn list_policies(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let page = self_service::list_policies(&s.ports, &caller, &p.request()).await?;
    Ok(Json(page))
}

async fn put_policy(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    let request = PolicyRequest::from_body(body).map_err(ApiError::Invalid)?;
    Ok(Json(
        self_service::put_policy(&s.ports, &caller, request).await?,
    ))
}

async fn get_policy(
    State(s): State<AppState>,
    caller: Caller,
    Path(identity): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        self_service::get_policy(&s.ports, &caller, &identity).await?,
    ))
}

async fn delete_policy(
    State(s): State<AppState>,
    caller: Caller,
    Path(identity): Path<String>,
) -> ApiResult<impl IntoResponse> {
    self_service::delete_policy(&s.ports, &caller, &identity).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    identity: Option<String>,
    since: Option<Time>,
    until: Option<Time>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn security_events(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<EventParams>,
) -> ApiResult<impl IntoResponse> {
    let kind = match p.kind.as_deref() {
        None => None,
        Some(raw) => Some(SecurityEventKind::parse(raw).ok_or_else(|| {
            let known: Vec<&str> = SecurityEventKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::BadRequest(format!(
                "query parameter type: must be one of {}",
                known.join(", ")
            ))
        })?),
    };
    let filter = SecurityEventFilter {
        kind,
        identity: p.identity,
        from: p.since,
        to: p.until,
    };
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    let page = self_service::security_events(&s.ports, &caller, &filter, &page).await?;
    Ok(Json(page))
}

async fn trusted_identities(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    match self_service::trusted_identities(&s.ports, &caller).await? {
        Some(items) => Ok(Json(Page {
            items,
            next_cursor: None,
        })),
        None => Err(ApiError::NotFound(SELF_SERVICE_OFF.into())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerParams {
    owner: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn all_runners(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<RunnerParams>,
) -> ApiResult<impl IntoResponse> {
    let status = match p.status.as_deref() {
        None => None,
        Some(raw) => Some(SelfRunnerStatus::parse(raw).ok_or_else(|| {
            let known: Vec<&str> = SelfRunnerStatus::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::BadRequest(format!(
                "query parameter status: must be one of {}",
                known.join(", ")
            ))
        })?),
    };
    let filter = SelfRunnerFilter {
        owner: p.owner,
        status,
    };
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    Ok(Json(
        self_service::all_runners(&s.ports, &caller, &filter, &page).await?,
    ))
}
