//! HTTP: one router per concern, merged by [`app`]; the same routers run
//! under `axum::serve` locally, `lambda_http::run` in Lambda and `oneshot`
//! in tests (DESIGN §2.6).

pub mod api;
pub mod error;
pub mod extract;
pub mod lifecycle;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::domain::Actor;
use crate::service::{Caller, Ports};

/// Bodies the console API accepts (the webhook route sets its own, larger).
pub const API_BODY_LIMIT: usize = 1024 * 1024;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub ports: Ports,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Console auth is off (`auth.disabled`): every caller is `anonymous`.
    pub auth_disabled: bool,
}

/// pacer's version as `v<semver>-<git describe>`.
pub fn version() -> String {
    format!("v{}-{}", env!("CARGO_PKG_VERSION"), env!("PACER_GIT_DESCRIBE"))
}

/// `POST /api/webhook`, authenticated by GitHub's signature.
pub fn webhook_router(state: AppState) -> Router {
    lifecycle::webhook_routes()
        .layer(RequestBodyLimitLayer::new(lifecycle::WEBHOOK_BODY_LIMIT))
        .with_state(state)
}

/// `/api/runner/*`, authenticated by callback tokens.
pub fn runner_router(state: AppState) -> Router {
    lifecycle::runner_routes().layer(RequestBodyLimitLayer::new(API_BODY_LIMIT)).with_state(state)
}

/// The console API: `/api/*` but the webhook and runner callbacks.
pub fn api_router(state: AppState) -> Router {
    api::router()
        .merge(lifecycle::console_routes())
        .route("/api/version", get(|| async { Json(json!({"version": version()})) }))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(RequestBodyLimitLayer::new(API_BODY_LIMIT))
        .with_state(state)
}

/// Every route pacer serves on one port.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(webhook_router(state.clone()))
        .merge(runner_router(state.clone()))
        .merge(api_router(state))
        .layer(TraceLayer::new_for_http())
}

/// The one slot where console authentication plugs in: it decides who the
/// caller is and leaves a [`Caller`] in the request. Until sessions exist
/// every caller is `anonymous` (as with `auth.disabled`).
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let client_ip: Option<IpAddr> =
        peer.map(|peer| crate::server::client_ip(peer, req.headers(), &state.trusted_proxies));
    let _ = state.auth_disabled;
    req.extensions_mut().insert(Caller { actor: Actor::user("anonymous"), client_ip });
    next.run(req).await
}
