//! `frequency`: CPU sampling rate in Hz; default from the agent's config
//! (99 Hz unless configured), accepted 1..=1000.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{integer_in, query_param};
use crate::cpu::FREQUENCY_RANGE;
use crate::{Agent, Config, Error};

/// The `frequency` query parameter of a CPU capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frequency(pub(crate) u32);

impl FromRequestParts<Agent> for Frequency {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, agent: &Agent) -> Result<Self, Self::Rejection> {
        Self::from_query(parts.uri.query().unwrap_or(""), agent.config())
    }
}

impl Frequency {
    pub(crate) fn from_query(query: &str, config: &Config) -> Result<Self, Error> {
        match query_param(query, "frequency") {
            None => Ok(Frequency(config.default_frequency)),
            Some(raw) => integer_in("frequency", &raw, FREQUENCY_RANGE, "Hz").map(Frequency),
        }
    }
}
