//! The one error type of every HTTP handler, and its mapping to a status
//! and a JSON body: `{"error", "message", "field"?}`. Internals are logged
//! with their cause chain and never returned.

use std::time::Duration;

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::webhook::WebhookError;
use crate::domain::Invalid;
use crate::service::ServiceError;
use crate::service::auth::AuthError;
use crate::service::runners::CallbackError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    /// 401 for a route that wants a bearer token and got none, with
    /// `WWW-Authenticate: Bearer`.
    BearerRequired(String),
    /// 401 for a bearer token that failed a check, with
    /// `WWW-Authenticate: Bearer error="invalid_token"`. The text says which
    /// check; it never holds the token.
    InvalidToken(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(String),
    Conflict {
        message: String,
        field: Option<String>,
    },
    PayloadTooLarge(String),
    /// A body that is not JSON by its `Content-Type`.
    UnsupportedMediaType(String),
    Invalid(Invalid),
    /// Too many attempts from one address: 429 with `Retry-After`.
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// GitHub or AWS failed pacer's request: 502 with what they said.
    Upstream(String),
    Internal(anyhow::Error),
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(i) => ApiError::Invalid(i),
            ServiceError::BadRequest(m) => ApiError::BadRequest(m),
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::Conflict(message) => ApiError::Conflict {
                message,
                field: None,
            },
            ServiceError::Duplicate(i) => ApiError::Conflict {
                message: i.message,
                field: Some(i.field),
            },
            ServiceError::Forbidden(m) => ApiError::Forbidden(m),
            ServiceError::Upstream(m) => ApiError::Upstream(m),
            e @ ServiceError::GitHub { .. } => ApiError::Upstream(e.to_string()),
            ServiceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Signature(e) => ApiError::Unauthorized(e.to_string()),
            WebhookError::Malformed { event, message } => {
                ApiError::BadRequest(format!("the {event} payload cannot be read: {message}"))
            }
            WebhookError::Service(e) => e.into(),
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> Self {
        match e {
            CallbackError::Unauthorized(reason) => {
                // The reason is for the operator's log, never for the caller.
                tracing::warn!(reason, "runner callback refused");
                ApiError::Unauthorized("the callback token is not valid for this call".into())
            }
            CallbackError::Service(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::RateLimited { retry_after } => ApiError::RateLimited {
                message: format!(
                    "too many sign-in attempts from this address; try again in {} seconds",
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            },
            AuthError::InvalidSession(reason) => {
                tracing::info!(reason, "session refused");
                ApiError::Unauthorized("the session is no longer valid; sign in again".into())
            }
            AuthError::Service(e) => e.into(),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::RateLimited {
            message,
            retry_after,
        } = self
        {
            let seconds = retry_after.as_secs().max(1);
            let mut res = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(Body {
                    error: "rate_limited",
                    message,
                    field: None,
                }),
            )
                .into_response();
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            return res;
        }
        let challenge = match &self {
            ApiError::BearerRequired(_) => Some(r#"Bearer realm="pacer""#),
            ApiError::InvalidToken(_) => Some(r#"Bearer realm="pacer", error="invalid_token""#),
            _ => None,
        };
        let (status, code, message, field) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m, None),
            ApiError::Unauthorized(m) | ApiError::BearerRequired(m) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", m, None)
            }
            ApiError::InvalidToken(m) => (StatusCode::UNAUTHORIZED, "invalid_token", m, None),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m, None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, None),
            ApiError::MethodNotAllowed(m) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                m,
                None,
            ),
            ApiError::Conflict { message, field } => {
                (StatusCode::CONFLICT, "conflict", message, field)
            }
            ApiError::PayloadTooLarge(m) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m, None)
            }
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m,
                None,
            ),
            ApiError::Upstream(m) => (StatusCode::BAD_GATEWAY, "upstream", m, None),
            ApiError::Invalid(i) => {
                let message = format!("{}: {}", i.field, i.message);
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    message,
                    Some(i.field),
                )
            }
            ApiError::RateLimited { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", message, None)
            }
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                let m =
                    "something went wrong inside pacer; the server log has the details".to_string();
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", m, None)
            }
        };
        let mut response = (
            status,
            Json(Body {
                error: code,
                message,
                field,
            }),
        )
            .into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
