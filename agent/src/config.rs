//! The agent's settings ([`Config`]) and the checks they pass at
//! [`AgentBuilder::build`](crate::AgentBuilder::build).

use std::net::SocketAddr;

use crate::Error;
use crate::capture::cpu::FREQUENCY_RANGE;

/// The agent's settings, fixed at [`AgentBuilder::build`]. Its `Debug`
/// output shows whether a bearer token is set, never the token.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Address [`Agent::serve`] and [`Agent::spawn`] bind. Default `127.0.0.1:6060`.
    pub addr: SocketAddr,
    /// Longest capture a request may ask for, in seconds. Default 300.
    pub max_seconds: u64,
    /// CPU sampling frequency when a request names none, in Hz. Default 99.
    pub default_frequency: u32,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Heap (and other non-CPU) profile requests served at once; more get 429.
    /// Default 4.
    pub max_concurrent_requests: usize,
    /// CPU profile captures running at once (each holds a blocking thread
    /// for its `seconds`); more get 429. Default 8.
    pub max_concurrent_captures: usize,
    /// Where jemalloc heap dumps are written (and removed right after
    /// parsing). Default: a private directory under the system temp dir.
    pub heap_dump_dir: Option<std::path::PathBuf>,
    /// Where the cgroup v2 hierarchy is mounted, for `/debug/memory`.
    /// Default `/sys/fs/cgroup`.
    pub cgroup_root: std::path::PathBuf,
    /// Where separate debug files are read from, when set (`Some(None)`:
    /// nowhere); unset: `$PROFSCOPE_DEBUG_DIR`, else `/usr/lib/debug`.
    pub debug_dir: Option<Option<std::path::PathBuf>>,
    /// Side port only: how long a connection may take to send a whole
    /// request head (idle keep-alive connections included) before it is
    /// closed. Default 10 s.
    pub header_read_timeout: std::time::Duration,
    /// Side port only: connections served at once; past it a new one gets
    /// a 503 and is closed. Default 64.
    pub max_connections: usize,
    /// Task dumps (`tasks`, `goroutine`, `taskleak` and their push) are
    /// served only when set: they need the tokio that profscope patches
    /// (see [`TASK_DUMPS_OFF`](crate::tasks::TASK_DUMPS_OFF)). Default off.
    pub task_dumps: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("max_seconds", &self.max_seconds)
            .field("default_frequency", &self.default_frequency)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_concurrent_captures", &self.max_concurrent_captures)
            .field("heap_dump_dir", &self.heap_dump_dir)
            .field("cgroup_root", &self.cgroup_root)
            .field("debug_dir", &self.debug_dir)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("task_dumps", &self.task_dumps)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 6060)),
            max_seconds: 300,
            default_frequency: 99,
            bearer_token: None,
            max_concurrent_requests: 4,
            max_concurrent_captures: 8,
            heap_dump_dir: None,
            cgroup_root: std::path::PathBuf::from("/sys/fs/cgroup"),
            debug_dir: None,
            header_read_timeout: std::time::Duration::from_secs(10),
            max_connections: 64,
            task_dumps: false,
        }
    }
}

impl Config {
    /// Refuses settings the agent cannot run with, naming the setting.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let c = self;
        if c.max_seconds == 0 {
            return Err(Error::InvalidConfig(
                "max_seconds must be at least 1".into(),
            ));
        }
        if !FREQUENCY_RANGE.contains(&c.default_frequency) {
            return Err(Error::InvalidConfig(format!(
                "default_frequency {} is outside 1..=1000 Hz",
                c.default_frequency
            )));
        }
        if let Some(token) = &c.bearer_token {
            // What a client can put after `Bearer ` in a header: visible
            // ASCII, no spaces (RFC 6750's token68 and then some).
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::InvalidConfig(
                    "bearer token must be non-empty visible ASCII without spaces".into(),
                ));
            }
        }
        if c.max_connections == 0 || c.header_read_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "max_connections and header_read_timeout must be above zero".into(),
            ));
        }
        if c.max_concurrent_requests == 0 || c.max_concurrent_captures == 0 {
            return Err(Error::InvalidConfig(
                "max_concurrent_requests and max_concurrent_captures must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
