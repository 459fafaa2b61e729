//! The SIGPROF handler: copy and leave.
//!
//! It records the interrupted instruction, the caller chain (frame
//! pointers, each read checked against the published snapshot of writable
//! and executable mappings) and the thread's label-set id into the
//! thread's own ring, then publishes the record.
//!
//! What it must never do, because it runs on any thread at any instruction
//! (inside the allocator, holding a lock, in the middle of a syscall):
//! allocate or free, take a lock, call libgcc, the `backtrace` crate or
//! anything else that might, make a syscall other than `gettid` (once per
//! thread, for directed samples and for checking it writes its own ring;
//! the clock it times itself with is the vDSO's), read an address the
//! snapshot does not vouch for, or leave `errno` changed.
//! `agent/tests/cpu_sampler.rs` proves the first with a counting allocator.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::region::{KIND_DIRECTED, KIND_TIMER, MAX_DEPTH, MAX_THREADS, RING, Region, Snapshot};

/// The published region, or null when no consumer runs. Handlers read it
/// between an increment and a decrement of [`IN_FLIGHT`].
pub(super) static REGION: AtomicPtr<Region> = AtomicPtr::new(std::ptr::null_mut());
/// Handlers between their first and last touch of the region.
pub(super) static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Width of a [`COST`] bucket, in nanoseconds.
pub(crate) const COST_BUCKET_NS: u64 = 25;
/// Handler runs by duration, in [`COST_BUCKET_NS`] buckets (the last one
/// holds everything longer). Read by the benchmark.
pub(crate) static COST: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

thread_local! {
    /// Set while this thread runs the handler (the allocation test reads it).
    pub(crate) static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// This thread's id, learned by the first handler run on it.
    static TID: Cell<i32> = const { Cell::new(0) };
    /// The label set of whatever this thread runs now (see `labels`).
    pub(crate) static LABEL_SET: Cell<u32> = const { Cell::new(0) };
}

