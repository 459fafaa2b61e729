//! Heap profiles: exact within sampling error, allocation stacks ending in
//! user code, Go-readable, deltas, dump files cleaned up, and CPU captures
//! that survive heavy allocation with heap sampling on.

mod common;

use std::time::Duration;

use common::{
    assert_names_whole, decode, example, get, go_pprof, have_go, in_process_agent, stack_names,
};
use profscope_agent::Agent;
use profscope_examples::{retain_kib_blocks, retain_mib_blocks};
use profscope_test_support::AllocationStorm;
use profscope_test_support::flat_by_function;

// Sample every 16 KiB on average: 64 MiB of 1 KiB objects is then ~4096
// samples (σ ≈ 1.6 %), so ±10 % holds in practice.
profscope_agent::jemalloc_profiling!(lg_prof_sample = 14);

const MIB: i64 = 1 << 20;

#[test]
fn inuse_space_is_exact_for_large_and_small_objects() {
    let mut big = Vec::with_capacity(64);
    let mut small = Vec::with_capacity(65_536);
    retain_mib_blocks(&mut big);
    retain_kib_blocks(&mut small);

    let (_rt, running) = in_process_agent();
    let reply = get(&format!("http://{}/debug/pprof/heap", running.local_addr()));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let profile = decode(&reply.body);
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| profile.string_at(t.ty))
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(
        profile.string_at(profile.default_sample_type),
        "inuse_space"
    );
    assert_eq!(profile.period, 1 << 14);

    let flat = flat_by_function(&profile, 3);
    for (name, bytes) in [
        ("retain_mib_blocks", 64 * MIB),
        ("retain_kib_blocks", 64 * MIB),
    ] {
        let (_, got) = flat
            .iter()
            .find(|(f, _)| f.ends_with(name))
            .unwrap_or_else(|| panic!("{name} is no leaf: {flat:?}"));
        let ratio = *got as f64 / bytes as f64;
        eprintln!(
            "{name}: {:.2} MiB in use (flat), ratio {ratio:.4}",
            *got as f64 / MIB as f64
        );
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{name}: {got} bytes, expected ≈{bytes}"
        );
    }
    let objects = flat_by_function(&profile, 2);
    let kib_objects = objects
        .iter()
        .find(|(f, _)| f.ends_with("retain_kib_blocks"))
        .unwrap()
        .1;
    assert!(
        (58_000..=72_000).contains(kib_objects),
        "{kib_objects} objects"
    );

    if have_go() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("heap.pb.gz");
        std::fs::write(&file, &reply.body).unwrap();
        go_pprof(&["-raw"], &file);
        let (top, _) = go_pprof(&["-top", "-sample_index=inuse_space"], &file);
        assert_names_whole(&top, false);
        let first = top
            .lines()
            .skip_while(|l| !l.contains("flat%"))
            .nth(1)
            .unwrap_or("");
        assert!(
            first.ends_with("retain_mib_blocks") || first.ends_with("retain_kib_blocks"),
            "a retaining function leads by flat inuse_space:\n{top}"
        );
    }
    drop((big, small));
}

/// jemalloc's dumps carry no labels: the agent's own allocations (here the
/// symbolizer's indexes, which the first request builds) are labelled
/// `profscope=agent` from their stacks; the service's are not.
#[test]
fn the_agents_own_allocations_are_labelled_from_their_stacks() {
    let mut big = Vec::with_capacity(64);
    retain_mib_blocks(&mut big);
    let (_rt, running) = in_process_agent();
    let url = format!("http://{}/debug/pprof/heap", running.local_addr());
    assert_eq!(get(&url).status, 200);
    let profile = decode(&get(&url).body);
    let (mut symbolizer_labelled, mut symbolizer_not, mut service) = (0i64, 0i64, 0i64);
    for s in &profile.sample {
        let agents = s.label.iter().any(|l| {
            profile.string_at(l.key) == "profscope" && profile.string_at(l.str) == "agent"
        });
        let names = stack_names(&profile, s);
        if names.iter().any(|n| n.ends_with("retain_mib_blocks")) {
            assert!(
                !agents,
                "the service's memory is not the agent's: {names:?}"
            );
            service += s.value[3];
        } else if names
            .iter()
            .any(|n| n.contains("profscope_agent::shared::symbols"))
        {
            if agents {
                symbolizer_labelled += s.value[3];
            } else {
                symbolizer_not += s.value[3];
                eprintln!("unlabelled: {names:?}");
            }
        }
    }
    eprintln!(
        "symbolizer in use: {symbolizer_labelled} bytes labelled profscope=agent, {symbolizer_not} not; service {service} bytes"
    );
    assert!(symbolizer_labelled > 0, "the symbolizer's indexes are seen");
    assert_eq!(symbolizer_not, 0, "every symbolizer stack is the agent's");
    assert!(service > 32 * MIB, "{service}");
    drop(big);
}

