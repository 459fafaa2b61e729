//! The viewer library's one error type. Every variant renders as a single
//! line that names what failed, so the command line can print it as is.

use std::io;

/// Everything that can go wrong while loading, analysing or storing profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file, stdin or the store failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being read or written (a path, `stdin`, …).
        what: String,
        /// The underlying error.
        error: io::Error,
    },
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
    Gzip(io::Error),
    /// The bytes are neither a pprof protobuf nor folded stacks.
    #[error("not a pprof profile or folded stacks ({0})")]
    Format(String),
    /// The protobuf decoded but is not a consistent profile.
    #[error("invalid profile: {0}")]
    Invalid(String),
    /// An HTTP fetch failed.
    #[error("fetch {url}: {reason}")]
    Fetch {
        /// The URL requested.
        url: String,
        /// Why it failed, one line (status and the server's reason).
        reason: String,
    },
    /// A requested sample type does not exist.
    #[error("no sample type {wanted:?}; the profile has: {available}")]
    SampleType {
        /// What was asked for.
        wanted: String,
        /// The types present, `name/unit` by index.
        available: String,
    },
    /// A focus/ignore regular expression does not compile.
    #[error("bad --{flag} regex: {error}")]
    Regex {
        /// `focus` or `ignore`.
        flag: &'static str,
        /// The compile error.
        error: regex::Error,
    },
    /// A PROFILE argument names no file, URL or snapshot.
    #[error("{0}: no such file or snapshot (try `profscope list`)")]
    NotFound(String),
    /// The snapshot store refused an operation.
    #[error("snapshot store: {0}")]
    Store(String),
    /// Two profiles cannot be compared.
    #[error("cannot diff: {0}")]
    Incompatible(String),
    /// An error about one named input (a diff has two).
    #[error("{origin}: {inner}")]
    In {
        /// The input: a path, URL, `stdin` or snapshot.
        origin: String,
        /// What went wrong with it. Displayed inline, not as a source, so
        /// the message is printed once.
        inner: Box<Error>,
    },
    /// Rendering (flamegraph, encode) failed.
    #[error("render: {0}")]
    Render(String),
    /// Running a server (the web UI, the demo service) failed.
    #[error("server: {0}")]
    Server(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, error: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            error,
        }
    }
}

impl From<profscope_agent::Error> for Error {
    fn from(e: profscope_agent::Error) -> Self {
        Error::Render(e.to_string())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
