//! Heap profiling figures, each measured in child processes of this binary
//! (jemalloc's options are per process):
//!
//! 1. accuracy — repeated runs retaining 64 MiB as 1 MiB and as 1 KiB
//!    objects at the default 512 KiB sampling; mean and spread of the
//!    estimate / truth ratio (the unsampling formula's bias);
//! 2. overhead — an allocation-heavy route, jemalloc with profiling off
//!    (`prof:false`) vs compiled in and active at 512 KiB, alternating A/B
//!    pairs, medians with their spread;
//! 3. endpoint — `/debug/pprof/heap` latency with ~10k distinct sampled
//!    stacks, cold and warm (p50/p90), and the agent's own memory (symbol
//!    cache and parsed dumps included) after 100 heap requests.
//!
//! ```text
//! cargo bench -p profscope-benches --bench heap
//! PROFSCOPE_BENCH_PAIRS=7 PROFSCOPE_BENCH_RUNS=200 cargo bench -p profscope-benches --bench heap
//! ```

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use profscope_agent::Agent;
use profscope_agent::heap::{HeapProfiler, HeapSnapshot};
use profscope_agent::symbols::Symbolizer;
use profscope_benches::{SERVE_ENV, ab_children, alloc_route, env_or, median_spread, serve_child};
use profscope_examples::{retain_kib_blocks, retain_mib_blocks};

profscope_agent::jemalloc_profiling!();

fn main() {
    match std::env::var(SERVE_ENV).as_deref() {
        Ok("accuracy") => accuracy_child(),
        Ok("alloc-service") => alloc_service(),
        Ok("endpoint") => endpoint_child(),
        _ => parent(),
    }
}

fn parent() {
    let runs: usize = env_or("PROFSCOPE_BENCH_RUNS", 2000);
    let pairs: usize = env_or("PROFSCOPE_BENCH_PAIRS", 5);
    let secs: f64 = env_or("PROFSCOPE_BENCH_SECS", 3.0);

    println!("== accuracy: {runs} runs of 64 MiB retained, default 512 KiB sampling");
    run_child("accuracy", &[("PROFSCOPE_BENCH_RUNS", &runs.to_string())]);

    println!("\n== overhead: /alloc route, {pairs} A/B pairs of {secs} s, 8 connections");
    ab_children(
        "/alloc, jemalloc prof off (A) vs on at 512 KiB (B)",
        "/alloc",
        8,
        (pairs, secs),
        ("alloc-service", &[("_RJEM_MALLOC_CONF", "prof:false")]),
        ("alloc-service", &[]),
    )
    .print();

    println!("\n== endpoint: ~10k distinct sampled stacks (sampling every 4 KiB)");
    run_child("endpoint", &[("_RJEM_MALLOC_CONF", "lg_prof_sample:12")]);
}

fn run_child(mode: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("exe");
    let status = std::process::Command::new(exe)
        .env(SERVE_ENV, mode)
        .envs(env.iter().copied())
        .status()
        .expect("child");
    assert!(status.success(), "{mode} child failed");
}

// ---- accuracy -------------------------------------------------------------

/// In-use bytes whose leaf frame is function `name`.
fn flat_inuse(snapshot: &HeapSnapshot, symbolizer: &Symbolizer, name: &str) -> i64 {
    let profile = snapshot.to_profile(symbolizer, "inuse_space", SystemTime::now());
    profscope_profile::fold::fold(&profile, 3)
        .iter()
        .filter(|(stack, _)| {
            stack
                .rsplit(';')
                .next()
                .is_some_and(|leaf| leaf.ends_with(name))
        })
        .map(|(_, v)| v)
        .sum()
}

fn accuracy_child() {
    let runs: usize = env_or("PROFSCOPE_BENCH_RUNS", 2000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let heap = HeapProfiler::new(None);
    let symbolizer = Symbolizer::new();
    let truth = 64.0 * 1048576.0;
    let (mut mib, mut kib) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut big = Vec::with_capacity(64);
        let mut small = Vec::with_capacity(65_536);
        retain_mib_blocks(&mut big);
        retain_kib_blocks(&mut small);
        let snap = rt.block_on(heap.snapshot()).expect("heap snapshot");
        mib.push(flat_inuse(&snap, &symbolizer, "retain_mib_blocks") as f64 / truth);
        kib.push(flat_inuse(&snap, &symbolizer, "retain_kib_blocks") as f64 / truth);
        drop(black_box((big, small)));
    }
    for (name, xs) in [("1 MiB objects", &mib), ("1 KiB objects", &kib)] {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
            / (xs.len() - 1).max(1) as f64)
            .sqrt();
        let (median, lo, hi) = median_spread(xs);
        println!(
            "  {name}: estimate/truth mean {mean:.4} (bias {:+.2}%), sd {sd:.4}, median {median:.4}, range {lo:.3}..{hi:.3}",
            (mean - 1.0) * 100.0
        );
    }
}

// ---- overhead -------------------------------------------------------------

fn alloc_service() {
    serve_child(|| {
        let agent = Agent::builder().build().expect("agent");
        axum::Router::new()
            .route("/alloc", axum::routing::get(alloc_route))
            .merge(agent.router())
    });
}

