//! The sampling allocator's figures (issue 30), this binary running on
//! `SampledAlloc<System>` itself:
//!
//! 1. pairs — alloc+free of 64-byte objects, 1 and 4 threads, the wrapper
//!    vs the bare inner allocator (System and mimalloc), alternating rounds,
//!    median ns per pair and the difference;
//! 2. sampled — one sampled allocation (+ its free) from a 20-frame stack
//!    (period 1 byte: every allocation sampled), median ns;
//! 3. endpoint — `/debug/pprof/heap` with ~10k distinct sampled stacks:
//!    the cold request, the next 30 (which still learn the agent's own new
//!    allocation stacks), then p50/p90 of 100 more; and the request's
//!    phases in process;
//! 4. route — the allocation-heavy route of the jemalloc bench (`heap`),
//!    served by child processes of this binary: the wrapper sampling at
//!    512 KiB (B) vs the wrapper never sampling (A, period 2^62: the
//!    countdown only), alternating A/B pairs; with the pairs figure above,
//!    the whole cost of the wrapper.
//!
//! ```text
//! cargo bench -p profscope-benches --bench sampled_alloc
//! PROFSCOPE_BENCH_ONLY=endpoint cargo bench -p profscope-benches --bench sampled_alloc
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use profscope_agent::heap::{SampledAlloc, set_sample_period};
use profscope_benches::{SERVE_ENV, ab_children, alloc_route, env_or, median_spread, serve_child};

profscope_agent::sampled_alloc!(System);

static WRAPPED_SYSTEM: SampledAlloc<System> = SampledAlloc::new(System);
static WRAPPED_MIMALLOC: SampledAlloc<MiMalloc> = SampledAlloc::new(MiMalloc);

fn main() {
    if std::env::var(SERVE_ENV).as_deref() == Ok("alloc-service") {
        alloc_service();
    }
    if std::env::var("PROFSCOPE_BENCH_ONLY").as_deref() == Ok("endpoint") {
        println!("== endpoint: /debug/pprof/heap at ~10k distinct sampled stacks");
        endpoint();
        return;
    }
    let rounds: usize = env_or("PROFSCOPE_BENCH_ROUNDS", 9);
    let pairs: usize = env_or("PROFSCOPE_BENCH_PAIRS_PER_ROUND", 2_000_000);
    println!(
        "== pairs: alloc+free of 64 B, {rounds} alternating rounds of {pairs} pairs per thread"
    );
    for threads in [1usize, 4] {
        pair_figures("System", threads, rounds, pairs, &System, &WRAPPED_SYSTEM);
        pair_figures(
            "mimalloc",
            threads,
            rounds,
            pairs,
            &MiMalloc,
            &WRAPPED_MIMALLOC,
        );
    }
    println!("\n== sampled: one sampled allocation + free from a 20-frame stack");
    sampled_cost();
    println!("\n== endpoint: /debug/pprof/heap at ~10k distinct sampled stacks");
    endpoint();
    route();
}

/// The allocation-heavy route with the wrapper never sampling (A) and
/// sampling at 512 KiB (B).
fn route() {
    let pairs: usize = env_or("PROFSCOPE_BENCH_PAIRS", 9);
    let secs: f64 = env_or("PROFSCOPE_BENCH_SECS", 3.0);
    println!("\n== route: /alloc, {pairs} A/B pairs of {secs} s, 8 connections");
    let never = (1u64 << 62).to_string();
    ab_children(
        "/alloc, SampledAlloc<System> never sampling (A) vs at 512 KiB (B)",
        "/alloc",
        8,
        (pairs, secs),
        ("alloc-service", &[("PROFSCOPE_BENCH_PERIOD", &never)]),
        ("alloc-service", &[]),
    )
    .print();
}

/// Child: the route and the agent's endpoints, at the period asked for.
fn alloc_service() -> ! {
    set_sample_period(env_or(
        "PROFSCOPE_BENCH_PERIOD",
        profscope_agent::heap::DEFAULT_PERIOD,
    ));
    serve_child(|| {
        let agent = profscope_agent::Agent::builder().build().expect("agent");
        axum::Router::new()
            .route("/alloc", axum::routing::get(alloc_route))
            .merge(agent.router())
    });
    unreachable!("serve_child never returns")
}

