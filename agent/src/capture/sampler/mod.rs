//! The agent's own CPU sampler (Linux): one sample stream for every
//! consumer.
//!
//! Each thread of the process gets a CPU-time timer of its own
//! (`timer_create` on the thread's CPU clock, `SIGEV_THREAD_ID`), so a
//! thread is sampled in proportion to the CPU it uses, whatever the others
//! do (a process-wide `setitimer` spreads its signals unfairly, golang/go#35057).
//! The SIGPROF handler (`handler.rs`) only copies: instruction pointer,
//! frame-pointer chain (every read validated against a snapshot of the
//! mappings, without a syscall, and made through a load that cannot fault,
//! `guard.rs`) and label-set id, into the thread's ring in a mapped region
//! (`region.rs`). An aggregator thread drains the rings every 32–100 ms
//! (half a ring at the stream's rate) into each consumer's counts, rescans
//! `/proc/self/task` and `/proc/self/maps` every 100 ms (and at once when a
//! consumer joins, so its threads are sampled from its start), and tears
//! everything down (timers, handler, mapping) when the last consumer leaves.
//!
//! The stream runs at the highest frequency any consumer asked for; every
//! consumer receives every sample, weighted by the stream's real period,
//! so two overlapping captures at different rates are both right.
//! Symbolization happens later, on an ordinary thread, through the agent's
//! one symbolizer: nothing is parsed at capture start.
//!
//! A directed consumer ([`subscribe_directed`], the watchdog's) asks for
//! one sample of one thread at a time: such samples arrive by `tgkill`, are
//! told apart by their `si_code`, go to directed consumers only and never
//! count as CPU time. A stream with only directed consumers arms no timer
//! but keeps the handler, the slots and the snapshot fresh.
//!
//! Staying on for months:
//! - SIGPROF is ours only while our handler is installed: it goes in with
//!   one `sigaction` swap (a foreign handler found there is put back at
//!   once) and is put back at stop only if it is still ours. The aggregator
//!   checks at every tick; when another library took the signal, the stream
//!   ends, its consumers fail with the reason, and it is never taken back.
//! - `fork`: `pthread_atfork` hooks hold the stream's lock across the fork,
//!   and the child starts from nothing (no stream, consumers, timers or
//!   cached thread id; SIGPROF as before the stream).

cfg_sampled_alloc! {
    pub(crate) mod fresh;
}
mod guard;
mod handler;
mod region;
mod threads;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxHashMap as HashMap;

pub(crate) use handler::DROP_REASONS;
#[allow(unused_imports)] // read and set by `labels`, next
pub(crate) use handler::LABEL_SET;
use handler::{IN_FLIGHT, REGION, on_sigprof};
use region::{KIND_DIRECTED, KIND_TIMER, MAX_THREADS, Mapping, RETIRED, fill_snapshot};
use threads::Threads;

/// How often the aggregator drains the rings at most: each wake-up costs
/// tens of microseconds in a VM, so no more often than the rings need
/// (half a ring at the stream's rate; see [`drain_every`]).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// The wait between drains at `period`: half a ring's worth of samples,
/// at most [`DRAIN_EVERY`] (100 ms at 99 Hz, 32 ms at 1000 Hz; 100 ms with
/// no timer armed).
fn drain_every(period: Duration) -> Duration {
    if period.is_zero() {
        return DRAIN_EVERY;
    }
    (period * (region::RING as u32 / 2)).min(DRAIN_EVERY)
}
/// How often it looks for new threads.
const RESCAN_EVERY: Duration = Duration::from_millis(100);
/// How often it rereads the mappings when nothing asked for it sooner (a
/// new thread, or a sample whose stack the snapshot did not know, does).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// The soonest a reread asked for by missed samples follows the previous
/// one (a thread on a stack that no reread will find, a coroutine's,
/// would otherwise cost a reread at every scan).
const MISS_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Directed samples a directed consumer keeps until it takes them.
const DIRECTED_KEPT: usize = 4096;

