//! What fires an incident: heap growth, CPU, task-group latency, a panic,
//! or a request. Each is off unless configured and has its own cooldown;
//! the figures that fired it go into the incident's manifest.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::capture::runtime::TaskGroupSnapshot;

/// The kinds of trigger, named as in manifests and on `/metrics`
/// (`profscope_incidents_total{trigger}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// The heap (jemalloc's `allocated`, else the cgroup's
    /// `memory.current`, else RSS) grew past a line.
    HeapGrowth,
    /// The process used more than a share of its cores for a while.
    Cpu,
    /// A task group's mean poll or scheduling delay passed a line.
    Latency,
    /// A thread of the service panicked.
    Panic,
    /// `POST /debug/pprof/incidents`.
    Manual,
    /// A poll blocked a runtime worker past the watchdog's threshold.
    BlockedPoll,
}

impl TriggerKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [TriggerKind; 6] = [
        TriggerKind::HeapGrowth,
        TriggerKind::Cpu,
        TriggerKind::Latency,
        TriggerKind::Panic,
        TriggerKind::Manual,
        TriggerKind::BlockedPoll,
    ];

    /// The name used in manifests, ids and metrics.
    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::HeapGrowth => "heap_growth",
            TriggerKind::Cpu => "cpu",
            TriggerKind::Latency => "latency",
            TriggerKind::Panic => "panic",
            TriggerKind::Manual => "manual",
            TriggerKind::BlockedPoll => "blocked_poll",
        }
    }
}

/// The triggers of a recorder; every one off unless set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Triggers {
    /// Heap growth; read every second.
    pub heap_growth: Option<HeapGrowth>,
    /// CPU use.
    pub cpu: Option<CpuBusy>,
    /// Task-group latency.
    pub latency: Option<Latency>,
    /// Fire on a panic of the service's threads (the agent chains its hook
    /// before the service's, which still runs).
    pub panic: bool,
    /// Write a panic incident's before-window on the panicking thread,
    /// before the hooks return, rather than on the recorder's thread. On by
    /// default with `panic = "abort"` (the process ends right after the
    /// hooks); turn it on where a panic ends the process anyway (a service
    /// whose own hook exits, or whose `main` panics). It holds the
    /// panicking thread for the symbolization and the write.
    pub panic_writes_at_once: bool,
    /// Cooldown of manual and panic incidents. Default 10 s.
    pub cooldown: Duration,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            heap_growth: None,
            cpu: None,
            latency: None,
            panic: false,
            panic_writes_at_once: cfg!(panic = "abort"),
            cooldown: Duration::from_secs(10),
        }
    }
}

/// Fires when the heap grows by `bytes` or by `percent` within `within`,
/// or stands above `above`; each condition off unless set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeapGrowth {
    /// Growth in bytes within the window.
    pub bytes: Option<u64>,
    /// Growth in percent of the window's first figure.
    pub percent: Option<f64>,
    /// An absolute line in bytes.
    pub above: Option<u64>,
    /// The window. Default 60 s.
    pub within: Duration,
    /// The least time between two incidents of this kind. Default 5 min.
    pub cooldown: Duration,
}

impl HeapGrowth {
    /// Growth by `bytes` within 60 s.
    pub fn bytes(bytes: u64) -> HeapGrowth {
        HeapGrowth {
            bytes: Some(bytes),
            percent: None,
            above: None,
            within: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
        }
    }

    /// The window growth is measured over.
    pub fn within(mut self, window: Duration) -> Self {
        self.within = window;
        self
    }

    /// Also fire on growth by `percent` within the window.
    pub fn percent(mut self, percent: f64) -> Self {
        self.percent = Some(percent);
        self
    }

    /// Also fire whenever the heap stands above `bytes`.
    pub fn above(mut self, bytes: u64) -> Self {
        self.above = Some(bytes);
        self
    }

    /// The least time between two incidents of this kind.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }
}

/// Fires when the process uses more than `percent_of_cores` % of its cores
/// for `for_at_least`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CpuBusy {
    /// Percent of all cores (100 = every core busy).
    pub percent_of_cores: f64,
    /// How long it must last. Default 10 s.
    pub for_at_least: Duration,
    /// Default 5 min.
    pub cooldown: Duration,
}

