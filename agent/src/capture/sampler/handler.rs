//! The SIGPROF handler: copy and leave.
//!
//! It records the interrupted instruction, the caller chain (frame
//! pointers, each read checked against the published snapshot of writable
//! and executable mappings and made through a guarded load that cannot
//! fault, `guard.rs`) and the thread's label-set id into the thread's own
//! ring, then publishes the record.
//!
//! What it must never do, because it runs on any thread at any instruction
//! (inside the allocator, holding a lock, in the middle of a syscall):
//! allocate or free, take a lock, call libgcc, the `backtrace` crate or
//! anything else that might, make a syscall other than `gettid` (once per
//! thread, for directed samples and for checking it writes its own ring;
//! the clock it times itself with is the vDSO's), read the interrupted
//! thread's memory other than through the guarded load, read an address the
//! snapshot does not vouch for, or leave `errno` changed.
//! `agent/tests/cpu_sampler.rs` proves the first with a counting allocator,
//! `agent/tests/sampler_safety.rs` the reads.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::guard;
use super::region::{
    KIND_DIRECTED, KIND_TIMER, MAX_DEPTH, MAX_THREADS, RETIRED, RING, Region, Snapshot,
};

/// Why a sample was dropped, in the order of [`DROPPED`] (the names are
/// the `reason` label of `profscope_sampler_samples_dropped_total`).
pub(crate) const DROP_REASONS: [&str; 5] = [
    "ring_full",
    "no_slot",
    "stopped",
    "not_ours",
    "in_signal_handler",
];
/// The thread's ring was full (the aggregator fell behind).
const RING_FULL: usize = 0;
/// The thread had no slot (past `MAX_THREADS`, or not scanned yet).
const NO_SLOT: usize = 1;
/// A signal of the sampler arrived after its stream stopped.
const STOPPED: usize = 2;
/// A SIGPROF someone else sent (`kill`, `setitimer`): not recorded.
const NOT_OURS: usize = 3;
/// The thread was running another signal handler on its alternate stack:
/// left alone (see [`on_sigprof`]).
const IN_SIGNAL_HANDLER: usize = 4;
/// How the handler reads, for the benchmark's and the edge test's before
/// and after in one run: [`GUARDED`] reads through the guarded load (else
/// plain volatile reads, trusting the snapshot alone, as before the
/// guard), [`LEAF_FIXUP`] takes the leaf's caller from the stack where the
/// frame pointer would skip it. Both on unless a probe turns them off.
pub(crate) static MODE: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(GUARDED | LEAF_FIXUP);
pub(crate) const GUARDED: u8 = 1;
pub(crate) const LEAF_FIXUP: u8 = 2;

/// Samples dropped since the process started, by [`DROP_REASONS`].
pub(crate) static DROPPED: [AtomicU64; DROP_REASONS.len()] =
    [const { AtomicU64::new(0) }; DROP_REASONS.len()];
/// Samples whose stack pointer the snapshot did not know (a new mapping):
/// kept with their leaf only; the aggregator rereads the mappings when
/// this moves.
pub(crate) static STACK_UNKNOWN: AtomicU64 = AtomicU64::new(0);

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
    /// This thread's id, learned by the first handler run on it (a forked
    /// child resets it, see `reset_after_fork`).
    static TID: Cell<i32> = const { Cell::new(0) };
    /// The label set of whatever this thread runs now (see `labels`).
    pub(crate) static LABEL_SET: Cell<u32> = const { Cell::new(0) };
}