/// Why the sampler cannot run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SamplerError {
    /// Another SIGPROF handler is installed (another profiler runs).
    #[error("SIGPROF is handled by something else in this process (another CPU profiler?)")]
    SignalInUse,
    /// Another handler took SIGPROF while the stream ran: it ended.
    #[error(
        "another SIGPROF handler was installed in this process while the capture ran \
         (another CPU profiler?); the sampler stopped and left it in place"
    )]
    SignalTaken,
    /// The consumer is no longer in the stream: the process forked since
    /// it joined (the child starts from nothing).
    #[error("the sample stream was reset (the process forked since this consumer joined)")]
    Gone,
    /// The kernel refused the mapping or the handler.
    #[error("cannot start the CPU sampler: {0}")]
    Os(#[from] std::io::Error),
}

/// One distinct (stack, thread, label set) a consumer collected.
#[derive(Debug)]
pub(crate) struct CollectedStack {
    /// As the handler saw it: the interrupted instruction, then return
    /// addresses.
    pub(crate) frames: Vec<u64>,
    pub(crate) thread: Arc<str>,
    pub(crate) labels: u32,
    pub(crate) samples: i64,
    pub(crate) cpu_ns: i64,
}

/// What one consumer collected.
#[derive(Debug)]
pub(crate) struct Collected {
    pub(crate) stacks: Vec<CollectedStack>,
    /// The stream's sampling period when the consumer finished.
    pub(crate) period: Duration,
    /// Wall-clock start.
    pub(crate) start: SystemTime,
    /// How long the consumer was subscribed.
    pub(crate) duration: Duration,
    /// Samples dropped while it was subscribed, by reason (every reason of
    /// [`DROP_REASONS`], zeros included).
    pub(crate) dropped: Vec<(&'static str, u64)>,
}

/// One sample a directed consumer asked for.
#[derive(Debug, Clone)]
#[allow(dead_code)] // The blocked-poll watchdog reads them.
pub(crate) struct DirectedSample {
    /// The thread sampled.
    pub(crate) tid: i32,
    /// As the handler saw it: the interrupted instruction, then return
    /// addresses.
    pub(crate) frames: Vec<u64>,
    /// The label set the thread ran under.
    pub(crate) labels: u32,
    /// CLOCK_MONOTONIC when it was taken, in ns.
    pub(crate) at_ns: u64,
}

#[derive(Default)]
struct Counts {
    samples: i64,
    nanos: i64,
}

struct Consumer {
    id: u64,
    /// Timer samples per CPU-second; 0 for a directed consumer, which
    /// receives only directed samples (into `directed`).
    hz: u32,
    directed: Vec<DirectedSample>,
    /// Why the stream ended under it, when it did.
    failed: Option<SamplerError>,
    /// Index into `counts` by `[tid, label set, frames…]`.
    stacks: HashMap<Box<[u64]>, usize>,
    counts: Vec<Counts>,
    /// Each thread's most recent stack (index into `counts`): where the CPU
    /// a thread ran since its last timer expiry is credited when its timer
    /// is re-armed or the consumer leaves.
    last: HashMap<i32, usize>,
    names: HashMap<i32, Arc<str>>,
    start: SystemTime,
    started: Instant,
    dropped_at_start: [u64; DROP_REASONS.len()],
}

struct Running {
    mapping: Mapping,
    threads: Threads,
    /// The timers' period; zero while only directed consumers run (no
    /// timer armed).
    period: Duration,
    /// The SIGPROF disposition ours replaced, put back at stop if ours is
    /// still installed then.
    previous: libc::sigaction,
    last_scan: Instant,
    task_dir: threads::TaskDir,
    last_refresh: Instant,
    misses_seen: u64,
    /// The program's path as `/proc/self/maps` names it: its code has frame
    /// pointers, so the handler never guesses a leaf's caller there.
    exe: Option<String>,
    /// Slots ever given out since start (the only ones drained).
    used: Vec<bool>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    consumers: Vec<Consumer>,
    next_id: u64,
}

/// The process's one sample stream.
struct Stream {
    state: Mutex<State>,
}

// SAFETY: `Running` holds a `libc::sigaction` (plain data) and timer ids;
// all access goes through the mutex.
unsafe impl Send for Running {}

static STREAM: Stream = Stream {
    state: Mutex::new(State {
        running: None,
        consumers: Vec::new(),
        next_id: 0,
    }),
};

/// Times another handler took SIGPROF from under a running stream.
static TAKEN: AtomicU64 = AtomicU64::new(0);

fn lock() -> MutexGuard<'static, State> {
    STREAM.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The timer period at `hz`; zero (no timer) at 0 Hz.
fn period_of(hz: u32) -> Duration {
    match hz {
        0 => Duration::ZERO,
        hz => Duration::from_nanos(1_000_000_000 / u64::from(hz)),
    }
}

fn dropped_now() -> [u64; DROP_REASONS.len()] {
    std::array::from_fn(|i| handler::DROPPED[i].load(Ordering::Relaxed))
}

/// Samples dropped by reason between the counters `since` and `now`.
fn dropped_between(
    since: &[u64; DROP_REASONS.len()],
    now: &[u64; DROP_REASONS.len()],
) -> Vec<(&'static str, u64)> {
    DROP_REASONS
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, now[i].saturating_sub(since[i])))
        .collect()
}

