//! The viewer's one HTTP client: GETs from a live agent (or any Go-style
//! pprof endpoint), bounded in time and size. [`app::capture`](crate::app::capture)
//! saves what it gets in the snapshot store.

use std::io::Read;
use std::time::Duration;

use crate::error::{Error, Result};
use profscope_profile::Limits;

/// How a fetch is made.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Label to store with the snapshot.
    pub label: Option<String>,
    /// Whole-request timeout; default: the URL's `seconds` plus a minute.
    pub timeout: Option<Duration>,
    /// Size limits on the response.
    pub limits: Limits,
}

impl FetchOptions {
    /// Options with a label and default timeout and limits.
    pub fn labeled(label: Option<String>) -> Self {
        FetchOptions {
            label,
            ..FetchOptions::default()
        }
    }
}

/// How long the capture behind `url` takes, from its `seconds` parameter
/// (CPU profiles, delta heap profiles).
pub fn capture_duration(url: &str) -> Option<Duration> {
    capture_seconds(url).map(Duration::from_secs)
}

/// GETs `url` and returns the body, capped by `limits.max_input`.
///
/// `timeout` bounds the whole request; a CPU capture's `seconds` must fit in
/// it, so by default it is that many seconds plus a minute.
pub fn get(url: &str, limits: &Limits, timeout: Option<Duration>) -> Result<Vec<u8>> {
    let timeout = timeout.unwrap_or_else(|| {
        Duration::from_secs(capture_seconds(url).unwrap_or(0).saturating_add(60))
    });
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(timeout)
        .build();
    let fail = |reason: String| Error::Fetch {
        url: url.to_string(),
        reason,
    };
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            // The agent answers errors with a one-line plain-text reason.
            let status = r.status_text().to_string();
            let body = read_capped(r.into_reader(), url, 4096).unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            let reason = body.lines().next().unwrap_or("").trim().to_string();
            return Err(fail(if reason.is_empty() {
                format!("HTTP {code} {status}")
            } else {
                format!("HTTP {code} {status}: {reason}")
            }));
        }
        Err(ureq::Error::Transport(t)) => return Err(fail(one_line(&t.to_string()))),
    };
    read_capped(response.into_reader(), url, limits.max_input).map_err(|e| match e {
        Error::Io { error, .. } => fail(one_line(&error.to_string())),
        other => other,
    })
}

/// The `seconds` query parameter of a capture URL, if any.
pub fn capture_seconds(url: &str) -> Option<u64> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "seconds")
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True for `http://` and `https://` URLs.
pub fn is_url(spec: &str) -> bool {
    let lower = spec.get(..8).unwrap_or(spec).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Reads at most `limit` bytes; one more means the input is too large.
pub(crate) fn read_capped(reader: impl Read, what: &str, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(what, e))?;
    if buf.len() as u64 > limit {
        return Err(profscope_profile::Error::TooLarge {
            what: "input",
            limit,
        }
        .into());
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_seconds_reads_the_query() {
        assert_eq!(
            capture_seconds("http://h/debug/pprof/profile?seconds=5&x=1"),
            Some(5)
        );
        assert_eq!(capture_seconds("http://h/debug/pprof/heap"), None);
    }
}
