//! The threads being sampled: one CPU-time timer each (`timer_create` on
//! the thread's own CPU clock, delivering SIGPROF to that thread with its
//! slot index as the signal's value), found and retired by rescanning
//! `/proc/self/task`.
//!
//! A thread is known by its id and its `/proc/self/task/<tid>` inode
//! (procfs gives each new task a new one), so a thread that reuses the id
//! of one that exited between two scans is a new thread with a timer of
//! its own, not the old thread's dead timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::region::{MAX_THREADS, RETIRED, Region};

/// A live thread: its id and the inode of its `/proc/self/task` entry.
pub(super) type LiveThread = (i32, u64);

/// One sampled thread.
#[derive(Debug)]
pub(super) struct Thread {
    pub(super) slot: usize,
    timer: libc::timer_t,
    inode: u64,
}

/// Every thread of the process with a timer, by tid.
#[derive(Debug)]
pub(super) struct Threads {
    by_tid: HashMap<i32, Thread>,
    /// Each slot's last thread name (`comm`, else the tid), kept after the
    /// thread exits so its last records still have a name.
    names: Vec<Option<Arc<str>>>,
    /// Slots whose name was read when the thread was found, with the
    /// thread's id: a scan can find a thread between `clone` and its own
    /// `pthread_setname_np` (std and tokio name a thread from inside it),
    /// when `comm` is still its creator's. Read again at the slot's first
    /// drained records: by then the thread has run a whole period.
    provisional: Vec<Option<i32>>,
    /// Threads seen without a free slot at the last scan.
    pub(super) unsampled: usize,
}

impl Default for Threads {
    fn default() -> Self {
        Threads {
            by_tid: HashMap::new(),
            names: vec![None; MAX_THREADS],
            provisional: vec![None; MAX_THREADS],
            unsampled: 0,
        }
    }
}

// SAFETY: `timer_t` is an opaque id the kernel hands out; any thread of the
// process may set or delete it.
unsafe impl Send for Thread {}

/// The CPU clock of thread `tid` (Linux's `MAKE_THREAD_CPUCLOCK(tid,
/// CPUCLOCK_SCHED)`).
fn thread_cpu_clock(tid: i32) -> libc::clockid_t {
    ((!tid) << 3) | 6
}

fn timerspec(period: Duration) -> libc::itimerspec {
    let ts = libc::timespec {
        tv_sec: period.as_secs() as libc::time_t,
        tv_nsec: period.subsec_nanos() as libc::c_long,
    };
    libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    }
}

/// The process's threads now.
pub(super) fn live_threads(dir: &mut TaskDir) -> Vec<LiveThread> {
    dir.list()
}

/// `/proc/self/task`, opened once and rewound for each scan: opening it
/// anew every 100 ms was most of the aggregator's cost.
#[derive(Debug)]
pub(super) struct TaskDir(*mut libc::DIR);

// SAFETY: the DIR stream is used by one thread at a time (under the
// stream's mutex).
unsafe impl Send for TaskDir {}

impl TaskDir {
    pub(super) fn open() -> TaskDir {
        // SAFETY: a NUL-terminated path; null on failure is handled in `list`.
        TaskDir(unsafe { libc::opendir(c"/proc/self/task".as_ptr()) })
    }

    fn list(&mut self) -> Vec<LiveThread> {
        if self.0.is_null() {
            return Vec::new();
        }
        let mut tids = Vec::new();
        // SAFETY: a live DIR stream of ours; `readdir` entries are valid
        // until the next call, and only read before it.
        unsafe {
            libc::rewinddir(self.0);
            loop {
                let entry = libc::readdir(self.0);
                if entry.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*entry).d_name.as_ptr());
                if let Some(tid) = name.to_str().ok().and_then(|n| n.parse().ok()) {
                    tids.push((tid, (*entry).d_ino));
                }
            }
        }
        tids
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: closes the stream opened in `open`, once.
            unsafe { libc::closedir(self.0) };
        }
    }
}

impl Threads {
    /// Adds timers for threads of `live` that appeared and deletes those of
    /// threads that exited. `region` must be the published region.
    pub(super) fn rescan(&mut self, region: &Region, live: &[LiveThread], period: Duration) {
        let gone: Vec<i32> = self
            .by_tid
            .iter()
            .filter(|(tid, t)| !live.contains(&(**tid, t.inode)))
            .map(|(tid, _)| *tid)
            .collect();
        for tid in gone {
            if let Some(thread) = self.by_tid.remove(&tid) {
                self.retire(region, thread);
            }
        }
        self.unsampled = 0;
        for &(tid, inode) in live {
            if !self.by_tid.contains_key(&tid) && !self.add(region, tid, inode, period) {
                self.unsampled += 1;
            }
        }
    }

    /// Whether `live` holds a thread without a timer yet.
    pub(super) fn has_new(&self, live: &[LiveThread]) -> bool {
        live.iter()
            .any(|(tid, inode)| self.by_tid.get(tid).is_none_or(|t| t.inode != *inode))
    }

