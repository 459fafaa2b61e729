//! The flight recorder: always on, it keeps the last minutes of CPU (one
//! more consumer of the sample stream, at 19 Hz, in one-second buckets of
//! unsymbolized addresses), heap snapshots and runtime metrics in a bounded
//! ring, and freezes them into an incident when a trigger fires.
//!
//! It runs on a plain thread of its own (`profscope-recorder`), never on
//! the service's runtime: a tick a second takes the CPU bucket, reads the
//! trigger figures (heap, CPU, task-group latency), takes a heap snapshot
//! when one is due, finishes incidents whose after-window has passed, and
//! keeps the ring in bounds. Triggers go through one [`Recorder::fire`]
//! with a cooldown per kind. It never uses task dumps, and if the sample
//! stream ends under it (another library took SIGPROF) or the process
//! forks, it says so in its state and never takes SIGPROF back.

mod incident;
mod ring;
mod trigger;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

pub use incident::{IncidentInfo, IncidentState};
pub use ring::Dropped;
pub use trigger::{CpuBusy, HeapGrowth, Latency, TriggerKind, Triggers};

use crate::Error;
use crate::capture::cpu::CpuCapture;
use crate::capture::heap::{HeapProfiler, HeapSnapshot};
use crate::capture::runtime::TaskGroups;
use crate::shared::symbols::Symbolizer;
use incident::Incidents;
use ring::{Bucket, Ring};
use trigger::Evaluator;

/// The recorder's settings; the defaults can be taken as they are.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecorderConfig {
    /// CPU samples per CPU-second while recording. Default 19 Hz.
    pub cpu_hz: u32,
    /// How often a heap snapshot is taken (when heap profiles are
    /// available). Default 60 s.
    pub heap_every: Duration,
    /// How often runtime and task-group metrics are kept. Default 10 s.
    pub metrics_every: Duration,
    /// How far back the ring reaches. Default 10 minutes.
    pub keep_for: Duration,
    /// The most the ring holds, in bytes. Default 32 MiB.
    pub max_bytes: usize,
    /// The window before a trigger an incident keeps. Default 60 s.
    pub before: Duration,
    /// The window after a trigger an incident records. Default 30 s.
    pub after: Duration,
    /// Where incidents are written. Default: a private (0700) directory
    /// under the system temp dir.
    pub incident_dir: Option<PathBuf>,
    /// Incidents kept on disk (oldest removed first). Default 16.
    pub max_incidents: usize,
    /// Bytes of incidents kept on disk. Default 64 MiB.
    pub max_incident_bytes: u64,
    /// What fires an incident; every trigger is off unless set.
    pub triggers: Triggers,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            cpu_hz: 19,
            heap_every: Duration::from_secs(60),
            metrics_every: Duration::from_secs(10),
            keep_for: Duration::from_secs(600),
            max_bytes: 32 << 20,
            before: Duration::from_secs(60),
            after: Duration::from_secs(30),
            incident_dir: None,
            max_incidents: 16,
            max_incident_bytes: 64 << 20,
            triggers: Triggers::default(),
        }
    }
}

impl RecorderConfig {
    /// Refuses settings the recorder cannot run with, naming the setting.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::InvalidConfig(format!("recorder: {what}")));
        if !(1..=1000).contains(&self.cpu_hz) {
            return bad("cpu_hz must be in 1..=1000");
        }
        if self.heap_every < Duration::from_secs(1) || self.metrics_every < Duration::from_secs(1) {
            return bad("heap_every and metrics_every must be at least 1 s");
        }
        if self.keep_for < Duration::from_secs(1) || self.max_bytes < (64 << 10) {
            return bad("keep_for must be at least 1 s and max_bytes at least 64 KiB");
        }
        if self.before.is_zero() || self.before > self.keep_for {
            return bad("before must be above zero and at most keep_for");
        }
        if self.max_incidents == 0 {
            return bad("max_incidents must be at least 1");
        }
        self.triggers
            .check()
            .map_err(|e| Error::InvalidConfig(format!("recorder: {e}")))
    }
}

/// What the recorder reads besides the sample stream: given by the agent.
pub(crate) struct Sources {
    pub(crate) heap: Arc<HeapProfiler>,
    pub(crate) symbolizer: Symbolizer,
    pub(crate) task_groups: TaskGroups,
    /// Runtime and task-group metrics as JSON (what `/debug/tokio` shows).
    pub(crate) metrics: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// Where the cgroup v2 hierarchy is mounted.
    pub(crate) cgroup_root: PathBuf,
}

