//! The agent's own CPU sampler, measured from inside one process:
//! - the SIGPROF handler's cost per sample on 20-frame stacks (the handler
//!   times itself with the vDSO clock; median and p99 of its histogram),
//!   in alternating pairs: before (plain reads checked by the snapshot
//!   alone, frame pointers only) and after (guarded loads, the leaf's
//!   caller from the stack);
//! - the aggregator thread's CPU (`/proc/self/task/<tid>/schedstat`);
//! - the direct overhead: (handler cost × samples + aggregator CPU) /
//!   service CPU, at 99 Hz on 2 busy threads;
//! - capture start and stop (a 1 ms capture, whole), and the resident
//!   memory the sampler adds while it runs.
//!
//! ```text
//! cargo bench -p profscope-benches --bench sampler
//! PROFSCOPE_BENCH_SECS=10 PROFSCOPE_BENCH_RUNS=5 cargo bench -p profscope-benches --bench sampler
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use profscope_agent::cpu::CpuProfiler;
use profscope_benches::{env_or, median_spread};

fn main() {
    let secs: u64 = env_or("PROFSCOPE_BENCH_SECS", 5);
    let runs: usize = env_or("PROFSCOPE_BENCH_RUNS", 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "sampler: {runs} pairs of {secs} s runs at 99 Hz, 2 threads busy 20 frames deep, \
         alternating before/after"
    );

    let (mut medians, mut p99s, mut overheads, mut aggregator_shares) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut before_medians, mut before_p99s) = (Vec::new(), Vec::new());
    for run in 0..runs * 2 {
        let is_after = run % 2 == 1;
        profscope_agent::probes::set_sampler_reads(is_after, is_after);
        let stop = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || deep(20, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let (_, before) = profscope_agent::probes::handler_cost_histogram();
        let cpu_before = profscope_test_support::process_cpu_time().as_nanos() as u64;
        let watcher = std::thread::spawn(aggregator_cpu_ns);
        let capture = rt
            .block_on(CpuProfiler::new().capture(Duration::from_secs(secs), 99))
            .expect("capture");
        let cpu_used = (profscope_test_support::process_cpu_time().as_nanos() as u64) - cpu_before;
        let aggregator = watcher.join().expect("watcher");
        let (width, after) = profscope_agent::probes::handler_cost_histogram();
        stop.store(true, Ordering::Relaxed);
        for b in busy {
            b.join().expect("busy thread");
        }
        let histogram: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let runs_seen: u64 = histogram.iter().sum();
        let median = percentile(&histogram, width, 0.5);
        let p99 = percentile(&histogram, width, 0.99);
        let handler_ns = mean(&histogram, width) * runs_seen as f64;
        let overhead = (handler_ns + aggregator as f64) / cpu_used as f64;
        println!(
            "run {run} ({}): {} samples ({runs_seen} handler runs), handler median {median} ns, p99 {p99} ns; \
             aggregator {:.2} ms CPU; direct overhead {:.4} % of {:.2} s service CPU",
            if is_after { "after" } else { "before" },
            capture.sample_count(),
            aggregator as f64 / 1e6,
            overhead * 100.0,
            cpu_used as f64 / 1e9
        );
        if !is_after {
            before_medians.push(median as f64);
            before_p99s.push(p99 as f64);
            continue;
        }
        medians.push(median as f64);
        p99s.push(p99 as f64);
        overheads.push(overhead * 100.0);
        aggregator_shares.push(aggregator as f64 / cpu_used as f64 * 100.0);
    }
    let ratios: Vec<f64> = medians
        .iter()
        .zip(&before_medians)
        .map(|(a, b)| a / b)
        .collect();
    let (m, lo, hi) = median_spread(&before_medians);
    println!("before: handler cost per sample, median: {m:.0} ns (runs {lo:.0}..{hi:.0})");
    let (m, lo, hi) = median_spread(&before_p99s);
    println!("before: handler cost per sample, p99: {m:.0} ns (runs {lo:.0}..{hi:.0})");
    let (m, lo, hi) = median_spread(&ratios);
    println!("after / before, median of pairs: {m:.3} (pairs {lo:.3}..{hi:.3})");
    let (m, lo, hi) = median_spread(&medians);
    println!("after: handler cost per sample, median: {m:.0} ns (runs {lo:.0}..{hi:.0})");
    let (m, lo, hi) = median_spread(&p99s);
    println!("after: handler cost per sample, p99: {m:.0} ns (runs {lo:.0}..{hi:.0})");
    let (m, lo, hi) = median_spread(&aggregator_shares);
    println!("aggregator CPU: {m:.4} % of service CPU (runs {lo:.4}..{hi:.4})");
    let (m, lo, hi) = median_spread(&overheads);
    println!("direct overhead: {m:.4} % of service CPU (runs {lo:.4}..{hi:.4})");

    // Capture start and stop: a 1 ms capture, whole, with 4 threads alive.
    let stop = Arc::new(AtomicBool::new(false));
    let idle: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let mut starts = Vec::new();
    let mut rss_growth = Vec::new();
    for _ in 0..(runs * 10) {
        while CpuProfiler::is_sampling() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let rss_before = rss_kib();
        let t0 = Instant::now();
        rt.block_on(CpuProfiler::new().capture(Duration::from_millis(1), 99))
            .expect("capture");
        starts.push(t0.elapsed().as_secs_f64() * 1000.0 - 1.0);
        rss_growth.push(rss_kib().saturating_sub(rss_before) as f64);
    }
    stop.store(true, Ordering::Relaxed);
    for t in idle {
        t.join().expect("idle thread");
    }
    let (m, lo, hi) = median_spread(&starts);
    println!(
        "capture start + stop (a 1 ms capture less its 1 ms): median {m:.3} ms (spread {lo:.3}..{hi:.3})"
    );
    let (m, lo, hi) = median_spread(&rss_growth);
    println!(
        "resident memory added by a capture (VmRSS after - before): median {m:.0} KiB (spread {lo:.0}..{hi:.0})"
    );
}

/// Recurses `depth` frames, then spins until `stop`.
#[inline(never)]
fn deep(depth: u32, stop: &AtomicBool) -> u64 {
    if depth > 1 {
        return std::hint::black_box(deep(depth - 1, stop)) + 1;
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
    x
}

/// The value below which `q` of the histogram's runs fall, in ns.
fn percentile(histogram: &[u64], width: u64, q: f64) -> u64 {
    let total: u64 = histogram.iter().sum();
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, &n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= want.max(1) {
            return (i as u64 + 1) * width;
        }
    }
    histogram.len() as u64 * width
}

/// Mean of the histogram, each run counted at its bucket's middle.
fn mean(histogram: &[u64], width: u64) -> f64 {
    let total: u64 = histogram.iter().sum();
    let sum: f64 = histogram
        .iter()
        .enumerate()
        .map(|(i, &n)| n as f64 * (i as f64 + 0.5) * width as f64)
        .sum();
    sum / total.max(1) as f64
}

/// CPU ns the sampler's aggregator thread used during its life: found by
/// name once the capture starts, read until it exits.
fn aggregator_cpu_ns() -> u64 {
    let find = || {
        std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
            let path = e.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            comm.starts_with("profscope-sampl").then_some(path)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let path = loop {
        if let Some(p) = find() {
            break p;
        }
        if Instant::now() > deadline {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut last = 0;
    while let Ok(s) = std::fs::read_to_string(path.join("schedstat")) {
        last = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(last);
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}

/// Resident set size in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
