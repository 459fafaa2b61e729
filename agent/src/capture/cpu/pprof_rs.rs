//! The pprof-rs backend, for targets where the agent's own sampler does not
//! run (and on Linux with the `pprof-rs` feature): one capture at a time
//! (pprof-rs has one global profiler), framehop unwinding, a warm-up that
//! builds framehop's lazy unwinder outside any allocator lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime};

use super::{CapturedStack, CpuCapture};
use crate::Error;

/// The process-wide CPU profiler slot: pprof-rs has one global profiler.
#[derive(Debug, Default)]
pub(super) struct Backend {
    busy: Arc<AtomicBool>,
    /// Unix seconds at which the running capture is due to end.
    ends_at: AtomicU64,
}

/// Releases the slot when the capture thread is done with the profiler.
struct SlotGuard(Arc<AtomicBool>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Backend {
    /// See [`CpuProfiler::capture`](super::CpuProfiler::capture); fails
    /// with [`Error::CaptureRunning`] when another capture holds pprof-rs.
    pub(super) async fn capture(&self, duration: Duration, frequency: u32) -> Result<CpuCapture, Error> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            let now = unix_now();
            let ends = self.ends_at.load(Ordering::Acquire);
            return Err(Error::CaptureRunning {
                retry_after_secs: ends.saturating_sub(now).max(1),
            });
        }
        let slot = SlotGuard(self.busy.clone());
        self.ends_at
            .store(unix_now() + duration.as_secs() + 1, Ordering::Release);
        // The sender lives in this future: when the future is dropped (the
        // client went away), the capture thread sees the channel close.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            SAMPLING.store(true, Ordering::Release);
            let result = run_capture(duration, frequency, &stop_rx);
            SAMPLING.store(false, Ordering::Release);
            result
        });
        let result = task
            .await
            .map_err(|e| Error::Internal(format!("capture thread failed: {e}")))?;
        drop(stop_tx);
        result
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a capture on the calling (blocking) thread until `duration` passes
/// or `stop` closes.
fn run_capture(
    duration: Duration,
    frequency: u32,
    stop: &mpsc::Receiver<()>,
) -> Result<CpuCapture, Error> {
    warm_up();
    // Starting the profiler first resolves a backtrace (pprof-rs loads its
    // lazies so), which can parse this binary's debug info: hundreds of ms
    // of CPU before the timer runs. The window starts once sampling does.
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(frequency as i32)
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the CPU profiler: {e}")))?;
    // That resolve left the `backtrace` crate's parsed DWARF of the whole
    // binary in its cache (55–75 MiB for a 50 MB service). The agent's own
    // symbolizer does not use it, and kept, it would sit in every heap
    // profile and leak diff taken around a capture: free it now, at the
    // price of parsing again at the next capture start (~0.1 s).
    backtrace::clear_symbol_cache();
    let start = SystemTime::now();
    let started = Instant::now();
    match stop.recv_timeout(duration) {
        Err(RecvTimeoutError::Timeout) => {}
        // Client gone (or explicit stop): release the profiler right away.
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            drop(guard);
            return Err(Error::Internal("capture cancelled".into()));
        }
    }
    let report = guard
        .report()
        .build_unresolved()
        .map_err(|e| Error::Internal(format!("cannot read the CPU profile: {e}")));
    let elapsed = started.elapsed();
    drop(guard);
    let report = report?;
    let period_ns = 1_000_000_000 / i64::from(frequency.max(1));
    let stacks = report
        .data
        .iter()
        .map(|(frames, &count)| CapturedStack {
            addresses: frames
                .frames
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let ip = f.ip as u64;
                    if i == 0 { ip } else { ip.saturating_sub(1) }
                })
                .collect(),
            labels: 0,
            cpu_ns: count as i64 * period_ns,
            thread: thread_name(
                &frames.thread_name[..frames.thread_name_length],
                frames.thread_id,
            ),
            count: count as i64,
        })
        .collect();
    Ok(CpuCapture {
        stacks,
        frequency,
        period: Duration::from_nanos(period_ns as u64),
        start,
        duration: elapsed,
        dropped: Vec::new(),
    })
}

fn thread_name(name: &[u8], id: u64) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}

static WARM_UP: Once = Once::new();
static WARM_UP_MICROS: AtomicU64 = AtomicU64::new(0);

/// Builds pprof-rs's framehop unwinder before any real capture.
///
/// The unwinder is a lazy global created inside the first SIGPROF handler,
/// and creating it allocates. If that first signal lands on a thread that
/// is inside the allocator holding one of its locks, the handler deadlocks
/// on that lock (seen: a jemalloc extent mutex, with heap sampling on and
/// two threads allocating). A timer-driven signal can land on any busy
/// thread, so the warm-up does not wait for one: it starts the profiler at
/// 1 Hz (the first expiry is a whole CPU-second away) and raises SIGPROF on
/// the calling thread, which holds no allocator lock, so the lazy unwinder is
/// built there. Runs once per process; later calls return at once.
pub(super) fn warm_up() {
    WARM_UP.call_once(|| {
        let started = Instant::now();
        if let Ok(guard) = pprof::ProfilerGuardBuilder::default().frequency(1).build() {
            // SAFETY: `raise` sends SIGPROF to this thread and returns after
            // its handler ran. pprof-rs's handler is installed while `guard`
            // lives, and this thread is in plain Rust code, not inside the
            // allocator or any lock the handler takes, so the allocation the
            // handler makes on first use is safe here.
            unsafe {
                libc::raise(libc::SIGPROF);
            }
            drop(guard);
        }
        // Starting the profiler made pprof-rs resolve a backtrace, which
        // parsed this binary's debug info (tens of MB): free it until needed.
        backtrace::clear_symbol_cache();
        WARM_UP_MICROS.store(started.elapsed().as_micros() as u64, Ordering::Release);
    });
}

/// How long [`warm_up`] took, once it has run.
pub(super) fn warm_up_duration() -> Option<Duration> {
    WARM_UP
        .is_completed()
        .then(|| Duration::from_micros(WARM_UP_MICROS.load(Ordering::Acquire)))
}

/// Set while pprof-rs samples.
static SAMPLING: AtomicBool = AtomicBool::new(false);

pub(super) fn sampler_stats() -> Option<super::SamplerStats> {
    None
}

pub(super) fn is_sampling() -> bool {
    SAMPLING.load(Ordering::Acquire)
}