/// The recorder's state, for the incidents page and `/metrics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecorderStatus {
    /// `recording`, or `stopped: <why>`.
    pub state: String,
    /// Bytes the ring holds now.
    pub ring_bytes: usize,
    /// Seconds of CPU the ring holds.
    pub cpu_seconds: usize,
    /// Heap snapshots the ring holds.
    pub heap_snapshots: usize,
    /// What the ring dropped to stay in bounds.
    pub dropped: Dropped,
    /// Incidents fired, by trigger.
    pub incidents_total: BTreeMap<&'static str, u64>,
}

/// The flight recorder; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

struct Shared {
    config: RecorderConfig,
    sources: Sources,
    state: Mutex<State>,
    /// Fires asked for off the recorder's thread (manual, panic).
    fires: Mutex<mpsc::Sender<Fire>>,
    /// The process the recorder's thread runs in (a forked child has none).
    pid: u32,
}

struct State {
    ring: Ring,
    /// The CPU consumer; `None` once the stream ended under it.
    cpu: Option<CpuSource>,
    stopped: Option<String>,
    incidents: Incidents,
    evaluator: Evaluator,
}

struct Fire {
    kind: TriggerKind,
    figures: BTreeMap<String, f64>,
    labels: BTreeMap<String, String>,
}

cfg_own_sampler! {
    /// The recorder's consumer of the sample stream.
    struct CpuSource(crate::capture::sampler::Subscription);

    impl CpuSource {
        fn join(hz: u32) -> Result<CpuSource, String> {
            crate::capture::sampler::subscribe(hz)
                .map(CpuSource)
                .map_err(|e| e.to_string())
        }

        /// The CPU since the previous call, as a bucket.
        fn take(&self) -> Result<Bucket, String> {
            let c = self.0.take().map_err(|e| e.to_string())?;
            Ok(Bucket {
                start: c.start,
                duration: c.duration,
                stacks: c
                    .stacks
                    .into_iter()
                    .map(|s| ring::BucketStack {
                        frames: s.frames.into_boxed_slice(),
                        thread: s.thread,
                        labels: s.labels,
                        samples: s.samples,
                        cpu_ns: s.cpu_ns,
                    })
                    .collect(),
            })
        }
    }
}
cfg_not_own_sampler! {
    /// Where the own sampler does not run, the recorder has no CPU.
    struct CpuSource;

    impl CpuSource {
        fn join(_: u32) -> Result<CpuSource, String> {
            Err(NO_SAMPLER.into())
        }

        fn take(&self) -> Result<Bucket, String> {
            Err(NO_SAMPLER.into())
        }
    }
}

/// Why the recorder has no CPU where pprof-rs samples.
pub const NO_SAMPLER: &str = "the flight recorder needs the agent's own CPU sampler (Linux \
     x86_64, without the `pprof-rs` feature): pprof-rs runs one capture at a time";

/// What to tell a user whose agent runs no recorder.
pub const NOT_ENABLED: &str = "the flight recorder is off: enable it with \
     `Agent::builder().recorder(RecorderConfig::default())`";

impl Recorder {
    /// Starts recording on a thread of its own.
    pub(crate) fn start(config: RecorderConfig, sources: Sources) -> Result<Recorder, Error> {
        config.check()?;
        let incidents = Incidents::open(
            config.incident_dir.clone(),
            config.max_incidents,
            config.max_incident_bytes,
        )?;
        let (cpu, stopped) = match CpuSource::join(config.cpu_hz) {
            Ok(cpu) => (Some(cpu), None),
            Err(why) => (None, Some(why)),
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ring: Ring::new(config.keep_for, config.max_bytes),
                cpu,
                stopped,
                incidents,
                evaluator: Evaluator::new(config.triggers.clone()),
            }),
            config,
            sources,
            fires: Mutex::new(tx),
            pid: std::process::id(),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("profscope-recorder".into())
            .spawn(move || {
                let _agent = crate::capture::labels::agent_scope();
                run(&weak, &rx)
            })
            .map_err(|e| Error::Internal(format!("cannot start the recorder thread: {e}")))?;
        if shared.config.triggers.panic {
            trigger::install_panic_hook(Recorder {
                shared: shared.clone(),
            });
        }
        Ok(Recorder { shared })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The recorder's settings.
    pub fn config(&self) -> &RecorderConfig {
        &self.shared.config
    }

