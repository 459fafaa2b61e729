//! What the always-on parts cost, in one process under a busy service:
//! - the watchdog's poll stamps, per poll (enter + exit), target < 10 ns;
//! - the flight recorder's own CPU (its thread, from
//!   `/proc/self/task/<tid>/stat`, plus the handler's share at 19 Hz) as a
//!   share of the service's CPU, target < 0.2 %; its ring's bytes; and the
//!   latency of a 60 s read of the recent past (`recent_cpu` + symbolize +
//!   encode), target < 100 ms;
//! - the watchdog's monitor thread CPU at the default 100 ms threshold,
//!   target < 0.01 % of a core: with no polls (it dozes) and with a poll
//!   every millisecond (it wakes every tick), each beside a thread that
//!   only sleeps for the monitor's tick (the machine's floor for a thread
//!   that wakes that often);
//! - trigger to incident listed (a heap line crossed), target < 1 s;
//! - end to end, for information: a service's CPU-ms per 1,000 requests
//!   with the recorder on at its defaults vs off (child processes of this
//!   binary, alternating A/B pairs).
//!
//! ```text
//! cargo bench -p profscope-benches --bench always_on
//! PROFSCOPE_BENCH_SECS=60 PROFSCOPE_BENCH_RUNS=5 cargo bench -p profscope-benches --bench always_on
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use profscope_agent::Agent;
use profscope_agent::recorder::RecorderConfig;
use profscope_agent::watchdog::WatchdogConfig;
use profscope_benches::{SERVE_ENV, ab_children, env_or, median_spread, serve_child};

/// CPU time of this process's threads named `name` (comm, at most 15
/// bytes), from `/proc/self/task/*/schedstat` (ns on CPU), by thread id.
fn thread_cpu(name: &str) -> std::collections::HashMap<String, u64> {
    let mut by_tid = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().is_empty() || !name.starts_with(comm.trim_end()) {
            continue;
        }
        let schedstat = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
        {
            by_tid.insert(entry.file_name().to_string_lossy().into_owned(), ns);
        }
    }
    by_tid
}