impl CpuBusy {
    /// Above `percent_of_cores` % for `for_at_least`.
    pub fn above(percent_of_cores: f64, for_at_least: Duration) -> CpuBusy {
        CpuBusy {
            percent_of_cores,
            for_at_least,
            cooldown: Duration::from_secs(300),
        }
    }

    /// The least time between two incidents of this kind.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }
}

/// Fires when a task group's mean poll time (or mean scheduling delay)
/// over the last second passes a line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Latency {
    /// The group (or route); `None`: any.
    pub group: Option<String>,
    /// Mean time in poll.
    pub mean_poll_above: Option<Duration>,
    /// Mean delay between wake and poll.
    pub mean_scheduled_above: Option<Duration>,
    /// Default 5 min.
    pub cooldown: Duration,
}

impl Latency {
    /// Mean poll time of any group above `line`.
    pub fn mean_poll_above(line: Duration) -> Latency {
        Latency {
            group: None,
            mean_poll_above: Some(line),
            mean_scheduled_above: None,
            cooldown: Duration::from_secs(300),
        }
    }

    /// Only group (or route) `name`.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Also the mean scheduling delay above `line`.
    pub fn mean_scheduled_above(mut self, line: Duration) -> Self {
        self.mean_scheduled_above = Some(line);
        self
    }
}

impl Triggers {
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(h) = &self.heap_growth {
            if h.bytes.is_none() && h.percent.is_none() && h.above.is_none() {
                return Err("heap_growth needs bytes, percent or above".into());
            }
            if h.within < Duration::from_secs(1) {
                return Err("heap_growth's window must be at least 1 s".into());
            }
        }
        if let Some(c) = &self.cpu
            && !(c.percent_of_cores > 0.0 && c.percent_of_cores <= 100.0)
        {
            return Err("cpu's percent_of_cores must be in (0, 100]".into());
        }
        if let Some(l) = &self.latency
            && l.mean_poll_above.is_none()
            && l.mean_scheduled_above.is_none()
        {
            return Err("latency needs mean_poll_above or mean_scheduled_above".into());
        }
        Ok(())
    }
}

/// Reads the figures every second and says which triggers fire.
#[derive(Debug)]
pub(crate) struct Evaluator {
    triggers: Triggers,
    /// Heap figures of the last window.
    heap: VecDeque<(Instant, u64)>,
    /// (time, process CPU) at the previous tick; seconds above the line.
    cpu: Option<(Instant, Duration)>,
    cpu_busy_since: Option<Instant>,
    /// Each group's (polls, poll s, scheduled, scheduled s) at the previous tick.
    groups: BTreeMap<String, (u64, f64, u64, f64)>,
    last_fired: BTreeMap<TriggerKind, Instant>,
}

impl Evaluator {
    pub(crate) fn new(triggers: Triggers) -> Evaluator {
        Evaluator {
            triggers,
            heap: VecDeque::new(),
            cpu: None,
            cpu_busy_since: None,
            groups: BTreeMap::new(),
            last_fired: BTreeMap::new(),
        }
    }

    fn cooldown(&self, kind: TriggerKind) -> Duration {
        match kind {
            TriggerKind::HeapGrowth => self.triggers.heap_growth.as_ref().map(|h| h.cooldown),
            TriggerKind::Cpu => self.triggers.cpu.as_ref().map(|c| c.cooldown),
            TriggerKind::Latency => self.triggers.latency.as_ref().map(|l| l.cooldown),
            _ => None,
        }
        .unwrap_or(self.triggers.cooldown)
    }

    /// Whether `kind` may fire now (its cooldown has passed); marks it
    /// fired when so.
    pub(crate) fn may_fire(&mut self, kind: TriggerKind, now: Instant) -> bool {
        let cooldown = self.cooldown(kind);
        if self
            .last_fired
            .get(&kind)
            .is_some_and(|t| now.duration_since(*t) < cooldown)
        {
            return false;
        }
        self.last_fired.insert(kind, now);
        true
    }