    /// Fires an incident of `kind` now (cooldowns apply), with the figures
    /// that fired it; its id, or `None` when the kind is cooling down.
    pub fn fire(
        &self,
        kind: TriggerKind,
        figures: BTreeMap<String, f64>,
        labels: BTreeMap<String, String>,
    ) -> Option<String> {
        let mut state = self.state();
        let now = SystemTime::now();
        if !state.evaluator.may_fire(kind, Instant::now()) {
            return None;
        }
        flush_cpu(&mut state);
        let before = state.ring.cpu_between(now - self.shared.config.before, now);
        let baseline = state
            .ring
            .heap_nearest(now - self.shared.config.before)
            .map(|h| h.snapshot);
        let id = state.incidents.register(
            kind,
            now,
            figures,
            labels,
            ring::merge(&before, self.shared.config.cpu_hz, self.period()),
            baseline,
            self.shared.config.after,
        );
        Some(id)
    }

    /// Fires from a thread that must not do the work (a panic hook, a
    /// request handler): the recorder's thread fires it at its next tick.
    pub(crate) fn fire_later(
        &self,
        kind: TriggerKind,
        figures: BTreeMap<String, f64>,
        labels: BTreeMap<String, String>,
    ) {
        let tx = self
            .shared
            .fires
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = tx.send(Fire {
            kind,
            figures,
            labels,
        });
    }

    fn period(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.shared.config.cpu_hz.max(1)))
    }

    /// The last `window` of CPU, the bucket being recorded included.
    pub fn recent_cpu(&self, window: Duration) -> Result<CpuCapture, Error> {
        let mut state = self.state();
        self.check_running(&state)?;
        flush_cpu(&mut state);
        let now = SystemTime::now();
        let buckets = state.ring.cpu_between(now - window, now);
        drop(state);
        Ok(ring::merge(
            &buckets,
            self.shared.config.cpu_hz,
            self.period(),
        ))
    }

    /// In-use as of the newest snapshot; `alloc_*` as the growth between
    /// the snapshot nearest to `window` ago and the newest.
    pub fn recent_heap(&self, window: Duration) -> Result<HeapSnapshot, Error> {
        let state = self.state();
        if !HeapProfiler::is_available() {
            return Err(Error::NotAvailable(
                crate::capture::heap::NOT_ENABLED.into(),
            ));
        }
        let newest = state.ring.heap_newest().ok_or_else(|| Error::Unavailable {
            reason: "the recorder has taken no heap snapshot yet".into(),
            retry_after_secs: 1,
        })?;
        let base = state
            .ring
            .heap_nearest(SystemTime::now() - window)
            .unwrap_or_else(|| newest.clone());
        Ok(newest
            .snapshot
            .alloc_delta(&base.snapshot)
            .with_time(base.time))
    }

    /// Runtime and task-group metrics of the last `window`, oldest first.
    pub fn recent_metrics(&self, window: Duration) -> serde_json::Value {
        let state = self.state();
        let since = SystemTime::now() - window;
        serde_json::Value::Array(
            state
                .ring
                .metrics
                .iter()
                .filter(|m| m.time >= since)
                .map(|m| {
                    serde_json::json!({
                        "time_unix_seconds": unix(m.time),
                        "metrics": *m.metrics,
                    })
                })
                .collect(),
        )
    }

    /// Every incident kept, oldest first.
    pub fn incidents(&self) -> Vec<IncidentInfo> {
        self.state().incidents.list()
    }

    /// An incident's CPU profile (`after`: the window after the trigger;
    /// else the window before it).
    pub fn incident_cpu(&self, id: &str, after: bool) -> Result<CpuCapture, Error> {
        self.state().incidents.cpu(id, after)
    }

    /// An incident's heap: at the trigger, or (`Some(false)`) the snapshot
    /// before it, or (`Some(true)`) after its after-window. `None` while
    /// it is still being taken.
    pub fn incident_heap(
        &self,
        id: &str,
        window: Option<bool>,
    ) -> Result<Option<Arc<HeapSnapshot>>, Error> {
        self.state().incidents.heap(id, window)
    }

    /// Writes incident `id`'s before-window at once, on this thread: for a
    /// panic with `panic = "abort"`, after which nothing else runs.
    pub(crate) fn write_now(&self, id: &str) {
        let files = self.state().incidents.before_files(id);
        if let Some(files) = files {
            incident::write_files(&files, &self.shared.sources.symbolizer);
        }
    }

    /// The recorder's state now.
    pub fn status(&self) -> RecorderStatus {
        let state = self.state();
        RecorderStatus {
            state: self
                .why_stopped(&state)
                .map_or("recording".into(), |w| format!("stopped: {w}")),
            ring_bytes: state.ring.bytes(),
            cpu_seconds: state.ring.cpu.len(),
            heap_snapshots: state.ring.heap.len(),
            dropped: state.ring.dropped,
            incidents_total: state.incidents.totals(),
        }
    }

    fn why_stopped(&self, state: &State) -> Option<String> {
        if std::process::id() != self.shared.pid {
            return Some("the process forked: the recorder runs in the parent only".into());
        }
        state.stopped.clone()
    }

    fn check_running(&self, state: &State) -> Result<(), Error> {
        match self.why_stopped(state) {
            Some(why) if state.ring.cpu.is_empty() => Err(Error::Conflict(format!(
                "the flight recorder has no CPU: {why}"
            ))),
            _ => Ok(()),
        }
    }
}