/// A consumer of the stream; dropping it unsubscribes (and the stream
/// stops when no consumer is left).
#[derive(Debug)]
pub(crate) struct Subscription {
    id: u64,
    done: bool,
}

/// Joins the stream at `hz` samples per CPU-second of each thread (the
/// stream speeds up if `hz` is above its rate), starting it if needed.
pub(crate) fn subscribe(hz: u32) -> Result<Subscription, SamplerError> {
    join(hz.max(1)).map(|id| Subscription { id, done: false })
}

/// Joins the stream as a directed consumer (no timer samples), starting
/// the stream without timers if none runs.
#[allow(dead_code)] // The blocked-poll watchdog's way in.
pub(crate) fn subscribe_directed() -> Result<DirectedSubscription, SamplerError> {
    join(0).map(|id| DirectedSubscription { id })
}

fn join(hz: u32) -> Result<u64, SamplerError> {
    install_fork_hooks();
    let mut state = lock();
    match state.running {
        Some(_) => {
            // Samples so far belong to the consumers already there.
            drain_all(&mut state);
            // Threads started since the last scan are sampled from this
            // start, not from the next scan up to 100 ms later (a capture
            // right after another, whose stream had not stopped yet, lost
            // that much of a new thread's CPU). A new thread also rereads
            // the mappings: a fraction of a millisecond, once per capture.
            if let Some(r) = state.running.as_mut() {
                rescan(r);
            }
        }
        None => state.running = Some(start(period_of(hz))?),
    }
    let id = state.next_id;
    state.next_id += 1;
    let fastest = state.consumers.iter().map(|c| c.hz).max().unwrap_or(0);
    // What the threads ran since their last expiry belongs to the
    // consumers already here.
    retime(&mut state, fastest.max(hz), id.wrapping_sub(1));
    state.consumers.push(Consumer {
        id,
        hz,
        directed: Vec::new(),
        failed: None,
        stacks: HashMap::default(),
        counts: Vec::new(),
        last: HashMap::default(),
        names: HashMap::default(),
        start: SystemTime::now(),
        started: Instant::now(),
        dropped_at_start: dropped_now(),
    });
    Ok(id)
}

fn leave(id: u64) {
    let mut state = lock();
    // What the others sampled at the old rate is theirs.
    drain_all(&mut state);
    state.consumers.retain(|c| c.id != id);
    retime_to_fastest(&mut state);
}

