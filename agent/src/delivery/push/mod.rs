//! Push: every period, the period's CPU profile, the heap (with `alloc_*`
//! as the growth over the period) and, when asked, the task profile go to
//! Grafana Pyroscope's HTTP ingest and/or an OTLP profiles endpoint, for
//! fleets that run a continuous-profiling engine instead of scraping.
//!
//! Off by default, and never in the service's way: collection runs on a
//! thread of its own (a consumer of the one sample stream, so ad-hoc
//! captures never see a 409 because of it), delivery on another, through a
//! queue bounded in bytes that drops its oldest entry when full. A dead,
//! slow or hanging backend costs retries with backoff and counted drops,
//! never a blocked request or memory past the cap.
//!
//! * [`config`]: what to push where ([`PushConfig`], [`Endpoint`]);
//! * `collect`: the period loop, profiles → deliveries;
//! * `wire`: Pyroscope's multipart ingest and the OTLP request;
//! * `queue`: the byte-bounded queue;
//! * `send`: delivery with retries, backoff and jitter.

mod collect;
pub mod config;
mod queue;
mod send;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use config::{Auth, Endpoint, PushConfig};
pub use queue::DropReason;

use queue::Queue;

/// What the push collects from: the agent's profilers, symbolizer and
/// runtime (the agent implements it; the push holds it weakly, so it never
/// keeps a dropped agent alive and never reaches into the agent's types).
pub(crate) trait Sources: Send + Sync + 'static {
    fn cpu(&self) -> &crate::capture::cpu::CpuProfiler;
    fn heap(&self) -> &crate::capture::heap::HeapProfiler;
    fn symbolizer(&self) -> &crate::shared::symbols::Symbolizer;
    fn runtime_handle(&self) -> Option<&tokio::runtime::Handle>;
    /// The flight recorder, whose incidents are pushed too.
    fn recorder(&self) -> Option<&crate::capture::recorder::Recorder>;
}

/// The push's one source of randomness (backoff jitter, multipart
/// boundaries): xorshift64 seeded from the clock and the pid, never zero
/// (a zero state would stay zero).
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id()) << 32) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Counters behind the `profscope_push_*` families on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) collect_errors: AtomicU64,
    pub(crate) dropped: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// What the push has done so far (also on `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushStats {
    /// Requests a backend accepted (2xx).
    pub sent: u64,
    /// Failed delivery attempts (connection errors, non-2xx answers).
    pub errors: u64,
    /// Periods (or parts of them) that could not be collected.
    pub collect_errors: u64,
    /// Deliveries dropped, by reason.
    pub dropped: Vec<(DropReason, u64)>,
    /// Bytes waiting in the queue now.
    pub queue_bytes: u64,
    /// The queue's cap in bytes.
    pub queue_capacity: u64,
}

/// A running push: the collector and sender threads and their queue.
#[derive(Debug)]
pub(crate) struct Pusher {
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    stop: tokio::sync::watch::Sender<bool>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Pusher {
    /// Starts collecting for the agent behind `agent` (held weakly, so a
    /// dropped agent ends the threads at the next period).
    pub(crate) fn start(
        agent: Weak<dyn Sources>,
        config: PushConfig,
        frequency: u32,
    ) -> Result<Self, crate::Error> {
        let counters = Arc::new(Counters::default());
        let queue = Arc::new(Queue::new(config.queue_bytes, counters.clone()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let config = Arc::new(config);
        let collector = {
            let (queue, counters, config) = (queue.clone(), counters.clone(), config.clone());
            std::thread::Builder::new()
                .name("profscope-push-collect".into())
                .spawn(move || {
                    let _agent = crate::capture::labels::agent_scope();
                    collect::run(agent, &config, frequency, &queue, &counters, stopped)
                })?
        };
        let sender = {
            let (queue, counters) = (queue.clone(), counters.clone());
            let policy =
                send::Policy::new(config.request_timeout, config.max_attempts, config.period);
            std::thread::Builder::new()
                .name("profscope-push-send".into())
                .spawn(move || {
                    let _agent = crate::capture::labels::agent_scope();
                    send::run(&queue, &counters, policy)
                })?
        };
        Ok(Pusher {
            queue,
            counters,
            stop,
            threads: std::sync::Mutex::new(vec![collector, sender]),
        })
    }

    pub(crate) fn stats(&self) -> PushStats {
        let c = &self.counters;
        PushStats {
            sent: c.sent.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            collect_errors: c.collect_errors.load(Ordering::Relaxed),
            dropped: DropReason::ALL
                .iter()
                .map(|&r| (r, c.dropped[r as usize].load(Ordering::Relaxed)))
                .collect(),
            queue_bytes: self.queue.bytes() as u64,
            queue_capacity: self.queue.capacity() as u64,
        }
    }

    /// Stops collecting (the period in progress is not sent), delivers what
    /// is queued until `deadline` passes, drops the rest (counted as
    /// `shutdown`) and returns the final figures. Never waits past the
    /// deadline, even on a backend that hangs.
    pub(crate) fn shutdown(&self, deadline: Duration) -> PushStats {
        let until = Instant::now() + deadline;
        let _ = self.stop.send(true);
        self.queue.close(until);
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.stats()
    }
}

impl Drop for Pusher {
    /// The agent is gone: the collector ends with the stop channel; the
    /// sender drops what is queued and ends at its next wake-up.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.queue.close(Instant::now());
    }
}

/// The `profscope_push_*` families for `/metrics`.
pub(crate) fn metric_values(stats: &PushStats) -> Vec<(String, f64)> {
    stats
        .dropped
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), *n as f64))
        .collect()
}

/// One period's encodes for both backends (for the push benchmark).
pub(crate) fn encode_for_bench(profile: &profscope_profile::Profile) -> (usize, usize) {
    let config = PushConfig::new("bench")
        .pyroscope("http://127.0.0.1:4040")
        .otlp("http://127.0.0.1:4318");
    let now = std::time::SystemTime::now();
    let period = wire::Period {
        from: now,
        until: now,
        frequency: 99,
        profiles: vec![("cpu", profile.clone())],
    };
    let endpoint = Endpoint::new("http://127.0.0.1");
    let pyroscope =
        wire::pyroscope(&endpoint, &config, &period, "cpu", profile).map_or(0, |d| d.body.len());
    let otlp = wire::otlp(&endpoint, &config, &period).map_or(0, |d| d.body.len());
    (pyroscope, otlp)
}