    /// This second's figures; the triggers whose line they passed (not
    /// yet checked against cooldowns).
    pub(crate) fn evaluate(
        &mut self,
        cgroup_root: &Path,
        groups: &BTreeMap<String, TaskGroupSnapshot>,
        now: Instant,
    ) -> Vec<(TriggerKind, BTreeMap<String, f64>)> {
        let mut fired = Vec::new();
        if let Some(h) = self.triggers.heap_growth.clone()
            && let Some((source, bytes)) = heap_figure(cgroup_root)
        {
            self.heap.push_back((now, bytes));
            while self
                .heap
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > h.within)
            {
                self.heap.pop_front();
            }
            let first = self.heap.front().map_or(bytes, |(_, b)| *b);
            let growth = bytes.saturating_sub(first);
            let percent = if first > 0 {
                growth as f64 * 100.0 / first as f64
            } else {
                0.0
            };
            let passed = h.bytes.is_some_and(|b| growth >= b)
                || h.percent.is_some_and(|p| percent >= p)
                || h.above.is_some_and(|a| bytes >= a);
            if passed && !self.cooling(TriggerKind::HeapGrowth, now) {
                let mut figures = BTreeMap::from([
                    ("bytes".to_string(), bytes as f64),
                    ("growth_bytes".to_string(), growth as f64),
                    ("growth_percent".to_string(), percent),
                    ("window_seconds".to_string(), h.within.as_secs_f64()),
                ]);
                figures.insert(format!("source_{source}"), 1.0);
                fired.push((TriggerKind::HeapGrowth, figures));
                // A new window starts after an incident.
                self.heap.clear();
            }
        }
        if let Some(c) = self.triggers.cpu.clone() {
            let used = process_cpu();
            if let Some((then, before)) = self.cpu {
                let wall = now.duration_since(then).as_secs_f64().max(1e-3);
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
                let percent = (used.saturating_sub(before)).as_secs_f64() / wall / cores * 100.0;
                if percent >= c.percent_of_cores {
                    let since = *self.cpu_busy_since.get_or_insert(then);
                    if now.duration_since(since) >= c.for_at_least
                        && !self.cooling(TriggerKind::Cpu, now)
                    {
                        fired.push((
                            TriggerKind::Cpu,
                            BTreeMap::from([
                                ("percent_of_cores".to_string(), percent),
                                (
                                    "busy_seconds".to_string(),
                                    now.duration_since(since).as_secs_f64(),
                                ),
                            ]),
                        ));
                        self.cpu_busy_since = None;
                    }
                } else {
                    self.cpu_busy_since = None;
                }
            }
            self.cpu = Some((now, used));
        }
        if let Some(l) = self.triggers.latency.clone() {
            for (name, g) in groups {
                let current = (g.polls, g.poll_seconds, g.scheduled, g.scheduled_seconds);
                let previous = self.groups.insert(name.clone(), current);
                if l.group.as_ref().is_some_and(|want| want != name) {
                    continue;
                }
                let Some(p) = previous else { continue };
                let polls = current.0.saturating_sub(p.0);
                let scheduled = current.2.saturating_sub(p.2);
                let mean_poll = (polls > 0).then(|| (current.1 - p.1) / polls as f64);
                let mean_scheduled = (scheduled > 0).then(|| (current.3 - p.3) / scheduled as f64);
                let over_poll = l
                    .mean_poll_above
                    .zip(mean_poll)
                    .is_some_and(|(line, m)| m >= line.as_secs_f64());
                let over_scheduled = l
                    .mean_scheduled_above
                    .zip(mean_scheduled)
                    .is_some_and(|(line, m)| m >= line.as_secs_f64());
                if (over_poll || over_scheduled) && !self.cooling(TriggerKind::Latency, now) {
                    let mut figures = BTreeMap::new();
                    figures.insert("mean_poll_seconds".to_string(), mean_poll.unwrap_or(0.0));
                    figures.insert(
                        "mean_scheduled_seconds".to_string(),
                        mean_scheduled.unwrap_or(0.0),
                    );
                    figures.insert("polls".to_string(), polls as f64);
                    fired.push((TriggerKind::Latency, figures));
                    break;
                }
            }
        }
        fired
    }

    fn cooling(&self, kind: TriggerKind, now: Instant) -> bool {
        self.last_fired
            .get(&kind)
            .is_some_and(|t| now.duration_since(*t) < self.cooldown(kind))
    }
}

