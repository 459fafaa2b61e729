//! The soak: the `axum-service` example under steady load while clients
//! take back-to-back 1 s CPU captures, heap profiles (`heap`, `allocs`,
//! `delta_heap`), `/metrics` scrapes and task dumps, all at once. Every
//! answer must be valid (the pprof parses and validates, the metrics page
//! parses as Prometheus text); after a warm-up, the service's RSS may grow
//! less than 10 %, its file descriptors and temp files not at all, and
//! after an idle period longer than tokio's blocking-pool keep-alive (10 s)
//! its thread count is back to the warm-up level.
//!
//! `soak_ci` is sized for CI (75 s on a quiet machine); `soak_full` (ignored; run by
//! hand, figures in BENCHMARKS.md) is the same test with larger counts:
//! `cargo test --release -p profscope-examples --test soak -- --ignored --nocapture`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Load, Service, example_path, serial};

/// How many of each request the soak makes after the warm-up.
#[derive(Debug, Clone, Copy)]
struct Counts {
    captures: u32,
    heap_profiles: u32,
    scrapes: u32,
    task_dumps: u32,
}

const WARM_UP: Counts = Counts {
    captures: 2,
    heap_profiles: 9,
    scrapes: 60,
    task_dumps: 4,
};

#[test]
fn soak_ci() {
    soak(Counts {
        captures: 40,
        heap_profiles: 120,
        scrapes: 2000,
        task_dumps: 40,
    });
}

#[test]
#[ignore = "the full soak (about 15 minutes): run by hand, figures in BENCHMARKS.md"]
fn soak_full() {
    soak(Counts {
        captures: 200,
        heap_profiles: 500,
        scrapes: 10_000,
        task_dumps: 200,
    });
}

/// What the process holds, from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    threads: usize,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        threads: field("Threads:") as usize,
    }
}

/// Every file under `dir`, recursively (directories not counted).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Checks a Prometheus text exposition line by line: comments are `# HELP`
/// or `# TYPE`, samples are `name{labels} value` with a float value.
fn check_metrics(text: &str) -> Result<usize, String> {
    let mut samples = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            if !(comment.starts_with("HELP ") || comment.starts_with("TYPE ")) {
                return Err(format!("comment {line:?}"));
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line:?}"))?;
        let name = series.split('{').next().unwrap_or("");
        let name_ok = name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if name.is_empty() || !name_ok {
            return Err(format!("metric name {name:?} in {line:?}"));
        }
        if series.contains('{') && !series.ends_with('}') {
            return Err(format!("labels in {line:?}"));
        }
        if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
            return Err(format!("value {value:?} in {line:?}"));
        }
        samples += 1;
    }
    if samples == 0 {
        return Err("no samples".into());
    }
    Ok(samples)
}

/// One kind of request, made `count` times back to back from a thread of
/// its own, every answer checked by `check`; returns the answers checked
/// and how long they took.
fn stream(
    urls: Vec<String>,
    count: u32,
    check: fn(&common::Reply) -> Result<(), String>,
    failed: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Duration)> {
    std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let mut done = 0;
        let start = Instant::now();
        for i in 0..count {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let url = &urls[i as usize % urls.len()];
            let reply = common::get_from(&agent, url);
            if let Err(e) = check(&reply) {
                failed.store(true, Ordering::Relaxed);
                panic!("{url}: {e}");
            }
            done += 1;
        }
        (done, start.elapsed())
    })
}

fn pprof(reply: &common::Reply) -> Result<(), String> {
    if reply.status != 200 {
        return Err(format!("{} {}", reply.status, reply.text()));
    }
    let p = profscope_profile::parse(&reply.body, &profscope_profile::Limits::default())
        .map_err(|e| e.to_string())?;
    if p.sample_type.is_empty() {
        return Err("no sample types".into());
    }
    Ok(())
}

