//! `seconds`: how long a capture runs; default 30, at most the configured
//! maximum. Past the maximum is a 400, never silently clamped.

use std::time::Duration;

use super::{FromQuery, integer_in, query_param};
use crate::{Config, Error};

/// The `seconds` query parameter of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl Seconds {
    pub(crate) const DEFAULT: u64 = 30;
}

impl FromQuery for Seconds {
    fn from_query(query: &str, config: &Config) -> Result<Self, Error> {
        let max = config.max_seconds;
        let secs = match query_param(query, "seconds") {
            None => Seconds::DEFAULT.min(max),
            Some(raw) => integer_in("seconds", &raw, 1..=max, "seconds")?,
        };
        Ok(Seconds(Duration::from_secs(secs)))
    }
}
