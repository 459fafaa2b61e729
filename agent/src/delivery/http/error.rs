//! The agent's errors as HTTP answers, declared once: each variant's status
//! and its one-line plain-text body (with `Retry-After` for 409 and 503 and
//! `WWW-Authenticate` for 401), so handlers just return `Err`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Error;

/// The HTTP status `error` answers with.
pub(crate) fn status(error: &Error) -> StatusCode {
    match error {
        Error::BadParameter { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthorized => StatusCode::UNAUTHORIZED,
        Error::CaptureRunning { .. } | Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::NotAvailable(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Internal(_) | Error::InvalidConfig(_) | Error::Io(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut body = self.to_string().replace('\n', " ");
        body.push('\n');
        let mut response = (status(&self), body).into_response();
        let headers = response.headers_mut();
        match self {
            Error::CaptureRunning { retry_after_secs }
            | Error::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs.max(1)),
                );
            }
            Error::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
