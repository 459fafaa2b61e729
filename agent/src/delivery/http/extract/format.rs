//! `format`: the body format of a profile, `pprof` (default), `folded` or `svg`.

use super::{FromQuery, query_param};
use crate::delivery::http::Format;
use crate::{Config, Error};

/// The `format` query parameter of any profile endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProfileFormat(pub(crate) Format);

impl FromQuery for ProfileFormat {
    fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
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
