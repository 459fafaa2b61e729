//! `seconds`: how long a capture runs; default 30, at most the configured
//! maximum. Past the maximum is a 400, never silently clamped.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{integer_in, query_param};
use crate::{Agent, Config, Error};

/// The `seconds` query parameter of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl Seconds {
    pub(crate) const DEFAULT: u64 = 30;
}

impl FromRequestParts<Agent> for Seconds {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, agent: &Agent) -> Result<Self, Self::Rejection> {
        Self::from_query(parts.uri.query().unwrap_or(""), agent.config())
    }
}

impl Seconds {
    pub(crate) fn from_query(query: &str, config: &Config) -> Result<Self, Error> {
        let max = config.max_seconds;
        let secs = match query_param(query, "seconds") {
            None => Seconds::DEFAULT.min(max),
            Some(raw) => integer_in("seconds", &raw, 1..=max, "seconds")?,
        };
        Ok(Seconds(Duration::from_secs(secs)))
    }
}
