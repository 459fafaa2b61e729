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

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

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
    (0..MAX_POLLERS).find(|&i| {
        SLOTS[i]
            .tid
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
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
    });
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
