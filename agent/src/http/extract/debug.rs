//! `debug`: `0` (default, pprof) or `1` (readable text), like Go's.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{integer_in, query_param};
use crate::{Agent, Error};

/// The `debug` query parameter: whether to answer readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Debug(pub(crate) bool);

impl FromRequestParts<Agent> for Debug {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &Agent) -> Result<Self, Self::Rejection> {
        match query_param(parts, "debug") {
            None => Ok(Debug(false)),
            Some(raw) => {
                integer_in::<u8>("debug", &raw, 0..=1, "0 = pprof, 1 = text").map(|d| Debug(d == 1))
            }
        }
    }
}
