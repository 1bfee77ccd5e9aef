//! The routes of the runner lifecycle: the runner callbacks, and the
//! console's jobs and runners (the GitHub webhook is in `webhook`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonObject, Query};
use crate::auth::callback_token::bearer;
use crate::domain::{JobState, RunnerState, Time};
use crate::service::runners::{self, RegisterBody};
use crate::service::stats::{self, GroupBy, SeriesQuery, StatsQuery, Step};
use crate::service::{Caller, budgets, jobs};
use crate::store::{JobFilter, PageRequest, RunnerFilter};

/// `/api/runner/*`: callback tokens, not sessions.
pub fn runner_routes() -> Router<AppState> {
    Router::new()
        .route("/api/runner/register", post(register))
        .route("/api/runner/complete", post(complete))
        .route("/api/runner/error", post(bootstrap_error))
}

/// Jobs and runners for the console.
pub fn console_routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/runners", get(list_runners))
        .route("/api/runners/{id}", get(get_runner))
        .route("/api/runners/{id}/terminate", post(terminate_runner))
        .route("/api/budgets", get(list_budgets))
        .route("/api/stats", get(stats))
        .route("/api/stats/series", get(series))
        .route("/api/stats/top-users", get(top_users))
        .route("/api/stats/export", get(export))
}

fn token(headers: &HeaderMap) -> Result<&str, ApiError> {
    bearer(headers).ok_or_else(|| {
        ApiError::Unauthorized("send the runner's callback token as Authorization: Bearer".into())
    })
}

async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let token = token(&headers)?;
    let body: RegisterBody = if body.iter().all(u8::is_ascii_whitespace) {
        RegisterBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the register body is not valid: {e}")))?
    };
    Ok(Json(
        runners::register(&s.ports, token, body)
            .await
            .map_err(ApiError::from)?,
    ))
}

async fn complete(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    runners::complete(&s.ports, token(&headers)?)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({"ok": true})))
}

async fn bootstrap_error(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    let token = token(&headers)?;
    let tail = match body.get("log_tail") {
        Some(serde_json::Value::String(t)) => t.as_str(),
        None | Some(serde_json::Value::Null) => "",
        Some(_) => {
            return Err(ApiError::Invalid(crate::domain::Invalid::new(
                "log_tail",
                "must be a string",
            )));
        }
    };
    runners::error(&s.ports, token, tail)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    limit: Option<u32>,
    cursor: Option<String>,
    status: Option<String>,
    project_id: Option<String>,
    pool_id: Option<String>,
    repo: Option<String>,
    github_job_id: Option<i64>,
    from: Option<Time>,
    to: Option<Time>,
    /// `newest` (default) or `oldest` first.
    order: Option<String>,
}

async fn list_jobs(
    State(s): State<AppState>,
    Query(p): Query<JobParams>,
) -> Result<impl IntoResponse, ApiError> {
    let state = match p.status.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(JobState::parse(raw).ok_or_else(|| {
            let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "query parameter status: {raw:?} is not one of {}",
                known.join(", ")
            ))
        })?),
    };
    let oldest_first = match p.order.as_deref() {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter order: {other:?} is not newest or oldest"
            )));
        }
    };
    let filter = JobFilter {
        oldest_first,
        state,
        project_id: p.project_id,
        pool_id: p.pool_id,
        repo: p.repo.map(|r| r.to_lowercase()),
        github_job_id: p.github_job_id,
        from: p.from,
        to: p.to,
    };
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    Ok(Json(jobs::list(&s.ports, &filter, &page).await?))
}

async fn list_budgets(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(budgets::list(&s.ports).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    from: Option<Time>,
    to: Option<Time>,
    group_by: Option<String>,
}

/// A `group_by` or `split_by` parameter; `fallback` when absent.
fn grouping(name: &str, raw: Option<&str>, fallback: GroupBy) -> Result<GroupBy, ApiError> {
    match raw {
        None | Some("") => Ok(fallback),
        Some(raw) => GroupBy::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter {name}: {raw:?} is not one of {}",
                GroupBy::NAMES
            ))
        }),
    }
}

