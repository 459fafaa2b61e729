//! Poll stamps: each thread that polls futures has a slot the watchdog's
//! monitor reads, holding a sequence number made odd when a poll starts and
//! even when it ends. No clock in the hot path: two plain stores a poll
//! (the slot's only writer is its own thread), the time is the monitor's.
//!
//! Two sources mark polls: tokio's task-poll hooks, installed on the
//! service's runtime builder with [`install_poll_hooks`] (`tokio_unstable`),
//! and the agent's own wrappers (the route layer, `labels::scope`,
//! `task_group`), which sit at the outermost future of what they wrap.
//! Polls nest (a hook's poll holds a route's): only the outermost counts.
//!
//! When no poll has started for a while the monitor dozes instead of
//! waking every tick ([`doze`]); the next poll start wakes it. The poll's
//! side of that is one relaxed load of a read-mostly flag, and a futex
//! wake only on the first poll after a doze.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Threads that can be watched at once.
pub(crate) const MAX_POLLERS: usize = 512;

/// One polling thread's stamp.
pub(crate) struct Slot {
    /// The thread, 0 when free.
    pub(crate) tid: AtomicI32,
    /// Odd while a poll runs.
    pub(crate) seq: AtomicU64,
}

pub(crate) static SLOTS: [Slot; MAX_POLLERS] = [const {
    Slot {
        tid: AtomicI32::new(0),
        seq: AtomicU64::new(0),
    }
}; MAX_POLLERS];

/// This thread's slot and poll depth; the slot is freed when the thread
/// exits.
struct Local {
    slot: Cell<usize>,
    depth: Cell<u32>,
}

const NO_SLOT: usize = usize::MAX;

/// One past the highest slot ever claimed: the monitor reads no further.
static HIGH_WATER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many slots the monitor must read.
pub(crate) fn high_water() -> usize {
    HIGH_WATER.load(Ordering::Acquire)
}

impl Drop for Local {
    fn drop(&mut self) {
        let i = self.slot.get();
        if i < MAX_POLLERS {
            // An exiting thread is in no poll.
            let seq = SLOTS[i].seq.load(Ordering::Relaxed);
            SLOTS[i].seq.store(seq + (seq & 1), Ordering::Release);
            SLOTS[i].tid.store(0, Ordering::Release);
        }
    }
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            slot: Cell::new(NO_SLOT),
            depth: Cell::new(0),
        }
    };
}

/// Takes a free slot for this thread (once per thread), `None` when all
/// are taken.
#[cold]
fn claim() -> Option<usize> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let claimed = (0..MAX_POLLERS).find(|&i| {
        SLOTS[i]
            .tid
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })?;
    HIGH_WATER.fetch_max(claimed + 1, Ordering::AcqRel);
    Some(claimed)
}

/// Marks the start of a poll (the outermost of nested ones).
#[inline]
pub(crate) fn enter() {
    let _ = LOCAL.try_with(|l| {
        let depth = l.depth.get();
        l.depth.set(depth + 1);
        if depth != 0 {
            return;
        }
        let mut i = l.slot.get();
        if i == NO_SLOT {
            match claim() {
                Some(claimed) => {
                    l.slot.set(claimed);
                    i = claimed;
                }
                None => return,
            }
        }
        let seq = SLOTS[i].seq.load(Ordering::Relaxed);
        SLOTS[i].seq.store(seq | 1, Ordering::Release);
        // The store above, then the flag: the monitor's side is a store of
        // the flag, a process-wide barrier, then a read of the stamps
        // (see `doze`), so one of the two sides sees the other.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if DOZING.load(Ordering::Relaxed) != 0 {
            wake_monitor();
        }
    });
}

/// 1 while a monitor may be dozing: the next poll start clears it and
/// wakes every dozing monitor (a process may run several agents). Only a
/// poll clears it; a monitor whose doze timed out leaves it set.
static DOZING: AtomicU32 = AtomicU32::new(0);

#[cold]
#[inline(never)]
fn wake_monitor() {
    if DOZING.swap(0, Ordering::AcqRel) != 0 {
        // SAFETY: a private futex wake on a static word; no memory is
        // passed but the word's address.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                DOZING.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            )
        };
    }
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// Whether the monitor can doze: the process-wide barrier `doze` needs
/// (`membarrier`, Linux 4.14) is there. Registers for it once.
pub(crate) fn can_doze() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: membarrier takes no memory; a failure (old kernel, a
        // seccomp filter) only means no dozing.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
            ) == 0
        }
    })
}