#[test]
fn allocs_defaults_to_alloc_space() {
    let (_rt, running) = in_process_agent();
    let reply = get(&format!(
        "http://{}/debug/pprof/allocs",
        running.local_addr()
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let profile = decode(&reply.body);
    assert_eq!(
        profile.string_at(profile.default_sample_type),
        "alloc_space"
    );
    let alloc_total: i64 = profile.sample.iter().map(|s| s.value[1]).sum();
    let inuse_total: i64 = profile.sample.iter().map(|s| s.value[3]).sum();
    assert!(alloc_total >= inuse_total && alloc_total > 0);
}

#[test]
fn unwritable_dump_directory_gives_500_and_the_agent_keeps_serving() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt
        .block_on(
            Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .heap_dump_dir("/dev/null/not-a-directory")
                .build()
                .unwrap()
                .spawn(),
        )
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    let reply = get(&format!("{base}/debug/pprof/heap"));
    assert_eq!(reply.status, 500, "{}", reply.text());
    // Checked before jemalloc is asked to dump: the reason names the path.
    assert!(
        reply
            .text()
            .contains("heap dump directory /dev/null/not-a-directory"),
        "{}",
        reply.text()
    );
    assert_eq!(get(&format!("{base}/debug/pprof/")).status, 200);
}

#[test]
fn heap_delta_over_seconds_shows_the_leak() {
    // 32 leaked MiB at 512 KiB would be ~28 samples (σ ≈ 7 %: a ±20 %
    // bound fails one run in ~130).
    let svc = common::example_sampling_every("axum-service", 17);
    let url = svc.url("/debug/pprof/heap?seconds=2");
    let capture = std::thread::spawn(move || get(&url));
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..32 {
        assert_eq!(get(&svc.url("/leak")).status, 200);
    }
    let reply = capture.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let profile = decode(&reply.body);
    let flat = flat_by_function(&profile, 3);
    let leaked = flat
        .iter()
        .find(|(f, _)| f.ends_with("leak_one_mib"))
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no leak_one_mib leaf: {flat:?}"));
    let ratio = leaked as f64 / (32 * MIB) as f64;
    eprintln!(
        "delta: leak_one_mib {:.1} MiB (ratio {ratio:.3})",
        leaked as f64 / MIB as f64
    );
    assert!((0.8..=1.2).contains(&ratio), "{leaked} bytes");

    // folded and svg come from the same data.
    let folded = get(&svc.url("/debug/pprof/heap?format=folded")).text();
    assert!(
        folded.lines().any(|l| l.contains("leak_one_mib")),
        "{folded}"
    );
    let svg = get(&svc.url("/debug/pprof/heap?format=svg&gc=1"));
    assert_eq!(svg.status, 200);
    assert!(svg.text().contains("leak_one_mib"));
}

#[test]
fn no_dump_files_left_after_100_requests() {
    let svc = example("axum-service");
    for _ in 0..100 {
        assert_eq!(get(&svc.url("/debug/pprof/heap")).status, 200);
    }
    let prefix = format!("profscope-heap-{}-", svc.pid());
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert_eq!(dirs.len(), 1, "one private dump directory");
    let left: Vec<_> = std::fs::read_dir(dirs[0].path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// Frames of the CPU sampler and of any unwinder or sample collector: what
/// must not hold memory once a capture is over. (The symbolizer's cache,
/// which the capture's symbolization fills, is bounded and kept by design;
/// it is not matched here.)
const SAMPLER_FRAMES: &str = r"^(profscope_agent::capture::sampler::|<profscope_agent::capture::sampler::|framehop::|<framehop::|pprof::|<pprof::|backtrace::|<backtrace::)";

#[test]
fn a_cpu_capture_leaves_nothing_in_the_heap_profile() {
    let (rt, running) = in_process_agent();
    let base = format!("http://{}", running.local_addr());
    for _ in 0..2 {
        let reply = get(&format!("{base}/debug/pprof/profile?seconds=1"));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The sample stream stops ~100 ms after its last consumer.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while profscope_agent::cpu::CpuProfiler::is_sampling() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let reply = get(&format!("{base}/debug/pprof/heap"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut profile = decode(&reply.body);
    let inuse = profscope_profile::select_sample_type(&profile, Some("inuse_space")).unwrap();
    let all = profile.sample_total(inuse.index);
    profscope_profile::Filter::new(Some(SAMPLER_FRAMES), None)
        .unwrap()
        .apply(&mut profile);
    let sampler = profile.sample_total(inuse.index);
    eprintln!("after two captures: {sampler} of {all} bytes in use under {SAMPLER_FRAMES}");
    assert!(all > 0);
    assert!(sampler < MIB, "{sampler} bytes held by the sampler");
    drop(rt);
}

#[test]
fn cpu_captures_back_to_back_while_allocating_with_heap_sampling_on() {
    let storm = AllocationStorm::start(2, 256, |x| (x % 32_768) as usize + 1);
    let (rt, running) = in_process_agent();
    let base = format!("http://{}", running.local_addr());
    for round in 0..8 {
        let reply = get(&format!(
            "{base}/debug/pprof/profile?seconds=1&frequency=997"
        ));
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        assert!(!decode(&reply.body).sample.is_empty());
        // Heap dumps interleaved with the captures.
        assert_eq!(get(&format!("{base}/debug/pprof/heap")).status, 200);
    }
    assert!(storm.stop() > 1000);
    drop(rt);
}

#[test]
fn heap_requests_past_the_limit_get_429() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt
        .block_on(
            Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .max_concurrent_requests(1)
                .build()
                .unwrap()
                .spawn(),
        )
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    // A delta profile holds its permit for its 3 seconds; asked until it
    // holds it (a loaded machine may take a while to send it).
    let url = format!("{base}/debug/pprof/heap?seconds=3");
    let first = std::thread::spawn(move || get(&url));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let second = loop {
        std::thread::sleep(Duration::from_millis(100));
        let reply = get(&format!("{base}/debug/pprof/allocs"));
        if reply.status == 429 || std::time::Instant::now() > deadline {
            break reply;
        }
    };
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(second.text().contains("limit 1"), "{}", second.text());
    assert_eq!(first.join().unwrap().status, 200);
    // The permit is back.
    assert_eq!(get(&format!("{base}/debug/pprof/allocs")).status, 200);
}

/// Allocates and frees 64 MiB in 1 MiB blocks: a burst, nothing retained.
#[inline(never)]
fn burst_64_mib() -> usize {
    let mut sum = 0;
    for i in 0..64u8 {
        let block = std::hint::black_box(vec![i | 1; 1 << 20]);
        sum += block[0] as usize;
    }
    sum
}

#[test]
fn delta_heap_shows_the_allocations_since_the_previous_request() {
    let (rt, running) = in_process_agent();
    let url = format!("http://{}/debug/pprof/delta_heap", running.local_addr());
    let burst = |reply: &common::Reply| {
        let p = decode(&reply.body);
        let alloc = profscope_profile::select_sample_type(&p, Some("alloc_space")).unwrap();
        let mut p = p;
        profscope_profile::Filter::new(Some("burst_64_mib"), None)
            .unwrap()
            .apply(&mut p);
        p.sample_total(alloc.index)
    };
    let first = get(&url);
    assert_eq!(first.status, 200, "{}", first.text());
    std::hint::black_box(burst_64_mib());
    let second = get(&url);
    let third = get(&url);
    let (b2, b3) = (burst(&second), burst(&third));
    eprintln!(
        "delta_heap: burst {:.1} MiB, then {:.1} MiB",
        b2 as f64 / MIB as f64,
        b3 as f64 / MIB as f64
    );
    assert!(
        (64 * MIB * 7 / 10..=64 * MIB * 13 / 10).contains(&b2),
        "second answer: {b2} bytes under the burst"
    );
    assert!(b3 < MIB, "third answer: {b3} bytes under the burst");
    // Go's block and mutex paths: 501 with why, for scrape configs (block
    // says how to turn the watchdog on; mutex that Rust records none).
    for (path, why) in [
        ("block", "the blocking watchdog is off"),
        ("delta_block", "the blocking watchdog is off"),
        ("mutex", "records no mutex contention"),
        ("delta_mutex", "records no mutex contention"),
    ] {
        let reply = get(&format!(
            "http://{}/debug/pprof/{path}",
            running.local_addr()
        ));
        assert_eq!(reply.status, 501, "{path}");
        assert!(reply.text().contains(why), "{path}: {}", reply.text());
    }
    drop(rt);
}
