//! The viewer library's one error type. Every variant renders as a single
//! line that names what failed, so the command line can print it as is.

use std::io;

/// Everything that can go wrong while loading, analysing or storing profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The profile itself: too large, malformed, inconsistent, or a sample
    /// type or filter it cannot satisfy (the model's error, as it words it).
    #[error(transparent)]
    Profile(#[from] profscope_profile::Error),
    /// Reading a file, stdin or the store failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being read or written (a path, `stdin`, …).
        what: String,
        /// The underlying error.
        error: io::Error,
    },
    /// An HTTP fetch failed.
    #[error("fetch {url}: {reason}")]
    Fetch {
        /// The URL requested.
        url: String,
        /// Why it failed, one line (status and the server's reason).
        reason: String,
    },
    /// A PROFILE argument names no file, URL or snapshot.
    #[error("{0}: no such file or snapshot (try `profscope list`)")]
    NotFound(String),
    /// No such incident at the agent or in the store.
    #[error("{0}")]
    NoIncident(String),
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
    /// A bearer token that cannot be sent (its value is never shown).
    #[error("bad bearer token: {0}")]
    BadToken(&'static str),
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

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
