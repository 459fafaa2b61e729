//! `debug`: `0` (default, pprof) or `1` (readable text), like Go's.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{integer_in, query_param};
use crate::{Agent, Config, Error};

/// The `debug` query parameter: whether to answer readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Debug(pub(crate) bool);

impl FromRequestParts<Agent> for Debug {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, agent: &Agent) -> Result<Self, Self::Rejection> {
        Self::from_query(parts.uri.query().unwrap_or(""), agent.config())
    }
}

impl Debug {
    pub(crate) fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
        match query_param(query, "debug") {
            None => Ok(Debug(false)),
            Some(raw) => {
                integer_in::<u8>("debug", &raw, 0..=1, "0 = pprof, 1 = text").map(|d| Debug(d == 1))
            }
        }
    }
}