/// The SIGPROF handler (`SA_SIGINFO | SA_ONSTACK | SA_RESTART`).
pub(super) extern "C" fn on_sigprof(_signal: i32, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: errno is thread-local; it is read and put back, nothing else.
    let errno = unsafe { *libc::__errno_location() };
    let began = now_ns();
    IN_HANDLER.with(|h| h.set(true));
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let region = REGION.load(Ordering::SeqCst);
    if !region.is_null() && !info.is_null() && !context.is_null() {
        // SAFETY: `region` stays mapped while IN_FLIGHT counts this handler
        // (the stream unpublishes, then waits for zero, then unmaps);
        // `info` and `context` are the kernel's for this signal.
        unsafe { sample(&*region, &*info, context) };
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    IN_HANDLER.with(|h| h.set(false));
    let bucket = (now_ns().saturating_sub(began) / COST_BUCKET_NS).min(1023) as usize;
    COST[bucket].fetch_add(1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// CLOCK_MONOTONIC in nanoseconds: the vDSO's, no syscall, and
/// async-signal-safe.
#[inline(always)]
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This thread's id: a thread-local read, and one `gettid` the first time.
#[inline(always)]
fn tid() -> i32 {
    TID.with(|t| {
        let mut tid = t.get();
        if tid == 0 {
            // SAFETY: gettid has no preconditions and is async-signal-safe.
            tid = unsafe { libc::gettid() };
            t.set(tid);
        }
        tid
    })
}

/// # Safety
/// `context` must be the `ucontext_t` of the interrupted thread.
unsafe fn sample(region: &Region, info: &libc::siginfo_t, context: *mut c_void) {
    let me = tid();
    let (slot, kind, weight) = match info.si_code {
        // SAFETY: for SI_TIMER the value is the `sigev_value` the stream
        // gave this thread's timer (its slot index), and `si_overrun` the
        // expirations folded into this signal.
        libc::SI_TIMER => unsafe {
            (
                info.si_value().sival_ptr as usize,
                KIND_TIMER,
                1 + info.si_overrun().max(0) as u32,
            )
        },
        libc::SI_TKILL | libc::SI_QUEUE => (MAX_THREADS, KIND_DIRECTED, 0),
        // Someone else's SIGPROF (setitimer, kill): not ours to record.
        _ => return,
    };
    // A timer's slot must be this thread's; a directed sample (or a signal
    // that outlived its timer) finds the slot by tid.
    let slot = if slot < MAX_THREADS && region.slots[slot].tid.load(Ordering::Acquire) == me {
        slot
    } else {
        match (0..MAX_THREADS).find(|&i| region.slots[i].tid.load(Ordering::Acquire) == me) {
            Some(i) => i,
            None => {
                region.unslotted.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    let slot = &region.slots[slot];
    let head = slot.head.load(Ordering::Relaxed);
    let tail = slot.tail.load(Ordering::Acquire);
    if head.wrapping_sub(tail) >= RING as u32 {
        slot.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let record = slot.record_ptr(head);
    // SAFETY: `context` is the interrupted thread's.
    let (pc, sp, fp) = unsafe { registers(context) };
    let snapshot = &region.snapshots[region.current.load(Ordering::Acquire) & 1];
    if snapshot.stacks.find(sp).is_none() {
        region.misses.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: this thread is the ring's only producer and the record at
    // `head` is not the aggregator's until `head` is released below.
    unsafe {
        let frames = &mut (*record).frames;
        frames[0] = pc;
        let depth = 1 + walk(snapshot, sp, fp, &mut frames[1..]);
        (*record).depth = depth as u32;
        (*record).kind = kind;
        (*record).weight = weight;
        (*record).labels = LABEL_SET.with(Cell::get);
    }
    slot.head.store(head.wrapping_add(1), Ordering::Release);
}

/// Follows the frame-pointer chain from `fp`, writing return addresses to
/// `out`; returns how many. Every read is inside the writable mapping that
/// holds the stack pointer, above the previous frame, 8-aligned; every
/// return address kept is inside an executable mapping. No syscall.
#[inline(always)]
fn walk(snapshot: &Snapshot, sp: u64, mut fp: u64, out: &mut [u64]) -> usize {
    let Some((_, stack_end)) = snapshot.stacks.find(sp) else {
        return 0;
    };
    let mut low = sp;
    let mut n = 0;
    while n < out.len().min(MAX_DEPTH - 1) {
        if fp < low || fp & 7 != 0 || fp > stack_end.saturating_sub(16) {
            break;
        }
        // SAFETY: `[fp, fp + 16)` lies inside the mapping that holds this
        // thread's stack pointer (checked just above), which is mapped and
        // readable while the thread runs.
        let (next, ret) = unsafe {
            (
                std::ptr::read_volatile(fp as *const u64),
                std::ptr::read_volatile((fp + 8) as *const u64),
            )
        };
        if snapshot.code.find(ret).is_none() {
            break;
        }
        out[n] = ret;
        n += 1;
        if next <= fp {
            break;
        }
        low = fp + 16;
        fp = next;
    }
    n
}

/// (instruction pointer, stack pointer, frame pointer) of the interrupted
/// code.
///
/// # Safety
/// `context` must point to a `ucontext_t`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn registers(context: *mut c_void) -> (u64, u64, u64) {
    // SAFETY: the caller's contract.
    let regs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    (
        regs[libc::REG_RIP as usize] as u64,
        regs[libc::REG_RSP as usize] as u64,
        regs[libc::REG_RBP as usize] as u64,
    )
}

/// aarch64: pc, sp and x29. Compiled only there; untested (this project's
/// machines cannot build for aarch64).
///
/// # Safety
/// `context` must point to a `ucontext_t`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn registers(context: *mut c_void) -> (u64, u64, u64) {
    // SAFETY: the caller's contract.
    let m = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext };
    (m.pc, m.sp, m.regs[29])
}

#[cfg(test)]
mod tests {
    use super::super::region::{Mapping, fill_snapshot};
    use super::*;

    #[test]
    fn walk_stops_at_anything_the_snapshot_does_not_vouch_for() {
        let mapping = Mapping::new().unwrap();
        let snap = &mapping.region().snapshots[0];
        // A fake stack of three frames: fp → [next, ret].
        let mut stack = [0u64; 16];
        let base = stack.as_ptr() as u64;
        let code = 0x40_0000u64;
        stack[2] = base + 6 * 8; // frame at [2]: next = [6]
        stack[3] = code + 0x10;
        stack[6] = base + 10 * 8; // frame at [6]: next = [10]
        stack[7] = code + 0x20;
        stack[10] = 8; // frame at [10]: next points below: stop after it
        stack[11] = code + 0x30;
        let end = base + 16 * 8;
        fill_snapshot(
            snap,
            &format!(
                "{base:x}-{end:x} rw-p 0 00:00 0\n{code:x}-{:x} r-xp 0 08:01 1 /x\n",
                code + 0x1000
            ),
        );
        let mut out = [0u64; 8];
        let n = walk(snap, base, base + 2 * 8, &mut out);
        assert_eq!(&out[..n], [code + 0x10, code + 0x20, code + 0x30]);
        // A frame pointer outside the stack, misaligned, or below sp: none.
        assert_eq!(walk(snap, base, 0x10, &mut out), 0);
        assert_eq!(walk(snap, base, base + 2 * 8 + 1, &mut out), 0);
        assert_eq!(walk(snap, base + 4 * 8, base + 2 * 8, &mut out), 0);
        // A stack pointer the snapshot does not know: no walk at all.
        assert_eq!(walk(snap, 0x1000, base + 2 * 8, &mut out), 0);
        // A return address outside code ends the chain.
        stack[7] = 0x1234;
        assert_eq!(walk(snap, base, base + 2 * 8, &mut out), 1);
        std::hint::black_box(&stack);
    }
}
