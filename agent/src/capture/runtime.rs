//! Tokio runtime and task-group metrics: what the runtime's workers are doing
//! and how named groups of tasks (or axum routes) are polled.
//!
//! Runtime counters are read from the runtime's own cumulative counters at
//! scrape time, so Prometheus `rate()` works on them; the busy ratio since
//! the previous read comes from tokio-metrics' `RuntimeMonitor`. Task groups
//! are tokio-metrics `TaskMonitor`s handed out by name.
//!
//! The stable subset is always there. Polls, steals, local queues, mean poll
//! time, overflows, forced yields and blocking-pool figures need the build
//! to set `--cfg tokio_unstable`; without it they are absent (`None`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::http::Request;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio_metrics::{RuntimeIntervals, RuntimeMonitor, TaskMonitor};

/// Figures of one worker thread, cumulative since the runtime started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerSnapshot {
    /// Worker index.
    pub worker: usize,
    /// Time spent busy (polling tasks), seconds.
    pub busy_seconds: f64,
    /// Times the worker parked.
    pub parks: u64,
    /// Times it parked or unparked.
    pub park_unparks: u64,
    /// Unstable-only figures.
    #[serde(flatten)]
    pub unstable: Option<WorkerUnstable>,
}

/// Per-worker figures that need `tokio_unstable`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerUnstable {
    /// Tasks polled.
    pub polls: u64,
    /// Tasks stolen from other workers.
    pub steals: u64,
    /// Steal operations (each may take several tasks).
    pub steal_operations: u64,
    /// Unparks that found nothing to do.
    pub noops: u64,
    /// Tasks scheduled onto its own local queue.
    pub local_schedules: u64,
    /// Times its local queue overflowed into the global one.
    pub overflows: u64,
    /// Tasks in its local queue now.
    pub local_queue_depth: usize,
    /// Exponentially weighted mean poll time, seconds.
    pub mean_poll_seconds: f64,
}

/// The runtime as a whole, read now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeSnapshot {
    /// Worker threads.
    pub workers: usize,
    /// Tasks alive (spawned, not finished).
    pub alive_tasks: usize,
    /// Tasks in the global (injection) queue.
    pub global_queue_depth: usize,
    /// Share of worker time spent busy since the previous read (0..=1).
    pub busy_ratio: f64,
    /// Per worker.
    pub per_worker: Vec<WorkerSnapshot>,
    /// Whole-runtime figures that need `tokio_unstable`.
    #[serde(flatten)]
    pub unstable: Option<RuntimeUnstable>,
}

/// Whole-runtime figures that need `tokio_unstable`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeUnstable {
    /// Tasks spawned since start.
    pub spawned_tasks: u64,
    /// Tasks scheduled from outside the runtime.
    pub remote_schedules: u64,
    /// Times a task was forced to yield by its coop budget.
    pub budget_forced_yields: u64,
    /// Threads in the blocking pool.
    pub blocking_threads: usize,
    /// Idle threads in the blocking pool.
    pub idle_blocking_threads: usize,
    /// Tasks waiting for a blocking thread.
    pub blocking_queue_depth: usize,
}

/// One task group's cumulative figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskGroupSnapshot {
    /// Tasks instrumented.
    pub instrumented: u64,
    /// Instrumented tasks dropped (finished or cancelled).
    pub dropped: u64,
    /// Tasks polled at least once.
    pub first_polls: u64,
    /// Total delay between instrumentation and first poll, seconds.
    pub first_poll_delay_seconds: f64,
    /// Times tasks went idle (returned Pending and waited to be woken).
    pub idles: u64,
    /// Total time idle, seconds.
    pub idle_seconds: f64,
    /// Times tasks were woken and scheduled.
    pub scheduled: u64,
    /// Total time between wake and poll, seconds.
    pub scheduled_seconds: f64,
    /// Polls.
    pub polls: u64,
    /// Total time in poll, seconds.
    pub poll_seconds: f64,
    /// Polls slower than the slow-poll threshold (50 µs by default).
    pub slow_polls: u64,
    /// Total time in slow polls, seconds.
    pub slow_poll_seconds: f64,
    /// Schedule delays longer than the long-delay threshold.
    pub long_delays: u64,
    /// Total time in long schedule delays, seconds.
    pub long_delay_seconds: f64,
}

