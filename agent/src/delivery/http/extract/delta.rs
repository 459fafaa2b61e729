//! `seconds` on the heap endpoints: optional; when given, the answer is the
//! delta between two snapshots that many seconds apart (Go's semantics).

use std::time::Duration;

use super::{FromQuery, integer_in, query_param};
use crate::{Config, Error};

/// The optional `seconds` query parameter of a delta profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaSeconds(pub(crate) Option<Duration>);

impl FromQuery for DeltaSeconds {
    fn from_query(query: &str, config: &Config) -> Result<Self, Error> {
        let max = config.max_seconds;
        match query_param(query, "seconds") {
            None => Ok(DeltaSeconds(None)),
            Some(raw) => integer_in("seconds", &raw, 1..=max, "seconds")
                .map(|s| DeltaSeconds(Some(Duration::from_secs(s)))),
        }
    }
}
