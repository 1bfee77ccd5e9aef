//! The one error type of every HTTP handler, and its mapping to a status
//! and a JSON body: `{"error", "message", "field"?}`. Internals are logged
//! with their cause chain and never returned.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::Invalid;
use crate::service::ServiceError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
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
            ServiceError::Upstream(m) => ApiError::Upstream(m),
            ServiceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m, None),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m, None),
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
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                let m =
                    "something went wrong inside pacer; the server log has the details".to_string();
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", m, None)
            }
        };
        (
            status,
            Json(Body {
                error: code,
                message,
                field,
            }),
        )
            .into_response()
    }
}
