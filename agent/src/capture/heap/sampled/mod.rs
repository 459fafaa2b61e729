//! [`SampledAlloc`]: heap profiles on any allocator, labelled like CPU
//! samples (the `sampled-alloc` feature).
//!
//! A `GlobalAlloc` wrapper that samples allocations the way Go and jemalloc
//! do: each thread counts down bytes from a draw of an exponential
//! distribution with mean P (512 KiB by default), and the allocation that
//! crosses zero is sampled, so an object of `s` bytes is sampled with
//! probability `1 − e^(−s/P)` whatever its size (Go's `scaleHeapSample`
//! undoes it). A sampled object is served from the wrapper's own address
//! range (`slots.rs`) with a record of its stack (the CPU sampler's
//! frame-pointer walker over guarded loads, `sampler::fresh`), size and
//! the thread's current label set; `dealloc` recognises it by address.
//!
//! What the allocation paths must never do: allocate through the global
//! allocator (they are it), take a lock, recurse, or read memory other than
//! through the guarded load. Unsampled, `alloc` is a thread-local
//! subtraction and `dealloc` two compares.

pub(crate) mod slots;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};


use super::dump::unsample;
use super::{HeapSnapshot, Stack, StackMap, Values};
use crate::capture::sampler::{LABEL_SET, fresh};

/// Go's and jemalloc's default mean sampling period: 512 KiB.
pub const DEFAULT_PERIOD: u64 = 512 << 10;

/// The mean sampling period in bytes, for every thread (0: not yet set, the
/// wrapper's own then applies).
static PERIOD: AtomicU64 = AtomicU64::new(0);
/// Set by the first allocation the wrapper serves: it is the global
/// allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Sampling on (`Agent::set_heap_profiling` switches it).
static ACTIVE: AtomicBool = AtomicBool::new(true);
/// Times the sampled path was entered while this thread was already in it
/// (should stay 0: the tests read it).
pub(crate) static REENTERED: AtomicU64 = AtomicU64::new(0);
/// Sampled allocations so far.
pub(crate) static SAMPLED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Bytes left before this thread's next sample.
    static COUNTDOWN: Cell<i64> = const { Cell::new(0) };
    /// This thread's generator state (0: not seeded yet).
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread runs the sampled path.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread reads the samples (the collector): its own
    /// allocations are not sampled, or folding freed samples would make
    /// new ones as fast as it folds them.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Quiets sampling on this thread until dropped.
struct Quiet(bool);

impl Quiet {
    fn new() -> Quiet {
        Quiet(QUIET.with(|q| q.replace(true)))
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(self.0));
    }
}

/// A global allocator that wraps `A` and samples its allocations for heap
/// profiles. Install it with [`sampled_alloc!`](crate::sampled_alloc):
///
/// ```ignore
/// profscope_agent::sampled_alloc!(std::alloc::System);          // 512 KiB, like Go
/// profscope_agent::sampled_alloc!(mimalloc::MiMalloc, period = 16384);
/// ```
///
/// The agent then answers `/debug/pprof/heap`, `allocs` and `delta_heap`
/// from it, with each sample's labels.
#[derive(Debug)]
pub struct SampledAlloc<A> {
    inner: A,
    period: u64,
}

impl<A> SampledAlloc<A> {
    /// Wraps `inner`, sampling every [`DEFAULT_PERIOD`] bytes on average.
    pub const fn new(inner: A) -> Self {
        SampledAlloc {
            inner,
            period: DEFAULT_PERIOD,
        }
    }

    /// Wraps `inner`, sampling every `period` bytes on average.
    pub const fn with_period(inner: A, period: u64) -> Self {
        SampledAlloc { inner, period }
    }
}

/// Installs [`SampledAlloc`] around an allocator as the global allocator:
/// `sampled_alloc!(std::alloc::System)`, `sampled_alloc!(mimalloc::MiMalloc,
/// period = 16384)` (mean bytes between samples; 512 KiB by default).
#[macro_export]
macro_rules! sampled_alloc {
    ($inner:path) => {
        $crate::sampled_alloc!($inner, period = $crate::heap::DEFAULT_PERIOD);
    };
    ($inner:path, period = $period:expr) => {
        #[global_allocator]
        static PROFSCOPE_GLOBAL_ALLOCATOR: $crate::heap::SampledAlloc<$inner> =
            $crate::heap::SampledAlloc::with_period($inner, $period);

        // Starts the walker's snapshot and the helper thread before `main`,
        // so allocations are sampled from the start, not from the agent's.
        #[used]
        #[unsafe(link_section = ".init_array")]
        static PROFSCOPE_SAMPLED_ALLOC_START: extern "C" fn() = {
            extern "C" fn start() {
                $crate::heap::start_sampling();
            }
            start
        };
    };
}

