//! What one push costs to encode: a 10,000-stack CPU profile as the
//! Pyroscope multipart body (gzip pprof + sample_type_config) and as the
//! gzip'd OTLP request, through the agent's own push encoders, 30 times
//! each in alternation; thread CPU time per push, median and spread, and
//! bytes on the wire. Target: < 5 ms CPU per push.
//!
//! ```text
//! cargo bench -p profscope-benches --bench push
//! ```

use std::time::Duration;

use profscope_benches::median_spread;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer for this thread's CPU clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let profile = profscope_test_support::large_profile(10_000, 10_000, 1);
    let (stacks, total) = (profile.sample.len(), profile.sample_total(0));
    let (both, pprof, otlp) = backends(&profile);
    let bytes = profscope_agent::probes::push_bodies(&profile);
    let raw = profscope_profile::encode(&profile);
    let encode = time(30, || profscope_profile::encode(&profile).len());
    let prost_encode = time(30, || prost::Message::encode_to_vec(&profile).len());
    let deflate = time(30, || profscope_profile::gzip(&raw).map_or(0, |b| b.len()));
    let resource = profscope_profile::otlp::ResourceInfo::service("bench");
    let otlp_raw = profscope_profile::otlp::encode_request(&[&profile], &resource);
    let otlp_encode = time(30, || {
        profscope_profile::otlp::encode_request(&[&profile], &resource).len()
    });
    let otlp_deflate = time(30, || {
        profscope_profile::gzip(&otlp_raw).map_or(0, |b| b.len())
    });
    for (what, v) in [
        ("pprof encode", &encode),
        ("pprof encode by prost's derive", &prost_encode),
        ("pprof gzip", &deflate),
        ("otlp encode (pprof to request bytes)", &otlp_encode),
        ("otlp gzip", &otlp_deflate),
    ] {
        let (m, lo, hi) = median_spread(v);
        println!("  {what}: median {m:.2} ms (spread {lo:.2}..{hi:.2})");
    }
    println!(
        "  raw pprof {} KiB, raw OTLP {} KiB",
        raw.len() >> 10,
        otlp_raw.len() >> 10
    );
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/go-heap-after.pb.gz"
    );
    let real = profscope_profile::parse(
        &std::fs::read(fixture).expect("fixture"),
        &Default::default(),
    )
    .expect("parse fixture");
    let real_both = time(30, || {
        let (a, b) = profscope_agent::probes::push_bodies(&real);
        a + b
    });
    let (m, lo, hi) = median_spread(&real_both);
    let (a, b) = profscope_agent::probes::push_bodies(&real);
    println!(
        "Go heap fixture ({} stacks, 4 types) to both backends: median {m:.2} ms CPU (spread {lo:.2}..{hi:.2}); \
         Pyroscope {} KiB, OTLP {} KiB",
        real.sample.len(),
        a >> 10,
        b >> 10
    );
    let (m, lo, hi) = median_spread(&both);
    println!("synthetic profile (random deep frames): {stacks} stacks, {total} samples");
    println!(
        "one period to both backends: median {m:.2} ms CPU (spread {lo:.2}..{hi:.2}); \
         Pyroscope body {} KiB, OTLP body (gzip) {} KiB",
        bytes.0 >> 10,
        bytes.1 >> 10
    );
    per_backend(&pprof, &otlp);

    // The same count of stacks as paths in one call tree, as a service's
    // are: is the random profile just a bad case for deflate?
    let tree = profscope_test_support::call_tree_profile(10_000, 10_000, 1);
    let (both, pprof, otlp) = backends(&tree);
    let (m, lo, hi) = median_spread(&both);
    let (a, b) = profscope_agent::probes::push_bodies(&tree);
    println!(
        "call-tree profile: {} stacks, {} samples, raw pprof {} KiB",
        tree.sample.len(),
        tree.sample_total(0),
        prost::Message::encode_to_vec(&tree).len() >> 10
    );
    println!(
        "one period to both backends: median {m:.2} ms CPU (spread {lo:.2}..{hi:.2}); \
         Pyroscope body {} KiB, OTLP body (gzip) {} KiB",
        a >> 10,
        b >> 10
    );
    per_backend(&pprof, &otlp);
}

/// 30 encodes of `profile` for both backends through the push's own
/// encoders, then for each backend alone through the model functions they
/// call: (both, Pyroscope's pprof + gzip, OTLP encode + gzip),
/// thread CPU ms.
fn backends(profile: &profscope_profile::Profile) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let both = time(30, || {
        let (a, b) = profscope_agent::probes::push_bodies(profile);
        a + b
    });
    let pprof = time(30, || {
        profscope_profile::write_gz(profile).map_or(0, |b| b.len())
    });
    let otlp = time(30, || {
        let raw = profscope_profile::otlp::encode_request(
            &[profile],
            &profscope_profile::otlp::ResourceInfo::service("bench"),
        );
        profscope_profile::gzip(&raw).map_or(0, |b| b.len())
    });
    (both, pprof, otlp)
}

/// Each backend's share of a period, against the target.
fn per_backend(pprof: &[f64], otlp: &[f64]) {
    let (m, lo, hi) = median_spread(pprof);
    println!("  pprof + gzip (Pyroscope): median {m:.2} ms CPU (spread {lo:.2}..{hi:.2})");
    let (m, lo, hi) = median_spread(otlp);
    println!(
        "  OTLP encode + gzip: median {m:.2} ms CPU (spread {lo:.2}..{hi:.2}); target < 5 ms per push"
    );
}

fn time(n: usize, mut f: impl FnMut() -> usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = thread_cpu();
            std::hint::black_box(f());
            (thread_cpu() - t).as_secs_f64() * 1000.0
        })
        .collect()
}
