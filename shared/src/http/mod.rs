//! HTTP: one router per concern, merged by [`app`]; the same routers run
//! under pacer's own server (`crate::server`) locally, `lambda_http::run` in Lambda and `oneshot`
//! in tests (docs/architecture.md, "One set of routers").

pub mod api;
pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod lifecycle;
pub mod origin;
pub mod self_service;
pub mod webhook;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::service::Ports;

/// Bodies the console API accepts (the webhook route sets its own, larger).
pub const API_BODY_LIMIT: usize = 1024 * 1024;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub ports: Ports,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Console auth, or `None` under `auth.disabled` (every caller is then
    /// an anonymous admin).
    pub auth: Option<Arc<crate::service::auth::AuthSettings>>,
    /// The OIDC relying party when SSO is on (discovered at start, or at
    /// the first sign-in when the IdP did not answer then): the edge runs
    /// the sign-in flow, the use case only decides who may sign in.
    pub sso: Option<Arc<crate::auth::oidc::Sso>>,
    /// The console's files, served for every path no route claims; `None`
    /// where something else serves them (Lambda behind CloudFront).
    pub console: Option<Arc<dyn console::ConsoleFiles>>,
    /// The workload token verifier when `self_service.enabled`; `None`
    /// answers the self-service routes 404.
    pub workload: Option<Arc<crate::auth::workload::WorkloadVerifier>>,
}

/// pacer's version as `v<semver>-<git describe>`.
pub fn version() -> String {
    format!(
        "v{}-{}",
        env!("CARGO_PKG_VERSION"),
        env!("PACER_GIT_DESCRIBE")
    )
}

/// The one body limit of a router. axum's extractors apply their own default
/// (2 MB) before any layer's, so it is lifted and the layer alone decides.
fn body_limit(router: Router<AppState>, limit: usize) -> Router<AppState> {
    router
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limit))
}

/// `POST /api/webhook`, authenticated by GitHub's signature.
pub fn webhook_router(state: AppState) -> Router {
    body_limit(webhook::webhook_routes(), webhook::WEBHOOK_BODY_LIMIT).with_state(state)
}

/// `/api/runner/*`, authenticated by callback tokens.
pub fn runner_router(state: AppState) -> Router {
    body_limit(lifecycle::runner_routes(), API_BODY_LIMIT).with_state(state)
}

/// `/api/v1/runners*`, authenticated by workload OIDC tokens: apart from
/// the console API, whose sessions it never accepts.
pub fn workload_router(state: AppState) -> Router {
    body_limit(
        self_service::workload_routes(),
        self_service::WORKLOAD_BODY_LIMIT,
    )
    .layer(middleware::map_response(self_service::no_store))
    .with_state(state)
}

/// The console API: `/api/*` but the webhook, runner callbacks and the
/// workload routes.
pub fn api_router(state: AppState) -> Router {
    let routes = api::router()
        .merge(lifecycle::console_routes())
        .merge(auth::routes())
        .merge(self_service::admin_routes())
        .route(
            "/api/version",
            get(|| async { Json(json!({"version": version()})) }),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            origin::same_origin_writes,
        ));
    body_limit(routes, API_BODY_LIMIT).with_state(state)
}

/// `GET /healthz`: the process is up.
pub fn health_router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

/// Every route pacer serves on one port.
pub fn app(state: AppState) -> Router {
    health_router()
        .merge(webhook_router(state.clone()))
        .merge(runner_router(state.clone()))
        .merge(workload_router(state.clone()))
        .merge(api_router(state.clone()))
        .fallback(move |req: axum::extract::Request| console::fallback(state.clone(), req))
        .layer(TraceLayer::new_for_http())
}

// Test-only, so last: the hostile suite reads the routes above the first test item.
#[cfg(test)]
mod typescript;
