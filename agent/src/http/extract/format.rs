//! `format`: the body format of a profile, `pprof` (default), `folded` or `svg`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::query_param;
use crate::http::Format;
use crate::{Agent, Config, Error};

/// The `format` query parameter of any profile endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProfileFormat(pub(crate) Format);

impl FromRequestParts<Agent> for ProfileFormat {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, agent: &Agent) -> Result<Self, Self::Rejection> {
        Self::from_query(parts.uri.query().unwrap_or(""), agent.config())
    }
}

impl ProfileFormat {
    pub(crate) fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
        match query_param(query, "format") {
            None => Ok(ProfileFormat(Format::Pprof)),
            Some(raw) => Format::parse(&raw).map(ProfileFormat).ok_or_else(|| {
                let shown: String = raw.chars().take(32).collect();
                Error::bad_parameter(
                    "format",
                    format!("{shown:?} is not a format"),
                    Format::ACCEPTED,
                )
            }),
        }
    }
}
