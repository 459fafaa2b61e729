//! `/debug/memory`'s cost: the report read in-process (what the endpoint
//! does on a blocking thread), 200 times, on jemalloc with 20 MiB held and
//! a heap profile taken.
//!
//! ```text
//! cargo bench -p profscope-benches --bench memory
//! ```

use std::time::Instant;

use profscope_benches::median_spread;

profscope_agent::jemalloc_profiling!();

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let agent = rt.block_on(async {
        profscope_agent::Agent::builder()
            .addr("127.0.0.1:0".parse().expect("addr"))
            .build()
            .expect("agent")
    });
    let running = rt.block_on(agent.clone().spawn()).expect("serve");
    let held: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8 | 1; 1 << 20]).collect();
    // The heap line comes from the most recent heap profile.
    let heap = format!("http://{}/debug/pprof/heap", running.local_addr());
    ureq::get(&heap).call().expect("heap profile");
    let mut ms = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let report = std::hint::black_box(agent.memory_report());
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(report.rss_bytes > 0);
    }
    let (m, lo, hi) = median_spread(&ms);
    println!(
        "memory report: median {m:.3} ms (spread {lo:.3}..{hi:.3}) over 200 reads; target < 20 ms"
    );
    drop(held);
}
