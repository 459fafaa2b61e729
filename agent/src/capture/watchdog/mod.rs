//! The blocking watchdog: names the poll that blocks a runtime worker while
//! it blocks. A plain OS thread (`profscope-watchdog`, never a tokio task)
//! wakes every threshold/4 (dozing while no poll starts, see `poll_stamp::doze`)
//! and reads the poll stamps (`poll_stamp.rs`); a thread
//! still inside the same poll past the threshold gets directed samples (a
//! signal to that one thread, through the sample stream's directed
//! consumer), one per wake while the poll lasts, each weighted by the wall
//! time it stands for and labelled with the thread's state: `running` (on
//! CPU), `runnable` (ready, but the machine gave it no CPU) or `blocked`
//! (sleeping or in a syscall), from its scheduler statistics. When the poll
//! ends, and every `report_every` while it lasts, the stall goes into the
//! block profile (Go's shape: `contentions/count`, `delay/nanoseconds`),
//! the metrics and, with the recorder on, a `blocked_poll` incident. It
//! never takes a task dump: a dump waits for every worker, the blocked
//! one included.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

cfg_tokio_unstable! {
    pub use crate::capture::poll_stamp::install_poll_hooks;
}

use crate::Error;
use crate::capture::poll_stamp::{self, MAX_POLLERS, SLOTS, high_water as stamp_high_water};
use crate::capture::recorder::{Recorder, TriggerKind};

/// The watchdog's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WatchdogConfig {
    /// A poll longer than this is a stall. Default 100 ms.
    pub threshold: Duration,
    /// How often a stall still in progress is reported. Default 500 ms.
    pub report_every: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            threshold: Duration::from_millis(100),
            report_every: Duration::from_millis(500),
        }
    }
}

impl WatchdogConfig {
    /// A stall past `threshold`.
    pub fn threshold(threshold: Duration) -> Self {
        WatchdogConfig {
            threshold,
            ..Default::default()
        }
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.threshold < Duration::from_millis(4)
            || self.report_every < Duration::from_millis(10)
        {
            return Err(Error::InvalidConfig(
                "watchdog: threshold must be at least 4 ms and report_every at least 10 ms".into(),
            ));
        }
        Ok(())
    }
}

/// Where a stalled thread was when sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadState {
    /// On a CPU.
    Running,
    /// Ready to run, but not given a CPU (an overloaded machine).
    Runnable,
    /// Sleeping or waiting in a syscall.
    Blocked,
}

impl ThreadState {
    /// The `state` label's value.
    pub fn name(self) -> &'static str {
        match self {
            ThreadState::Running => "running",
            ThreadState::Runnable => "runnable",
            ThreadState::Blocked => "blocked",
        }
    }
}

/// What one stall left, by stack: the block profile's rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StallKey {
    /// As the handler saw it: the interrupted instruction, then return
    /// addresses.
    pub(crate) frames: Vec<u64>,
    pub(crate) labels: u32,
    pub(crate) state: ThreadState,
    pub(crate) thread: Arc<str>,
}

/// A finished (or reported) stall, for metrics and tests.
#[derive(Debug, Clone)]
pub struct Stall {
    /// The stalled thread's name.
    pub thread: String,
    /// How long the poll had lasted when reported.
    pub duration: Duration,
    /// Whether the poll had ended.
    pub ended: bool,
    /// Wall time by state.
    pub states: BTreeMap<&'static str, Duration>,
    /// When its first directed sample was asked for (detection latency is
    /// this minus the poll's start and the threshold).
    pub first_sample: Option<Instant>,
}

#[derive(Debug, Default)]
struct Profile {
    /// Cumulative since start: (contentions, delay ns) per row.
    rows: HashMap<StallKey, (i64, i64)>,
    /// The same, stamped, for `?seconds=N` (oldest dropped past 10,000).
    log: VecDeque<(Instant, StallKey, i64, i64)>,
    /// Stalls reported, by the state most of their time was in.
    stalls_by_state: BTreeMap<&'static str, u64>,
    histogram_bounds: Vec<f64>,
    histogram_counts: Vec<u64>,
    histogram_sum: f64,
    histogram_count: u64,
    recent: VecDeque<Stall>,
    /// The rows at the previous `delta_block` request.
    delta_base: HashMap<StallKey, (i64, i64)>,
}

/// The blocking watchdog; cheap to clone.
#[derive(Clone)]
pub struct Watchdog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog").finish_non_exhaustive()
    }
}