/// ns per alloc+free pair of `alloc` on `threads` threads.
fn pairs_ns(alloc: &'static (dyn GlobalAlloc + Sync), threads: usize, pairs: usize) -> f64 {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                for _ in 0..pairs {
                    // SAFETY: a valid layout; the block goes back at once.
                    unsafe {
                        let p = alloc.alloc(layout);
                        black_box(p);
                        alloc.dealloc(p, layout);
                    }
                }
                start.elapsed().as_nanos() as f64 / pairs as f64
            })
        })
        .collect();
    let per: Vec<f64> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    per.iter().sum::<f64>() / per.len() as f64
}

fn pair_figures(
    name: &str,
    threads: usize,
    rounds: usize,
    pairs: usize,
    bare: &'static (dyn GlobalAlloc + Sync),
    wrapped: &'static (dyn GlobalAlloc + Sync),
) {
    let _ = pairs_ns(bare, threads, pairs / 10);
    let _ = pairs_ns(wrapped, threads, pairs / 10);
    let (mut a, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift hits both.
        let (x, y) = if round % 2 == 0 {
            let x = pairs_ns(bare, threads, pairs);
            (x, pairs_ns(wrapped, threads, pairs))
        } else {
            let y = pairs_ns(wrapped, threads, pairs);
            (pairs_ns(bare, threads, pairs), y)
        };
        a.push(x);
        b.push(y);
        d.push(y - x);
    }
    let (ma, _, _) = median_spread(&a);
    let (mb, _, _) = median_spread(&b);
    let (md, lo, hi) = median_spread(&d);
    println!(
        "  {name:8} {threads} thread(s): bare {ma:.2} ns, wrapped {mb:.2} ns, added {md:+.2} ns per pair (rounds {lo:+.2}..{hi:+.2})"
    );
}

#[inline(never)]
fn at_depth(depth: usize, n: usize, layout: Layout) -> Duration {
    if depth > 1 {
        return black_box(at_depth(black_box(depth - 1), n, layout));
    }
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: a valid layout; the block goes back at once.
        unsafe {
            let p = WRAPPED_SYSTEM.alloc(layout);
            black_box(p);
            WRAPPED_SYSTEM.dealloc(p, layout);
        }
    }
    start.elapsed()
}

fn sampled_cost() {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let n = 10_000;
    set_sample_period(1);
    let before = profscope_agent::probes::sampled_counters();
    let mut per = Vec::new();
    for _ in 0..15 {
        per.push(at_depth(20, n, layout).as_nanos() as f64 / n as f64);
        // The helper recycles freed slots every 100 ms.
        std::thread::sleep(Duration::from_millis(250));
    }
    set_sample_period(profscope_agent::heap::DEFAULT_PERIOD);
    let after = profscope_agent::probes::sampled_counters();
    let (m, lo, hi) = median_spread(&per);
    println!(
        "  sampled alloc+free, 64 B, 20 frames deep: median {m:.0} ns (batches {lo:.0}..{hi:.0}); {} sampled, {} overflowed",
        after.0 - before.0,
        after.1 - before.1
    );
}

/// Allocates one 8 KiB block from a stack chosen by `path`'s low `bits`
/// bits: 2^bits distinct stacks.
#[inline(never)]
fn branch(path: u32, bits: u32, out: &mut Vec<Vec<u8>>) {
    if bits == 0 {
        out.push(vec![1u8; 8192]);
        return;
    }
    if path & 1 == 0 {
        left(path >> 1, bits - 1, out);
    } else {
        right(path >> 1, bits - 1, out);
    }
    black_box(());
}

#[inline(never)]
fn left(path: u32, bits: u32, out: &mut Vec<Vec<u8>>) {
    branch(path, bits, out);
    black_box(());
}

#[inline(never)]
fn right(path: u32, bits: u32, out: &mut Vec<Vec<u8>>) {
    branch(path, bits, out);
    black_box(());
}

