//! The model's one error type: every variant renders as one line naming
//! what failed, so front ends print it as is.

/// What can go wrong reading, checking, filtering or drawing a profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input exceeded a configured size limit; refused rather than buffered.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Which quantity overflowed (input, decompressed data, decoded profile).
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// The input is empty.
    #[error("{0}: empty input")]
    Empty(String),
    /// gzip framing or deflate data is corrupt or truncated.
    #[error("corrupt or truncated gzip data: {0}")]
    Gzip(std::io::Error),
    /// The bytes are neither a pprof protobuf nor folded stacks.
    #[cfg_attr(
        feature = "otlp",
        error("not a pprof profile, OTLP profiles request or folded stacks ({0})")
    )]
    #[cfg_attr(
        not(feature = "otlp"),
        error("not a pprof profile or folded stacks ({0})")
    )]
    Format(String),
    /// The protobuf decoded but is not a consistent profile.
    #[error("invalid profile: {0}")]
    Invalid(String),
    /// A requested sample type does not exist.
    #[error("no sample type {wanted:?}; the profile has: {available}")]
    SampleType {
        /// What was asked for.
        wanted: String,
        /// The types present, `index=name/unit`.
        available: String,
    },
    /// A filter's regular expression does not compile.
    #[error("bad --{flag} regex: {error}")]
    Regex {
        /// `focus`, `ignore`, `hide`, `tagfocus` or `tagignore`.
        flag: &'static str,
        /// The compile error.
        error: regex::Error,
    },
    /// A `tagfocus`/`tagignore` expression is not `KEY=VALUE` or a regex.
    #[error("bad --{flag} {expr:?}: {reason}")]
    Tag {
        /// `tagfocus` or `tagignore`.
        flag: &'static str,
        /// The expression given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Encoding (gzip) or drawing (flamegraph) failed.
    #[error("{what}: {reason}")]
    Write {
        /// `gzip` or `flamegraph`.
        what: &'static str,
        /// The underlying failure, one line.
        reason: String,
    },
}

/// The model's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collapses whitespace (protobuf errors span lines) into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