/// The SIGPROF handler (`SA_SIGINFO | SA_ONSTACK | SA_RESTART`).
pub(super) extern "C" fn on_sigprof(
    _signal: i32,
    info: *mut libc::siginfo_t,
    context: *mut c_void,
) {
    // Interrupted on the alternate stack: another handler (a crash report,
    // a library's own signal) is running there, and the kernel just put
    // this signal's frame (~3 KiB with AVX-512 state) on top of it. A walk
    // on top of both could run off the end of a stack std sizes at 8 KiB,
    // and the process would die by SIGSEGV; nothing more goes on it.
    // SAFETY: the kernel's ucontext for this signal.
    if !context.is_null() && unsafe { on_alternate_stack(context) } {
        DROPPED[IN_SIGNAL_HANDLER].fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: errno is thread-local; it is read and put back, nothing else.
    let errno = unsafe { *libc::__errno_location() };
    let began = now_ns();
    IN_HANDLER.with(|h| h.set(true));
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let region = REGION.load(Ordering::SeqCst);
    if !info.is_null() && !context.is_null() {
        if region.is_null() {
            DROPPED[STOPPED].fetch_add(1, Ordering::Relaxed);
        } else {
            // SAFETY: `region` stays mapped while IN_FLIGHT counts this
            // handler (the stream unpublishes, then waits for zero, then
            // unmaps); `info` and `context` are the kernel's for this signal.
            unsafe { sample(&*region, &*info, context, began) };
        }
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    IN_HANDLER.with(|h| h.set(false));
    let bucket = (now_ns().saturating_sub(began) / COST_BUCKET_NS).min(1023) as usize;
    COST[bucket].fetch_add(1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Whether the interrupted code's stack pointer was on the thread's
/// alternate signal stack (the kernel's own test, `on_sig_stack`). The
/// context's `uc_stack` is the thread's alternate stack; its `ss_flags`
/// do not say whether it was in use (Linux stores the settings there).
///
/// # Safety
/// `context` must point to a `ucontext_t`.
#[inline(always)]
unsafe fn on_alternate_stack(context: *mut c_void) -> bool {
    // SAFETY: the caller's contract.
    let (stack, (_, sp, _)) = unsafe {
        (
            &(*context.cast::<libc::ucontext_t>()).uc_stack,
            registers(context),
        )
    };
    let base = stack.ss_sp as u64;
    sp > base && sp - base <= stack.ss_size as u64
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

/// Forgets this thread's cached id: the thread that forked is a new thread
/// (with a new id) in the child.
pub(super) fn reset_after_fork() {
    TID.with(|t| t.set(0));
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
unsafe fn sample(region: &Region, info: &libc::siginfo_t, context: *mut c_void, at: u64) {
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
        _ => {
            DROPPED[NOT_OURS].fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // A timer's slot must be this thread's; a directed sample (or a signal
    // that outlived its timer) finds the slot by tid.
    let owns = |i: usize| {
        let tid = region.slots[i].tid.load(Ordering::Acquire);
        tid == me && tid != RETIRED
    };
    let slot = if slot < MAX_THREADS && owns(slot) {
        slot
    } else {
        match (0..MAX_THREADS).find(|&i| owns(i)) {
            Some(i) => i,
            None => {
                DROPPED[NO_SLOT].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    let slot = &region.slots[slot];
    let head = slot.head.load(Ordering::Relaxed);
    let tail = slot.tail.load(Ordering::Acquire);
    if head.wrapping_sub(tail) >= RING as u32 {
        DROPPED[RING_FULL].fetch_add(1, Ordering::Relaxed);
        return;
    }
    let record = slot.record_ptr(head);
    // SAFETY: `context` is the interrupted thread's.
    let (pc, sp, fp) = unsafe { registers(context) };
    // SeqCst, as the aggregator's switch: with IN_FLIGHT's increment above
    // in one total order, a handler that loads the old index is one the
    // aggregator sees in flight (and waits for) before refilling it.
    let snapshot = &region.snapshots[region.current.load(Ordering::SeqCst) & 1];
    // SAFETY: this thread is the ring's only producer and the record at
    // `head` is not the aggregator's until `head` is released below.
    unsafe {
        let frames = &mut (*record).frames;
        frames[0] = pc;
        let depth = 1 + unwind(snapshot, pc, sp, fp, &mut frames[1..]);
        (*record).depth = depth as u32;
        (*record).kind = kind;
        (*record).weight = weight;
        (*record).tid = me;
        (*record).at = at;
        (*record).labels = LABEL_SET.with(Cell::get);
    }
    slot.head.store(head.wrapping_add(1), Ordering::Release);
}

/// The caller chain of an interrupted thread, return addresses into `out`;
/// returns how many. The leaf's own caller is taken from the stack when
/// the frame-pointer chain would skip it (see [`leaf_return`]).
// Unoptimized builds give every local of an inlined function a slot of
// its own in one frame: the walk's pieces stay separate calls there, so a
// walk that recovers a fault fits std's 8 KiB alternate stack in debug
// builds too (7,320 of 8,192 bytes with AVX-512 state, 6,224 optimized;
// inlined, 8,152; measured by `sampler_safety`).
#[cfg_attr(not(debug_assertions), inline(always))]
#[cfg_attr(debug_assertions, inline(never))]
fn unwind(snapshot: &Snapshot, pc: u64, sp: u64, fp: u64, out: &mut [u64]) -> usize {
    let Some((_, stack_end)) = snapshot.stacks.find(sp) else {
        STACK_UNKNOWN.fetch_add(1, Ordering::Relaxed);
        return 0;
    };
    let mode = MODE.load(Ordering::Relaxed);
    let mut n = 0;
    let leaf = if mode & LEAF_FIXUP != 0 {
        leaf_return(snapshot, pc, sp, fp, stack_end)
    } else {
        None
    };
    if let Some(ret) = leaf {
        out[0] = ret;
        n = 1;
    }
    let walked = walk(
        snapshot,
        sp,
        stack_end,
        fp,
        &mut out[n..],
        mode & GUARDED != 0,
    );
    // A leaf that was not skipped after all (its caller is also the
    // chain's first return address): keep it once.
    if walked > 0 && leaf.is_some() && out[1] == out[0] {
        out.copy_within(1..=walked, 0);
        return walked;
    }
    n + walked
}

/// The leaf's return address when the frame pointer does not describe the
/// leaf's own frame, so `[rbp + 8]` would name the leaf's caller's caller
/// and invent a callee → grandcaller edge. x86-64, from the bytes at `pc`:
/// - at the first instruction (`push rbp`, or `endbr64; push rbp`) and at
///   `ret`: the return address is at `[sp]`;
/// - at `mov rbp, rsp` (just after `push rbp`): at `[sp + 8]`;
/// - in code outside the program (a C library without frame pointers, such
///   as glibc's `memcpy` or `clock_nanosleep`): the first word from `sp` up
///   (at most [`SCAN_WORDS`], never past `fp`) that is a return address into
///   the program's own code (built with frame pointers) right after a call
///   instruction: the library's frames have no names worth a guess, but the
///   program's function that called into them does (`std::thread::sleep`).
///
/// Everything read goes through the guarded load; nothing here can fault.
#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(debug_assertions), inline(always))]
#[cfg_attr(debug_assertions, inline(never))]
fn leaf_return(snapshot: &Snapshot, pc: u64, sp: u64, fp: u64, stack_end: u64) -> Option<u64> {
    if sp & 7 != 0 || sp > stack_end.saturating_sub(16) {
        return None;
    }
    let [code, _] = guard::load2(pc)?;
    let at = match code.to_le_bytes() {
        [0x55, ..] | [0xf3, 0x0f, 0x1e, 0xfa, 0x55, ..] | [0xc3, ..] | [0xf3, 0xc3, ..] => 0,
        [0x48, 0x89, 0xe5, ..] => 8,
        _ => {
            if snapshot.own_code.find(pc).is_some() {
                return None;
            }
            // Up the stack, two words a load, to the frame pointer's frame.
            let limit = if fp > sp {
                fp.min(stack_end)
            } else {
                stack_end
            }
            .min(sp + SCAN_WORDS * 8)
            .saturating_sub(16);
            let mut at = sp;
            while at <= limit {
                let words = guard::load2(at)?;
                for ret in words {
                    if snapshot.own_code.find(ret).is_some() && follows_call(ret) {
                        return Some(ret);
                    }
                }
                at += 16;
            }
            return None;
        }
    };
    let [ret, _] = guard::load2(sp + at)?;
    snapshot.code.find(ret).map(|_| ret)
}

/// How far up the stack a leaf outside the program is searched for the
/// program's return address, in words.
#[cfg(target_arch = "x86_64")]
const SCAN_WORDS: u64 = 64;

/// aarch64: the leaf's caller is in the link register until the prologue
/// saves it; not read yet (the context's x30 is only right before the
/// prologue's store, which needs the instruction decoding x86-64 has).
/// Compiled only there; untested.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn leaf_return(_: &Snapshot, _: u64, _: u64, _: u64, _: u64) -> Option<u64> {
    None
}

/// Whether the bytes before `ret` end in a call instruction (`call rel32`,
/// `call [rip+disp32]`, `call reg`, `call [reg+disp8/32]`).
#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(debug_assertions), inline(always))]
#[cfg_attr(debug_assertions, inline(never))]
fn follows_call(ret: u64) -> bool {
    let Some([_, before]) = guard::load2(ret.wrapping_sub(16)) else {
        return false;
    };
    // b[7] is the byte just before `ret`.
    let b = before.to_le_bytes();
    b[3] == 0xe8
        || (b[2] == 0xff && (b[3] == 0x15 || b[3] & 0xf8 == 0x90))
        || (b[6] == 0xff && b[7] & 0xf8 == 0xd0)
        || (b[5] == 0xff && (b[6] & 0xf8 == 0x50 || b[6] == 0x14))
        || (b[5] == 0x41 && b[6] == 0xff && b[7] & 0xf8 == 0xd0)
}

/// Follows the frame-pointer chain from `fp`, writing return addresses to
/// `out`; returns how many. Every read is inside the writable mapping that
/// holds the stack pointer (ending at `stack_end`), above the previous
/// frame, 8-aligned, and made through the guarded load; every return
/// address kept is inside an executable mapping. No syscall.
#[cfg_attr(not(debug_assertions), inline(always))]
#[cfg_attr(debug_assertions, inline(never))]
pub(super) fn walk(
    snapshot: &Snapshot,
    sp: u64,
    stack_end: u64,
    mut fp: u64,
    out: &mut [u64],
    guarded: bool,
) -> usize {
    let mut low = sp;
    let mut n = 0;
    while n < out.len().min(MAX_DEPTH - 1) {
        if fp < low || fp & 7 != 0 || fp > stack_end.saturating_sub(16) {
            break;
        }
        // The mapping may have gone since the snapshot: a fault ends the
        // chain here instead of the process.
        let read = if guarded {
            guard::load2(fp)
        } else {
            // SAFETY: the benchmark's "before" only: `[fp, fp + 16)` lies
            // in the snapshot's mapping that holds the stack pointer.
            Some(unsafe {
                [
                    std::ptr::read_volatile(fp as *const u64),
                    std::ptr::read_volatile((fp + 8) as *const u64),
                ]
            })
        };
        let Some([next, ret]) = read else {
            break;
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
        guard::install();
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
            None,
        );
        let mut out = [0u64; 8];
        // pc 0: its bytes are unreadable, so no leaf fix-up applies.
        let n = unwind(snap, 0, base, base + 2 * 8, &mut out);
        assert_eq!(&out[..n], [code + 0x10, code + 0x20, code + 0x30]);
        // A frame pointer outside the stack, misaligned, or below sp: none.
        assert_eq!(unwind(snap, 0, base, 0x10, &mut out), 0);
        assert_eq!(unwind(snap, 0, base, base + 2 * 8 + 1, &mut out), 0);
        assert_eq!(unwind(snap, 0, base + 4 * 8, base + 2 * 8, &mut out), 0);
        // A stack pointer the snapshot does not know: no walk at all.
        assert_eq!(unwind(snap, 0, 0x1000, base + 2 * 8, &mut out), 0);
        // A return address outside code ends the chain.
        stack[7] = 0x1234;
        assert_eq!(unwind(snap, 0, base, base + 2 * 8, &mut out), 1);
        std::hint::black_box(&stack);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_leaf_caller_comes_from_the_stack_in_prologues_and_epilogues() {
        guard::install();
        let mapping = Mapping::new().unwrap();
        let snap = &mapping.region().snapshots[0];
        // "Code": a page of our own whose bytes we choose, and two return
        // addresses after call instructions in it.
        let mut text = [0u8; 64];
        // Library code: the leaf's states.
        text[8] = 0x55; // push rbp
        text[16..19].copy_from_slice(&[0x48, 0x89, 0xe5]); // mov rbp, rsp
        text[24] = 0xc3; // ret
        text[0] = 0x90; // a nop: the body of a frameless leaf
        // The program's code: two call sites.
        text[32..37].copy_from_slice(&[0xe8, 0, 0, 0, 0]); // ret addr = 37
        text[40..45].copy_from_slice(&[0xe8, 0, 0, 0, 0]); // ret addr = 45
        let t = text.as_ptr() as u64;
        let (caller, grandcaller) = (t + 37, t + 45);
        let mut stack = [0u64; 16];
        let base = stack.as_ptr() as u64;
        stack[0] = caller; // [sp]: the leaf's return address
        stack[1] = caller; // [sp + 8], after push rbp
        stack[4] = 0; // the caller's frame: next = 0 ends the chain
        stack[5] = grandcaller;
        let fp = base + 4 * 8;
        // The leaf's code is a library's; the callers' the program's own.
        let maps = format!(
            "{base:x}-{:x} rw-p 0 00:00 0\n{t:x}-{:x} r-xp 0 08:01 1 /lib/x.so\n{:x}-{:x} r-xp 0 08:01 2 /bin/own\n",
            base + 16 * 8,
            t + 32,
            t + 32,
            t + 64
        );
        fill_snapshot(snap, &maps, Some("/bin/own"));
        let mut out = [0u64; 8];
        for (pc, what) in [
            (t + 8, "push rbp"),
            (t + 16, "mov rbp, rsp"),
            (t + 24, "ret"),
            (t, "frameless leaf outside the program"),
        ] {
            if what == "mov rbp, rsp" {
                stack[0] = 0x77; // the pushed rbp
            } else {
                stack[0] = caller;
            }
            let n = unwind(snap, pc, base, fp, &mut out);
            assert_eq!(&out[..n], [caller, grandcaller], "{what}");
        }
        // The program's own code has frame pointers: no guess from [sp].
        let n = unwind(snap, t + 33, base, fp, &mut out);
        assert_eq!(&out[..n], [grandcaller]);
        std::hint::black_box((&stack, &text));
    }
}