/// Starts sampling support (the walker's snapshot, the helper thread);
/// [`sampled_alloc!`](crate::sampled_alloc) calls it before `main`.
#[doc(hidden)]
pub fn start_sampling() {
    // Only the macro calls it, next to the `#[global_allocator]` it
    // declares: the wrapper is the global allocator.
    INSTALLED.store(true, Ordering::Relaxed);
    start_helper();
}

/// Sets the mean sampling period for every thread from now on (bytes,
/// at least 1; each thread's current countdown runs out first).
pub fn set_sample_period(bytes: u64) {
    PERIOD.store(bytes.max(1), Ordering::Relaxed);
}

/// The mean sampling period now.
pub fn sample_period() -> u64 {
    match PERIOD.load(Ordering::Relaxed) {
        0 => DEFAULT_PERIOD,
        p => p,
    }
}

/// Whether a [`SampledAlloc`] is the global allocator (it has served an
/// allocation).
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

pub(crate) fn set_active(active: bool) {
    ACTIVE.store(active, Ordering::Relaxed);
}

pub(crate) fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// An exponential draw with mean `period`, from this thread's xorshift.
fn draw(period: u64) -> i64 {
    let mut x = RNG.with(Cell::get);
    if x == 0 {
        // Seeded from the thread-local's address and the clock: distinct
        // per thread, no syscall but the vDSO's.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to fill; the vDSO's clock, no lock.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        x = (RNG.with(|c| c as *const Cell<u64> as u64)
            ^ (ts.tv_nsec as u64).rotate_left(32)
            ^ ts.tv_sec as u64)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    RNG.with(|c| c.set(x));
    // 53 random bits, in (0, 1].
    let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let bytes = -u.ln() * period as f64;
    (bytes as i64).max(1)
}

impl<A: GlobalAlloc> SampledAlloc<A> {
    /// Whether this allocation of `size` bytes is sampled: the countdown.
    /// Unsampled, a thread-local subtraction.
    #[inline(always)]
    fn crosses(&self, size: usize) -> bool {
        let left = COUNTDOWN.with(Cell::get) - size as i64;
        if left > 0 {
            COUNTDOWN.with(|c| c.set(left));
            return false;
        }
        self.redraw(left)
    }

