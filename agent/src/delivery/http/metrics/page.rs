//! The Prometheus page: the service's own registry (if it passed one), the
//! tokio runtime and task groups, jemalloc's statistics and the process,
//! gathered at scrape time and encoded in the text exposition format.
//!
//! Names follow Prometheus conventions: base units (`_seconds`, `_bytes`),
//! `_total` on counters, which are the runtime's cumulative counts so
//! `rate()` works.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Counter, CounterVec, Encoder, Gauge, GaugeVec, Opts, TextEncoder};

use crate::capture::runtime::{RuntimeSnapshot, TaskGroupSnapshot, TokioSnapshot};

/// Metric families built for one scrape.
#[derive(Default)]
struct Page {
    families: Vec<MetricFamily>,
}

impl Page {
    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        if let Ok(g) = Gauge::with_opts(Opts::new(name, help)) {
            g.set(value);
            self.families.extend(g.collect());
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        if let Ok(c) = Counter::with_opts(Opts::new(name, help)) {
            c.inc_by(value.max(0.0));
            self.families.extend(c.collect());
        }
    }

    fn gauges_by(&mut self, name: &str, help: &str, label: &str, values: &[(String, f64)]) {
        if let Ok(g) = GaugeVec::new(Opts::new(name, help), &[label]) {
            for (l, v) in values {
                g.with_label_values(&[l.as_str()]).set(*v);
            }
            self.families.extend(g.collect());
        }
    }

    fn counters_by(&mut self, name: &str, help: &str, label: &str, values: &[(String, f64)]) {
        if let Ok(c) = CounterVec::new(Opts::new(name, help), &[label]) {
            for (l, v) in values {
                c.with_label_values(&[l.as_str()]).inc_by(v.max(0.0));
            }
            self.families.extend(c.collect());
        }
    }
}

/// Which way a per-worker or per-group figure is exposed.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

