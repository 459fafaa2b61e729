//! The agent and its builder: configuration, the axum `Router` a service
//! merges, and serving on an address of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::cpu::{CpuProfiler, FREQUENCY_RANGE};
use crate::heap::HeapProfiler;
use crate::push::Pusher;
use crate::runtime::{RouteMetricsLayer, RuntimeObserver, TaskGroups, TokioSnapshot};
use crate::symbols::Symbolizer;
use crate::{Error, http};

/// Text pages (`/metrics`, `/debug/memory`) rendered at once; more wait.
const PAGES_AT_ONCE: usize = 2;

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
    /// Side port only: how long a connection may take to send a whole
    /// request head (idle keep-alive connections included) before it is
    /// closed. Default 10 s.
    pub header_read_timeout: std::time::Duration,
    /// Side port only: connections served at once; past it a new one gets
    /// a 503 and is closed. Default 64.
    pub max_connections: usize,
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
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
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
            header_read_timeout: std::time::Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Configures an [`Agent`]. Start from [`Agent::builder`].
#[derive(Debug, Clone, Default)]
pub struct AgentBuilder {
    config: Config,
    runtime: Option<Handle>,
    registry: Option<prometheus::Registry>,
    push: Option<crate::push::PushConfig>,
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
    pub fn push(mut self, config: crate::push::PushConfig) -> Self {
        self.push = Some(config);
        self
    }

    /// Checks the configuration and readies the profilers.
    ///
    /// Nothing of the CPU profiler is set up here: the sample stream starts
    /// with the first capture and stops after the last, so a service that
    /// never takes a CPU profile never holds its buffers or timers.
    pub fn build(self) -> Result<Agent, Error> {
        let c = &self.config;
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
        let process = prometheus::Registry::new();
        // The process collector only fails to register on a name clash,
        // impossible in a registry of its own.
        let _ = process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        if let Some(push) = &self.push {
            push.check().map_err(Error::InvalidConfig)?;
        }
        let runtime = self.runtime.or_else(|| Handle::try_current().ok());
        let frequency = self.config.default_frequency;
        let push = self.push;
        let agent = Agent {
            inner: Arc::new(Inner {
                runtime: runtime.clone().map(RuntimeObserver::new),
                runtime_handle: runtime,
                task_groups: TaskGroups::default(),
                registry: self.registry,
                process,
                heap: HeapProfiler::new(self.config.heap_dump_dir.clone()),
                requests: Semaphore::new(self.config.max_concurrent_requests),
                captures: Semaphore::new(self.config.max_concurrent_captures),
                pages: Semaphore::new(PAGES_AT_ONCE),
                config: self.config,
                cpu: CpuProfiler::new(),
                symbolizer: Symbolizer::new(),
                pusher: std::sync::OnceLock::new(),
            }),
        };
        if let Some(push) = push {
            let weak: std::sync::Weak<Inner> = Arc::downgrade(&agent.inner);
            let sources: std::sync::Weak<dyn crate::push::Sources> = weak;
            let pusher = Pusher::start(sources, push, frequency)?;
            let _ = agent.inner.pusher.set(pusher);
        }
        Ok(agent)
    }
}

#[derive(Debug)]
struct Inner {
    runtime: Option<RuntimeObserver>,
    runtime_handle: Option<Handle>,
    task_groups: TaskGroups,
    registry: Option<prometheus::Registry>,
    process: prometheus::Registry,
    config: Config,
    cpu: CpuProfiler,
    heap: HeapProfiler,
    requests: Semaphore,
    captures: Semaphore,
    /// Text pages (`/metrics`, `/debug/memory`) rendered at once.
    pages: Semaphore,
    symbolizer: Symbolizer,
    pusher: std::sync::OnceLock<Pusher>,
}

impl crate::push::Sources for Inner {
    fn cpu(&self) -> &CpuProfiler {
        &self.cpu
    }

    fn heap(&self) -> &HeapProfiler {
        &self.heap
    }

    fn symbolizer(&self) -> &Symbolizer {
        &self.symbolizer
    }

    fn runtime_handle(&self) -> Option<&Handle> {
        self.runtime_handle.as_ref()
    }
}

