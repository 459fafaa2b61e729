//! `seconds` on the recorder's paths (how far back to read, default 60)
//! and `window` on an incident's profiles (`before` or `after`).

use std::time::Duration;

use super::{FromQuery, integer_in, query_param};
use crate::{Config, Error};

/// How far back a `recent/*` path reads. The recorder's own reach
/// (`keep_for`) is checked by the handler: past it is a 400, never clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lookback(pub(crate) Duration);

impl FromQuery for Lookback {
    fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
        match query_param(query, "seconds") {
            None => Ok(Lookback(Duration::from_secs(60))),
            Some(raw) => integer_in("seconds", &raw, 1..=86_400u64, "seconds")
                .map(|s| Lookback(Duration::from_secs(s))),
        }
    }
}

/// Which window of an incident: `Some(false)` before the trigger,
/// `Some(true)` after it, `None` the path's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IncidentWindow(pub(crate) Option<bool>);

impl FromQuery for IncidentWindow {
    fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
        match query_param(query, "window").as_deref() {
            None => Ok(IncidentWindow(None)),
            Some("before") => Ok(IncidentWindow(Some(false))),
            Some("after") => Ok(IncidentWindow(Some(true))),
            Some(raw) => {
                let shown: String = raw.chars().take(32).collect();
                Err(Error::bad_parameter(
                    "window",
                    format!("{shown:?} is not a window"),
                    "before or after",
                ))
            }
        }
    }
}
