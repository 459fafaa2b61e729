//! `debug`: `0` (default, pprof) or `1` (readable text), like Go's.

use super::{FromQuery, integer_in, query_param};
use crate::{Config, Error};

/// The `debug` query parameter: whether to answer readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DebugText(pub(crate) bool);

impl FromQuery for DebugText {
    fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
        match query_param(query, "debug") {
            None => Ok(DebugText(false)),
            Some(raw) => integer_in::<u8>("debug", &raw, 0..=1, "0 = pprof, 1 = text")
                .map(|d| DebugText(d == 1)),
        }
    }
}