/// CPU used between two readings by the threads present in both, seconds.
fn cpu_between(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> f64 {
    after
        .iter()
        .filter_map(|(tid, ns)| before.get(tid).map(|b| ns.saturating_sub(*b)))
        .sum::<u64>() as f64
        / 1e9
}

#[inline(never)]
fn busy(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

fn main() {
    if std::env::var(SERVE_ENV).as_deref() == Ok("service") {
        service();
    }
    let secs: u64 = env_or("PROFSCOPE_BENCH_SECS", 20);
    let runs: usize = env_or("PROFSCOPE_BENCH_RUNS", 3);
    if std::env::var("PROFSCOPE_BENCH_ONLY").as_deref() == Ok("trigger") {
        trigger_to_listed(runs);
        return;
    }

    // Poll stamps: many runs of 10 M pairs.
    let mut per_poll = Vec::new();
    for _ in 0..(runs * 3) {
        let n = 10_000_000;
        let t0 = Instant::now();
        profscope_agent::probes::poll_stamps(n);
        per_poll.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    let (m, lo, hi) = median_spread(&per_poll);
    println!("poll stamp (enter + exit): median {m:.2} ns a poll (runs {lo:.2}..{hi:.2})");
    if std::env::var("PROFSCOPE_BENCH_ONLY").as_deref() == Ok("stamps") {
        return;
    }

    println!("recorder and watchdog: {runs} runs of {secs} s, 2 threads busy");
    let (mut shares, mut monitor_shares, mut bare_shares, mut bytes, mut reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let agent = Agent::builder()
            .recorder(RecorderConfig::default())
            .watchdog(WatchdogConfig::default())
            .build()
            .expect("agent");
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || busy(&stop))
            })
            .collect();
        // The floor under the monitor: a thread that only sleeps for the
        // monitor's tick (threshold/4) in a loop, measured the same way.
        let tick = WatchdogConfig::default().threshold / 4;
        workers.push({
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bare-sleeper".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                    }
                    0
                })
                .unwrap()
        });
        let (_, before) = profscope_agent::probes::handler_cost_histogram();
        let cpu0 = profscope_test_support::process_cpu_time();
        let (rec0, mon0, agg0, bare0) = (
            thread_cpu("profscope-recorder"),
            thread_cpu("profscope-watchdog"),
            thread_cpu("profscope-sampler"),
            thread_cpu("bare-sleeper"),
        );
        std::thread::sleep(Duration::from_secs(secs));
        let (rec1, mon1, agg1, bare1) = (
            thread_cpu("profscope-recorder"),
            thread_cpu("profscope-watchdog"),
            thread_cpu("profscope-sampler"),
            thread_cpu("bare-sleeper"),
        );
        let cpu = (profscope_test_support::process_cpu_time() - cpu0).as_secs_f64();
        let (width, after) = profscope_agent::probes::handler_cost_histogram();
        let handler_ns: f64 = after
            .iter()
            .zip(&before)
            .enumerate()
            .map(|(i, (a, b))| (a - b) as f64 * (i as f64 + 0.5) * width as f64)
            .sum();
        let recorder = cpu_between(&rec0, &rec1) + handler_ns / 1e9;
        let share = recorder / cpu * 100.0;
        let monitor = cpu_between(&mon0, &mon1) / secs as f64 * 100.0;
        let bare = cpu_between(&bare0, &bare1) / secs as f64 * 100.0;
        // The stream's aggregator, which both keep running (drains, thread
        // scans, the mapping snapshot kept fresh).
        let aggregator = cpu_between(&agg0, &agg1) / secs as f64 * 100.0;
        let r = agent.recorder().unwrap();
        // The HTTP path reads with the agent's symbolizer: warm after the
        // first read. Both are shown; the warm one is the figure.
        let read = || {
            let t0 = Instant::now();
            let capture = r.recent_cpu(Duration::from_secs(60)).unwrap();
            let profile = capture.to_profile(agent.symbolizer());
            let encoded = profscope_profile::write_gz(&profile).unwrap();
            (t0.elapsed().as_secs_f64() * 1000.0, encoded.len())
        };
        let (cold_ms, _) = read();
        let (read_ms, encoded) = read();
        let status = r.status();
        println!(
            "run {run}: recorder {recorder:.4} s of {cpu:.2} s service CPU ({share:.4} %); \
             watchdog monitor {monitor:.5} % of a core (a bare sleeper at its tick \
             {bare:.5} %); stream aggregator {aggregator:.4} % of a \
             core; ring {} bytes over {} s; \
             recent_cpu(60 s) read + symbolize + encode {read_ms:.1} ms warm, {cold_ms:.1} ms \
             cold ({encoded} bytes)",
            status.ring_bytes, status.cpu_seconds,
        );
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        shares.push(share);
        monitor_shares.push(monitor);
        bare_shares.push(bare);
        bytes.push(status.ring_bytes as f64);
        reads.push(read_ms);
    }
    // Detection latency: polls blocked 300 ms on a thread of their own,
    // from the threshold crossing to the first directed sample.
    let agent = Agent::builder()
        .watchdog(WatchdogConfig::default())
        .build()
        .expect("agent");
    let threshold = agent.watchdog().unwrap().config().threshold;
    let mut latencies = Vec::new();
    for _ in 0..(runs * 5) {
        let started = Instant::now();
        std::thread::Builder::new()
            .name("stuck-poll".into())
            .spawn(|| profscope_agent::probes::blocking_poll(Duration::from_millis(300)))
            .unwrap()
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let stall = agent
            .watchdog()
            .unwrap()
            .recent_stalls()
            .into_iter()
            .rev()
            .find(|s| s.thread == "stuck-poll");
        if let Some(first) = stall.and_then(|s| s.first_sample) {
            let crossing = started + threshold;
            latencies.push(first.saturating_duration_since(crossing).as_secs_f64() * 1000.0);
        }
    }
    // Only the agents below run monitors from here on.
    drop(agent);
    let (m, lo, hi) = median_spread(&latencies);
    println!(
        "watchdog detection: threshold crossing to first directed sample, median {m:.1} ms \
         (max {hi:.1}, min {lo:.1}; {} of {} polls; threshold/4 = {:.0} ms)",
        latencies.len(),
        runs * 5,
        threshold.as_secs_f64() * 250.0
    );

    trigger_to_listed(runs);
    recorder_end_to_end();

    // The monitor while polls come and go (one every millisecond, so it
    // never dozes), against the bare sleeper in the same windows.
    let (mut polling, mut polling_bare) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (m, b) = monitor_while_polling(secs);
        polling.push(m);
        polling_bare.push(b);
    }

    let (m, lo, hi) = median_spread(&shares);
    println!("recorder CPU: median {m:.4} % of service CPU (runs {lo:.4}..{hi:.4})");
    let (m, lo, hi) = median_spread(&monitor_shares);
    println!(
        "watchdog monitor CPU, no polls (it dozes): median {m:.5} % of a core (runs {lo:.5}..{hi:.5})"
    );
    let (m, lo, hi) = median_spread(&bare_shares);
    println!(
        "a thread that only sleeps the monitor's tick: median {m:.5} % of a core (runs {lo:.5}..{hi:.5})"
    );
    let (m, lo, hi) = median_spread(&polling);
    println!(
        "watchdog monitor CPU while polls come and go: median {m:.5} % of a core (runs {lo:.5}..{hi:.5})"
    );
    let (m, lo, hi) = median_spread(&polling_bare);
    println!("  the bare sleeper beside it: median {m:.5} % of a core (runs {lo:.5}..{hi:.5})");
    let (m, lo, hi) = median_spread(&bytes);
    println!("recorder ring: median {m:.0} bytes after {secs} s (runs {lo:.0}..{hi:.0})");
    let (m, lo, hi) = median_spread(&reads);
    println!("recent 60 s read: median {m:.1} ms (runs {lo:.1}..{hi:.1})");
}