    /// Gives thread `tid` a free slot and a timer; false when no slot is
    /// free (or the timer cannot be armed).
    fn add(&mut self, region: &Region, tid: i32, inode: u64, period: Duration) -> bool {
        let Some(slot) =
            (0..MAX_THREADS).find(|&i| region.slots[i].tid.load(Ordering::Acquire) == 0)
        else {
            return false;
        };
        region.slots[slot].prefault();
        region.slots[slot].tid.store(tid, Ordering::Release);
        // SAFETY: a zeroed sigevent is valid; the fields set are the ones
        // SIGEV_THREAD_ID reads.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGPROF;
        event.sigev_notify_thread_id = tid;
        event.sigev_value = libc::sigval {
            sival_ptr: slot as *mut libc::c_void,
        };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and a timer id.
        let created =
            unsafe { libc::timer_create(thread_cpu_clock(tid), &mut event, &mut timer) } == 0;
        if !created {
            // The thread exited between the scan and now.
            region.slots[slot].tid.store(0, Ordering::Release);
            return true;
        }
        let spec = timerspec(period);
        // SAFETY: `timer` was just created; `spec` is valid.
        if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            // Not armed: an unsampled thread, counted, never a silent one.
            // SAFETY: the timer just created, deleted once.
            unsafe { libc::timer_delete(timer) };
            region.slots[slot].tid.store(0, Ordering::Release);
            return false;
        }
        let name = comm(tid).unwrap_or_else(|| tid.to_string());
        self.names[slot] = Some(name.into());
        self.provisional[slot] = Some(tid);
        self.by_tid.insert(tid, Thread { slot, timer, inode });
        true
    }

    fn retire(&mut self, region: &Region, thread: Thread) {
        // SAFETY: the timer is ours and deleted once.
        unsafe { libc::timer_delete(thread.timer) };
        // Its slot's records stay readable; the slot is free for a new
        // thread once the aggregator has drained it (`drain` frees retired
        // slots), so a new thread never overwrites undrained records.
        region.slots[thread.slot]
            .tid
            .store(RETIRED, Ordering::Release);
    }

    /// Re-arms every timer at `period` (restarting each countdown; a zero
    /// period disarms). A timer that cannot be re-armed is the exited
    /// thread's, retired at the next scan.
    pub(super) fn retime(&self, period: Duration) {
        let spec = timerspec(period);
        for thread in self.by_tid.values() {
            // SAFETY: a live timer of ours. A failure leaves it as it was:
            // EINVAL only for a bad spec or id, neither of which this is.
            let _ = unsafe { libc::timer_settime(thread.timer, 0, &spec, std::ptr::null_mut()) };
        }
    }

    /// For each thread, the CPU it ran since its timer last expired (its
    /// timer runs at `period`).
    pub(super) fn since_last_expiry(&self, period: Duration) -> Vec<(i32, Duration)> {
        self.by_tid
            .iter()
            .filter_map(|(&tid, thread)| {
                // SAFETY: a zeroed itimerspec to fill.
                let mut current: libc::itimerspec = unsafe { std::mem::zeroed() };
                // SAFETY: a live timer of ours and a valid out pointer.
                let ok = unsafe { libc::timer_gettime(thread.timer, &mut current) } == 0;
                let left = Duration::new(
                    current.it_value.tv_sec as u64,
                    current.it_value.tv_nsec as u32,
                );
                // An armed timer always has time left; zero is a disarmed
                // one or an exited thread's (reaped, or blocking SIGPROF):
                // no CPU ran on it, so nothing is credited.
                (ok && !left.is_zero()).then(|| (tid, period.saturating_sub(left)))
            })
            .collect()
    }

    /// Deletes every timer and frees every slot.
    pub(super) fn clear(&mut self, region: &Region) {
        for (_, thread) in std::mem::take(&mut self.by_tid) {
            self.retire(region, thread);
        }
    }

    /// Whether `slot` has held a thread.
    pub(super) fn has_held(&self, slot: usize) -> bool {
        self.names.get(slot).is_some_and(Option::is_some)
    }

    /// The name of the thread last sampled into `slot`, called when its
    /// records are drained: a name read when the thread was found is read
    /// once more (kept if the thread has exited since).
    pub(super) fn name_of_slot(&mut self, slot: usize) -> Option<Arc<str>> {
        if let Some(tid) = self.provisional.get_mut(slot)?.take()
            && let Some(name) = comm(tid)
            && self.names[slot].as_deref() != Some(name.as_str())
        {
            self.names[slot] = Some(name.into());
        }
        self.names.get(slot)?.clone()
    }
}

/// Thread `tid`'s name, when it is alive and has one.
fn comm(tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|n| n.trim_end().to_string())
        .ok()
        .filter(|n| !n.is_empty())
}