    /// The countdown crossed zero (or was never drawn on this thread): a
    /// new draw, and whether to sample.
    #[cold]
    #[inline(never)]
    fn redraw(&self, left: i64) -> bool {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        if PERIOD.load(Ordering::Relaxed) == 0 {
            // The wrapper's own period, unless `set_sample_period` came first.
            let _ = PERIOD.compare_exchange(
                0,
                self.period.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let first = RNG.with(Cell::get) == 0;
        let next = draw(sample_period());
        if first {
            // The thread's first draw: this allocation counts against it.
            let left = next + left;
            COUNTDOWN.with(|c| c.set(left));
            if left > 0 {
                return false;
            }
            COUNTDOWN.with(|c| c.set(draw(sample_period())));
        } else {
            COUNTDOWN.with(|c| c.set(next));
        }
        ACTIVE.load(Ordering::Relaxed)
            && !BUSY.with(Cell::get)
            && !QUIET.with(Cell::get)
            && fresh::is_ready()
    }

    /// Serves a sampled allocation from the wrapper's slots, recording its
    /// stack, size and labels; null when no slot is free (then the caller
    /// falls back to the inner allocator).
    ///
    /// Must never allocate, lock or recurse into the allocator.
    #[cold]
    #[inline(never)]
    fn sample(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if BUSY.with(|b| b.replace(true)) {
            REENTERED.fetch_add(1, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        let mut ptr = std::ptr::null_mut();
        if let Some((at, record)) = slots::take(layout.size(), layout.align()) {
            record.depth = fresh::walk_here(&mut record.frames) as u32;
            record.labels = LABEL_SET.with(Cell::get);
            if zeroed {
                // SAFETY: the slot holds at least `size` writable bytes.
                unsafe { std::ptr::write_bytes(at, 0, layout.size()) };
            }
            slots::publish(record);
            SAMPLED.fetch_add(1, Ordering::Relaxed);
            ptr = at;
        }
        BUSY.with(|b| b.set(false));
        ptr
    }
}

// SAFETY: every allocation is either the inner allocator's (and goes back
// to it) or a slot of ours of at least the layout's size and alignment
// (and comes back to `slots::release`, recognised by its address).
unsafe impl<A: GlobalAlloc> GlobalAlloc for SampledAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.crosses(layout.size()) {
            let ptr = self.sample(layout, false);
            if !ptr.is_null() {
                return ptr;
            }
        }
        // SAFETY: the caller's layout, as given.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.crosses(layout.size()) {
            let ptr = self.sample(layout, true);
            if !ptr.is_null() {
                return ptr;
            }
        }
        // SAFETY: the caller's layout, as given.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if slots::contains(ptr) {
            slots::release(ptr);
            return;
        }
        // SAFETY: not ours, so the inner allocator's, with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let ours = slots::contains(ptr);
        if ours && slots::resize(ptr, new_size, layout.align()) {
            // Still in its slot: counted once, at its new size.
            return ptr;
        }
        // A sampled object that outgrew its slot stays sampled; any other
        // counts its growth down like a new allocation.
        let grow = new_size.saturating_sub(layout.size());
        if ours || (grow > 0 && self.crosses(grow)) {
            // SAFETY: the caller guarantees `new_size` with this alignment
            // is a valid layout.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let mut moved = self.sample(new_layout, false);
            if moved.is_null() {
                // SAFETY: as above.
                moved = unsafe { self.inner.alloc(new_layout) };
            }
            if moved.is_null() {
                return moved;
            }
            // SAFETY: both blocks hold at least the smaller size and do not
            // overlap (one is new); the old one is freed by its owner.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            return moved;
        }
        // SAFETY: not ours, so the inner allocator's, with this layout.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Every stack the wrapper has sampled, each with an id (kept in the
/// records that carry it, so a record's stack is looked up once in the
/// record's life, not at every snapshot) and the sampled (objects, bytes)
/// freed from it so far.
#[derive(Default)]
struct Collector {
    /// `[label-set id, return addresses…]` → id.
    index: StackMap<u32>,
    /// Per id: the stack (shared with every snapshot that holds it).
    stacks: Vec<Stack>,
    /// Per id: sampled (objects, bytes) freed so far.
    freed: Vec<(u64, u64)>,
}

impl Collector {
    /// The id of `record`'s stack, made on first sight.
    fn id_of(&mut self, record: &slots::Record, key: &mut Vec<u64>) -> usize {
        if let Some(id) = record.stack_id() {
            return id as usize;
        }
        key.clear();
        key.push(u64::from(record.labels));
        key.extend_from_slice(record.stack());
        let id = match self.index.get(key.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                let stack: Stack = Arc::from(key.as_slice());
                self.index.insert(stack.clone(), id);
                self.stacks.push(stack);
                self.freed.push((0, 0));
                id
            }
        };
        record.set_stack_id(id);
        id as usize
    }

    /// Folds a freed record into its stack's counts.
    fn free(&mut self, record: &slots::Record, key: &mut Vec<u64>) {
        let id = self.id_of(record, key);
        let freed = &mut self.freed[id];
        freed.0 += 1;
        freed.1 += record.size();
    }
}

static COLLECTOR: Mutex<Option<Collector>> = Mutex::new(None);

/// Folds freed objects into the cumulative counts and recycles their slots
/// (the helper thread calls it often, so slots come back).
pub(crate) fn fold_freed() {
    let _quiet = Quiet::new();
    let mut guard = COLLECTOR.lock().unwrap_or_else(PoisonError::into_inner);
    let collector = guard.get_or_insert_with(Collector::default);
    let mut key = Vec::with_capacity(slots::DEPTH + 1);
    slots::collect(|r, live| {
        if !live {
            collector.free(r, &mut key);
        }
    });
}

/// The heap as the wrapper sampled it, sampling undone: each stack is
/// `[label-set id, return addresses…]` ([`HeapSnapshot::labelled`]).
pub(crate) fn snapshot() -> HeapSnapshot {
    let time = SystemTime::now();
    let _quiet = Quiet::new();
    let mut guard = COLLECTOR.lock().unwrap_or_else(PoisonError::into_inner);
    let collector = guard.get_or_insert_with(Collector::default);
    // Per stack id: live sampled (objects, bytes).
    let mut live: Vec<(u64, u64)> = vec![(0, 0); collector.stacks.len()];
    let mut key = Vec::with_capacity(slots::DEPTH + 1);
    slots::collect(|r, is_live| {
        if !is_live {
            collector.free(r, &mut key);
            return;
        }
        let id = collector.id_of(r, &mut key);
        if id >= live.len() {
            live.resize(id + 1, (0, 0));
        }
        live[id].0 += 1;
        live[id].1 += r.size();
    });
    let period = sample_period();
    // Every stack seen is in the profile (`alloc_*` is cumulative).
    let mut stacks: StackMap<Values> =
        StackMap::with_capacity_and_hasher(collector.stacks.len(), Default::default());
    for (id, stack) in collector.stacks.iter().enumerate() {
        let (lo, lb) = live.get(id).copied().unwrap_or((0, 0));
        let (fo, fb) = collector.freed[id];
        if lo + fo == 0 {
            continue;
        }
        let (alloc_objects, alloc_space) = unsample(lo + fo, lb + fb, period);
        let (inuse_objects, inuse_space) = unsample(lo, lb, period);
        // Ids are distinct stacks: one entry each.
        stacks.insert(
            stack.clone(),
            [alloc_objects, alloc_space, inuse_objects, inuse_space],
        );
    }
    drop(guard);
    HeapSnapshot {
        sample_period: period,
        time: Some(time),
        stacks,
        labelled: true,
    }
}

/// Estimated bytes in use now (live sampled objects, unsampled per
/// object), without building a profile: for `/debug/memory` and the
/// recorder's heap-growth trigger.
pub fn estimated_in_use() -> Option<u64> {
    if !is_installed() {
        return None;
    }
    let period = sample_period() as f64;
    let mut total = 0f64;
    // Only live objects are visited; freed ones stay for the next fold.
    slots::collect_live(|r| {
        let s = r.size() as f64;
        if s > 0.0 {
            total += s / (1.0 - (-s / period).exp());
        }
    });
    Some(total as u64)
}

/// Starts the helper thread once: it keeps the walker's snapshot of the
/// mappings fresh (every 2 s, and soon after a walk missed it) and folds
/// freed samples so their slots come back (every 100 ms). Its own
/// allocations are labelled `profscope=agent`.
pub(crate) fn start_helper() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        install_fork_hooks();
        let _ = std::thread::Builder::new()
            .name("profscope-heap".into())
            .spawn(|| {
                // Started from `.init_array`, before std's runtime set-up
                // installs its stack-overflow reporter for SIGSEGV only if
                // the disposition is still the default: the guarded load's
                // fault handler (which chains to whatever it finds) waits
                // for it, up to 200 ms.
                let deadline = std::time::Instant::now() + Duration::from_millis(200);
                while segv_is_default() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                fresh::start();
                let _labels = crate::capture::labels::agent_scope();
                let mut misses = fresh::misses();
                let mut refreshed = std::time::Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    fold_freed();
                    let now_misses = fresh::misses();
                    if now_misses != misses || refreshed.elapsed() >= Duration::from_secs(2) {
                        fresh::refresh();
                        misses = now_misses;
                        refreshed = std::time::Instant::now();
                    }
                }
            });
    });
}

