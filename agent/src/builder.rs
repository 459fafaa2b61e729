//! [`AgentBuilder`]: the settings a service chooses, checked once at
//! [`build`](AgentBuilder::build).

use std::net::SocketAddr;

use tokio::runtime::Handle;

use crate::{Agent, Config, Error};

/// Configures an [`Agent`]. Start from [`Agent::builder`].
#[derive(Debug, Clone, Default)]
pub struct AgentBuilder {
    config: Config,
    runtime: Option<Handle>,
    registry: Option<prometheus::Registry>,
    push: Option<crate::delivery::push::PushConfig>,
    recorder: Option<crate::capture::recorder::RecorderConfig>,
    watchdog: Option<crate::capture::watchdog::WatchdogConfig>,
}

impl AgentBuilder {
    /// The address to serve on when the agent runs on its own port. Keep it
    /// on loopback unless the endpoints are protected otherwise.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// The longest capture a request may ask for (`seconds`), default 300.
    pub fn max_seconds(mut self, max_seconds: u64) -> Self {
        self.config.max_seconds = max_seconds;
        self
    }

    /// The CPU sampling frequency used when a request names none, default 99 Hz.
    pub fn default_frequency(mut self, hz: u32) -> Self {
        self.config.default_frequency = hz;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every agent request.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.config.bearer_token = Some(token.into());
        self
    }

    /// How many heap profile requests may run at once (default 4); more get 429.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.config.max_concurrent_requests = n;
        self
    }

    /// How many CPU profile captures may run at once (default 8); more get
    /// 429. Each holds a thread of the blocking pool for its `seconds`, so
    /// this also bounds what the agent takes from `spawn_blocking`.
    pub fn max_concurrent_captures(mut self, n: usize) -> Self {
        self.config.max_concurrent_captures = n;
        self
    }

    /// Where jemalloc writes heap dumps before the agent reads and removes
    /// them. Default: a private (0700) directory under the system temp dir,
    /// removed when the agent is dropped.
    pub fn heap_dump_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.heap_dump_dir = Some(dir.into());
        self
    }

    /// Where separate debug files of stripped libraries are read from
    /// (`/usr/lib/debug` by default, or `$PROFSCOPE_DEBUG_DIR`; `None`:
    /// nowhere). Debian installs libc's with `apt-get install libc6-dbg`;
    /// without one, frames in a stripped library carry only its name.
    pub fn debug_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.config.debug_dir = Some(dir);
        self
    }

    /// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` by
    /// default), for the cgroup lines of `/debug/memory`.
    pub fn cgroup_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.config.cgroup_root = root.into();
        self
    }

    /// On the side port ([`Agent::spawn`], [`Agent::serve`]): how long a
    /// connection may take to send a request head, idle keep-alive
    /// connections included, before it is closed (default 10 s). In the
    /// merged-router case the service's own server decides.
    pub fn header_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// On the side port: connections served at once (default 64); past
    /// it a new connection gets a 503 and is closed.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Serves task dumps (`/debug/pprof/tasks`, `goroutine`, `taskleak`)
    /// and lets the push send task profiles; off by default, when they
    /// answer 501 with [`TASK_DUMPS_OFF`](crate::tasks::TASK_DUMPS_OFF).
    ///
    /// Enable them only where the service builds the tokio that profscope
    /// patches (`[patch.crates-io]`, see the README's "Task dumps"): on
    /// tokio 1.54.1 as released, a dump that overlaps a poll longer than
    /// 250 ms can leave a worker waiting forever (tokio-rs/tokio#8370), and
    /// with it the whole service. On a current-thread runtime, a task that
    /// wakes a waker while it is traced panics the runtime's thread
    /// (tokio-rs/tokio#8391, not fixed by the patch).
    pub fn task_dumps(mut self, enabled: bool) -> Self {
        self.config.task_dumps = enabled;
        self
    }

    /// The tokio runtime whose metrics and tasks the agent shows. Default:
    /// the runtime `build` is called in, if any.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// A Prometheus registry of the service's own, whose metrics then appear
    /// on the agent's `/metrics` page too.
    pub fn registry(mut self, registry: prometheus::Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Pushes profiles every period to Grafana Pyroscope and/or an OTLP
    /// endpoint (see [`push`](crate::push)); off unless set. The push
    /// starts with [`build`](Self::build); stop it with
    /// [`Agent::shutdown_push`].
    pub fn push(mut self, config: crate::delivery::push::PushConfig) -> Self {
        self.push = Some(config);
        self
    }

    /// Turns on the flight recorder (see [`recorder`](crate::recorder)): the
    /// last minutes of CPU, heap and runtime metrics, kept at all times, at
    /// `/debug/pprof/recent/*`, and incidents when a configured trigger
    /// fires. Off unless set; `RecorderConfig::default()` can be taken as
    /// it is (no trigger but the manual one).
    pub fn recorder(mut self, config: crate::capture::recorder::RecorderConfig) -> Self {
        self.recorder = Some(config);
        self
    }

    /// Turns on the blocking watchdog (see [`watchdog`](crate::watchdog)): a
    /// poll that holds a runtime worker past the threshold (default 100 ms)
    /// is sampled while it blocks and reported at `/debug/pprof/block`, on
    /// `/metrics`, and as a `blocked_poll` incident when the recorder is on.
    /// Polls are seen through the agent's wrappers (the route layer,
    /// `labels::scope`, task groups) and, for every task, through
    /// [`watchdog::install_poll_hooks`](crate::watchdog) on the runtime's
    /// builder. Off unless set.
    pub fn watchdog(mut self, config: crate::capture::watchdog::WatchdogConfig) -> Self {
        self.watchdog = Some(config);
        self
    }

    /// Checks the configuration and readies the profilers.
    ///
    /// Nothing of the CPU profiler is set up here: the sample stream starts
    /// with the first capture and stops after the last, so a service that
    /// never takes a CPU profile never holds its buffers or timers.
    pub fn build(self) -> Result<Agent, Error> {
        self.config.check()?;
        if let Some(push) = &self.push {
            push.check().map_err(Error::InvalidConfig)?;
            if push.tasks && !self.config.task_dumps {
                return Err(Error::InvalidConfig(format!(
                    "the push of task profiles needs task dumps: {}",
                    crate::capture::tasks::TASK_DUMPS_OFF
                )));
            }
        }
        let runtime = self.runtime.or_else(|| Handle::try_current().ok());
        if let Some(recorder) = &self.recorder {
            recorder.check()?;
        }
        if let Some(watchdog) = &self.watchdog {
            watchdog.check()?;
        }
        Agent::assemble(
            self.config,
            runtime,
            self.registry,
            self.push,
            self.recorder,
            self.watchdog,
        )
    }
}
