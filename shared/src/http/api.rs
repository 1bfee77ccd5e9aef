//! The console API for projects, pools, repo bindings and the audit log
//! (docs/architecture.md, "HTTP contract"). Handlers extract, call one service function, answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonObject, Query};
use crate::domain::Time;
use crate::service::{Caller, audit, config_objects as objects};
use crate::store::{AuditFilter, PageRequest};

type ApiResult<T> = Result<T, ApiError>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/projects", get(list_projects).post(create_project))
        .route(
            "/api/projects/{id}",
            get(get_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route("/api/pools", get(list_pools).post(create_pool))
        .route(
            "/api/pools/{id}",
            get(get_pool).patch(update_pool).delete(delete_pool),
        )
        .route("/api/repos", get(list_bindings).post(create_binding))
        .route(
            "/api/repos/{id}",
            get(get_binding)
                .patch(update_binding)
                .delete(delete_binding),
        )
        .route("/api/audit", get(list_audit))
}

/// `?limit=&cursor=` plus an optional `project_id` filter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
    project_id: Option<String>,
}

impl ListParams {
    fn page(&self) -> PageRequest {
        PageRequest {
            limit: self.limit.unwrap_or(0),
            cursor: self.cursor.clone(),
        }
    }
}

/// Only `limit` and `cursor`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

fn created<T: serde::Serialize>(value: T) -> impl IntoResponse {
    (StatusCode::CREATED, Json(value))
}

// One handler per route and object, alike on purpose: each calls one service
// function and is the one place its route's request and answer are spelled
// out (and where its OpenAPI description will go); a generic handler would
// hide which service function a route reaches.

async fn list_projects(
    State(s): State<AppState>,
    Query(p): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    Ok(Json(objects::list_projects(&s.ports, &page).await?))
}

async fn get_project(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(objects::get_project(&s.ports, &id).await?))
}

async fn create_project(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    Ok(created(
        objects::create_project(&s.ports, &caller, body).await?,
    ))
}

async fn update_project(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(patch): JsonObject,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        objects::update_project(&s.ports, &caller, &id, patch).await?,
    ))
}

async fn delete_project(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    objects::delete_project(&s.ports, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_pools(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        objects::list_pools(&s.ports, p.project_id.as_deref(), &p.page()).await?,
    ))
}

async fn get_pool(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(objects::get_pool(&s.ports, &id).await?))
}

async fn create_pool(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    Ok(created(
        objects::create_pool(&s.ports, &caller, body).await?,
    ))
}

async fn update_pool(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(patch): JsonObject,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        objects::update_pool(&s.ports, &caller, &id, patch).await?,
    ))
}

async fn delete_pool(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    objects::delete_pool(&s.ports, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_bindings(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        objects::list_bindings(&s.ports, p.project_id.as_deref(), &p.page()).await?,
    ))
}

async fn get_binding(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(objects::get_binding(&s.ports, &id).await?))
}

async fn create_binding(
    State(s): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    Ok(created(
        objects::create_binding(&s.ports, &caller, body).await?,
    ))
}

async fn update_binding(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonObject(patch): JsonObject,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        objects::update_binding(&s.ports, &caller, &id, patch).await?,
    ))
}

async fn delete_binding(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    objects::delete_binding(&s.ports, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<u32>,
    cursor: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
}

async fn list_audit(
    State(s): State<AppState>,
    Query(p): Query<AuditParams>,
) -> ApiResult<impl IntoResponse> {
    let (action, action_prefix) = audit::action_filter(p.action)?;
    let filter = AuditFilter {
        action,
        action_prefix,
        actor: p.actor,
        from: p.from,
        to: p.to,
    };
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    Ok(Json(audit::list(&s.ports, &filter, &page).await?))
}
