//! `/debug/memory` on a service running on jemalloc: retained memory is
//! explained by the heap line, and freed memory the allocator keeps is
//! named as such (with what to do about it).

mod common;

use common::{get, in_process_agent};
use profscope_examples::retain_mib_blocks;

// Sample every 16 KiB on average: the heap line is then within ~1 %.
profscope_agent::jemalloc_profiling!(lg_prof_sample = 14);

const MIB: f64 = 1048576.0;

fn report(base: &str) -> serde_json::Value {
    let reply = get(&format!("{base}/debug/memory"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn retained_memory_is_explained_and_freed_memory_kept_is_named() {
    let (_rt, running) = in_process_agent();
    let base = format!("http://{}", running.local_addr());
    // Keep freed pages resident: no decay, so nothing is purged behind the
    // test's back.
    for arena in 0..tikv_jemalloc_ctl::arenas::narenas::read().unwrap() {
        let name = format!("arena.{arena}.dirty_decay_ms\0");
        // SAFETY: `arena.<i>.dirty_decay_ms` takes an ssize_t; -1 disables purging.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(name.as_bytes(), -1isize) };
        let name = format!("arena.{arena}.muzzy_decay_ms\0");
        // SAFETY: as above.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(name.as_bytes(), -1isize) };
    }

    // 1. 64 MiB retained: the heap profile's line explains it.
    let mut held = Vec::new();
    retain_mib_blocks(&mut held);
    assert_eq!(get(&format!("{base}/debug/pprof/heap")).status, 200);
    let r = report(&base);
    let heap = r["heap_profile"]["in_use_bytes"].as_f64().unwrap();
    let rss = r["rss_bytes"].as_f64().unwrap();
    let unexplained = r["unexplained_bytes"].as_f64().unwrap();
    eprintln!(
        "retained 64 MiB: heap line {:.1} MiB, rss {:.1} MiB, unexplained {:.1} MiB",
        heap / MIB,
        rss / MIB,
        unexplained / MIB
    );
    assert!(
        (64.0 * MIB * 0.95..=64.0 * MIB * 1.3).contains(&heap),
        "heap line {heap}"
    );
    assert!(
        unexplained.abs() < rss * 0.10,
        "unexplained {unexplained} of {rss}"
    );
    assert!(r["heap_profile"]["age_seconds"].as_f64().unwrap() < 60.0);
    drop(held);

    // 2. 200 MiB of small objects allocated and freed: the allocator holds
    // it, and the report says so and what to do.
    let mut small: Vec<Vec<u8>> = Vec::with_capacity(200 * 1024);
    for i in 0..200 * 1024 {
        small.push(vec![i as u8; 1000]);
    }
    drop(small);
    let r = report(&base);
    let j = &r["jemalloc"];
    let kept = j["resident"].as_f64().unwrap() - j["active"].as_f64().unwrap();
    eprintln!(
        "after freeing 200 MiB: allocated {:.1} MiB, active {:.1} MiB, resident {:.1} MiB",
        j["allocated"].as_f64().unwrap() / MIB,
        j["active"].as_f64().unwrap() / MIB,
        j["resident"].as_f64().unwrap() / MIB
    );
    assert!(kept > 150.0 * MIB, "resident - active = {kept}");
    let line = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "freed, kept by the allocator")
        .expect("the kept line");
    assert!(line["bytes"].as_f64().unwrap() > 150.0 * MIB, "{line}");
    let text = get(&format!("{base}/debug/memory?debug=1")).text();
    assert!(text.contains("freed, kept by the allocator"), "{text}");
    assert!(text.contains("dirty_decay_ms"), "{text}");
    // It says why its lines add up to more than rss.
    assert!(
        text.contains("Why the lines add up to more than rss")
            && text.contains("upper bound")
            && text.contains("count one of the two"),
        "{text}"
    );
    // A bad `debug` names this endpoint's meanings: 0 is JSON here.
    let bad = get(&format!("{base}/debug/memory?debug=x"));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("0 = JSON, 1 = text"), "{}", bad.text());
    // The same figures are gauges on /metrics.
    let metrics = get(&format!("{base}/metrics")).text();
    assert!(
        metrics.contains("profscope_memory_unexplained_bytes"),
        "{metrics}"
    );
    assert!(metrics.contains("profscope_memory_rss_bytes"));
}
