//! The one error type of HTTP handlers: a client's mistake is a 4xx with the reason, as
//! Skydive's handlers write it (plain text); an internal failure is a 500 whose cause is
//! logged, never a success with an empty body and never a 4xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// Another client error, with its status (406, 413, 501, …).
    #[error("{1}")]
    Client(StatusCode, String),
    /// The service cannot answer now (503): it is shutting down, or a store is away.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside (500): `what` was being done when `cause` happened.
    #[error("{what}: {cause}")]
    Internal { what: String, cause: String },
}

impl ApiError {
    /// An internal failure while doing `what`.
    pub fn internal(what: impl Into<String>, cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal {
            what: what.into(),
            cause: cause.to_string(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into())
    }

    /// The status code of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Client(status, _) => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A blocking task that panicked or was cancelled is an internal failure.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal("a worker task failed", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "{self}");
        }
        crate::server::text_error(status, &self.to_string())
    }
}

/// The result of a handler.
pub type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON body with Skydive's content type; a value that cannot be encoded is a 500, not an
/// empty success.
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> ApiResult {
    let body =
        serde_json::to_vec(value).map_err(|e| ApiError::internal("encoding the reply", e))?;
    Ok(crate::server::json_response(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_mistakes_keep_their_reason_and_internal_failures_are_500() {
        let r = ApiError::bad_request("GremlinQuery is required").into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"GremlinQuery is required\n");

        let join = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let e = ApiError::from(join);
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.to_string().starts_with("a worker task failed: "), "{e}");
        assert_eq!(
            ApiError::Client(StatusCode::PAYLOAD_TOO_LARGE, "too big".into()).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn a_value_that_cannot_be_encoded_is_an_internal_failure() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1); // a map with non-string keys has no JSON form
        let e = json(StatusCode::OK, &m).unwrap_err();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
