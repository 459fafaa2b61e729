//! The agent's one error type. Every variant knows its HTTP status and
//! renders as a one-line plain-text reason, so handlers just return `Err`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong in the agent, with the status it answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query parameter was malformed or out of range (400).
    #[error("bad parameter `{name}`: {problem}; accepted: {accepted}")]
    BadParameter {
        /// The parameter's name as it appears in the query string.
        name: &'static str,
        /// What is wrong with the given value.
        problem: String,
        /// The accepted values or range.
        accepted: String,
    },
    /// A bearer token is configured and the request lacks it or has another (401).
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A CPU capture is already running; only one runs at a time (409).
    #[error("a CPU profile capture is already running; retry when it ends")]
    CaptureRunning {
        /// Seconds until the running capture is expected to end.
        retry_after_secs: u64,
    },
    /// Too many captures of other kinds at once (429).
    #[error("too many profile requests in flight (limit {limit}); retry later")]
    TooManyRequests {
        /// The configured limit.
        limit: usize,
    },
    /// This build or platform cannot produce the profile (501).
    #[error("{0}")]
    NotAvailable(String),
    /// A genuine internal fault (500).
    #[error("internal error: {0}")]
    Internal(String),
    /// The agent was configured with a value it cannot use.
    #[error("invalid agent configuration: {0}")]
    InvalidConfig(String),
    /// Binding or serving the agent's own listener failed.
    #[error("agent server: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::CaptureRunning { .. } => StatusCode::CONFLICT,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NotAvailable(_) => StatusCode::NOT_IMPLEMENTED,
            Error::Internal(_) | Error::InvalidConfig(_) | Error::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub(crate) fn bad_parameter(
        name: &'static str,
        problem: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        Error::BadParameter {
            name,
            problem: problem.into(),
            accepted: accepted.into(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut body = self.to_string().replace('\n', " ");
        body.push('\n');
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        match self {
            Error::CaptureRunning { retry_after_secs } => {
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