fn runtime_families(page: &mut Page, rt: &RuntimeSnapshot) {
    page.gauge(
        "tokio_workers",
        "Worker threads of the tokio runtime.",
        rt.workers as f64,
    );
    page.gauge(
        "tokio_alive_tasks",
        "Tasks alive in the runtime (spawned, not finished).",
        rt.alive_tasks as f64,
    );
    page.gauge(
        "tokio_global_queue_depth",
        "Tasks waiting in the runtime's global queue.",
        rt.global_queue_depth as f64,
    );
    page.gauge(
        "tokio_busy_ratio",
        "Share of worker time spent busy since the previous scrape (0..1); prefer rate(tokio_worker_busy_seconds_total).",
        rt.busy_ratio,
    );
    let per = |f: &dyn Fn(&crate::capture::runtime::WorkerSnapshot) -> Option<f64>| -> Vec<(String, f64)> {
        rt.per_worker
            .iter()
            .filter_map(|w| f(w).map(|v| (w.worker.to_string(), v)))
            .collect()
    };
    type WorkerFigure = (
        &'static str,
        &'static str,
        Kind,
        fn(&crate::capture::runtime::WorkerSnapshot) -> Option<f64>,
    );
    let figures: &[WorkerFigure] = &[
        (
            "tokio_worker_busy_seconds_total",
            "Time each worker spent busy polling tasks.",
            Kind::Counter,
            |w| Some(w.busy_seconds),
        ),
        (
            "tokio_worker_parks_total",
            "Times each worker parked (went idle).",
            Kind::Counter,
            |w| Some(w.parks as f64),
        ),
        (
            "tokio_worker_park_unparks_total",
            "Times each worker parked or unparked.",
            Kind::Counter,
            |w| Some(w.park_unparks as f64),
        ),
        (
            "tokio_worker_polls_total",
            "Tasks each worker polled (tokio_unstable).",
            Kind::Counter,
            |w| w.unstable.as_ref().map(|u| u.polls as f64),
        ),
        (
            "tokio_worker_steals_total",
            "Tasks each worker stole from other workers (tokio_unstable).",
            Kind::Counter,
            |w| w.unstable.as_ref().map(|u| u.steals as f64),
        ),
        (
            "tokio_worker_steal_operations_total",
            "Steal operations of each worker (tokio_unstable).",
            Kind::Counter,
            |w| w.unstable.as_ref().map(|u| u.steal_operations as f64),
        ),
        (
            "tokio_worker_noops_total",
            "Unparks of each worker that found no work (tokio_unstable).",
            Kind::Counter,
            |w| w.unstable.as_ref().map(|u| u.noops as f64),
        ),
        (
            "tokio_worker_local_schedules_total",
            "Tasks each worker scheduled onto its local queue (tokio_unstable).",
            Kind::Counter,
            |w| w.unstable.as_ref().map(|u| u.local_schedules as f64),
        ),
        (
            "tokio_worker_overflows_total",
            "Times each worker's local queue overflowed (tokio_unstable).",
            Kind::Counter,
            |w| w.unstable.as_ref().map(|u| u.overflows as f64),
        ),
        (
            "tokio_worker_local_queue_depth",
            "Tasks in each worker's local queue (tokio_unstable).",
            Kind::Gauge,
            |w| w.unstable.as_ref().map(|u| u.local_queue_depth as f64),
        ),
        (
            "tokio_worker_mean_poll_seconds",
            "Moving mean of each worker's task poll time (tokio_unstable).",
            Kind::Gauge,
            |w| w.unstable.as_ref().map(|u| u.mean_poll_seconds),
        ),
    ];
    for (name, help, kind, f) in figures {
        let values = per(f);
        if values.is_empty() {
            continue;
        }
        match kind {
            Kind::Counter => page.counters_by(name, help, "worker", &values),
            Kind::Gauge => page.gauges_by(name, help, "worker", &values),
        }
    }
    if let Some(u) = &rt.unstable {
        page.counter(
            "tokio_spawned_tasks_total",
            "Tasks spawned since the runtime started (tokio_unstable).",
            u.spawned_tasks as f64,
        );
        page.counter(
            "tokio_remote_schedules_total",
            "Tasks scheduled from outside the runtime (tokio_unstable).",
            u.remote_schedules as f64,
        );
        page.counter(
            "tokio_budget_forced_yields_total",
            "Times a task was forced to yield by its coop budget (tokio_unstable).",
            u.budget_forced_yields as f64,
        );
        page.gauge(
            "tokio_blocking_threads",
            "Threads in the blocking pool (tokio_unstable).",
            u.blocking_threads as f64,
        );
        page.gauge(
            "tokio_idle_blocking_threads",
            "Idle threads in the blocking pool (tokio_unstable).",
            u.idle_blocking_threads as f64,
        );
        page.gauge(
            "tokio_blocking_queue_depth",
            "Tasks waiting for a blocking thread (tokio_unstable).",
            u.blocking_queue_depth as f64,
        );
    }
}

/// Every task-group metric: name, help, value.
type GroupFigure = (&'static str, &'static str, fn(&TaskGroupSnapshot) -> f64);

/// The task-group metrics, one table so docs, page and tests agree.
pub const TASK_GROUP_METRICS: &[GroupFigure] = &[
    (
        "tokio_task_instrumented_total",
        "Tasks instrumented in the group.",
        |g| g.instrumented as f64,
    ),
    (
        "tokio_task_dropped_total",
        "Instrumented tasks of the group dropped (finished or cancelled).",
        |g| g.dropped as f64,
    ),
    (
        "tokio_task_first_polls_total",
        "Tasks of the group polled at least once.",
        |g| g.first_polls as f64,
    ),
    (
        "tokio_task_first_poll_delay_seconds_total",
        "Total delay between instrumenting a task and its first poll.",
        |g| g.first_poll_delay_seconds,
    ),
    (
        "tokio_task_idles_total",
        "Times tasks of the group went idle waiting to be woken.",
        |g| g.idles as f64,
    ),
    (
        "tokio_task_idle_seconds_total",
        "Total time tasks of the group spent idle.",
        |g| g.idle_seconds,
    ),
    (
        "tokio_task_scheduled_total",
        "Times tasks of the group were woken and scheduled.",
        |g| g.scheduled as f64,
    ),
    (
        "tokio_task_scheduled_seconds_total",
        "Total time tasks of the group waited between wake and poll.",
        |g| g.scheduled_seconds,
    ),
    (
        "tokio_task_polls_total",
        "Polls of tasks of the group.",
        |g| g.polls as f64,
    ),
    (
        "tokio_task_poll_seconds_total",
        "Total time spent polling tasks of the group.",
        |g| g.poll_seconds,
    ),
    (
        "tokio_task_slow_polls_total",
        "Polls of the group slower than the slow-poll threshold.",
        |g| g.slow_polls as f64,
    ),
    (
        "tokio_task_slow_poll_seconds_total",
        "Total time in slow polls of the group.",
        |g| g.slow_poll_seconds,
    ),
    (
        "tokio_task_long_delays_total",
        "Schedule delays of the group longer than the long-delay threshold.",
        |g| g.long_delays as f64,
    ),
    (
        "tokio_task_long_delay_seconds_total",
        "Total time in long schedule delays of the group.",
        |g| g.long_delay_seconds,
    ),
];

