//! The sampler under everything a long-lived service does to it at once:
//! threads born and dying (100 a second), mappings made and unmade next to
//! thread stacks, `fork`+`exec`, labels set and restored on every poll, and
//! overlapping captures at 19–997 Hz. Nothing may crash or hang, every
//! profile must parse, and dropped samples are counted by reason.
//!
//! Its own test binary, so its load never starves the timing tests of
//! another. 30 s by default (`PROFSCOPE_CHAOS_SECS`); the 30-minute run is
//! `cargo test -p profscope-agent --test sampler_chaos -- --ignored`.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(feature = "pprof-rs")))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use profscope_agent::cpu::CpuProfiler;
use profscope_agent::labels;
use profscope_agent::symbols::Symbolizer;
use profscope_test_support::XorShift;

#[derive(Default)]
struct Tally {
    threads: AtomicU64,
    mappings: AtomicU64,
    forks: AtomicU64,
    polls: AtomicU64,
    captures: AtomicU64,
    samples: AtomicU64,
}

#[inline(never)]
fn burn(rounds: u32) -> u64 {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut i = 0;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    x
}

/// 100 short-lived threads a second, each burning a little CPU.
fn thread_churn(stop: &AtomicBool, tally: &Tally) {
    let mut rng = XorShift::new(1);
    while !stop.load(Ordering::Relaxed) {
        let rounds = 10_000 + rng.below(200_000) as u32;
        let t = std::thread::Builder::new()
            .stack_size(64 * 1024 + rng.below(8) as usize * 4096)
            .spawn(move || std::hint::black_box(burn(rounds)));
        if let Ok(t) = t {
            tally.threads.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
            let _ = t.join();
        }
    }
}

/// Anonymous mappings made, touched and unmade; new thread stacks land
/// beside them, so the snapshot's ranges keep changing under the walks.
fn mapping_churn(stop: &AtomicBool, tally: &Tally) {
    let mut rng = XorShift::new(2);
    let mut live: Vec<(usize, usize)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let len = (1 + rng.below(16) as usize) * 4096;
        // SAFETY: a fresh private anonymous mapping, checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            // SAFETY: inside the mapping just made.
            unsafe { p.cast::<u8>().write_volatile(1) };
            live.push((p as usize, len));
            tally.mappings.fetch_add(1, Ordering::Relaxed);
        }
        if live.len() > 32 || rng.below(2) == 0 {
            let (p, len) = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: a mapping of ours, unmapped once.
            unsafe { libc::munmap(p as *mut libc::c_void, len) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for (p, len) in live {
        // SAFETY: as above.
        unsafe { libc::munmap(p as *mut libc::c_void, len) };
    }
}

/// `fork` + `exec` of `/bin/true` five times a second.
fn fork_exec(stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the child only execs or exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: NUL-terminated path and argv.
            unsafe {
                let argv = [c"true".as_ptr(), std::ptr::null()];
                libc::execv(c"/bin/true".as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut status = 0;
            // SAFETY: our own child; WNOHANG never blocks.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                assert!(libc::WIFEXITED(status), "fork+exec child: {status:#x}");
                break;
            }
            assert!(Instant::now() < deadline, "a fork+exec child hung");
            std::thread::sleep(Duration::from_millis(5));
        }
        tally.forks.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Tasks polled under nested label scopes on a two-worker runtime.
fn labelled_tasks(stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (stop, tally) = (stop.clone(), tally.clone());
                tokio::spawn(labels::scope(
                    [("tenant", format!("t{}", i % 3))],
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            labels::scope([("step", "inner")], async {
                                std::hint::black_box(burn(20_000));
                                tokio::task::yield_now().await;
                            })
                            .await;
                            tally.polls.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    },
                ))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Captures one after another at random rates and lengths; several of
/// these run at once, so captures overlap.
fn captures(seed: u64, stop: &AtomicBool, tally: &Tally) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let symbolizer = Symbolizer::new();
    let mut rng = XorShift::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let hz = [19, 99, 250, 997][rng.below(4) as usize];
        let length = Duration::from_millis(100 + rng.below(1900));
        let capture = rt
            .block_on(async {
                tokio::time::timeout(
                    length + Duration::from_secs(30),
                    CpuProfiler::new().capture(length, hz),
                )
                .await
            })
            .expect("a capture hung")
            .expect("capture");
        let profile = capture.to_profile(&symbolizer);
        let bytes = profscope_profile::write_gz(&profile).expect("encode");
        let parsed = profscope_profile::parse(&bytes, &profscope_profile::Limits::default())
            .expect("the profile parses");
        assert_eq!(parsed.sample.len(), profile.sample.len());
        tally.captures.fetch_add(1, Ordering::Relaxed);
        tally
            .samples
            .fetch_add(capture.sample_count() as u64, Ordering::Relaxed);
    }
}

fn chaos(seconds: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let before = profscope_agent::probes::sampler_counters();
    let mut workers = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .unwrap()
    };
    {
        let (s, t) = (stop.clone(), tally.clone());
        workers.push(spawn("threads", Box::new(move || thread_churn(&s, &t))));
        let (s, t) = (stop.clone(), tally.clone());
        workers.push(spawn("mappings", Box::new(move || mapping_churn(&s, &t))));
        let (s, t) = (stop.clone(), tally.clone());
        workers.push(spawn("forks", Box::new(move || fork_exec(&s, &t))));
        let (s, t) = (stop.clone(), tally.clone());
        workers.push(spawn("labels", Box::new(move || labelled_tasks(s, t))));
        for seed in 0..3 {
            let (s, t) = (stop.clone(), tally.clone());
            workers.push(spawn(
                "captures",
                Box::new(move || captures(10 + seed, &s, &t)),
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in workers {
        while !w.is_finished() {
            assert!(
                Instant::now() < deadline,
                "a chaos worker hung after the stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let after = profscope_agent::probes::sampler_counters();
    let moved: Vec<String> = after
        .iter()
        .map(|(name, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == name)
                .map_or(0, |(_, v)| *v);
            format!("{name}={}", n.saturating_sub(was))
        })
        .collect();
    eprintln!(
        "{seconds} s: {} threads, {} mappings, {} fork+exec, {} labelled polls, {} captures \
         with {} samples; sampler: {}",
        tally.threads.load(Ordering::Relaxed),
        tally.mappings.load(Ordering::Relaxed),
        tally.forks.load(Ordering::Relaxed),
        tally.polls.load(Ordering::Relaxed),
        tally.captures.load(Ordering::Relaxed),
        tally.samples.load(Ordering::Relaxed),
        moved.join(" ")
    );
    for reason in [
        "ring_full",
        "no_slot",
        "stopped",
        "not_ours",
        "in_signal_handler",
    ] {
        let key = format!("dropped_{reason}");
        assert!(after.iter().any(|(n, _)| *n == key), "{key} is not counted");
    }
    assert!(tally.captures.load(Ordering::Relaxed) >= 3);
    assert!(tally.samples.load(Ordering::Relaxed) > 0);
    assert!(tally.threads.load(Ordering::Relaxed) >= seconds * 20);
    assert!(tally.forks.load(Ordering::Relaxed) >= seconds);
}

#[test]
fn survives_thread_mapping_and_fork_churn_under_overlapping_captures() {
    let seconds = std::env::var("PROFSCOPE_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    chaos(seconds);
}

#[test]
#[ignore = "30 minutes: run by hand, figures in BENCHMARKS.md"]
fn survives_half_an_hour_of_churn() {
    chaos(1800);
}