impl Subscription {
    /// Leaves the stream with everything sampled up to now, or why the
    /// stream ended under it.
    pub(crate) fn finish(mut self) -> Result<Collected, SamplerError> {
        self.done = true;
        let mut state = lock();
        drain_all(&mut state);
        let period = state.running.as_ref().map_or(Duration::ZERO, |r| r.period);
        let at = state.consumers.iter().position(|c| c.id == self.id);
        let mut consumer = at.map(|i| state.consumers.swap_remove(i));
        // The CPU each thread ran since its last expiry is this consumer's
        // too: credited to the thread's latest stack.
        if let (Some(c), Some(r)) = (consumer.as_mut(), state.running.as_ref()) {
            for (tid, ran) in r.threads.since_last_expiry(r.period) {
                c.credit(tid, ran);
            }
        }
        retime_to_fastest(&mut state);
        drop(state);
        let Some(mut c) = consumer else {
            // No longer in the stream (the process forked since it joined).
            return Ok(Collected {
                stacks: Vec::new(),
                period,
                start: SystemTime::now(),
                duration: Duration::ZERO,
                dropped: DROP_REASONS.iter().map(|&r| (r, 0)).collect(),
            });
        };
        if let Some(e) = c.failed.take() {
            return Err(e);
        }
        let now = dropped_now();
        let dropped = dropped_between(&c.dropped_at_start, &now);
        let stacks = collected_stacks(c.stacks, &c.counts, &c.names);
        Ok(Collected {
            stacks,
            period,
            start: c.start,
            duration: c.started.elapsed(),
            dropped,
        })
    }
}

impl Subscription {
    /// Everything sampled since the previous take (or the join), staying
    /// subscribed: what a consumer that records continuously (the flight
    /// recorder) calls once per bucket.
    pub(crate) fn take(&self) -> Result<Collected, SamplerError> {
        let mut state = lock();
        drain_all(&mut state);
        let period = state.running.as_ref().map_or(Duration::ZERO, |r| r.period);
        let Some(c) = state.consumers.iter_mut().find(|c| c.id == self.id) else {
            return Err(SamplerError::Gone);
        };
        if let Some(e) = c.failed.take() {
            return Err(e);
        }
        let now = dropped_now();
        let dropped = dropped_between(&c.dropped_at_start, &now);
        c.dropped_at_start = now;
        let stacks = std::mem::take(&mut c.stacks);
        let counts = std::mem::take(&mut c.counts);
        c.last.clear();
        let start = std::mem::replace(&mut c.start, SystemTime::now());
        let duration = std::mem::replace(&mut c.started, Instant::now()).elapsed();
        let stacks = collected_stacks(stacks, &counts, &c.names);
        Ok(Collected {
            stacks,
            period,
            start,
            duration,
            dropped,
        })
    }
}

/// A consumer's counts as stacks: `[tid, label set, frames…]` keys, the
/// thread named by its last known name (else its id).
fn collected_stacks(
    stacks: HashMap<Box<[u64]>, usize>,
    counts: &[Counts],
    names: &HashMap<i32, Arc<str>>,
) -> Vec<CollectedStack> {
    stacks
        .into_iter()
        .map(|(key, index)| {
            let tid = key[0] as i32;
            let thread = names
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| tid.to_string().into());
            CollectedStack {
                frames: key[2..].to_vec(),
                thread,
                labels: key[1] as u32,
                samples: counts[index].samples,
                cpu_ns: counts[index].nanos,
            }
        })
        .collect()
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.done {
            leave(self.id);
        }
    }
}

/// A directed consumer: it asks for samples of single threads and takes
/// them; dropping it leaves the stream.
#[derive(Debug)]
pub(crate) struct DirectedSubscription {
    id: u64,
}

#[allow(dead_code)] // The blocked-poll watchdog's way in.
impl DirectedSubscription {
    /// Asks for one sample of thread `tid` now, outside its CPU timer.
    pub(crate) fn request(&self, tid: i32) -> std::io::Result<()> {
        // SAFETY: tgkill with this process's pid; SIGPROF is ours while
        // this subscription keeps the stream running (and if another
        // handler took it, that handler's `SI_TKILL` case handles it).
        let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGPROF) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The directed samples taken since the last call, oldest first (at
    /// most [`DIRECTED_KEPT`] kept in between), or why the stream ended.
    pub(crate) fn take(&self) -> Result<Vec<DirectedSample>, SamplerError> {
        let mut state = lock();
        drain_all(&mut state);
        let Some(c) = state.consumers.iter_mut().find(|c| c.id == self.id) else {
            return Ok(Vec::new());
        };
        if let Some(e) = c.failed.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut c.directed))
    }
}

