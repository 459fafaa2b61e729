//! The unwinder choice, proven: the interrupted leaf function is kept (the
//! released frame-pointer mode charges it to its caller), and captures back
//! to back while every core allocates neither deadlock nor crash.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use profscope_agent::cpu::CpuProfiler;
use profscope_agent::symbols::Symbolizer;
use profscope_test_support::AllocationStorm;

/// pprof-rs has one process-wide profiler: tests in this binary take turns.
static PROFILER: Mutex<()> = Mutex::new(());

/// A loop that calls nothing (plain xorshift, no iterator or method calls,
/// which debug builds would not inline), so samples taken in it have it as
/// leaf; the stop flag is read once per 100k rounds.
#[inline(never)]
fn leaf_spin(stop: &AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0u32;
        while i < 100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
    }
    x
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn leaf_function_is_the_top_flat_entry() {
    let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = stop.clone();
        std::thread::spawn(move || leaf_spin(&stop))
    };
    let rt = runtime();
    // The window is the capture's own (`start`, `duration`): it opens once
    // sampling runs. Before that, each capture start parses debug info
    // (pprof-rs resolves a backtrace), and the first one warms the unwinder
    // up: CPU the profile rightly does not hold.
    let trace = CpuTrace::start();
    let capture = rt
        .block_on(CpuProfiler::new().capture(Duration::from_secs(2), 99))
        .expect("capture");
    let used = trace.used_between(capture.start, capture.start + capture.duration);
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();

    let profile = capture.to_profile(&Symbolizer::new());
    let flat = profscope_test_support::flat_by_function(&profile, 0);
    let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    let cpu_ns: i64 = profile.sample.iter().map(|s| s.value[1]).sum();
    let (top, count) = flat.iter().max_by_key(|(_, v)| **v).expect("samples");
    assert!(top.ends_with("leaf_spin"), "top flat is {top}: {flat:?}");
    assert!(
        *count * 10 >= total * 8,
        "leaf_spin has {count} of {total} samples"
    );
    // The profile accounts for the CPU the process used (its
    // `cpu/nanoseconds` values: the samples at the real period, and the
    // part of a period each thread ran since its last sample).
    let profiled = cpu_ns as f64 / 1e9;
    let ratio = profiled / used.as_secs_f64();
    eprintln!(
        "profiled {profiled:.3} s of {used:?} CPU ({:.1}%)",
        ratio * 100.0
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "profiled {profiled} s, used {used:?}"
    );
}

/// This process's CPU time, read every 5 ms while it lives, so the CPU
/// used in any window can be read off afterwards.
struct CpuTrace {
    readings: Arc<Mutex<Vec<(std::time::SystemTime, Duration)>>>,
    stop: Arc<AtomicBool>,
}

impl CpuTrace {
    fn start() -> Self {
        let readings = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (readings.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                r.lock().unwrap().push((
                    std::time::SystemTime::now(),
                    profscope_test_support::process_cpu_time(),
                ));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        // The capture starts within a millisecond: the trace must already
        // hold a reading before it.
        while readings.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        CpuTrace { readings, stop }
    }

    /// CPU used between `from` and `to`, interpolated between readings.
    fn used_between(&self, from: std::time::SystemTime, to: std::time::SystemTime) -> Duration {
        std::thread::sleep(Duration::from_millis(20));
        let readings = self.readings.lock().unwrap();
        let at = |t: std::time::SystemTime| {
            let i = readings.partition_point(|(when, _)| *when <= t);
            assert!(i > 0 && i < readings.len(), "window outside the trace");
            let ((t0, c0), (t1, c1)) = (readings[i - 1], readings[i]);
            let span = t1.duration_since(t0).unwrap_or_default().as_secs_f64();
            let part = t.duration_since(t0).unwrap_or_default().as_secs_f64();
            c0.as_secs_f64() + (c1.as_secs_f64() - c0.as_secs_f64()) * part / span.max(1e-9)
        };
        Duration::from_secs_f64(at(to) - at(from))
    }
}

impl Drop for CpuTrace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn captures_back_to_back_while_every_core_allocates() {
    let _turn = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    let storm = AllocationStorm::start(2, 64, |x| (x % 65_536) as usize + 1);
    let rt = runtime();
    let profiler = CpuProfiler::new();
    let symbolizer = Symbolizer::new();
    for round in 0..10 {
        let capture = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    profiler.capture(Duration::from_millis(300), 997),
                )
                .await
            })
            .unwrap_or_else(|_| panic!("round {round}: capture hung"))
            .expect("capture");
        assert!(capture.sample_count() > 0, "round {round}: no samples");
        let profile = capture.to_profile(&symbolizer);
        assert!(!profile.sample.is_empty());
    }
    let allocations = storm.stop();
    assert!(allocations > 1000, "workers made progress: {allocations}");
}