struct Shared {
    config: WatchdogConfig,
    /// Ended stalls, to the reporting thread.
    ended: Mutex<std::sync::mpsc::Sender<Ended>>,
    profile: Mutex<Profile>,
    /// Why it cannot sample, when it cannot.
    stopped: Mutex<Option<String>>,
}

/// The histogram's bucket bounds, seconds.
const BOUNDS: [f64; 10] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Watchdog {
    /// Starts the monitor thread.
    pub(crate) fn start(
        config: WatchdogConfig,
        recorder: Option<Recorder>,
        symbolizer: crate::shared::symbols::Symbolizer,
    ) -> Result<Self, Error> {
        config.check()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("profscope-watchdog-report".into())
            .spawn(move || announce(&rx, &symbolizer, recorder.as_ref()))
            .map_err(|e| Error::Internal(format!("cannot start the watchdog thread: {e}")))?;
        let shared = Arc::new(Shared {
            config,
            ended: Mutex::new(tx),
            profile: Mutex::new(Profile {
                histogram_bounds: BOUNDS.to_vec(),
                histogram_counts: vec![0; BOUNDS.len()],
                ..Profile::default()
            }),
            stopped: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("profscope-watchdog".into())
            .spawn(move || monitor(&weak))
            .map_err(|e| Error::Internal(format!("cannot start the watchdog thread: {e}")))?;
        Ok(Watchdog { shared })
    }

    fn profile(&self) -> std::sync::MutexGuard<'_, Profile> {
        self.shared
            .profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The watchdog's settings.
    pub fn config(&self) -> &WatchdogConfig {
        &self.shared.config
    }

    /// Why the watchdog cannot sample (no own sampler, SIGPROF taken), if so.
    pub fn stopped(&self) -> Option<String> {
        self.shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The block profile's rows: cumulative since start, or only those of
    /// the last `within`.
    pub(crate) fn rows(&self, within: Option<Duration>) -> Vec<(StallKey, i64, i64)> {
        let profile = self.profile();
        match within {
            None => profile
                .rows
                .iter()
                .map(|(k, (c, d))| (k.clone(), *c, *d))
                .collect(),
            Some(window) => {
                let since = Instant::now().checked_sub(window);
                let mut rows: HashMap<&StallKey, (i64, i64)> = HashMap::new();
                for (at, key, c, d) in &profile.log {
                    if since.is_none_or(|s| *at >= s) {
                        let e = rows.entry(key).or_default();
                        e.0 += c;
                        e.1 += d;
                    }
                }
                rows.into_iter()
                    .map(|(k, (c, d))| (k.clone(), c, d))
                    .collect()
            }
        }
    }

    /// The rows added since the previous call (godeltaprof's `delta_block`:
    /// one state for the path).
    pub(crate) fn delta_rows(&self) -> Vec<(StallKey, i64, i64)> {
        let now = self.rows(None);
        let mut profile = self.profile();
        let base = std::mem::replace(
            &mut profile.delta_base,
            now.iter().map(|(k, c, d)| (k.clone(), (*c, *d))).collect(),
        );
        now.into_iter()
            .map(|(k, c, d)| {
                let (c0, d0) = base.get(&k).copied().unwrap_or_default();
                (k, c - c0, d - d0)
            })
            .filter(|(_, c, d)| *c != 0 || *d != 0)
            .collect()
    }

    /// The block profile of `rows`: Go's shape (`contentions/count`,
    /// `delay/nanoseconds`, `delay` shown first), each sample labelled with
    /// the thread, its `state` and the poll's labels.
    pub(crate) fn to_profile(
        rows: &[(StallKey, i64, i64)],
        symbolizer: &crate::shared::symbols::Symbolizer,
    ) -> profscope_profile::Profile {
        let addresses = |frames: &[u64]| -> Vec<u64> {
            frames
                .iter()
                .enumerate()
                .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
                .collect()
        };
        symbolizer.resolve_all(rows.iter().flat_map(|(k, _, _)| addresses(&k.frames)));
        let mut builder = crate::shared::profile_builder::ProfileBuilder::new(
            symbolizer,
            &[("contentions", "count"), ("delay", "nanoseconds")],
        )
        .period("contentions", "count", 1)
        .default_sample_type("delay")
        .comment("polls that blocked a runtime worker past the watchdog's threshold");
        for (key, contentions, delay) in rows {
            let set = crate::capture::labels::pairs_of(key.labels);
            let mut labels: Vec<(&str, &str)> =
                vec![("thread", &key.thread), ("state", key.state.name())];
            if let Some(set) = &set {
                labels.extend(set.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            builder.add_sample(&addresses(&key.frames), vec![*contentions, *delay], &labels);
        }
        builder.build()
    }

    /// The most recent stalls reported (at most 64), oldest first.
    pub fn recent_stalls(&self) -> Vec<Stall> {
        self.profile().recent.iter().cloned().collect()
    }

    /// (stalls by state, histogram bounds, bucket counts, sum, count), for
    /// `/metrics`.
    pub(crate) fn metrics(&self) -> WatchdogMetrics {
        let p = self.profile();
        WatchdogMetrics {
            stalls_by_state: ["running", "runnable", "blocked"]
                .iter()
                .map(|s| (*s, p.stalls_by_state.get(s).copied().unwrap_or(0)))
                .collect(),
            bounds: p.histogram_bounds.clone(),
            counts: p.histogram_counts.clone(),
            sum: p.histogram_sum,
            count: p.histogram_count,
        }
    }
}

/// The watchdog's figures for `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct WatchdogMetrics {
    pub(crate) stalls_by_state: Vec<(&'static str, u64)>,
    pub(crate) bounds: Vec<f64>,
    pub(crate) counts: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

/// One thread's poll as the monitor sees it.
struct Watch {
    tid: i32,
    seq: u64,
    first_seen: Instant,
    stalled: bool,
    last_sample: Option<Instant>,
    first_sample: Option<Instant>,
    last_report: Instant,
    /// On-CPU ns at the previous look (`schedstat`), for running vs runnable.
    cpu_ns: Option<(Instant, u64)>,
    /// Samples not reported yet: (key, delay ns).
    pending: Vec<(StallKey, i64)>,
    /// The state of each requested sample and the wall time it stands
    /// for, by request order.
    states: VecDeque<(ThreadState, Duration)>,
    by_state: BTreeMap<&'static str, Duration>,
    contention_counted: bool,
    name: Arc<str>,
    /// The stack of its latest sample.
    culprit: Option<Vec<u64>>,
}

fn thread_name(tid: i32) -> Arc<str> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|n| n.trim_end().to_string())
        .unwrap_or_else(|_| tid.to_string())
        .into()
}

/// The thread's scheduler state letter and its on-CPU ns.
fn thread_state(tid: i32) -> Option<(u8, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the parenthesised name, which may hold spaces.
    let state = *stat.rsplit_once(") ")?.1.as_bytes().first()?;
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let on_cpu = schedstat.split_whitespace().next()?.parse().ok()?;
    Some((state, on_cpu))
}

cfg_own_sampler! {
    type Directed = crate::capture::sampler::DirectedSubscription;

    fn directed() -> Result<Directed, String> {
        crate::capture::sampler::subscribe_directed().map_err(|e| e.to_string())
    }

    fn take(d: &Directed) -> Result<Vec<(i32, Vec<u64>, u32)>, String> {
        d.take()
            .map(|v| v.into_iter().map(|s| (s.tid, s.frames, s.labels)).collect())
            .map_err(|e| e.to_string())
    }

    fn request(d: &Directed, tid: i32) {
        let _ = d.request(tid);
    }
}
cfg_not_own_sampler! {
    /// Never made: [`directed`] refuses without the own sampler.
    struct Directed;

    fn directed() -> Result<Directed, String> {
        Err("the watchdog needs the agent's own CPU sampler (Linux x86_64, without the \
             `pprof-rs` feature) for its directed samples"
            .into())
    }

    fn take(_: &Directed) -> Result<Vec<(i32, Vec<u64>, u32)>, String> {
        Ok(Vec::new())
    }

    fn request(_: &Directed, _: i32) {}
}

/// The monitor thread.
fn monitor(shared: &std::sync::Weak<Shared>) {
    let Some(s) = shared.upgrade() else { return };
    let config = s.config.clone();
    let directed = match directed() {
        Ok(d) => d,
        Err(why) => {
            *s.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
            return;
        }
    };
    drop(s);
    let tick = config.threshold / 4;
    let mut watches: Vec<Option<Watch>> = (0..MAX_POLLERS).map(|_| None).collect();
    let mut can_doze = poll_stamp::can_doze();
    let (mut idle_ticks, mut last_activity) = (0u32, poll_stamp::activity());
    let mut dozing = false;
    loop {
        if dozing {
            if shared.strong_count() == 0 {
                return;
            }
            if !poll_stamp::doze(DOZE_AT_MOST) {
                can_doze = false;
            }
            let activity = poll_stamp::activity();
            if can_doze && activity == last_activity {
                // Timed out with no poll: doze on.
                continue;
            }
            (idle_ticks, last_activity) = (0, activity);
        }
        std::thread::sleep(tick);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        // Samples asked for at the previous wakes (none asked, none to take:
        // an idle wake touches neither the stream's lock nor its rings).
        let sampling = watches.iter().flatten().any(|w| w.stalled);
        match if sampling {
            take(&directed)
        } else {
            Ok(Vec::new())
        } {
            Ok(samples) => {
                for (tid, frames, labels) in samples {
                    if let Some(w) = watches.iter_mut().flatten().find(|w| w.tid == tid) {
                        let (state, delay) =
                            w.states.pop_front().unwrap_or((ThreadState::Blocked, tick));
                        w.culprit = Some(frames.clone());
                        w.pending.push((
                            StallKey {
                                frames,
                                labels,
                                state,
                                thread: w.name.clone(),
                            },
                            delay.as_nanos() as i64,
                        ));
                    }
                }
            }
            Err(why) => {
                *shared
                    .stopped
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(why);
                return;
            }
        }
        let claimed = stamp_high_water();
        for (i, slot) in SLOTS.iter().enumerate().take(claimed) {
            let tid = slot.tid.load(Ordering::Acquire);
            let seq = slot.seq.load(Ordering::Acquire);
            let in_poll = tid != 0 && seq & 1 == 1;
            let same = watches[i]
                .as_ref()
                .is_some_and(|w| w.tid == tid && w.seq == seq);
            if !same {
                // The watched poll ended (or the slot changed hands).
                if let Some(w) = watches[i].take()
                    && w.stalled
                {
                    report(&shared, w, now, true);
                }
                if in_poll {
                    watches[i] = Some(Watch {
                        tid,
                        seq,
                        first_seen: now,
                        first_sample: None,
                        stalled: false,
                        last_sample: None,
                        last_report: now,
                        cpu_ns: None,
                        pending: Vec::new(),
                        states: VecDeque::new(),
                        by_state: BTreeMap::new(),
                        contention_counted: false,
                        name: "".into(),
                        culprit: None,
                    });
                }
                continue;
            }
            let Some(w) = watches[i].as_mut() else {
                continue;
            };
            if now.duration_since(w.first_seen) < config.threshold {
                continue;
            }
            if !w.stalled {
                w.stalled = true;
                w.name = thread_name(tid);
            }
            // Its state now, then a directed sample of it.
            let state = match thread_state(tid) {
                Some((b'R', on_cpu)) => {
                    let ran = w.cpu_ns.map(|(at, before)| {
                        (on_cpu.saturating_sub(before) as f64)
                            / now.duration_since(at).as_nanos().max(1) as f64
                    });
                    w.cpu_ns = Some((now, on_cpu));
                    if ran.is_none_or(|r| r >= 0.5) {
                        ThreadState::Running
                    } else {
                        ThreadState::Runnable
                    }
                }
                Some((_, on_cpu)) => {
                    w.cpu_ns = Some((now, on_cpu));
                    ThreadState::Blocked
                }
                None => ThreadState::Blocked,
            };
            let stands_for = w
                .last_sample
                .map_or(now.duration_since(w.first_seen), |t| now.duration_since(t));
            *w.by_state.entry(state.name()).or_default() += stands_for;
            w.states.push_back((state, stands_for));
            w.last_sample = Some(now);
            w.first_sample.get_or_insert(now);
            request(&directed, tid);
            if now.duration_since(w.last_report) >= config.report_every {
                w.last_report = now;
                let reported = Watch {
                    tid: w.tid,
                    seq: w.seq,
                    first_seen: w.first_seen,
                    stalled: true,
                    last_sample: w.last_sample,
                    first_sample: w.first_sample,
                    last_report: now,
                    cpu_ns: None,
                    pending: std::mem::take(&mut w.pending),
                    states: VecDeque::new(),
                    by_state: w.by_state.clone(),
                    contention_counted: w.contention_counted,
                    name: w.name.clone(),
                    culprit: w.culprit.clone(),
                };
                w.contention_counted = true;
                report(&shared, reported, now, false);
            }
        }
        // No poll started or ended for DOZE_AFTER ticks and none watched:
        // doze until the next poll starts rather than wake every tick.
        let activity = poll_stamp::activity();
        if activity == last_activity && watches.iter().all(Option::is_none) {
            idle_ticks += 1;
        } else {
            idle_ticks = 0;
            last_activity = activity;
        }
        dozing = can_doze && idle_ticks >= DOZE_AFTER;
    }
}

/// Idle ticks before the monitor dozes (200 ms at the default threshold).
const DOZE_AFTER: u32 = 8;
/// The longest doze: how soon the monitor notices the agent is gone.
const DOZE_AT_MOST: Duration = Duration::from_secs(1);

/// Puts a stall's samples into the block profile; a stall that ended is
/// also counted (metrics, incident).
fn report(shared: &Shared, mut w: Watch, now: Instant, ended: bool) {
    let duration = now.duration_since(w.first_seen) + shared.config.threshold / 8;
    // The time since the last sample, to the end, is the last stack's.
    if ended && let (Some(last), Some((_, delay))) = (w.last_sample, w.pending.last_mut()) {
        *delay += now.duration_since(last).as_nanos() as i64;
    }
    let mut profile = shared
        .profile
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut first = !w.contention_counted;
    for (key, delay) in w.pending {
        let contentions = i64::from(first);
        first = false;
        let e = profile.rows.entry(key.clone()).or_default();
        e.0 += contentions;
        e.1 += delay;
        profile.log.push_back((now, key, contentions, delay));
        if profile.log.len() > 10_000 {
            profile.log.pop_front();
        }
    }
    if !ended {
        return;
    }
    let dominant = w
        .by_state
        .iter()
        .max_by_key(|(_, d)| **d)
        .map_or("blocked", |(s, _)| *s);
    *profile.stalls_by_state.entry(dominant).or_default() += 1;
    let seconds = duration.as_secs_f64();
    for (i, bound) in BOUNDS.iter().enumerate() {
        if seconds <= *bound {
            profile.histogram_counts[i] += 1;
        }
    }
    profile.histogram_sum += seconds;
    profile.histogram_count += 1;
    profile.recent.push_back(Stall {
        thread: w.name.to_string(),
        duration,
        ended,
        states: w.by_state.clone(),
        first_sample: w.first_sample,
    });
    if profile.recent.len() > 64 {
        profile.recent.pop_front();
    }
    drop(profile);
    // Naming the culprit symbolizes (cold: hundreds of ms): never on the
    // monitor, which must not miss a wake.
    let _ = shared
        .ended
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(Ended {
            thread: w.name.to_string(),
            seconds,
            state: dominant,
            frames: w.culprit.unwrap_or_default(),
        });
}

/// A stall that ended, for the reporting thread.
struct Ended {
    thread: String,
    seconds: f64,
    state: &'static str,
    frames: Vec<u64>,
}

/// The reporting thread: names each ended stall's culprit, warns (with the
/// `tracing` feature), and fires the recorder's `blocked_poll` incident.
fn announce(
    ended: &std::sync::mpsc::Receiver<Ended>,
    symbolizer: &crate::shared::symbols::Symbolizer,
    recorder: Option<&Recorder>,
) {
    for stall in ended {
        let culprit = culprit(symbolizer, &stall.frames);
        #[cfg(feature = "tracing")]
        warn_rate_limited(
            &stall.thread,
            Duration::from_secs_f64(stall.seconds),
            stall.state,
            &culprit,
        );
        if let Some(recorder) = recorder {
            let figures = BTreeMap::from([("seconds".to_string(), stall.seconds)]);
            let labels = BTreeMap::from([
                ("thread".to_string(), stall.thread),
                ("state".to_string(), stall.state.to_string()),
                ("culprit".to_string(), culprit),
            ]);
            recorder.fire(TriggerKind::BlockedPoll, figures, labels);
        }
    }
}

/// The innermost frames of a stall's stack, named: `leaf <- caller <- …`.
fn culprit(symbolizer: &crate::shared::symbols::Symbolizer, frames: &[u64]) -> String {
    frames
        .iter()
        .take(3)
        .enumerate()
        .filter_map(|(i, &a)| {
            let lookup = if i == 0 { a } else { a.saturating_sub(1) };
            symbolizer
                .resolve(lookup)
                .first()
                .map(|f| f.function.to_string())
        })
        .collect::<Vec<_>>()
        .join(" <- ")
}

cfg_tracing! {
    /// At most one warning every 10 s, so a wedged service does not flood
    /// its own log.
    fn warn_rate_limited(thread: &str, duration: Duration, state: &str, culprit: &str) {
        static LAST: Mutex<Option<Instant>> = Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            thread,
            seconds = duration.as_secs_f64(),
            state,
            culprit,
            "a poll blocked a runtime worker; its stack is in /debug/pprof/block"
        );
    }
}
