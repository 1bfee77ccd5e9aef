//! `POST /api/webhook`: GitHub's deliveries, authenticated by their HMAC
//! signature. The edge checks the signature and reads the payload
//! ([`VerifiedDelivery`]); the use case sees only a verified [`Delivery`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::github::webhook::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, SignatureError, WorkflowJobEvent,
    verify_signature,
};
use crate::server::ClientIp;
use crate::service::webhook::{self, Delivery, Outcome};
use crate::service::{Ports, ServiceError};

/// GitHub caps deliveries at 25 MB; pacer takes a body up to 25 MiB.
pub const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// `POST /api/webhook`: GitHub HMAC, not sessions.
pub fn webhook_routes() -> Router<AppState> {
    Router::new().route("/api/webhook", post(receive_webhook))
}

/// Why a delivery was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the body is not a {event} payload pacer can read: {message}")]
    Malformed { event: String, message: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Checks a delivery's signature against every configured secret, then
/// reads its payload: `event` is its `X-GitHub-Event`, `signature` its
/// `X-Hub-Signature-256`.
pub fn read_delivery(
    ports: &Ports,
    event: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Delivery, WebhookError> {
    let secrets: Vec<&[u8]> = ports
        .settings
        .webhook_secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect();
    verify_signature(&secrets, body, signature)?;
    Ok(match event {
        "ping" => Delivery::Ping,
        "workflow_job" => {
            let ev: WorkflowJobEvent =
                serde_json::from_slice(body).map_err(|e| WebhookError::Malformed {
                    event: event.into(),
                    message: e.to_string(),
                })?;
            let (job, reported) = ev.into_job();
            Delivery::WorkflowJob {
                job: Box::new(job),
                reported,
            }
        }
        other => Delivery::Other {
            event: other.into(),
        },
    })
}

/// Reads and handles one delivery, as the route does: for tools and tests
/// that hold a body and its headers rather than a request.
pub async fn accept(
    ports: &Ports,
    caller_ip: Option<std::net::IpAddr>,
    event: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Outcome, WebhookError> {
    let delivery = read_delivery(ports, event, signature, body)?;
    Ok(webhook::handle(ports, caller_ip, delivery).await?)
}

/// A delivery whose signature holds, read: what the webhook route takes.
pub struct VerifiedDelivery(pub Delivery);

impl FromRequest<AppState> for VerifiedDelivery {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let event = header(&headers, EVENT_HEADER).unwrap_or("");
        let signature = header(&headers, SIGNATURE_HEADER);
        read_delivery(&state.ports, event, signature, &body)
            .map(VerifiedDelivery)
            .map_err(|e| {
                if let WebhookError::Signature(reason) = &e {
                    let delivery = header(&headers, DELIVERY_HEADER).unwrap_or("-");
                    tracing::warn!(delivery, event, error = %crate::error_text::display_chain(reason), "webhook refused");
                }
                ApiError::from(e).into_response()
            })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive_webhook(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    VerifiedDelivery(delivery): VerifiedDelivery,
) -> Result<Response, ApiError> {
    let client_ip = (!ip.is_unspecified()).then_some(ip);
    let (status, body) = match webhook::handle(&s.ports, client_ip, delivery).await? {
        Outcome::Pong => (StatusCode::OK, json!({"ok": true, "event": "ping"})),
        Outcome::Ignored(why) => (StatusCode::OK, json!({"ok": true, "ignored": why})),
        Outcome::Recorded => (StatusCode::OK, json!({"ok": true})),
        Outcome::Refused(why) => (StatusCode::OK, json!({"ok": true, "refused": why})),
        Outcome::Accepted { job_id } => {
            (StatusCode::ACCEPTED, json!({"ok": true, "job_id": job_id}))
        }
    };
    Ok((status, Json(body)).into_response())
}