async fn stats(
    State(s): State<AppState>,
    Query(p): Query<StatsParams>,
) -> Result<impl IntoResponse, ApiError> {
    let group_by = grouping("group_by", p.group_by.as_deref(), GroupBy::Day)?;
    Ok(Json(
        stats::compute(
            &s.ports,
            &StatsQuery {
                from: p.from,
                to: p.to,
                group_by,
            },
        )
        .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    from: Option<Time>,
    to: Option<Time>,
    step: Option<String>,
    split_by: Option<String>,
}

async fn series(
    State(s): State<AppState>,
    Query(p): Query<SeriesParams>,
) -> Result<impl IntoResponse, ApiError> {
    let step = match p.step.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(Step::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("query parameter step: {raw:?} is not hour or day"))
        })?),
    };
    let split_by = grouping("split_by", p.split_by.as_deref(), GroupBy::Pool)?;
    Ok(Json(
        stats::series(
            &s.ports,
            &SeriesQuery {
                from: p.from,
                to: p.to,
                step,
                split_by,
            },
        )
        .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUsersParams {
    from: Option<Time>,
    to: Option<Time>,
    limit: Option<u32>,
}

async fn top_users(
    State(s): State<AppState>,
    Query(p): Query<TopUsersParams>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = match p.limit {
        None => 10,
        Some(n @ 1..=stats::MAX_TOP_USERS) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter limit: {n} is not from 1 to {}",
                stats::MAX_TOP_USERS
            )));
        }
    };
    Ok(Json(stats::top_users(&s.ports, p.from, p.to, limit).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    from: Option<Time>,
    to: Option<Time>,
    format: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn export(
    State(s): State<AppState>,
    Query(p): Query<ExportParams>,
) -> Result<impl IntoResponse, ApiError> {
    match p.format.as_deref() {
        None | Some("csv") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter format: {other:?} is not csv, the one export format"
            )));
        }
    }
    let rows = match p.limit {
        None => stats::EXPORT_ROWS,
        Some(n @ 1..=stats::MAX_EXPORT_ROWS) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter limit: {n} is not from 1 to {}",
                stats::MAX_EXPORT_ROWS
            )));
        }
    };
    let page = stats::export(&s.ports, p.from, p.to, p.cursor, rows).await?;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"pacer-jobs.csv\""),
    );
    if let Some(cursor) = &page.next_cursor {
        // The same window, resolved, so every answer covers the same jobs.
        let time = |t: Time| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("from", &time(page.from))
            .append_pair("to", &time(page.to))
            .append_pair("format", "csv")
            .append_pair("limit", &rows.to_string())
            .append_pair("cursor", cursor)
            .finish();
        if let Ok(link) =
            axum::http::HeaderValue::from_str(&format!("</api/stats/export?{query}>; rel=\"next\""))
        {
            headers.insert(axum::http::header::LINK, link);
        }
    }
    Ok((headers, page.csv))
}

async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(jobs::get(&s.ports, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerParams {
    limit: Option<u32>,
    cursor: Option<String>,
    pool_id: Option<String>,
    /// Comma-separated states.
    state: Option<String>,
}

async fn list_runners(
    State(s): State<AppState>,
    Query(p): Query<RunnerParams>,
) -> Result<impl IntoResponse, ApiError> {
    let mut states = Vec::new();
    for raw in p
        .state
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        states.push(RunnerState::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter state: {raw:?} is not a runner state"
            ))
        })?);
    }
    let filter = RunnerFilter {
        pool_id: p.pool_id,
        states,
    };
    let page = PageRequest {
        limit: p.limit.unwrap_or(0),
        cursor: p.cursor,
    };
    Ok(Json(runners::list(&s.ports, &filter, &page).await?))
}

async fn get_runner(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(runners::get(&s.ports, &id).await?))
}

async fn terminate_runner(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(runners::terminate(&s.ports, &caller, &id).await?))
}