impl Drop for DirectedSubscription {
    fn drop(&mut self) {
        leave(self.id);
    }
}

fn drain_all(state: &mut State) {
    let State {
        running, consumers, ..
    } = state;
    if let Some(running) = running.as_mut() {
        drain(running, consumers);
    }
}

/// Sets the stream's rate to the fastest remaining consumer's (no timer
/// armed when only directed consumers remain).
fn retime_to_fastest(state: &mut State) {
    if let Some(hz) = state.consumers.iter().map(|c| c.hz).max() {
        // Every consumer here now has an id below `next_id`.
        let upto = state.next_id.saturating_sub(1);
        retime(state, hz, upto);
    }
}

/// Sets the stream's rate to `hz`. Callers drain first, so every sample is
/// weighed by the period it was taken at; re-arming restarts each thread's
/// countdown, so the CPU it ran since its last expiry is credited first, to
/// consumers with ids up to `upto`.
fn retime(state: &mut State, hz: u32, upto: u64) {
    let State {
        running, consumers, ..
    } = state;
    if let Some(running) = running.as_mut() {
        let period = period_of(hz);
        if period != running.period {
            for (tid, ran) in running.threads.since_last_expiry(running.period) {
                for c in consumers.iter_mut().filter(|c| c.id <= upto) {
                    c.credit(tid, ran);
                }
            }
            running.threads.retime(period);
            running.period = period;
        }
    }
}

impl Consumer {
    /// Adds `ran` ns to thread `tid`'s latest stack, if it has one.
    fn credit(&mut self, tid: i32, ran: Duration) {
        if let Some(&i) = self.last.get(&tid) {
            self.counts[i].nanos += ran.as_nanos() as i64;
        }
    }
}

/// Maps the region, publishes it, installs the handler, arms every
/// thread's timer and starts the aggregator.
fn start(period: Duration) -> Result<Running, SamplerError> {
    // Reads that cannot fault, before any handler can read.
    guard::install();
    // The snapshot is filled before any timer exists.
    let mapping = Mapping::new()?;
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigprof as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: a zeroed sigaction to receive the old one.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    REGION.store(mapping.as_ptr(), Ordering::SeqCst);
    // One swap, so nothing installed between a check and an install is
    // overwritten unseen.
    // SAFETY: installs our handler, which only touches the published
    // region; the previous disposition comes back in `previous`.
    if unsafe { libc::sigaction(libc::SIGPROF, &action, &mut previous) } != 0 {
        REGION.store(std::ptr::null_mut(), Ordering::SeqCst);
        return Err(std::io::Error::last_os_error().into());
    }
    let found = previous.sa_sigaction;
    if found == on_sigprof as *const () as usize {
        // Ours counts as ours; what it replaced is unknown: the default.
        // SAFETY: a zeroed sigaction is SIG_DFL.
        previous = unsafe { std::mem::zeroed() };
    } else if found != libc::SIG_DFL && found != libc::SIG_IGN {
        // Someone else's: put it back at once, untouched.
        // SAFETY: restores exactly what was installed.
        unsafe { libc::sigaction(libc::SIGPROF, &previous, std::ptr::null_mut()) };
        REGION.store(std::ptr::null_mut(), Ordering::SeqCst);
        wait_for_handlers();
        return Err(SamplerError::SignalInUse);
    }
    let mut running = Running {
        mapping,
        threads: Threads::default(),
        period,
        previous,
        last_scan: Instant::now(),
        task_dir: threads::TaskDir::open(),
        last_refresh: Instant::now(),
        misses_seen: 0,
        exe: std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| p.to_str().map(str::to_string)),
        used: vec![false; MAX_THREADS],
    };
    if let Err(e) = std::thread::Builder::new()
        .name("profscope-sampler".into())
        .spawn(aggregate)
    {
        stop(running);
        return Err(e.into());
    }
    refresh_snapshot(&mut running);
    rescan(&mut running);
    Ok(running)
}

