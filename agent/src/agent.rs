//! The agent: the profilers and caches a service's requests share, the
//! axum `Router` a service merges, and serving on an address of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

use crate::capture::cpu::CpuProfiler;
use crate::capture::heap::HeapProfiler;
use crate::capture::recorder::{Recorder, RecorderConfig};
use crate::capture::runtime::{RouteMetricsLayer, RuntimeObserver, TaskGroups, TokioSnapshot};
use crate::capture::watchdog::{Watchdog, WatchdogConfig};
use crate::delivery::http;
use crate::delivery::push::Pusher;
use crate::shared::symbols::Symbolizer;
use crate::{AgentBuilder, Config, Error};

/// Text pages (`/metrics`, `/debug/memory`) rendered at once; more wait.
const PAGES_AT_ONCE: usize = 2;

#[derive(Debug)]
struct Inner {
    runtime: Option<RuntimeObserver>,
    runtime_handle: Option<Handle>,
    task_groups: TaskGroups,
    registry: Option<prometheus::Registry>,
    process: prometheus::Registry,
    config: Config,
    cpu: CpuProfiler,
    heap: Arc<HeapProfiler>,
    requests: Semaphore,
    captures: Semaphore,
    /// Text pages (`/metrics`, `/debug/memory`) rendered at once.
    pages: Semaphore,
    symbolizer: Symbolizer,
    pusher: std::sync::OnceLock<Pusher>,
    recorder: std::sync::OnceLock<Recorder>,
    watchdog: std::sync::OnceLock<Watchdog>,
}

impl crate::delivery::push::Sources for Inner {
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