fn task_group_families(page: &mut Page, tokio: &TokioSnapshot) {
    if tokio.task_groups.is_empty() {
        return;
    }
    for (name, help, f) in TASK_GROUP_METRICS {
        let values: Vec<(String, f64)> = tokio
            .task_groups
            .iter()
            .map(|(group, g)| (group.clone(), f(g)))
            .collect();
        page.counters_by(name, help, "group", &values);
    }
}

fn jemalloc_families(page: &mut Page) {
    let Some(stats) = crate::capture::heap::jemalloc_stats() else {
        return;
    };
    for (name, help, value) in [
        (
            "jemalloc_allocated_bytes",
            "Bytes allocated by the application (jemalloc stats.allocated).",
            stats.allocated,
        ),
        (
            "jemalloc_active_bytes",
            "Bytes in active pages (jemalloc stats.active).",
            stats.active,
        ),
        (
            "jemalloc_resident_bytes",
            "Bytes in physically resident data pages (jemalloc stats.resident).",
            stats.resident,
        ),
        (
            "jemalloc_mapped_bytes",
            "Bytes in active extents mapped by the allocator (jemalloc stats.mapped).",
            stats.mapped,
        ),
        (
            "jemalloc_retained_bytes",
            "Bytes in virtual memory retained, not returned to the OS (jemalloc stats.retained).",
            stats.retained,
        ),
        (
            "jemalloc_metadata_bytes",
            "Bytes of allocator metadata (jemalloc stats.metadata).",
            stats.metadata,
        ),
    ] {
        page.gauge(name, help, value as f64);
    }
}

/// The label-set table: how full it is and how many sets overflowed.
fn label_families(page: &mut Page) {
    let (sets, overflow) = crate::capture::labels::table_size();
    page.gauge(
        "profscope_label_sets",
        "Label sets interned for CPU samples (route, task group, tracing fields, scopes).",
        sets as f64,
    );
    page.counter(
        "profscope_label_sets_overflow_total",
        "Label sets that found the table full (labels::MAX_SETS) and were recorded as labels=other.",
        overflow as f64,
    );
}

/// The own sampler's counters (absent where pprof-rs samples): every drop
/// reason exported from the start, at 0 until it happens.
fn sampler_families(page: &mut Page) {
    let Some(s) = crate::capture::cpu::sampler_stats() else {
        return;
    };
    let dropped: Vec<(String, f64)> = s
        .dropped
        .iter()
        .map(|(reason, n)| (reason.to_string(), *n as f64))
        .collect();
    page.counters_by(
        "profscope_sampler_samples_dropped_total",
        "CPU samples the sampler dropped, by reason: ring_full (the aggregator fell behind), \
         no_slot (thread past the sampler's thread limit or not scanned yet), stopped (a \
         signal after its stream stopped), not_ours (a SIGPROF someone else sent), \
         in_signal_handler (the thread was running another signal handler on its \
         alternate stack).",
        "reason",
        &dropped,
    );
    page.counter(
        "profscope_sampler_stack_unknown_total",
        "CPU samples kept with their leaf only: their stack was not in the mapping snapshot yet.",
        s.stack_unknown as f64,
    );
    page.counter(
        "profscope_sampler_faults_recovered_total",
        "Reads in the sampler's signal handler that faulted (memory unmapped since the \
         snapshot) and were recovered: the walk ended there, the process went on.",
        s.faults_recovered as f64,
    );
    page.counter(
        "profscope_sampler_ranges_truncated_total",
        "Mapping ranges left out of the sampler's snapshots past their capacity.",
        s.ranges_truncated as f64,
    );
    page.counter(
        "profscope_sampler_signal_taken_total",
        "Times another SIGPROF handler was installed while the sample stream ran: the \
         stream ended and left that handler in place.",
        s.signal_taken as f64,
    );
    page.gauge(
        "profscope_sampler_threads_unsampled",
        "Threads without a sampler slot at the last scan (past its thread limit).",
        s.threads_unsampled as f64,
    );
}