/// Whether a watched thread is inside a poll now.
fn any_in_poll() -> bool {
    SLOTS
        .iter()
        .take(high_water())
        .any(|s| s.tid.load(Ordering::Acquire) != 0 && s.seq.load(Ordering::Acquire) & 1 == 1)
}

/// Sleeps until a poll starts, at most `limit` (the monitor's doze, once
/// no poll has started for a while; only after [`can_doze`]). Returns at
/// once if a poll is running. The flag goes up first, then a barrier on
/// every thread of the process (`membarrier`): a poll that stamped before
/// it is seen by the check below, one that stamps after it sees the flag
/// and wakes the monitor, so no poll start is missed while it dozes.
/// `false` when the barrier failed (no doze; the caller stops dozing).
pub(crate) fn doze(limit: Duration) -> bool {
    DOZING.store(1, Ordering::SeqCst);
    // SAFETY: membarrier takes no memory; registered in `can_doze`.
    let fenced =
        unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0 };
    if !fenced {
        return false;
    }
    if !any_in_poll() {
        let timeout = libc::timespec {
            tv_sec: limit.as_secs() as libc::time_t,
            tv_nsec: limit.subsec_nanos() as libc::c_long,
        };
        // SAFETY: a private futex wait on a static word while it is 1,
        // with a valid timeout; a wake, a timeout or EINTR all return.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                DOZING.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                1,
                &timeout as *const libc::timespec,
            )
        };
    }
    true
}

/// The stamps' sequence numbers, summed: it changes whenever a poll
/// starts or ends (the monitor's test for "no poll since").
pub(crate) fn activity() -> u64 {
    SLOTS.iter().take(high_water()).fold(0u64, |sum, s| {
        sum.wrapping_add(s.seq.load(Ordering::Acquire))
    })
}

/// Marks the end of a poll.
#[inline]
pub(crate) fn exit() {
    let _ = LOCAL.try_with(|l| {
        let depth = l.depth.get().saturating_sub(1);
        l.depth.set(depth);
        let i = l.slot.get();
        if depth == 0 && i < MAX_POLLERS {
            let seq = SLOTS[i].seq.load(Ordering::Relaxed);
            SLOTS[i].seq.store((seq | 1) + 1, Ordering::Release);
        }
    });
}

/// A poll in progress until dropped (panics included).
#[derive(Debug)]
pub(crate) struct Stamp(());

impl Stamp {
    #[inline]
    pub(crate) fn enter() -> Stamp {
        enter();
        Stamp(())
    }
}

impl Drop for Stamp {
    #[inline]
    fn drop(&mut self) {
        exit();
    }
}

cfg_tokio_unstable! {
    /// Stamps every task poll of the runtime `builder` builds, so the
    /// watchdog sees any blocking poll, not only those of futures the
    /// agent wraps. Needs `--cfg tokio_unstable` (tokio's poll hooks).
    ///
    /// ```no_run
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// builder.enable_all();
    /// profscope_agent::watchdog::install_poll_hooks(&mut builder);
    /// let runtime = builder.build().unwrap();
    /// # drop(runtime);
    /// ```
    pub fn install_poll_hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
        builder
            .on_before_task_poll(|_| enter())
            .on_after_task_poll(|_| exit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine() -> usize {
        LOCAL.with(|l| l.slot.get())
    }

    #[test]
    fn nested_polls_stamp_once_and_the_slot_is_freed_at_exit() {
        let (tid, slot, odd_inside, even_after) = std::thread::spawn(|| {
            enter();
            let slot = mine();
            enter();
            exit();
            let odd_inside = SLOTS[slot].seq.load(Ordering::Acquire) & 1 == 1;
            exit();
            let even_after = SLOTS[slot].seq.load(Ordering::Acquire) & 1 == 0;
            // SAFETY: gettid has no preconditions.
            (unsafe { libc::gettid() }, slot, odd_inside, even_after)
        })
        .join()
        .unwrap();
        assert!(odd_inside, "still in the outer poll after the inner ends");
        assert!(even_after);
        assert_ne!(
            SLOTS[slot].tid.load(Ordering::Acquire),
            tid,
            "freed at exit"
        );
    }
}