/// Trigger to incident listed: a heap line 64 MiB above the process's RSS
/// (read by the recorder once a second), then 160 MiB allocated and
/// touched at once; the time from the start of the touching (before the
/// figure crosses the line: an upper bound) to the incident showing in the
/// listing. A fresh recorder each time (its line from the RSS of the
/// moment), started at a phase that moves against the allocation.
fn trigger_to_listed(runs: usize) {
    use profscope_agent::recorder::HeapGrowth;
    let mut latencies = Vec::new();
    let mut source = String::new();
    for rep in 0..runs * 2 {
        let mut config = RecorderConfig::default();
        config.triggers.heap_growth =
            Some(HeapGrowth::bytes(u64::MAX).above(rss_bytes() + (64 << 20)));
        config.after = Duration::from_secs(1);
        let agent = Agent::builder().recorder(config).build().expect("agent");
        let recorder = agent.recorder().unwrap();
        std::thread::sleep(Duration::from_millis(1_000 + (rep as u64 * 389) % 1000));
        // More than the line: the previous agent's memory may still be
        // on its way out. Timed from the start of the touching, before the
        // figure crosses the line: an upper bound of the latency.
        let crossed = Instant::now();
        let block = std::hint::black_box(vec![1u8; 160 << 20]);
        let deadline = crossed + Duration::from_secs(5);
        while recorder.incidents().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(i) = recorder.incidents().first() {
            latencies.push(crossed.elapsed().as_secs_f64() * 1000.0);
            source = i
                .figures
                .keys()
                .find_map(|k| k.strip_prefix("source_"))
                .unwrap_or_default()
                .to_string();
        } else {
            eprintln!("not fired within 5 s: {:?}", recorder.status());
        }
        drop(block);
        drop(agent);
    }
    let (m, lo, hi) = median_spread(&latencies);
    println!(
        "trigger to incident listed (heap line, figure {source}): median {m:.0} ms \
         (min {lo:.0}, max {hi:.0}; {} of {} fired)",
        latencies.len(),
        runs * 2
    );
}

/// This process's resident set, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The watchdog's monitor CPU (% of a core) while a thread stamps a short
/// poll every millisecond, and a bare sleeper's at the monitor's tick.
fn monitor_while_polling(secs: u64) -> (f64, f64) {
    let agent = Agent::builder()
        .watchdog(WatchdogConfig::default())
        .build()
        .expect("agent");
    let tick = agent.watchdog().unwrap().config().threshold / 4;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = [("poller", Duration::from_millis(1)), ("bare-sleeper", tick)]
        .into_iter()
        .map(|(name, every)| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if name == "poller" {
                            profscope_agent::probes::poll_stamps(1);
                        }
                        std::thread::sleep(every);
                    }
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (mon0, bare0) = (thread_cpu("profscope-watchdog"), thread_cpu("bare-sleeper"));
    std::thread::sleep(Duration::from_secs(secs));
    let (mon1, bare1) = (thread_cpu("profscope-watchdog"), thread_cpu("bare-sleeper"));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop(agent);
    (
        cpu_between(&mon0, &mon1) / secs as f64 * 100.0,
        cpu_between(&bare0, &bare1) / secs as f64 * 100.0,
    )
}

/// A route that costs ~50 µs of CPU: a checksum over 64 KiB.
async fn work() -> String {
    let data = vec![0x5au8; 64 << 10];
    let mut sum = 0u64;
    for (i, b) in std::hint::black_box(data).iter().enumerate() {
        sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b) ^ i as u64);
    }
    format!("{sum}\n")
}

/// Child: `/work` and the agent's endpoints, the recorder on at its
/// defaults when `PROFSCOPE_BENCH_RECORDER=1`.
fn service() -> ! {
    let recorder = std::env::var("PROFSCOPE_BENCH_RECORDER").as_deref() == Ok("1");
    serve_child(|| {
        let builder = Agent::builder();
        let builder = if recorder {
            builder.recorder(RecorderConfig::default())
        } else {
            builder
        };
        let agent = builder.build().expect("agent");
        axum::Router::new()
            .route("/work", axum::routing::get(work))
            .merge(agent.router())
    });
    unreachable!("serve_child never returns")
}

/// The service's CPU-ms per 1,000 requests, recorder off (A) vs on (B).
fn recorder_end_to_end() {
    let pairs: usize = env_or("PROFSCOPE_BENCH_PAIRS", 7);
    let secs: f64 = env_or("PROFSCOPE_BENCH_LOAD_SECS", 3.0);
    ab_children(
        "/work (~50 µs of CPU), recorder off (A) vs on at its defaults (B)",
        "/work",
        4,
        (pairs, secs),
        ("service", &[("PROFSCOPE_BENCH_RECORDER", "0")]),
        ("service", &[("PROFSCOPE_BENCH_RECORDER", "1")]),
    )
    .print();
}