/// Moves what the sampler collected since the last take into the ring.
fn flush_cpu(state: &mut State) {
    let Some(cpu) = &state.cpu else { return };
    match cpu.take() {
        Ok(bucket) => {
            if !bucket.stacks.is_empty() || bucket.duration >= Duration::from_millis(500) {
                state.ring.push_cpu(bucket);
            }
        }
        Err(why) => {
            // The stream ended under it: said, never restarted.
            state.cpu = None;
            state.stopped = Some(why);
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The recorder's thread: one tick a second until the recorder is dropped.
fn run(shared: &std::sync::Weak<Shared>, fires: &mpsc::Receiver<Fire>) {
    let mut last_heap: Option<Instant> = None;
    let mut last_metrics: Option<Instant> = None;
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    loop {
        // Manual and panic fires wake it at once; otherwise a tick a second,
        // on a fixed beat (a slow tick's work does not push the next one
        // back, so a figure is read at most a second after it crosses).
        let fire = fires.recv_timeout(next_tick.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        if now >= next_tick {
            next_tick += Duration::from_secs(1);
            if next_tick <= now {
                next_tick = now + Duration::from_secs(1);
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let recorder = Recorder { shared };
        match fire {
            Ok(f) => {
                recorder.fire(f.kind, f.figures, f.labels);
                for f in fires.try_iter() {
                    recorder.fire(f.kind, f.figures, f.labels);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        tick(&recorder, &mut last_heap, &mut last_metrics);
    }
}

fn tick(recorder: &Recorder, last_heap: &mut Option<Instant>, last_metrics: &mut Option<Instant>) {
    let config = &recorder.shared.config;
    let sources = &recorder.shared.sources;
    {
        let mut state = recorder.state();
        flush_cpu(&mut state);
    }
    if last_metrics.is_none_or(|t| t.elapsed() >= config.metrics_every) {
        *last_metrics = Some(Instant::now());
        let metrics = (sources.metrics)();
        recorder
            .state()
            .ring
            .push_metrics(SystemTime::now(), metrics);
    }
    if HeapProfiler::is_available() && last_heap.is_none_or(|t| t.elapsed() >= config.heap_every) {
        *last_heap = Some(Instant::now());
        // The dump runs here, off the service's runtime and outside the
        // recorder's lock (readers are never held up by it).
        if let Ok(snapshot) = sources.heap.snapshot_blocking() {
            recorder
                .state()
                .ring
                .push_heap(snapshot.time.unwrap_or_else(SystemTime::now), snapshot);
        }
    }
    // Triggers: the figures of this second.
    let fired = {
        let mut state = recorder.state();
        let groups = sources.task_groups.snapshot();
        state
            .evaluator
            .evaluate(&sources.cgroup_root, &groups, Instant::now())
    };
    for (kind, figures) in fired {
        recorder.fire(kind, figures, BTreeMap::new());
    }
    // Incidents: heap at the trigger for new ones, the after-window for
    // those whose time has come; files written outside the lock.
    let work = recorder.state().incidents.due(SystemTime::now());
    for job in work {
        let heap = if HeapProfiler::is_available() {
            sources.heap.snapshot_blocking().ok().map(Arc::new)
        } else {
            None
        };
        let after_cpu = job.after.then(|| {
            let mut state = recorder.state();
            flush_cpu(&mut state);
            let buckets = state.ring.cpu_between(job.time, job.time + config.after);
            ring::merge(&buckets, config.cpu_hz, recorder.period())
        });
        let mut state = recorder.state();
        let written = state.incidents.complete_step(&job, heap, after_cpu);
        drop(state);
        if let Some(files) = written {
            incident::write_files(&files, &sources.symbolizer);
            recorder.state().incidents.enforce_bounds();
        }
    }
}
