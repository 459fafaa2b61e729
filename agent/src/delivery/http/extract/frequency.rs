//! `frequency`: CPU sampling rate in Hz; default from the agent's config
//! (99 Hz unless configured), accepted 1..=1000.

use super::{FromQuery, integer_in, query_param};
use crate::capture::cpu::FREQUENCY_RANGE;
use crate::{Config, Error};

/// The `frequency` query parameter of a CPU capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frequency(pub(crate) u32);

impl FromQuery for Frequency {
    fn from_query(query: &str, config: &Config) -> Result<Self, Error> {
        match query_param(query, "frequency") {
            None => Ok(Frequency(config.default_frequency)),
            Some(raw) => integer_in("frequency", &raw, FREQUENCY_RANGE, "Hz").map(Frequency),
        }
    }
}