/// The heap's figure: jemalloc's `allocated` when the service runs on it,
/// else the cgroup's `memory.current`, else the process's RSS.
fn heap_figure(cgroup_root: &Path) -> Option<(&'static str, u64)> {
    if let Some(in_use) = crate::capture::heap::wrapper_in_use() {
        return Some(("sampled_alloc_in_use", in_use));
    }
    if let Some(stats) = crate::capture::heap::jemalloc_stats() {
        return Some(("jemalloc_allocated", stats.allocated));
    }
    if let Some(current) = cgroup_memory_current(cgroup_root) {
        return Some(("cgroup_memory_current", current));
    }
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(("rss", pages * page))
}

fn cgroup_memory_current(root: &Path) -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = root
        .join(path.trim_start_matches('/'))
        .join("memory.current");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// This process's CPU time.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

thread_local! {
    /// Set while this thread runs the agent's panic hook: a panic inside
    /// it must not fire again.
    static IN_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Chains a panic hook that fires a `panic` incident, then runs the hook
/// that was there before (the service's own, or std's report). The agent's
/// own threads (named `profscope-*`) never fire. With `panic = "abort"`
/// (or [`Triggers::panic_writes_at_once`]) the process ends right after the
/// hooks, so the before-window is frozen and written at once, on the
/// panicking thread; otherwise the recorder's thread does the work.
pub(crate) fn install_panic_hook(recorder: super::Recorder) {
    let at_once = recorder.shared.config.triggers.panic_writes_at_once;
    let weak = std::sync::Arc::downgrade(&recorder.shared);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("profscope-"));
        if !ours
            && !IN_HOOK.with(|h| h.replace(true))
            && let Some(shared) = weak.upgrade()
        {
            let recorder = super::Recorder { shared };
            let mut labels = BTreeMap::new();
            if let Some(location) = info.location() {
                labels.insert("location".to_string(), location.to_string());
            }
            if let Some(name) = std::thread::current().name() {
                labels.insert("thread".to_string(), name.to_string());
            }
            if at_once {
                if let Some(id) = recorder.fire(TriggerKind::Panic, BTreeMap::new(), labels) {
                    recorder.write_now(&id);
                }
            } else {
                recorder.fire_later(TriggerKind::Panic, BTreeMap::new(), labels);
            }
            IN_HOOK.with(|h| h.set(false));
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_growth_fires_once_past_its_line_and_then_cools_down() {
        // The figure is read from the process, so drive the rule directly:
        // growth in the window.
        let mut e = Evaluator::new(Triggers {
            heap_growth: Some(HeapGrowth::bytes(1)),
            ..Triggers::default()
        });
        let t0 = Instant::now();
        assert!(e.may_fire(TriggerKind::HeapGrowth, t0));
        assert!(!e.may_fire(TriggerKind::HeapGrowth, t0 + Duration::from_secs(10)));
        assert!(e.may_fire(TriggerKind::HeapGrowth, t0 + Duration::from_secs(301)));
        // Kinds cool down apart.
        assert!(e.may_fire(TriggerKind::Manual, t0));
    }

    #[test]
    fn rules_without_a_line_are_refused() {
        let t = Triggers {
            heap_growth: Some(HeapGrowth {
                bytes: None,
                percent: None,
                above: None,
                within: Duration::from_secs(60),
                cooldown: Duration::from_secs(1),
            }),
            ..Triggers::default()
        };
        assert!(t.check().is_err());
        let t = Triggers {
            cpu: Some(CpuBusy::above(150.0, Duration::from_secs(1))),
            ..Triggers::default()
        };
        assert!(t.check().is_err());
    }
}
