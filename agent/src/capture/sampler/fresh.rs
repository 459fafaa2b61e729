//! A snapshot of the mappings kept fresh for the sampling allocator, and the
//! walk of the calling thread's own stack that reads through it.
//!
//! The CPU sampler's snapshot lives in its region, which exists only while
//! a capture runs; the allocator needs one always. This is a second pair of
//! snapshots in a mapping of its own (never unmapped once made), refilled
//! by whoever calls [`refresh`] (the heap's helper thread), switched the
//! same way as the sampler's: refill the one nobody reads, switch, wait for
//! the readers of the old one.
//!
//! What [`walk_here`] must never do, because it runs inside `alloc` on any
//! thread: allocate or free, take a lock, make a syscall, or read memory
//! other than through the guarded load (`guard.rs`).

use std::sync::Once;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::guard;
use super::handler::walk;
use super::region::{Snapshot, fill_snapshot};

/// Two snapshots and which one readers use.
#[repr(C)]
struct Fresh {
    current: AtomicUsize,
    snapshots: [Snapshot; 2],
}

/// The published snapshots, null until [`start`] ran (the guarded load's
/// fault handler is installed before this is published).
static FRESH: AtomicPtr<Fresh> = AtomicPtr::new(std::ptr::null_mut());
/// Walks between their load of `current` and their last read.
static READERS: AtomicUsize = AtomicUsize::new(0);
/// Walks whose stack pointer the snapshot did not know (a thread newer
/// than the snapshot): walked with a bound of their own, see [`walk_here`].
static MISSES: AtomicU64 = AtomicU64::new(0);
static START: Once = Once::new();

/// Maps and fills the snapshots once, then publishes them. Not on the
/// allocation path: the heap's helper thread (or the agent's start) calls it.
pub(crate) fn start() {
    START.call_once(|| {
        guard::install();
        // Zeroed pages are a valid `Fresh` (atomics and integer arrays only).
        let Ok(fresh) = super::region::map_zeroed::<Fresh>() else {
            return;
        };
        if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
            // SAFETY: the mapping is live forever and nobody reads it yet.
            fill_snapshot(unsafe { &(*fresh).snapshots[0] }, &maps, exe().as_deref());
        }
        FRESH.store(fresh, Ordering::SeqCst);
        // SAFETY: an `extern "C" fn()` that lives forever.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

fn exe() -> Option<String> {
    std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
}

/// Walks that ran on other threads never finish in a forked child.
extern "C" fn after_fork_in_child() {
    READERS.store(0, Ordering::SeqCst);
}

/// Rereads `/proc/self/maps` into the snapshot nobody reads and switches
/// walks to it. One caller at a time (the heap's helper thread).
pub(crate) fn refresh() {
    let fresh = FRESH.load(Ordering::SeqCst);
    if fresh.is_null() {
        return;
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    // SAFETY: published mappings are never unmapped.
    let fresh = unsafe { &*fresh };
    let next = 1 - (fresh.current.load(Ordering::SeqCst) & 1);
    // Walks that could still read `next` started before the previous
    // switch, which waited for all of them.
    fill_snapshot(&fresh.snapshots[next], &maps, exe().as_deref());
    fresh.current.store(next, Ordering::SeqCst);
    while READERS.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Walks that missed the snapshot so far (the helper refreshes when this
/// moves).
pub(crate) fn misses() -> u64 {
    MISSES.load(Ordering::Relaxed)
}

/// Whether walks can run (the snapshot is published).
pub(crate) fn is_ready() -> bool {
    !FRESH.load(Ordering::Relaxed).is_null()
}

/// How far above the stack pointer a walk of a stack the snapshot does not
/// know yet may read (every read is guarded and every return address must
/// be code the snapshot knows, so this only bounds the walk).
const UNKNOWN_STACK_SPAN: u64 = 8 << 20;

/// The calling thread's return addresses, its caller's first, into `out`;
/// returns how many (0 before [`start`]).
///
/// Must never allocate, lock, make a syscall or read other than through
/// the guarded load: it runs inside the global allocator.
#[inline(never)]
pub(crate) fn walk_here(out: &mut [u64]) -> usize {
    let (fp, sp) = registers();
    READERS.fetch_add(1, Ordering::SeqCst);
    let fresh = FRESH.load(Ordering::SeqCst);
    let n = if fresh.is_null() {
        0
    } else {
        // SAFETY: published mappings are never unmapped; the snapshot read
        // is not refilled while READERS counts this walk (see `refresh`).
        let fresh = unsafe { &*fresh };
        let snapshot = &fresh.snapshots[fresh.current.load(Ordering::SeqCst) & 1];
        let end = match snapshot.stacks.find(sp) {
            Some((_, end)) => end,
            None => {
                MISSES.fetch_add(1, Ordering::Relaxed);
                sp.saturating_add(UNKNOWN_STACK_SPAN)
            }
        };
        walk(snapshot, sp, end, fp, out, true)
    };
    READERS.fetch_sub(1, Ordering::SeqCst);
    n
}

/// (frame pointer, stack pointer) of the caller of this inlined code.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn registers() -> (u64, u64) {
    let (fp, sp): (u64, u64);
    // SAFETY: reads two registers, touches no memory.
    unsafe {
        std::arch::asm!("mov {0}, rbp", "mov {1}, rsp", out(reg) fp, out(reg) sp,
            options(nomem, nostack, preserves_flags));
    }
    (fp, sp)
}

/// aarch64: x29 and sp. Compiled only there; untested.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn registers() -> (u64, u64) {
    let (fp, sp): (u64, u64);
    // SAFETY: reads two registers, touches no memory.
    unsafe {
        std::arch::asm!("mov {0}, x29", "mov {1}, sp", out(reg) fp, out(reg) sp,
            options(nomem, nostack, preserves_flags));
    }
    (fp, sp)
}