/// Whether our handler is still SIGPROF's (a syscall: the aggregator's
/// check once per tick, never the handler's).
fn still_ours() -> bool {
    // SAFETY: a zeroed sigaction to receive the current one.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reads the disposition without changing it.
    let read = unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current) } == 0;
    !read || current.sa_sigaction == on_sigprof as *const () as usize
}

/// The aggregator: drains, rescans, and stops the stream when no consumer
/// is left or another handler took SIGPROF.
fn aggregate() {
    let mut wait = DRAIN_EVERY;
    loop {
        std::thread::sleep(wait);
        let mut state = lock();
        let State {
            running, consumers, ..
        } = &mut *state;
        let Some(r) = running.as_mut() else { return };
        drain(r, consumers);
        if !still_ours() {
            TAKEN.fetch_add(1, Ordering::Relaxed);
            for c in consumers.iter_mut() {
                c.failed = Some(SamplerError::SignalTaken);
            }
        }
        if consumers.is_empty() || consumers.iter().any(|c| c.failed.is_some()) {
            if let Some(r) = running.take() {
                stop(r);
            }
            return;
        }
        // A millisecond early counts: drains and scans share wake-ups.
        if r.last_scan.elapsed() + Duration::from_millis(1) >= RESCAN_EVERY {
            rescan(r);
            guard::still_installed();
        }
        wait = drain_every(r.period);
    }
}

/// Finds new and exited threads; rereads the mappings first when a new
/// thread (with a new stack) appeared, a sample missed the snapshot (at
/// most every [`MISS_REFRESH_EVERY`]), or it is [`REFRESH_EVERY`] old.
/// Reading `/proc/self/maps` is most of the aggregator's cost, so it is not
/// done at every scan.
fn rescan(r: &mut Running) {
    let live = threads::live_threads(&mut r.task_dir);
    let misses = handler::STACK_UNKNOWN.load(Ordering::Relaxed);
    let since = r.last_refresh.elapsed();
    if r.threads.has_new(&live)
        || (misses != r.misses_seen && since >= MISS_REFRESH_EVERY)
        || since >= REFRESH_EVERY
    {
        refresh_snapshot(r);
        r.misses_seen = misses;
    }
    r.threads.rescan(r.mapping.region(), &live, r.period);
    for slot in 0..MAX_THREADS {
        if r.threads.has_held(slot) {
            r.used[slot] = true;
        }
    }
    r.last_scan = Instant::now();
}

/// Refills the snapshot handlers are not reading and switches them to it.
fn refresh_snapshot(r: &mut Running) {
    r.last_refresh = Instant::now();
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let region = r.mapping.region();
    let next = 1 - (region.current.load(Ordering::SeqCst) & 1);
    // Handlers that could still read `next` started before the previous
    // switch, which waited for all of them to finish.
    fill_snapshot(&region.snapshots[next], &maps, r.exe.as_deref());
    // SeqCst, with the handler's SeqCst increment of IN_FLIGHT and load of
    // `current` in one total order: a handler that loaded the old index is
    // one counted in flight below, so the next refill of it waits for it.
    region.current.store(next, Ordering::SeqCst);
    wait_for_handlers();
}

