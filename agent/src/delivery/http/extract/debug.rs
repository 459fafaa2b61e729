//! `debug`: `0` (default) or `1` (readable text), like Go's. What `0`
//! answers depends on the endpoint (pprof on the profile paths, JSON on
//! `/debug/memory`), so the rejection names that endpoint's meanings.

use std::marker::PhantomData;

use super::{FromQuery, integer_in, query_param};
use crate::{Config, Error};

/// What `debug=0` answers on an endpoint.
pub(crate) trait ZeroMeans {
    /// The accepted values, as the rejection lists them.
    const MEANINGS: &'static str;
}

/// `debug=0` is pprof (the profile paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pprof;

impl ZeroMeans for Pprof {
    const MEANINGS: &'static str = "0 = pprof, 1 = text";
}

/// `debug=0` is JSON (`/debug/memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Json;

impl ZeroMeans for Json {
    const MEANINGS: &'static str = "0 = JSON, 1 = text";
}

/// The `debug` query parameter: whether to answer readable text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DebugText<M = Pprof>(pub(crate) bool, pub(crate) PhantomData<M>);

impl<M: ZeroMeans> FromQuery for DebugText<M> {
    fn from_query(query: &str, _: &Config) -> Result<Self, Error> {
        match query_param(query, "debug") {
            None => Ok(DebugText(false, PhantomData)),
            Some(raw) => integer_in::<u8>("debug", &raw, 0..=1, M::MEANINGS)
                .map(|d| DebugText(d == 1, PhantomData)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejection_names_the_endpoints_meanings() {
        let config = Config::default();
        let pprof = DebugText::<Pprof>::from_query("debug=x", &config).unwrap_err();
        assert!(
            pprof.to_string().contains("(0 = pprof, 1 = text)"),
            "{pprof}"
        );
        let json = DebugText::<Json>::from_query("debug=2", &config).unwrap_err();
        assert!(json.to_string().contains("(0 = JSON, 1 = text)"), "{json}");
        assert!(DebugText::<Json>::from_query("debug=1", &config).unwrap().0);
        assert!(!DebugText::<Json>::from_query("", &config).unwrap().0);
    }
}