// ---- endpoint -------------------------------------------------------------

const LEVELS: u32 = 14;

#[inline(never)]
fn left(depth: u32, bits: u32, out: &mut Vec<Vec<u8>>) {
    step(depth, bits, out);
    // Work after the call keeps it a real call, not a tail jump that would
    // merge stacks.
    black_box(out.len());
}

#[inline(never)]
fn right(depth: u32, bits: u32, out: &mut Vec<Vec<u8>>) {
    step(depth, bits, out);
    black_box(out.len());
}

/// One call path per `bits`: 2^LEVELS distinct stacks.
#[inline(never)]
fn step(depth: u32, bits: u32, out: &mut Vec<Vec<u8>>) {
    if depth == 0 {
        out.push(vec![1u8; 4096]);
    } else if bits & 1 == 0 {
        left(depth - 1, bits >> 1, out);
    } else {
        right(depth - 1, bits >> 1, out);
    }
    black_box(out.len());
}

fn allocated() -> f64 {
    profscope_agent::heap::jemalloc_stats().map_or(0.0, |s| s.allocated as f64) / 1048576.0
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / 1048576.0)
}

fn endpoint_child() {
    let mut held = Vec::with_capacity(1 << LEVELS);
    for bits in 0..(1u32 << LEVELS) {
        step(LEVELS, bits, &mut held);
    }
    // Keep the ~10k stacks but stop sampling: at 4 KiB the agent's own
    // allocations would otherwise be sampled (each a libgcc unwind) and add
    // new stacks on every request, which is not what this measures.
    HeapProfiler::set_active(false).expect("prof.active");
    let (alloc0, rss0) = (allocated(), rss_mib());
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let running = rt
        .block_on(
            Agent::builder()
                .addr("127.0.0.1:0".parse().expect("addr"))
                .build()
                .expect("agent")
                .spawn(),
        )
        .expect("spawn");
    let url = format!("http://{}/debug/pprof/heap", running.local_addr());
    let get = || {
        let t = Instant::now();
        let r = ureq::get(&url).call().expect("heap request");
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut body).expect("body");
        (t.elapsed(), body)
    };
    // The highest jemalloc `allocated` seen while requests run, every 5 ms.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0f64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(allocated());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let (cold, body) = get();
    let (alloc1, rss1) = (allocated(), rss_mib());
    let profile = {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut raw)
            .expect("gzip");
        <profscope_profile::Profile as prost::Message>::decode(&raw[..]).expect("pprof")
    };
    // Keep only the figures, so the memory readings below are the agent's.
    let shape = (
        profile.sample.len(),
        profile.location.len(),
        body.len() / 1024,
    );
    drop((profile, body));
    // PROFSCOPE_BENCH_CPU_PROFILE=FILE: profile the warm requests with the
    // agent itself (how the figures below were investigated).
    let profiler = std::env::var("PROFSCOPE_BENCH_CPU_PROFILE")
        .ok()
        .map(|out| {
            let url = url.replace("/heap", "/profile?seconds=8");
            std::thread::spawn(move || {
                let r = ureq::get(&url).call().expect("cpu profile");
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut body).expect("body");
                std::fs::write(out, body).expect("write profile");
            })
        });
    let mut warm: Vec<f64> = Vec::new();
    for _ in 0..100 {
        warm.push(get().0.as_secs_f64() * 1000.0);
    }
    if let Some(p) = profiler {
        let _ = p.join();
    }
    let (alloc2, rss2) = (allocated(), rss_mib());
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.join().expect("peak sampler");
    // The janitor frees parsed debug info after it has been idle.
    std::thread::sleep(
        profscope_agent::symbols::DEBUG_INFO_IDLE + std::time::Duration::from_secs(3),
    );
    let (alloc3, rss3) = (allocated(), rss_mib());
    warm.sort_by(f64::total_cmp);
    let (p50, lo, hi) = median_spread(&warm);
    println!(
        "  profile: {} samples, {} locations, {} KiB gzipped",
        shape.0, shape.1, shape.2
    );
    println!(
        "  latency: cold {:.1} ms; warm p50 {p50:.1} ms, p90 {:.1} ms, range {lo:.1}..{hi:.1} ms (100 requests)",
        cold.as_secs_f64() * 1000.0,
        warm[warm.len() * 9 / 10]
    );
    println!(
        "  agent memory (jemalloc allocated): +{:.1} MiB after agent start and 1 request, +{:.1} MiB after 101 requests",
        alloc1 - alloc0,
        alloc2 - alloc0
    );
    println!(
        "  agent memory at its peak while requests ran: +{:.1} MiB",
        peak - alloc0
    );
    println!(
        "  agent memory once idle ({:?} after the last request): +{:.1} MiB",
        profscope_agent::symbols::DEBUG_INFO_IDLE,
        alloc3 - alloc0
    );
    println!(
        "  RSS: +{:.1} MiB after 1 request, +{:.1} MiB after 101, +{:.1} MiB once idle (service baseline {rss0:.0} MiB)",
        rss1 - rss0,
        rss2 - rss0,
        rss3 - rss0
    );
    drop(held);
}