fn wait_for_handlers() {
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Moves every finished record to the consumers: timer samples into each
/// timer consumer's counts, directed ones to each directed consumer. A
/// retired slot, once drained, is free for a new thread.
fn drain(r: &mut Running, consumers: &mut [Consumer]) {
    let region = r.mapping.region();
    let nanos = r.period.as_nanos() as i64;
    let mut key: Vec<u64> = Vec::with_capacity(130);
    for slot_index in (0..MAX_THREADS).filter(|&i| r.used[i]) {
        let slot = &region.slots[slot_index];
        // Read at the slot's first record, not before: see `name_of_slot`.
        let mut name: Option<Option<Arc<str>>> = None;
        let threads = &mut r.threads;
        slot.drain(|record| {
            let name = name.get_or_insert_with(|| threads.name_of_slot(slot_index));
            // The record's own tid: the slot may have changed hands.
            let tid = record.tid;
            let depth = (record.depth as usize).min(record.frames.len());
            if record.kind == KIND_DIRECTED {
                for c in consumers.iter_mut().filter(|c| c.hz == 0) {
                    if c.directed.len() < DIRECTED_KEPT {
                        c.directed.push(DirectedSample {
                            tid,
                            frames: record.frames[..depth].to_vec(),
                            labels: record.labels,
                            at_ns: record.at,
                        });
                    }
                }
                return;
            }
            if record.kind != KIND_TIMER {
                return;
            }
            key.clear();
            key.push(tid as u64);
            key.push(u64::from(record.labels));
            key.extend_from_slice(&record.frames[..depth]);
            for c in consumers.iter_mut().filter(|c| c.hz > 0) {
                let index = match c.stacks.get(key.as_slice()) {
                    Some(&i) => i,
                    None => {
                        c.counts.push(Counts::default());
                        c.stacks
                            .insert(key.clone().into_boxed_slice(), c.counts.len() - 1);
                        c.counts.len() - 1
                    }
                };
                let counts = &mut c.counts[index];
                counts.samples += 1;
                counts.nanos += nanos * i64::from(record.weight.max(1));
                c.last.insert(tid, index);
                if let Some(name) = name {
                    c.names.entry(tid).or_insert_with(|| name.clone());
                }
            }
        });
        // Retired and now drained: free for a new thread (no handler writes
        // a retired slot, so nothing can have arrived since).
        let _ = slot
            .tid
            .compare_exchange(RETIRED, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Deletes the timers, puts the previous SIGPROF disposition back if ours
/// is still installed (else leaves the other handler alone, said once on
/// stderr and counted), waits for handlers in flight, unmaps the region.
fn stop(mut r: Running) {
    let region = r.mapping.region();
    r.threads.clear(region);
    // A signal generated before its timer was deleted may still be pending
    // somewhere; under SIG_DFL it would kill the process. Ignoring SIGPROF
    // discards pending ones, and no new ones come. One swap: whatever is
    // installed now comes back in `current`.
    // SAFETY: a zeroed sigaction with SIG_IGN is valid.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: a zeroed sigaction to receive the current one.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: plain dispositions.
    unsafe { libc::sigaction(libc::SIGPROF, &ignore, &mut current) };
    if current.sa_sigaction == on_sigprof as *const () as usize {
        // SAFETY: as above.
        unsafe { libc::sigaction(libc::SIGPROF, &r.previous, std::ptr::null_mut()) };
    } else {
        // Not ours any more: the other handler goes back, untouched.
        // SAFETY: restores exactly what was installed.
        unsafe { libc::sigaction(libc::SIGPROF, &current, std::ptr::null_mut()) };
        eprintln!(
            "profscope: the CPU sampler stopped: another SIGPROF handler was installed \
             while it ran, and is left in place (see profscope_sampler_signal_taken_total)"
        );
    }
    REGION.store(std::ptr::null_mut(), Ordering::SeqCst);
    wait_for_handlers();
    drop(r);
}

/// What the sampler has counted since the process started, for `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct SamplerStats {
    /// Samples dropped, by reason ([`DROP_REASONS`], zeros included).
    pub(crate) dropped: Vec<(&'static str, u64)>,
    /// Samples kept with their leaf only: the snapshot did not know the
    /// stack.
    pub(crate) stack_unknown: u64,
    /// Reads in the handler that faulted and were recovered.
    pub(crate) faults_recovered: u64,
    /// Mapping ranges left out of snapshots past their capacity.
    pub(crate) ranges_truncated: u64,
    /// Times another handler took SIGPROF from a running stream.
    pub(crate) signal_taken: u64,
    /// Threads without a slot at the last scan.
    pub(crate) threads_unsampled: u64,
}

/// The sampler's counters now.
pub(crate) fn stats() -> SamplerStats {
    let unsampled = lock()
        .running
        .as_ref()
        .map_or(0, |r| r.threads.unsampled as u64);
    SamplerStats {
        dropped: DROP_REASONS.iter().copied().zip(dropped_now()).collect(),
        stack_unknown: handler::STACK_UNKNOWN.load(Ordering::Relaxed),
        faults_recovered: guard::RECOVERED.load(Ordering::Relaxed),
        ranges_truncated: region::TRUNCATED.load(Ordering::Relaxed),
        signal_taken: TAKEN.load(Ordering::Relaxed),
        threads_unsampled: unsampled,
    }
}

/// The `pthread_atfork` hooks, registered once, before any stream exists.
fn install_fork_hooks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: three `extern "C" fn()` hooks that live forever.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
    });
}

thread_local! {
    /// The stream's lock, held by the forking thread from `before_fork`
    /// to the parent's or the child's hook: the child never inherits it
    /// held by a thread that does not exist there.
    static FORK_GUARD: std::cell::RefCell<Option<MutexGuard<'static, State>>> =
        const { std::cell::RefCell::new(None) };
}

extern "C" fn before_fork() {
    let guard = lock();
    FORK_GUARD.with(|g| *g.borrow_mut() = Some(guard));
}

extern "C" fn after_fork_in_parent() {
    FORK_GUARD.with(|g| drop(g.borrow_mut().take()));
}

/// The child: only the forking thread exists and no timer was inherited.
/// The stream is forgotten (its region unmapped, its task directory, which
/// names the parent's threads, closed; its timer ids, the parent's, never
/// touched), SIGPROF goes back to what it was before the stream, and the
/// consumers present at the fork are gone (a capture the forking thread
/// ran finishes empty).
extern "C" fn after_fork_in_child() {
    let Some(mut state) = FORK_GUARD.with(|g| g.borrow_mut().take()) else {
        return;
    };
    handler::reset_after_fork();
    // Handlers that ran on other threads never finish here.
    IN_FLIGHT.store(0, Ordering::SeqCst);
    if let Some(r) = state.running.take() {
        REGION.store(std::ptr::null_mut(), Ordering::SeqCst);
        if still_ours() {
            // SAFETY: the disposition from before the stream.
            unsafe { libc::sigaction(libc::SIGPROF, &r.previous, std::ptr::null_mut()) };
        }
        let Running {
            mapping,
            task_dir,
            threads,
            ..
        } = r;
        std::mem::forget(threads);
        drop(task_dir);
        drop(mapping);
    }
    state.consumers.clear();
}

/// One directed sample of each of `tids`, taken within `within` (the
/// probe behind the thousand-thread test).
pub(crate) fn directed_samples(
    tids: &[i32],
    within: Duration,
) -> Result<Vec<(i32, Vec<u64>)>, String> {
    let consumer = subscribe_directed().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + within;
    let mut got: Vec<(i32, Vec<u64>)> = Vec::new();
    for &tid in tids {
        consumer
            .request(tid)
            .map_err(|e| format!("tgkill {tid}: {e}"))?;
    }
    while got.len() < tids.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let taken = consumer.take().map_err(|e| e.to_string())?;
        got.extend(taken.into_iter().map(|s| (s.tid, s.frames)));
    }
    Ok(got)
}

/// Sets how the handler reads (see `handler::MODE`).
pub(crate) fn set_reads(guarded: bool, leaf_fixup: bool) {
    let mode = if guarded { handler::GUARDED } else { 0 }
        | if leaf_fixup { handler::LEAF_FIXUP } else { 0 };
    handler::MODE.store(mode, Ordering::Relaxed);
}

/// Whether this thread runs the SIGPROF handler now.
pub(crate) fn in_handler() -> bool {
    handler::IN_HANDLER.with(std::cell::Cell::get)
}

/// Handler durations so far: (bucket width in ns, counts per bucket).
pub(crate) fn cost_histogram() -> (u64, Vec<u64>) {
    (
        handler::COST_BUCKET_NS,
        handler::COST
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect(),
    )
}

/// Whether the stream runs.
pub(crate) fn is_running() -> bool {
    lock().running.is_some()
}