/// Everything `/debug/tokio` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TokioSnapshot {
    /// The runtime, when the agent was built inside one.
    pub runtime: Option<RuntimeSnapshot>,
    /// Task groups by name.
    pub task_groups: BTreeMap<String, TaskGroupSnapshot>,
}

/// Watches the runtime the agent was built in.
pub(crate) struct RuntimeObserver {
    handle: Handle,
    intervals: Mutex<RuntimeIntervals>,
}

impl std::fmt::Debug for RuntimeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeObserver").finish_non_exhaustive()
    }
}

impl RuntimeObserver {
    pub(crate) fn new(handle: Handle) -> Self {
        let intervals = RuntimeMonitor::new(&handle).intervals();
        RuntimeObserver {
            handle,
            intervals: Mutex::new(intervals),
        }
    }

    /// Reads the runtime's counters now.
    pub(crate) fn snapshot(&self) -> RuntimeSnapshot {
        let m = self.handle.metrics();
        let busy_ratio = self
            .intervals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next()
            .map_or(0.0, |i| i.busy_ratio());
        let workers = m.num_workers();
        RuntimeSnapshot {
            workers,
            alive_tasks: m.num_alive_tasks(),
            global_queue_depth: m.global_queue_depth(),
            busy_ratio: if busy_ratio.is_finite() {
                busy_ratio
            } else {
                0.0
            },
            per_worker: (0..workers)
                .map(|w| WorkerSnapshot {
                    worker: w,
                    busy_seconds: m.worker_total_busy_duration(w).as_secs_f64(),
                    parks: m.worker_park_count(w),
                    park_unparks: m.worker_park_unpark_count(w),
                    unstable: worker_unstable(&m, w),
                })
                .collect(),
            unstable: runtime_unstable(&m),
        }
    }
}

#[cfg(tokio_unstable)]
fn worker_unstable(m: &tokio::runtime::RuntimeMetrics, w: usize) -> Option<WorkerUnstable> {
    Some(WorkerUnstable {
        polls: m.worker_poll_count(w),
        steals: m.worker_steal_count(w),
        steal_operations: m.worker_steal_operations(w),
        noops: m.worker_noop_count(w),
        local_schedules: m.worker_local_schedule_count(w),
        overflows: m.worker_overflow_count(w),
        local_queue_depth: m.worker_local_queue_depth(w),
        mean_poll_seconds: m.worker_mean_poll_time(w).as_secs_f64(),
    })
}

#[cfg(not(tokio_unstable))]
fn worker_unstable(_: &tokio::runtime::RuntimeMetrics, _: usize) -> Option<WorkerUnstable> {
    None
}

#[cfg(tokio_unstable)]
fn runtime_unstable(m: &tokio::runtime::RuntimeMetrics) -> Option<RuntimeUnstable> {
    Some(RuntimeUnstable {
        spawned_tasks: m.spawned_tasks_count(),
        remote_schedules: m.remote_schedule_count(),
        budget_forced_yields: m.budget_forced_yield_count(),
        blocking_threads: m.num_blocking_threads(),
        idle_blocking_threads: m.num_idle_blocking_threads(),
        blocking_queue_depth: m.blocking_queue_depth(),
    })
}

#[cfg(not(tokio_unstable))]
fn runtime_unstable(_: &tokio::runtime::RuntimeMetrics) -> Option<RuntimeUnstable> {
    None
}

/// Named task monitors, shared by the agent and every layer it hands out.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskGroups {
    groups: Arc<Mutex<BTreeMap<String, TaskMonitor>>>,
    /// Each route's `route=<path>` label set.
    routes: Arc<Mutex<BTreeMap<String, crate::capture::labels::LabelSet>>>,
}

/// Route groups beyond this many share one `other` group, so a scanner
/// hitting random paths cannot grow the label set without bound (matched
/// paths are route templates, so real services stay far below it).
const MAX_GROUPS: usize = 512;

impl TaskGroups {
    /// The monitor of group `name`, created on first use.
    pub(crate) fn monitor(&self, name: &str) -> TaskMonitor {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = groups.get(name) {
            return m.clone();
        }
        let key = if groups.len() >= MAX_GROUPS {
            "other"
        } else {
            name
        };
        groups.entry(key.to_string()).or_default().clone()
    }