fn metrics(reply: &common::Reply) -> Result<(), String> {
    if reply.status != 200 {
        return Err(format!("{} {}", reply.status, reply.text()));
    }
    check_metrics(&reply.text()).map(|_| ())
}

fn text_dump(reply: &common::Reply) -> Result<(), String> {
    match reply.status {
        200 if reply.text().contains("tokio") || reply.text().contains("task") => Ok(()),
        200 => pprof(reply),
        s => Err(format!("{s} {}", reply.text())),
    }
}

/// Runs every stream with `counts`; returns how long it took.
fn round(svc: &Service, counts: Counts) -> Duration {
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let streams = [
        stream(
            vec![svc.url("/debug/pprof/profile?seconds=1")],
            counts.captures,
            pprof,
            failed.clone(),
        ),
        stream(
            vec![
                svc.url("/debug/pprof/heap"),
                svc.url("/debug/pprof/allocs"),
                svc.url("/debug/pprof/delta_heap"),
            ],
            counts.heap_profiles,
            pprof,
            failed.clone(),
        ),
        stream(
            vec![svc.url("/metrics")],
            counts.scrapes,
            metrics,
            failed.clone(),
        ),
        stream(
            vec![
                svc.url("/debug/pprof/goroutine"),
                svc.url("/debug/pprof/tasks?debug=1"),
            ],
            counts.task_dumps,
            text_dump,
            failed.clone(),
        ),
    ];
    let mut done = Vec::new();
    for s in streams {
        let (n, took) = s.join().expect("a soak stream failed");
        done.push(format!("{n} in {:.1} s", took.as_secs_f64()));
    }
    assert!(!failed.load(Ordering::Relaxed));
    eprintln!(
        "  answered (captures, heap profiles, scrapes, task dumps) {done:?}, {:?} in all",
        start.elapsed()
    );
    start.elapsed()
}

fn soak(counts: Counts) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let svc = Service::start(
        Command::new(example_path("axum-service"))
            .args(["--addr", "127.0.0.1:0"])
            .env("TMPDIR", tmp.path()),
    );
    let pid = svc.pid();
    let started = usage(pid);
    let served = Arc::new(AtomicU64::new(0));

    // Warm-up: every path a few times under load, so caches (symbols, the
    // allocator's arenas, the blocking pool) reach their working size.
    let load = Load::start(svc.url("/work?n=50"), 1);
    let warm_time = round(&svc, WARM_UP);
    served.fetch_add(load.stop(), Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let warm = usage(pid);
    eprintln!("warm-up {warm_time:?}: {warm:?} (at start {started:?})");

    let load = Load::start(svc.url("/work?n=50"), 1);
    let soak_time = round(&svc, counts);
    served.fetch_add(load.stop(), Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let after = usage(pid);
    let leftover = files_under(tmp.path());
    // Longer than tokio's blocking-pool keep-alive (10 s): the threads the
    // captures and encoders used have exited.
    std::thread::sleep(Duration::from_secs(12));
    let idle = usage(pid);
    let growth = after.rss_kib as f64 / warm.rss_kib as f64 - 1.0;
    eprintln!(
        "soak {counts:?} in {soak_time:?} with {} service requests: RSS {} → {} KiB ({:+.1} %), \
         fds {} → {}, threads {} → {} → {} after 12 s idle, temp files left {:?}",
        served.load(Ordering::Relaxed),
        warm.rss_kib,
        after.rss_kib,
        growth * 100.0,
        warm.fds,
        after.fds,
        warm.threads,
        after.threads,
        idle.threads,
        leftover
    );
    assert!(
        growth < 0.10,
        "RSS grew {:.1} % after the warm-up",
        growth * 100.0
    );
    assert!(
        after.fds <= warm.fds,
        "file descriptors {} → {}",
        warm.fds,
        after.fds
    );
    assert!(leftover.is_empty(), "temp files left: {leftover:?}");
    assert!(
        idle.threads <= warm.threads,
        "threads {} after the warm-up, {} after the idle period",
        warm.threads,
        idle.threads
    );
}
