//! The agent's own CPU sampler (Linux): one sample stream for every
//! consumer.
//!
//! Each thread of the process gets a CPU-time timer of its own
//! (`timer_create` on the thread's CPU clock, `SIGEV_THREAD_ID`), so a
//! thread is sampled in proportion to the CPU it uses, whatever the others
//! do (a process-wide `setitimer` spreads its signals unfairly, golang/go#35057).
//! The SIGPROF handler (`handler.rs`) only copies: instruction pointer,
//! frame-pointer chain (every read validated against a snapshot of the
//! mappings, without a syscall) and label-set id, into the thread's ring in
//! a mapped region (`region.rs`). An aggregator thread drains the rings
//! every 32–100 ms (half a ring at the stream's rate) into each consumer's
//! counts, rescans `/proc/self/task` and `/proc/self/maps` every 100 ms
//! (and at once when a consumer joins, so its threads are sampled from its
//! start), and tears everything down (timers, handler, mapping) when the
//! last consumer leaves.
//!
//! The stream runs at the highest frequency any consumer asked for; every
//! consumer receives every sample, weighted by the stream's real period,
//! so two overlapping captures at different rates are both right.
//! Symbolization happens later, on an ordinary thread, through the agent's
//! one symbolizer: nothing is parsed at capture start.
//!
//! A later consumer (the watchdog) can ask for one sample of one thread
//! with [`request_sample`]: such samples arrive by `tgkill`, are told apart
//! by their `si_code`, and are never counted as CPU time.

mod handler;
mod region;
mod threads;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxHashMap as HashMap;

#[allow(unused_imports)] // read and set by `labels`, next
pub(crate) use handler::LABEL_SET;
use handler::{IN_FLIGHT, REGION, on_sigprof};
use region::{KIND_TIMER, MAX_THREADS, Mapping, fill_snapshot};
use threads::Threads;

/// How often the aggregator drains the rings at most: each wake-up costs
/// tens of microseconds in a VM, so no more often than the rings need
/// (half a ring at the stream's rate; see [`drain_every`]).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// The wait between drains at `period`: half a ring's worth of samples,
/// at most [`DRAIN_EVERY`] (100 ms at 99 Hz, 32 ms at 1000 Hz).
fn drain_every(period: Duration) -> Duration {
    (period * (region::RING as u32 / 2)).min(DRAIN_EVERY)
}
/// How often it looks for new threads.
const RESCAN_EVERY: Duration = Duration::from_millis(100);
/// How often it rereads the mappings when nothing asked for it sooner (a
/// new thread, or a sample whose stack the snapshot did not know, does).
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Why the sampler cannot run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SamplerError {
    /// Another SIGPROF handler is installed (another profiler runs).
    #[error("SIGPROF is handled by something else in this process (another CPU profiler?)")]
    SignalInUse,
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
    /// Samples lost to full rings while it was subscribed.
    pub(crate) lost: u64,
}

#[derive(Default)]
struct Counts {
    samples: i64,
    nanos: i64,
}

struct Consumer {
    id: u64,
    hz: u32,
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
    lost_at_start: u64,
}

struct Running {
    mapping: Mapping,
    threads: Threads,
    period: Duration,
    previous: libc::sigaction,
    last_scan: Instant,
    task_dir: threads::TaskDir,
    last_refresh: Instant,
    misses_seen: u64,
    /// Slots ever given out since start (the only ones drained).
    used: Vec<bool>,
    lost: u64,
    directed: u64,
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

fn lock() -> MutexGuard<'static, State> {
    STREAM.state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn period_of(hz: u32) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(hz.max(1)))
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
    let lost = state.running.as_ref().map_or(0, |r| r.lost);
    state.consumers.push(Consumer {
        id,
        hz,
        stacks: HashMap::default(),
        counts: Vec::new(),
        last: HashMap::default(),
        names: HashMap::default(),
        start: SystemTime::now(),
        started: Instant::now(),
        lost_at_start: lost,
    });
    Ok(Subscription { id, done: false })
}

impl Subscription {
    /// Leaves the stream with everything sampled up to now.
    pub(crate) fn finish(mut self) -> Collected {
        self.done = true;
        let mut state = lock();
        drain_all(&mut state);
        let (period, lost) = state
            .running
            .as_ref()
            .map_or((Duration::ZERO, 0), |r| (r.period, r.lost));
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
        let Some(c) = consumer else {
            return Collected {
                stacks: Vec::new(),
                period,
                start: SystemTime::now(),
                duration: Duration::ZERO,
                lost: 0,
            };
        };
        let stacks = c
            .stacks
            .into_iter()
            .map(|(key, index)| {
                let counts = &c.counts[index];
                let tid = key[0] as i32;
                let name = c.names.get(&tid).cloned().unwrap_or_else(|| tid.to_string().into());
                CollectedStack {
                    frames: key[2..].to_vec(),
                    thread: name,
                    labels: key[1] as u32,
                    samples: counts.samples,
                    cpu_ns: counts.nanos,
                }
            })
            .collect();
        Collected {
            stacks,
            period,
            start: c.start,
            duration: c.started.elapsed(),
            lost: lost.saturating_sub(c.lost_at_start),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.done {
            let mut state = lock();
            // What the others sampled at the old rate is theirs.
            drain_all(&mut state);
            state.consumers.retain(|c| c.id != self.id);
            retime_to_fastest(&mut state);
        }
    }
}

/// Asks for one sample of thread `tid` now, outside its CPU timer (for a
/// consumer that must see where a thread is, e.g. a stuck worker). Such
/// samples never count as CPU time.
#[allow(dead_code)] // The blocked-worker watchdog's way in, next round.
pub(crate) fn request_sample(tid: i32) -> std::io::Result<()> {
    // SAFETY: tgkill with this process's pid; SIGPROF is handled by the
    // sampler while it runs (callers only ask while subscribed).
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGPROF) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
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

/// Sets the stream's rate to the fastest remaining consumer's.
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
    // The snapshot is filled by the first rescan, before any timer exists.
    let mapping = Mapping::new()?;
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigprof as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: a zeroed sigaction to receive the old one.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reads the current disposition without changing it.
    if unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut previous) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN {
        return Err(SamplerError::SignalInUse);
    }
    REGION.store(mapping.as_ptr(), Ordering::SeqCst);
    // SAFETY: installs our handler, which only touches the published
    // region; the previous disposition is kept to be restored.
    if unsafe { libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) } != 0 {
        REGION.store(std::ptr::null_mut(), Ordering::SeqCst);
        return Err(std::io::Error::last_os_error().into());
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
        used: vec![false; MAX_THREADS],
        lost: 0,
        directed: 0,
    };
    if let Err(e) = std::thread::Builder::new()
        .name("profscope-sampler".into())
        .spawn(aggregate)
    {
        stop(running);
        return Err(e.into());
    }
    rescan(&mut running);
    Ok(running)
}