    /// The group of route `path`, with its `route=<path>` label set
    /// (interned once per route).
    pub(crate) fn route(&self, path: &str) -> (TaskMonitor, crate::capture::labels::LabelSet) {
        let monitor = self.monitor(path);
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(labels) = routes.get(path) {
            return (monitor, labels.clone());
        }
        let labels = crate::capture::labels::LabelSet::new([("route", path)]);
        if routes.len() < MAX_GROUPS {
            routes.insert(path.to_string(), labels.clone());
        }
        (monitor, labels)
    }

    /// Task group `name`: its monitor and its `task_group=<name>` labels.
    pub(crate) fn group(&self, name: &str) -> TaskGroup {
        TaskGroup {
            monitor: self.monitor(name),
            labels: crate::capture::labels::LabelSet::new([("task_group", name)]),
        }
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, TaskGroupSnapshot> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups
            .iter()
            .map(|(name, monitor)| {
                let c = monitor.cumulative();
                (
                    name.clone(),
                    TaskGroupSnapshot {
                        instrumented: c.instrumented_count,
                        dropped: c.dropped_count,
                        first_polls: c.first_poll_count,
                        first_poll_delay_seconds: c.total_first_poll_delay.as_secs_f64(),
                        idles: c.total_idled_count,
                        idle_seconds: c.total_idle_duration.as_secs_f64(),
                        scheduled: c.total_scheduled_count,
                        scheduled_seconds: c.total_scheduled_duration.as_secs_f64(),
                        polls: c.total_poll_count,
                        poll_seconds: c.total_poll_duration.as_secs_f64(),
                        slow_polls: c.total_slow_poll_count,
                        slow_poll_seconds: c.total_slow_poll_duration.as_secs_f64(),
                        long_delays: c.total_long_delay_count,
                        long_delay_seconds: c.total_long_delay_duration.as_secs_f64(),
                    },
                )
            })
            .collect()
    }
}

/// A tower layer that monitors every request of an axum router as a task
/// group named after its matched route (`GET /users/{id}` → `/users/{id}`).
/// Apply it with `Router::route_layer` so the matched path is known.
#[derive(Debug, Clone)]
pub struct RouteMetricsLayer {
    groups: TaskGroups,
}

impl RouteMetricsLayer {
    pub(crate) fn new(groups: TaskGroups) -> Self {
        RouteMetricsLayer { groups }
    }
}

impl<S> tower_layer::Layer<S> for RouteMetricsLayer {
    type Service = RouteMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteMetrics {
            inner,
            groups: self.groups.clone(),
        }
    }
}

/// The service of [`RouteMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RouteMetrics<S> {
    inner: S,
    groups: TaskGroups,
}

impl<S, B> tower_service::Service<Request<B>> for RouteMetrics<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = crate::capture::labels::Scoped<tokio_metrics::Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let group = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let (monitor, labels) = self.groups.route(group);
        // Every poll of the request's future adds `route=<path>` to the
        // labels current then (a tracing span's `method`, say).
        crate::capture::labels::Scoped::new(labels, monitor.instrument(self.inner.call(request)))
    }
}

/// A named task group whose futures are both monitored (task-group metrics
/// on `/metrics` and `/debug/tokio`) and labelled `task_group=<name>` in
/// CPU profiles. From [`Agent::task_group`](crate::Agent::task_group).
#[derive(Debug, Clone)]
pub struct TaskGroup {
    monitor: TaskMonitor,
    labels: crate::capture::labels::LabelSet,
}

impl TaskGroup {
    /// `fut`, monitored as this group and polled with `task_group=<name>`
    /// and the labels current where `instrument` is called (so a spawned
    /// task keeps its spawner's) added to the labels current at each poll.
    pub fn instrument<F: std::future::Future>(
        &self,
        fut: F,
    ) -> crate::capture::labels::Scoped<tokio_metrics::Instrumented<F>> {
        let labels = crate::capture::labels::current().with(self.labels.pairs().iter().cloned());
        crate::capture::labels::Scoped::new(labels, self.monitor.instrument(fut))
    }

    /// The group's tokio-metrics monitor.
    pub fn monitor(&self) -> &TaskMonitor {
        &self.monitor
    }
}
