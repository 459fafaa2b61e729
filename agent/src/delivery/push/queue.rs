//! The delivery queue, bounded in bytes: when a new delivery does not fit,
//! the oldest waiting ones are dropped (the one on the wire is never
//! dropped under the sender, so the bytes held never exceed the cap).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Counters;
use super::wire::Delivery;

/// Why a delivery was dropped (the `reason` label of
/// `profscope_push_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The queue was full and this was the oldest waiting.
    QueueFull,
    /// The backend refused it with a 4xx other than 429: resending cannot help.
    Rejected,
    /// Every attempt failed.
    RetriesExhausted,
    /// Still queued when the shutdown deadline passed.
    Shutdown,
    /// Larger than the whole queue.
    TooLarge,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Rejected,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
        DropReason::TooLarge,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Rejected => "rejected",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Shutdown => "shutdown",
            DropReason::TooLarge => "too_large",
        }
    }
}

#[derive(Debug)]
struct State {
    items: VecDeque<Arc<Delivery>>,
    /// The front item is being sent: it must not be evicted.
    in_flight: bool,
    /// Set by shutdown: deliver until this instant, then drop the rest.
    closing: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    bytes: AtomicUsize,
    cap: usize,
    counters: Arc<Counters>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    Retry,
    Drop(DropReason),
}

impl Queue {
    pub(crate) fn new(cap: usize, counters: Arc<Counters>) -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                in_flight: false,
                closing: None,
            }),
            ready: Condvar::new(),
            bytes: AtomicUsize::new(0),
            cap,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Queues `delivery`, dropping the oldest waiting ones to make room.
    /// Never blocks on the sender.
    pub(crate) fn push(&self, delivery: Delivery) {
        let size = delivery.size();
        if size > self.cap {
            self.counters.dropped(DropReason::TooLarge);
            return;
        }
        let mut st = self.lock();
        if st.closing.is_some() {
            self.counters.dropped(DropReason::Shutdown);
            return;
        }
        while self.bytes() + size > self.cap {
            let oldest = usize::from(st.in_flight);
            match st.items.remove(oldest) {
                Some(old) => {
                    self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
                    self.counters.dropped(DropReason::QueueFull);
                }
                None => {
                    // Only the one on the wire is left and both do not fit.
                    self.counters.dropped(DropReason::QueueFull);
                    return;
                }
            }
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        st.items.push_back(Arc::new(delivery));
        drop(st);
        self.ready.notify_all();
    }

    /// The next delivery to attempt, marked in flight; waits for one.
    /// `None` once closing and empty or past the deadline (what is left is
    /// then dropped and counted).
    pub(crate) fn next(&self) -> Option<Arc<Delivery>> {
        let mut st = self.lock();
        loop {
            if let Some(deadline) = st.closing {
                if st.items.is_empty() || Instant::now() >= deadline {
                    for old in st.items.drain(..) {
                        self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
                        self.counters.dropped(DropReason::Shutdown);
                    }
                    return None;
                }
            }
            if let Some(front) = st.items.front().cloned() {
                st.in_flight = true;
                return Some(front);
            }
            st = self
                .ready
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Ends the attempt on the front delivery (the one [`next`](Self::next)
    /// returned: nothing else removes the front while it is in flight).
    pub(crate) fn finish(&self, outcome: Outcome) {
        let mut st = self.lock();
        st.in_flight = false;
        match outcome {
            Outcome::Retry => {}
            Outcome::Sent | Outcome::Drop(_) => {
                if let Some(done) = st.items.pop_front() {
                    self.bytes.fetch_sub(done.size(), Ordering::Relaxed);
                }
                if let Outcome::Drop(reason) = outcome {
                    self.counters.dropped(reason);
                }
            }
        }
    }

    /// Waits up to `wait` (backoff), returning early when closing.
    pub(crate) fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut st = self.lock();
        while st.closing.is_none() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            st = self
                .ready
                .wait_timeout(st, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The shutdown deadline, if closing.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock().closing
    }

    /// Accepts nothing more; the sender delivers until `deadline`.
    pub(crate) fn close(&self, deadline: Instant) {
        self.lock().closing = Some(deadline);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(bytes: usize) -> Delivery {
        Delivery::for_test(vec![0; bytes])
    }

    #[test]
    fn drops_the_oldest_waiting_never_the_one_in_flight() {
        let counters = Arc::new(Counters::default());
        let q = Queue::new(1000, counters.clone());
        q.push(delivery(400));
        let first = q.next().unwrap();
        q.push(delivery(400));
        q.push(delivery(400)); // evicts the second, not the first (in flight)
        assert_eq!(q.bytes(), 800);
        assert_eq!(
            counters.dropped[DropReason::QueueFull as usize].load(Ordering::Relaxed),
            1
        );
        q.finish(Outcome::Sent);
        assert_eq!(q.bytes(), 400);
        assert!(!Arc::ptr_eq(&first, &q.next().unwrap()));
        q.push(delivery(2000));
        assert_eq!(
            counters.dropped[DropReason::TooLarge as usize].load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn closing_drops_what_is_left_at_the_deadline() {
        let counters = Arc::new(Counters::default());
        let q = Queue::new(1000, counters.clone());
        q.push(delivery(10));
        q.push(delivery(10));
        q.close(Instant::now());
        assert!(q.next().is_none());
        assert_eq!(q.bytes(), 0);
        assert_eq!(
            counters.dropped[DropReason::Shutdown as usize].load(Ordering::Relaxed),
            2
        );
        q.push(delivery(10));
        assert_eq!(q.bytes(), 0);
    }
}