/// The aggregator: drains, rescans, and stops the stream when no consumer
/// is left.
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
        if consumers.is_empty() {
            if let Some(r) = running.take() {
                stop(r);
            }
            return;
        }
        // A millisecond early counts: drains and scans share wake-ups.
        if r.last_scan.elapsed() + Duration::from_millis(1) >= RESCAN_EVERY {
            rescan(r);
        }
        wait = drain_every(r.period);
    }
}

/// Finds new and exited threads; rereads the mappings first when a new
/// thread (with a new stack) appeared, a sample missed the snapshot, or it
/// is [`REFRESH_EVERY`] old. Reading `/proc/self/maps` is most of the
/// aggregator's cost, so it is not done at every scan.
fn rescan(r: &mut Running) {
    let live = threads::live_threads(&mut r.task_dir);
    let misses = r.mapping.region().misses.load(Ordering::Relaxed);
    if r.threads.has_new(&live)
        || misses != r.misses_seen
        || r.last_refresh.elapsed() >= REFRESH_EVERY
    {
        refresh_snapshot(r);
        r.misses_seen = misses;
        r.last_refresh = Instant::now();
    }
    r.threads.rescan(r.mapping.region(), &live, r.period);
    for slot in 0..MAX_THREADS {
        if r.threads.name_of_slot(slot).is_some() {
            r.used[slot] = true;
        }
    }
    r.last_scan = Instant::now();
}

/// Refills the snapshot handlers are not reading and switches them to it.
fn refresh_snapshot(r: &Running) {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let region = r.mapping.region();
    let next = 1 - (region.current.load(Ordering::Acquire) & 1);
    // Handlers that could still read `next` started before the previous
    // switch, which waited for all of them to finish.
    fill_snapshot(&region.snapshots[next], &maps);
    region.current.store(next, Ordering::Release);
    wait_for_handlers();
}

fn wait_for_handlers() {
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Moves every finished record into every consumer's counts.
fn drain(r: &mut Running, consumers: &mut [Consumer]) {
    let region = r.mapping.region();
    let nanos = r.period.as_nanos() as i64;
    let mut key: Vec<u64> = Vec::with_capacity(130);
    for slot_index in (0..MAX_THREADS).filter(|&i| r.used[i]) {
        let slot = &region.slots[slot_index];
        r.lost += u64::from(slot.lost.swap(0, Ordering::Relaxed));
        let tid = slot.tid.load(Ordering::Acquire);
        let name = r.threads.name_of_slot(slot_index).cloned();
        slot.drain(|record| {
            if record.kind != KIND_TIMER {
                r.directed += 1;
                return;
            }
            let depth = (record.depth as usize).min(record.frames.len());
            key.clear();
            key.push(tid as u64);
            key.push(u64::from(record.labels));
            key.extend_from_slice(&record.frames[..depth]);
            for c in consumers.iter_mut() {
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
                if let Some(name) = &name {
                    c.names.entry(tid).or_insert_with(|| name.clone());
                }
            }
        });
    }
}

/// Deletes the timers, restores the previous SIGPROF disposition, waits
/// for handlers in flight and unmaps the region.
fn stop(mut r: Running) {
    let region = r.mapping.region();
    r.threads.clear(region);
    // A signal generated before its timer was deleted may still be pending
    // somewhere; under SIG_DFL it would kill the process. Ignoring SIGPROF
    // discards pending ones, and no new ones come.
    // SAFETY: a zeroed sigaction with SIG_IGN is valid.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: plain dispositions.
    unsafe {
        libc::sigaction(libc::SIGPROF, &ignore, std::ptr::null_mut());
        libc::sigaction(libc::SIGPROF, &r.previous, std::ptr::null_mut());
    }
    REGION.store(std::ptr::null_mut(), Ordering::SeqCst);
    wait_for_handlers();
    drop(r);
}

/// Whether this thread runs the SIGPROF handler now.
pub(crate) fn in_handler() -> bool {
    handler::IN_HANDLER.with(std::cell::Cell::get)
}

/// Handler durations so far: (bucket width in ns, counts per bucket).
pub(crate) fn cost_histogram() -> (u64, Vec<u64>) {
    (
        handler::COST_BUCKET_NS,
        handler::COST.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
    )
}

/// Whether the stream runs.
pub(crate) fn is_running() -> bool {
    lock().running.is_some()
}