    fn recorder(&self) -> Option<&Recorder> {
        self.recorder.get()
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
    /// Readies the profilers around checked settings and starts the push
    /// when one is configured.
    pub(crate) fn assemble(
        config: Config,
        runtime: Option<Handle>,
        registry: Option<prometheus::Registry>,
        push: Option<crate::delivery::push::PushConfig>,
        recorder: Option<RecorderConfig>,
        watchdog: Option<WatchdogConfig>,
    ) -> Result<Agent, Error> {
        let process = prometheus::Registry::new();
        // The process collector only fails to register on a name clash,
        // impossible in a registry of its own.
        let _ = process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let frequency = config.default_frequency;
        let symbolizer = match &config.debug_dir {
            Some(dir) => Symbolizer::with_debug_dir(dir.clone()),
            None => Symbolizer::new(),
        };
        let agent = Agent {
            inner: Arc::new(Inner {
                runtime: runtime.clone().map(RuntimeObserver::new),
                runtime_handle: runtime,
                task_groups: TaskGroups::default(),
                registry,
                process,
                heap: Arc::new(HeapProfiler::new(config.heap_dump_dir.clone())),
                requests: Semaphore::new(config.max_concurrent_requests),
                captures: Semaphore::new(config.max_concurrent_captures),
                pages: Semaphore::new(PAGES_AT_ONCE),
                config,
                cpu: CpuProfiler::new(),
                symbolizer,
                pusher: std::sync::OnceLock::new(),
                recorder: std::sync::OnceLock::new(),
                watchdog: std::sync::OnceLock::new(),
            }),
        };
        if let Some(config) = recorder {
            let weak = Arc::downgrade(&agent.inner);
            let sources = crate::capture::recorder::Sources {
                heap: agent.inner.heap.clone(),
                symbolizer: agent.inner.symbolizer.clone(),
                task_groups: agent.inner.task_groups.clone(),
                metrics: Box::new(move || {
                    weak.upgrade()
                        .map(|inner| {
                            let snapshot = TokioSnapshot {
                                runtime: inner.runtime.as_ref().map(RuntimeObserver::snapshot),
                                task_groups: inner.task_groups.snapshot(),
                            };
                            serde_json::to_value(snapshot).unwrap_or_default()
                        })
                        .unwrap_or_default()
                }),
                cgroup_root: agent.inner.config.cgroup_root.clone(),
            };
            let _ = agent.inner.recorder.set(Recorder::start(config, sources)?);
        }
        if let Some(config) = watchdog {
            let recorder = agent.inner.recorder.get().cloned();
            let symbolizer = agent.inner.symbolizer.clone();
            let _ = agent
                .inner
                .watchdog
                .set(Watchdog::start(config, recorder, symbolizer)?);
        }
        if let Some(push) = push {
            let weak: std::sync::Weak<Inner> = Arc::downgrade(&agent.inner);
            let sources: std::sync::Weak<dyn crate::delivery::push::Sources> = weak;
            let pusher = Pusher::start(sources, push, frequency)?;
            let _ = agent.inner.pusher.set(pusher);
        }
        Ok(agent)
    }

    /// A builder with the defaults: `127.0.0.1:6060`, 300 s max, 99 Hz.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// What the push has done so far (`None` when it is off).
    pub fn push_stats(&self) -> Option<crate::delivery::push::PushStats> {
        self.inner.pusher.get().map(Pusher::stats)
    }

    /// Stops the push: the period in progress is not sent, what is queued
    /// is delivered until `deadline` passes and the rest dropped (counted
    /// as `shutdown`). Returns within the deadline even when the backend
    /// hangs; `None` when the push is off. Call it as the service shuts
    /// down.
    pub fn shutdown_push(
        &self,
        deadline: std::time::Duration,
    ) -> Option<crate::delivery::push::PushStats> {
        self.inner.pusher.get().map(|p| p.shutdown(deadline))
    }

    /// The flight recorder, when the builder turned it on.
    pub fn recorder(&self) -> Option<&Recorder> {
        self.inner.recorder.get()
    }

    /// The blocking watchdog, when the builder turned it on.
    pub fn watchdog(&self) -> Option<&Watchdog> {
        self.inner.watchdog.get()
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
        tokio::task::spawn_blocking(move || {
            let _agent = crate::capture::labels::agent_scope();
            render(&agent)
        })
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
    pub fn task_group(&self, name: &str) -> crate::capture::runtime::TaskGroup {
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
        crate::delivery::http::metrics::page::render(
            self.inner.registry.as_ref(),
            &self.inner.process,
            &self.tokio_snapshot(),
            &self.memory_report(),
            self.push_stats().as_ref(),
            self.recorder().map(Recorder::status).as_ref(),
            self.watchdog().map(Watchdog::metrics).as_ref(),
        )
    }

    /// Where the resident memory goes now (what `/debug/memory` serves):
    /// reads `/proc` and jemalloc's statistics; the heap line is the most
    /// recent heap profile's, never a new dump.
    pub fn memory_report(&self) -> crate::capture::memory::MemoryReport {
        let sources = crate::capture::memory::Sources {
            cgroup_root: self.inner.config.cgroup_root.clone(),
            ..Default::default()
        };
        // The sampling allocator's estimate is current (read from its live
        // records); jemalloc's is the last profile's.
        let heap = match crate::capture::heap::wrapper_in_use() {
            Some(bytes) => Some(crate::capture::memory::HeapEstimate {
                in_use_bytes: bytes as i64,
                age_seconds: 0.0,
            }),
            None => self.inner.heap.last_in_use().map(|(bytes, age)| {
                crate::capture::memory::HeapEstimate {
                    in_use_bytes: bytes,
                    age_seconds: age.as_secs_f64(),
                }
            }),
        };
        crate::capture::memory::report(&sources, crate::capture::heap::jemalloc_stats(), heap)
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
            server: Server::Task(task),
        })
    }

    /// Binds [`Config::addr`] and serves from a thread of its own running a
    /// small tokio runtime of its own (one worker), so the endpoints
    /// (`/debug/pprof/block`, `/metrics`, CPU profiles) answer even while
    /// every worker of the service's runtime is stuck: what the watchdog and
    /// task dumps want. Callable from anywhere, in a runtime or not.
    pub fn spawn_on_own_runtime(self) -> Result<RunningAgent, Error> {
        let listener = std::net::TcpListener::bind(self.config().addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("profscope-side-port".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("profscope-agent-runtime")
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    self.serve_on(listener, async {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            })?;
        Ok(RunningAgent {
            local_addr,
            stop: Some(stop_tx),
            server: Server::Thread(thread),
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

/// An agent serving on its own address, from [`Agent::spawn`] or
/// [`Agent::spawn_on_own_runtime`].
#[derive(Debug)]
pub struct RunningAgent {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Server,
}

#[derive(Debug)]
enum Server {
    /// A task on the service's runtime.
    Task(JoinHandle<Result<(), Error>>),
    /// A thread with a runtime of its own.
    Thread(std::thread::JoinHandle<Result<(), Error>>),
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
        match self.server {
            Server::Task(task) => task
                .await
                .map_err(|e| Error::Internal(format!("agent server task: {e}")))?,
            Server::Thread(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| Error::Internal(format!("agent server thread: {e}")))?
                .map_err(|_| Error::Internal("agent server thread panicked".into()))?,
        }
    }
}