/// Publishes the walker's snapshot now if the helper thread has not yet:
/// for callers in `main` (after std's runtime set-up, so the guarded
/// load's fault handler chains to std's stack-overflow reporter).
pub(crate) fn walker_ready_now() {
    fresh::start();
}

/// Whether SIGSEGV still has its default disposition.
fn segv_is_default() -> bool {
    // SAFETY: a zeroed sigaction to receive the current one; reads only.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_DFL
    }
}

fn install_fork_hooks() {
    // SAFETY: three `extern "C" fn()` hooks that live forever.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
}

thread_local! {
    /// The collector's lock, held by the forking thread across `fork`, so
    /// the child never inherits it held by a thread that is not there.
    static FORK_GUARD: std::cell::RefCell<Option<std::sync::MutexGuard<'static, Option<Collector>>>> =
        const { std::cell::RefCell::new(None) };
}

extern "C" fn before_fork() {
    let guard = COLLECTOR.lock().unwrap_or_else(PoisonError::into_inner);
    FORK_GUARD.with(|g| *g.borrow_mut() = Some(guard));
}

extern "C" fn after_fork() {
    FORK_GUARD.with(|g| drop(g.borrow_mut().take()));
}

/// Whether this thread runs the sampled path now.
pub(crate) fn in_sampled_path() -> bool {
    BUSY.with(Cell::get)
}

/// Counters for tests: (sampled, overflowed, re-entered).
pub(crate) fn counters() -> (u64, u64, u64) {
    (
        SAMPLED.load(Ordering::Relaxed),
        slots::OVERFLOW.load(Ordering::Relaxed),
        REENTERED.load(Ordering::Relaxed),
    )
}