fn endpoint() {
    set_sample_period(1024);
    let mut kept = Vec::with_capacity(10_000);
    for path in 0..10_000u32 {
        branch(path, 14, &mut kept);
    }
    set_sample_period(profscope_agent::heap::DEFAULT_PERIOD);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let running = rt
        .block_on(
            profscope_agent::Agent::builder()
                .addr("127.0.0.1:0".parse().expect("addr"))
                .build()
                .expect("agent")
                .spawn(),
        )
        .expect("spawn");
    let url = format!("http://{}/debug/pprof/heap", running.local_addr());
    let fetch = || {
        let start = Instant::now();
        let reply = ureq::get(&url).call().expect("heap");
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut reply.into_reader(), &mut body).expect("body");
        (start.elapsed().as_secs_f64() * 1e3, body.len())
    };
    let (cold, size) = fetch();
    // The first requests also learn the agent's own new allocation stacks
    // (symbolizing their addresses): reported apart from the steady state.
    let first: Vec<f64> = (0..30).map(|_| fetch().0).collect();
    let requests: usize = env_or("PROFSCOPE_BENCH_REQUESTS", 100);
    let steady: Vec<f64> = (0..requests).map(|_| fetch().0).collect();
    let quantile = |times: &[f64], q: f64| {
        let mut sorted = times.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * q) as usize]
    };
    let profile = {
        let reply = ureq::get(&url).call().expect("heap");
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut reply.into_reader(), &mut body).expect("body");
        body
    };
    // The HTTP round trip alone, on an endpoint with no work to speak of.
    let trivial = format!("http://{}/debug/pprof/cmdline", running.local_addr());
    let round_trips: Vec<f64> = (0..requests)
        .map(|_| {
            let start = Instant::now();
            let reply = ureq::get(&trivial).call().expect("cmdline");
            std::io::Read::read_to_end(&mut reply.into_reader(), &mut Vec::new()).expect("body");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let stacks = count_samples(&profile);
    println!(
        "  {stacks} samples in the profile ({size} bytes gzipped): cold {cold:.1} ms; next 30 p50 {:.2} ms; then {requests}: p50 {:.2} ms, p90 {:.2} ms",
        quantile(&first, 0.5),
        quantile(&steady, 0.5),
        quantile(&steady, 0.9)
    );
    println!(
        "  an HTTP round trip with no work (/debug/pprof/cmdline): p50 {:.2} ms",
        quantile(&round_trips, 0.5)
    );
    phases(&rt, requests);
    drop(black_box(kept));
}

/// The request's phases one by one, in process (medians of `n`):
/// snapshot, the profile built and encoded as protobuf, gzip; and the
/// last two as the endpoint makes them (encoded and deflated in two parts
/// at once).
fn phases(rt: &tokio::runtime::Runtime, n: usize) {
    let heap = profscope_agent::heap::HeapProfiler::new(None);
    let symbolizer = profscope_agent::symbols::Symbolizer::new();
    let mut times: [Vec<f64>; 4] = Default::default();
    let mut raw_len = 0;
    for _ in 0..n.max(1) {
        let at = Instant::now();
        let snapshot = rt.block_on(heap.snapshot()).expect("snapshot");
        let t0 = at.elapsed();
        let raw = heap.pprof(
            &snapshot,
            &symbolizer,
            "inuse_space",
            std::time::SystemTime::now(),
        );
        let t1 = at.elapsed();
        let gz = profscope_profile::gzip_two_threads(&raw, || ()).expect("gzip");
        let t2 = at.elapsed();
        // What the endpoint does instead: both at once, in two parts.
        let gzipped = heap
            .gzipped_pprof(
                &snapshot,
                &symbolizer,
                "inuse_space",
                std::time::SystemTime::now(),
            )
            .expect("gzipped");
        let t3 = at.elapsed();
        raw_len = raw.len();
        black_box((gz, gzipped));
        for (i, d) in [t0, t1 - t0, t2 - t1, t3 - t2].into_iter().enumerate() {
            times[i].push(d.as_secs_f64() * 1e3);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [a, b, c, d] = &mut times;
    println!(
        "  phases (median of {n}, the first symbolizing): snapshot {:.2} ms, profile as protobuf {:.2} ms ({raw_len} bytes), gzip {:.2} ms; the two as the endpoint makes them (in two parts at once) {:.2} ms",
        median(a),
        median(b),
        median(c),
        median(d)
    );
}

fn count_samples(body: &[u8]) -> usize {
    use prost::Message;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut raw).expect("gzip");
    profscope_profile::Profile::decode(&raw[..]).map_or(0, |p| p.sample.len())
}