/// The profiling agent. Cheap to clone; clones share profilers and caches.
///
/// ```no_run
/// # async fn run() -> Result<(), profscope_agent::Error> {
/// use profscope_agent::Agent;
///
/// // Merge into an axum service…
/// let agent = Agent::builder().max_seconds(120).build()?;
/// let app = axum::Router::new()
///     .route("/hello", axum::routing::get(|| async { "hello" }))
///     .merge(agent.router());
/// # let _ = app;
/// // …or serve on a side port (127.0.0.1:6060 by default).
/// let running = Agent::builder().build()?.spawn().await?;
/// println!("pprof on http://{}/debug/pprof/", running.local_addr());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl Agent {
    /// A builder with the defaults: `127.0.0.1:6060`, 300 s max, 99 Hz.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// What the push has done so far (`None` when it is off).
    pub fn push_stats(&self) -> Option<crate::push::PushStats> {
        self.inner.pusher.get().map(Pusher::stats)
    }

    /// Stops the push: the period in progress is not sent, what is queued
    /// is delivered until `deadline` passes and the rest dropped (counted
    /// as `shutdown`). Returns within the deadline even when the backend
    /// hangs; `None` when the push is off. Call it as the service shuts
    /// down.
    pub fn shutdown_push(&self, deadline: std::time::Duration) -> Option<crate::push::PushStats> {
        self.inner.pusher.get().map(|p| p.shutdown(deadline))
    }

    /// The agent's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn cpu(&self) -> &CpuProfiler {
        &self.inner.cpu
    }

    pub(crate) fn heap(&self) -> &HeapProfiler {
        &self.inner.heap
    }

    /// A permit to run one bounded request (heap profiles), or 429.
    pub(crate) fn request_permit(&self) -> Result<SemaphorePermit<'_>, Error> {
        self.inner
            .requests
            .try_acquire()
            .map_err(|_| Error::TooManyRequests {
                limit: self.inner.config.max_concurrent_requests,
            })
    }

    /// A permit to run one CPU capture, or 429.
    pub(crate) fn capture_permit(&self) -> Result<SemaphorePermit<'_>, Error> {
        self.inner
            .captures
            .try_acquire()
            .map_err(|_| Error::TooManyRequests {
                limit: self.inner.config.max_concurrent_captures,
            })
    }

    /// Runs `render` (reading `/proc`, jemalloc statistics: blocking work)
    /// on a blocking thread, never on the runtime's workers, at most
    /// [`PAGES_AT_ONCE`] at a time: more requests wait their turn (a scrape
    /// should not fail for being one of many), so a flood takes neither the
    /// service's workers nor more than that many blocking threads.
    pub(crate) async fn render_page<T: Send + 'static>(
        &self,
        render: impl FnOnce(&Agent) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .inner
            .pages
            .acquire()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let agent = self.clone();
        tokio::task::spawn_blocking(move || render(&agent))
            .await
            .map_err(|e| Error::Internal(format!("page rendering thread failed: {e}")))
    }

    /// The task monitor of group `name` (created on first use): instrument
    /// futures with it and the group's poll, idle and schedule times appear
    /// on `/metrics` and `/debug/tokio`, labelled `group="name"`. (This is
    /// tokio-metrics' own monitor, which does not label CPU samples; use
    /// [`task_group`](Self::task_group) for both.)
    ///
    /// ```no_run
    /// # async fn run(agent: profscope_agent::Agent) {
    /// let ingest = agent.task_monitor("ingest");
    /// tokio::spawn(ingest.instrument(async { /* … */ }));
    /// # }
    /// ```
    pub fn task_monitor(&self, name: &str) -> tokio_metrics::TaskMonitor {
        self.inner.task_groups.monitor(name)
    }

    /// Task group `name`: futures it instruments are monitored (like
    /// [`task_monitor`](Self::task_monitor)) and their CPU samples labelled
    /// `task_group=<name>`.
    ///
    /// ```no_run
    /// # async fn run(agent: profscope_agent::Agent) {
    /// let ingest = agent.task_group("ingest");
    /// tokio::spawn(ingest.instrument(async { /* … */ }));
    /// # }
    /// ```
    pub fn task_group(&self, name: &str) -> crate::runtime::TaskGroup {
        self.inner.task_groups.group(name)
    }

    /// A tower layer monitoring each axum route as a task group named by its
    /// matched path, and labelling the CPU samples of its requests
    /// `route=<matched path>`; add it with `Router::route_layer`.
    pub fn route_metrics_layer(&self) -> RouteMetricsLayer {
        RouteMetricsLayer::new(self.inner.task_groups.clone())
    }

    /// Runtime and task-group figures now (what `/debug/tokio` serves).
    pub fn tokio_snapshot(&self) -> TokioSnapshot {
        TokioSnapshot {
            runtime: self.inner.runtime.as_ref().map(RuntimeObserver::snapshot),
            task_groups: self.inner.task_groups.snapshot(),
        }
    }

    /// The `/metrics` page as text.
    pub fn metrics_text(&self) -> Result<String, Error> {
        crate::metrics::render(
            self.inner.registry.as_ref(),
            &self.inner.process,
            &self.tokio_snapshot(),
            &self.memory_report(),
            self.push_stats().as_ref(),
        )
    }

    /// Where the resident memory goes now (what `/debug/memory` serves):
    /// reads `/proc` and jemalloc's statistics; the heap line is the most
    /// recent heap profile's, never a new dump.
    pub fn memory_report(&self) -> crate::memory::MemoryReport {
        let sources = crate::memory::Sources {
            cgroup_root: self.inner.config.cgroup_root.clone(),
            ..Default::default()
        };
        let heap = self
            .inner
            .heap
            .last_in_use()
            .map(|(bytes, age)| crate::memory::HeapEstimate {
                in_use_bytes: bytes,
                age_seconds: age.as_secs_f64(),
            });
        crate::memory::report(&sources, crate::heap::jemalloc_stats(), heap)
    }

    pub(crate) fn runtime_handle(&self) -> Option<&Handle> {
        self.inner.runtime_handle.as_ref()
    }

    /// Switches heap sampling of new allocations on or off at run time
    /// (jemalloc's `prof.active`). Already-sampled allocations stay in the
    /// profile until freed.
    pub fn set_heap_profiling(&self, active: bool) -> Result<(), Error> {
        HeapProfiler::set_active(active)
    }

    /// Whether heap profiles can be produced, and sampling is on.
    pub fn heap_profiling_active(&self) -> bool {
        HeapProfiler::is_available() && HeapProfiler::is_active()
    }

    /// The symbolizer shared by every profile the agent builds.
    pub fn symbolizer(&self) -> &Symbolizer {
        &self.inner.symbolizer
    }

    /// The agent's routes (`/debug/pprof/…`), ready to merge into a service's
    /// own `Router`.
    pub fn router(&self) -> Router {
        http::router(self.clone())
    }

    /// Serves the agent on [`Config::addr`] until the task is dropped, with
    /// the side port's connection limits ([`Config::header_read_timeout`],
    /// [`Config::max_connections`]).
    pub async fn serve(self) -> Result<(), Error> {
        let listener = TcpListener::bind(self.config().addr).await?;
        self.serve_on(listener, std::future::pending()).await
    }

    /// Binds [`Config::addr`] and serves in a background task; the returned
    /// handle knows the bound address (useful with port 0) and stops it.
    pub async fn spawn(self) -> Result<RunningAgent, Error> {
        let listener = TcpListener::bind(self.config().addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve_on(listener, async {
            let _ = stop_rx.await;
        }));
        Ok(RunningAgent {
            local_addr,
            stop: Some(stop_tx),
            task,
        })
    }

    async fn serve_on(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let c = self.config();
        let limits = http::server::ConnectionLimits {
            header_read_timeout: c.header_read_timeout,
            max_connections: c.max_connections,
            // The longest capture, its encoding and a slow download.
            max_lifetime: std::time::Duration::from_secs(c.max_seconds.saturating_add(60)),
        };
        http::server::serve(listener, self.router(), limits, shutdown).await
    }
}

/// An agent serving on its own address, from [`Agent::spawn`].
#[derive(Debug)]
pub struct RunningAgent {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl RunningAgent {
    /// The address the agent listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| Error::Internal(format!("agent server task: {e}")))?
    }
}
