//! The agent's one error type, for capture and configuration alike. Every
//! variant renders as a one-line reason; which HTTP status each answers
//! with is decided in one place, `delivery/http/error.rs`, so capture code knows
//! nothing of HTTP.

/// Everything that can go wrong in the agent.
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
    /// A CPU capture is already running and the pprof-rs backend runs one
    /// at a time (409).
    #[error("a CPU profile capture is already running; retry when it ends")]
    CaptureRunning {
        /// Seconds until the running capture is expected to end.
        retry_after_secs: u64,
    },
    /// A capture the sample stream cannot serve, with why (409): another
    /// profiler owns SIGPROF.
    #[error("{0}")]
    Conflict(String),
    /// Too many captures of other kinds at once (429).
    #[error("too many profile requests in flight (limit {limit}); retry later")]
    TooManyRequests {
        /// The configured limit.
        limit: usize,
    },
    /// The runtime cannot answer now, with why (503 with `Retry-After`): a
    /// task dump waiting for a runtime worker that does not come.
    #[error("{reason}")]
    Unavailable {
        /// One line: what is waiting for what.
        reason: String,
        /// Seconds after which asking again makes sense.
        retry_after_secs: u64,
    },
    /// What the request names does not exist (404): an unknown incident.
    #[error("{0}")]
    NotFound(String),
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

impl From<profscope_profile::Error> for Error {
    /// The model fails only on encoding here (gzip, flamegraph): a fault.
    fn from(e: profscope_profile::Error) -> Self {
        Error::Internal(e.to_string())
    }
}