/// The flight recorder: incidents by trigger (every trigger exported from
/// the start), its ring, what it dropped.
fn recorder_families(page: &mut Page, r: &crate::capture::recorder::RecorderStatus) {
    let incidents: Vec<(String, f64)> = r
        .incidents_total
        .iter()
        .map(|(k, v)| (k.to_string(), *v as f64))
        .collect();
    page.counters_by(
        "profscope_incidents_total",
        "Incidents the flight recorder's triggers fired, by trigger.",
        "trigger",
        &incidents,
    );
    page.gauge(
        "profscope_recorder_ring_bytes",
        "Bytes the flight recorder's ring holds (CPU buckets, heap snapshots, metrics).",
        r.ring_bytes as f64,
    );
    page.gauge(
        "profscope_recorder_cpu_seconds",
        "Seconds of CPU the flight recorder's ring reaches back.",
        r.cpu_seconds as f64,
    );
    page.counter(
        "profscope_recorder_dropped_cpu_seconds_total",
        "One-second CPU buckets the recorder dropped to stay within its age and byte bounds.",
        r.dropped.cpu_buckets as f64,
    );
    page.gauge(
        "profscope_recorder_recording",
        "1 while the flight recorder records CPU; 0 once its sample stream ended (another \
         SIGPROF handler, a fork) or where the own sampler does not run.",
        if r.state == "recording" { 1.0 } else { 0.0 },
    );
}

/// The blocking watchdog: stalls by state and their durations.
fn watchdog_families(page: &mut Page, w: &crate::capture::watchdog::WatchdogMetrics) {
    let by_state: Vec<(String, f64)> = w
        .stalls_by_state
        .iter()
        .map(|(s, n)| (s.to_string(), *n as f64))
        .collect();
    page.counters_by(
        "profscope_blocked_polls_total",
        "Polls that held a runtime worker past the watchdog's threshold, by the state the \
         thread spent most of the stall in: running (on CPU), runnable (ready, no CPU given), \
         blocked (sleeping or in a syscall).",
        "state",
        &by_state,
    );
    let opts = prometheus::HistogramOpts::new(
        "profscope_blocked_poll_seconds",
        "How long each poll past the watchdog's threshold held its worker.",
    )
    .buckets(w.bounds.clone());
    if let Ok(h) = prometheus::Histogram::with_opts(opts) {
        let mut families = h.collect();
        // The counts are the watchdog's own: written into the family.
        if let Some(m) = families
            .first_mut()
            .and_then(|f| f.mut_metric().first_mut())
        {
            let mut hist = m.get_histogram().clone();
            hist.set_sample_count(w.count);
            hist.set_sample_sum(w.sum);
            let buckets = hist
                .get_bucket()
                .iter()
                .zip(&w.counts)
                .map(|(b, count)| {
                    let mut b = b.clone();
                    b.set_cumulative_count(*count);
                    b
                })
                .collect();
            hist.set_bucket(buckets);
            m.set_histogram(hist);
        }
        page.families.extend(families);
    }
}

