//! Query parameters, one file each, in the manner of axum's `extract/`.
//! Each parameter type says how it reads itself from a query string
//! ([`FromQuery`]), rejecting with `Error::BadParameter` naming the
//! parameter and its accepted range; one extractor, [`Param`], takes any of
//! them from a request, so handlers read like the endpoint table.

mod debug;
mod delta;
mod format;
mod frequency;
mod seconds;
mod window;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::{Agent, Config, Error};

pub(crate) use debug::{DebugText, Json as JsonByDefault};
pub(crate) use delta::DeltaSeconds;
pub(crate) use format::ProfileFormat;
pub(crate) use frequency::Frequency;
pub(crate) use seconds::Seconds;
pub(crate) use window::{IncidentWindow, Lookback};

/// A query parameter read from a query string with the agent's settings.
pub(crate) trait FromQuery: Sized {
    /// The parameter's value in `query` (the part after `?`), its default
    /// when absent, or the rejection naming it and its accepted range.
    fn from_query(query: &str, config: &Config) -> Result<Self, Error>;
}

/// The extractor of any [`FromQuery`] parameter:
/// `Param(Seconds(d)): Param<Seconds>` in a handler's arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param<T>(pub(crate) T);

impl<T: FromQuery> FromRequestParts<Agent> for Param<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, agent: &Agent) -> Result<Self, Self::Rejection> {
        T::from_query(parts.uri.query().unwrap_or(""), agent.config()).map(Param)
    }
}

/// The first value of query parameter `name` in `query` (the part after
/// `?`), as Go's `FormValue` takes it.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Every query-parameter extractor over one query string, as the handlers
/// see it, with no request or agent around it: what the fuzz target
/// (`fuzz/fuzz_targets/query.rs`) drives. Each result is the parsed value
/// (in `Debug` form) or the rejection.
pub(crate) fn check_query(query: &str, config: &Config) -> Vec<Result<String, Error>> {
    vec![
        Seconds::from_query(query, config).map(|v| format!("{v:?}")),
        DeltaSeconds::from_query(query, config).map(|v| format!("{v:?}")),
        Frequency::from_query(query, config).map(|v| format!("{v:?}")),
        ProfileFormat::from_query(query, config).map(|v| format!("{v:?}")),
        DebugText::<debug::Pprof>::from_query(query, config).map(|v| format!("{v:?}")),
        DebugText::<JsonByDefault>::from_query(query, config).map(|v| format!("{v:?}")),
        Lookback::from_query(query, config).map(|v| format!("{v:?}")),
        IncidentWindow::from_query(query, config).map(|v| format!("{v:?}")),
    ]
}

/// Parses an integer parameter within `range`, naming it in the rejection.
pub(crate) fn integer_in<T>(
    name: &'static str,
    raw: &str,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, Error>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let accepted = format!("an integer in {}..={} ({unit})", range.start(), range.end());
    let shown: String = raw.chars().take(32).collect();
    let value: T = raw
        .trim()
        .parse()
        .map_err(|_| Error::bad_parameter(name, format!("{shown:?} is not a number"), &accepted))?;
    if !range.contains(&value) {
        return Err(Error::bad_parameter(
            name,
            format!("{value} is out of range"),
            accepted,
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_one_short_line_whatever_the_query() {
        let config = crate::Config::default();
        let huge = "9".repeat(1 << 20);
        for query in [
            format!("seconds={huge}"),
            format!("frequency=x{huge}&format={huge}"),
            "debug=%0A%0D&seconds=%FF".to_string(),
            "seconds=1&seconds=abc".to_string(),
        ] {
            for result in check_query(&query, &config) {
                if let Err(e) = result {
                    let text = e.to_string();
                    assert!(text.len() < 300 && !text.contains('\n'), "{text}");
                }
            }
        }
        // The first of repeated parameters counts.
        assert!(check_query("seconds=1&seconds=abc", &config)[0].is_ok());
    }

    #[test]
    fn integer_in_names_the_parameter_and_range() {
        let e = integer_in::<u64>("seconds", "abc", 1..=300, "seconds").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad parameter `seconds`: \"abc\" is not a number; accepted: an integer in 1..=300 (seconds)"
        );
        let e = integer_in::<u64>("seconds", "0", 1..=300, "seconds").unwrap_err();
        assert!(e.to_string().contains("0 is out of range"));
        assert_eq!(
            integer_in::<u64>("seconds", "300", 1..=300, "s").unwrap(),
            300
        );
        // Huge values and negative numbers are rejected, never wrapped.
        assert!(integer_in::<u64>("seconds", "99999999999999999999999", 1..=300, "s").is_err());
        assert!(integer_in::<u64>("seconds", "-1", 1..=300, "s").is_err());
    }
}
