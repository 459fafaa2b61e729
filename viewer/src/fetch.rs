//! The viewer's one HTTP client: GETs from a live agent (or any Go-style
//! pprof endpoint), bounded in time and size, with the agent's bearer
//! [`Token`] when one is given. [`app::capture`](crate::app::capture)
//! saves what it gets in the snapshot store.

use std::io::Read;
use std::time::Duration;

use crate::error::{Error, Result};
use profscope_profile::Limits;

/// The environment variable the command line reads a token from.
pub const TOKEN_ENV: &str = "PROFSCOPE_TOKEN";

/// A bearer token for agents that require one (`Authorization: Bearer …`).
/// It is sent and never shown: `Debug` and `Display` print `<redacted>`,
/// and no error message of the viewer contains it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Checks a token: non-empty visible ASCII without spaces, what an
    /// `Authorization` header can carry.
    pub fn new(token: impl Into<String>) -> Result<Token> {
        let token = token.into();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::BadToken(
                "it must be non-empty visible ASCII without spaces",
            ));
        }
        Ok(Token(token))
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::str::FromStr for Token {
    type Err = Error;

    fn from_str(s: &str) -> Result<Token> {
        Token::new(s)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

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
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<Token>,
}

impl FetchOptions {
    /// Options with size limits `limits`, the rest default.
    pub fn with_limits(limits: Limits) -> Self {
        FetchOptions {
            limits,
            ..FetchOptions::default()
        }
    }

    /// Options with a label and default timeout and limits.
    pub fn labeled(label: Option<String>) -> Self {
        FetchOptions {
            label,
            ..FetchOptions::default()
        }
    }

    /// These options with `token` sent on every request.
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }
}

/// How long the capture behind `url` takes, from its `seconds` parameter
/// (CPU profiles, delta heap profiles).
pub fn capture_duration(url: &str) -> Option<Duration> {
    capture_seconds(url).map(Duration::from_secs)
}

/// GETs `url` and returns the body, capped by `opts.limits.max_input`,
/// with `opts.token` as the bearer token when set.
///
/// `opts.timeout` bounds the whole request; a CPU capture's `seconds` must
/// fit in it, so by default it is that many seconds plus a minute.
pub fn get(url: &str, opts: &FetchOptions) -> Result<Vec<u8>> {
    let limits = &opts.limits;
    let timeout = opts.timeout.unwrap_or_else(|| {
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
    let mut request = agent.get(url);
    if let Some(token) = &opts.token {
        request = request.set("Authorization", &token.header());
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            // The agent answers errors with a one-line plain-text reason.
            let status = r.status_text().to_string();
            let body = read_capped(r.into_reader(), url, 4096).unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            let mut reason = body.lines().next().unwrap_or("").trim().to_string();
            if let Some(token) = &opts.token {
                // An echoing server must not make us print the token.
                reason = reason.replace(&token.0, "<redacted>");
            }
            let hint = match (code, &opts.token) {
                (401, None) => format!(" (pass --token or set {TOKEN_ENV})"),
                (401, Some(_)) => " (the token given was refused)".to_string(),
                _ => String::new(),
            };
            return Err(fail(if reason.is_empty() {
                format!("HTTP {code} {status}{hint}")
            } else {
                format!("HTTP {code} {status}: {reason}{hint}")
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
    fn tokens_are_checked_and_never_shown() {
        let t = Token::new("s3cret").unwrap();
        assert_eq!(format!("{t:?} {t}"), "Token(<redacted>) <redacted>");
        let opts = FetchOptions::default().with_token(Some(t));
        assert!(!format!("{opts:?}").contains("s3cret"));
        for bad in ["", "a b", "new\nline", "é"] {
            assert!(Token::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capture_seconds_reads_the_query() {
        assert_eq!(
            capture_seconds("http://h/debug/pprof/profile?seconds=5&x=1"),
            Some(5)
        );
        assert_eq!(capture_seconds("http://h/debug/pprof/heap"), None);
    }
}