/// `/debug/memory`'s figures as gauges.
fn memory_families(page: &mut Page, m: &crate::capture::memory::MemoryReport) {
    for (name, help, value) in [
        (
            "profscope_memory_rss_bytes",
            "Resident set size (smaps_rollup Rss).",
            m.rss_bytes as f64,
        ),
        (
            "profscope_memory_anonymous_bytes",
            "Anonymous resident memory.",
            m.anonymous_bytes as f64,
        ),
        (
            "profscope_memory_file_backed_bytes",
            "File-backed resident memory.",
            m.file_backed_bytes as f64,
        ),
        (
            "profscope_memory_thread_stacks_bytes",
            "Resident pages of thread stacks.",
            m.thread_stacks_bytes as f64,
        ),
        (
            "profscope_memory_unexplained_bytes",
            "Resident memory that neither jemalloc, thread stacks nor mapped files explain (see /debug/memory).",
            m.unexplained_bytes as f64,
        ),
    ] {
        page.gauge(name, help, value);
    }
    if let Some(c) = &m.cgroup {
        page.gauge(
            "profscope_memory_cgroup_current_bytes",
            "The cgroup's memory.current.",
            c.current_bytes as f64,
        );
        if let Some(max) = c.max_bytes {
            page.gauge(
                "profscope_memory_cgroup_max_bytes",
                "The cgroup's memory.max.",
                max as f64,
            );
        }
    }
    if let Some(h) = &m.heap_profile {
        page.gauge(
            "profscope_memory_heap_profile_inuse_bytes",
            "In-use bytes estimated by the most recent heap profile.",
            h.in_use_bytes as f64,
        );
    }
    if let Some(j) = &m.jemalloc {
        page.gauge(
            "profscope_memory_fragmentation_ratio",
            "jemalloc stats.active / stats.allocated (1 is no fragmentation).",
            j.fragmentation,
        );
    }
}

/// The push's delivery figures (only when push is on).
fn push_families(page: &mut Page, s: &crate::delivery::push::PushStats) {
    page.counter(
        "profscope_push_sent_total",
        "Profile pushes a backend accepted.",
        s.sent as f64,
    );
    page.counter(
        "profscope_push_errors_total",
        "Failed push attempts (connection errors and non-2xx answers).",
        s.errors as f64,
    );
    page.counter(
        "profscope_push_collect_errors_total",
        "Push periods (or profiles in them) that could not be collected.",
        s.collect_errors as f64,
    );
    page.counters_by(
        "profscope_push_dropped_total",
        "Profile pushes dropped, by reason.",
        "reason",
        &crate::delivery::push::metric_values(s),
    );
    page.gauge(
        "profscope_push_queue_bytes",
        "Bytes waiting in the push queue.",
        s.queue_bytes as f64,
    );
    page.gauge(
        "profscope_push_queue_capacity_bytes",
        "The push queue's cap in bytes.",
        s.queue_capacity as f64,
    );
}

/// Gathers every family and encodes the page.
pub(crate) fn render(
    user: Option<&prometheus::Registry>,
    process: &prometheus::Registry,
    tokio: &TokioSnapshot,
    memory: &crate::capture::memory::MemoryReport,
    push: Option<&crate::delivery::push::PushStats>,
    recorder: Option<&crate::capture::recorder::RecorderStatus>,
    watchdog: Option<&crate::capture::watchdog::WatchdogMetrics>,
) -> Result<String, crate::Error> {
    let mut page = Page::default();
    if let Some(rt) = &tokio.runtime {
        runtime_families(&mut page, rt);
    }
    task_group_families(&mut page, tokio);
    jemalloc_families(&mut page);
    label_families(&mut page);
    sampler_families(&mut page);
    memory_families(&mut page, memory);
    if let Some(push) = push {
        push_families(&mut page, push);
    }
    if let Some(recorder) = recorder {
        recorder_families(&mut page, recorder);
    }
    if let Some(watchdog) = watchdog {
        watchdog_families(&mut page, watchdog);
    }
    let mut families = process.gather();
    families.extend(page.families);
    if let Some(user) = user {
        families.extend(user.gather());
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(|e| crate::Error::Internal(format!("metrics encoding: {e}")))?;
    String::from_utf8(out).map_err(|e| crate::Error::Internal(format!("metrics encoding: {e}")))
}
