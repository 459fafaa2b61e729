//! Labels that follow the task, read back with `go tool pprof -tagfocus`:
//! two kinds of work in a 1:3 CPU ratio on a 2-worker runtime, where tasks
//! move between workers at every yield, labelled three ways (the route
//! layer, a `tracing` span field, `labels::scope`). Among labelled samples
//! the shares must read 25 % / 75 % ± 5 points.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use profscope_agent::Agent;
use profscope_agent::cpu::CpuProfiler;
use profscope_agent::labels;
use profscope_test_support::{go_raw_total, have_go};

/// One test at a time: each saturates both cores.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A slice of CPU work that calls nothing.
#[inline(never)]
fn slice_of_work() -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Ten slices, yielding to the scheduler between them (where the other
/// worker may steal the task).
async fn unit_of_work() -> u64 {
    let mut sum = 0u64;
    for _ in 0..10 {
        sum = sum.wrapping_add(std::hint::black_box(slice_of_work()));
        tokio::task::yield_now().await;
    }
    sum
}

/// Captures 4 s at 997 Hz, writes the profile, and checks the shares of
/// `key=a` and `key=b` among labelled samples with `go tool pprof`.
fn capture_and_check(rt: &tokio::runtime::Runtime, key: &str, a: &str, b: &str) {
    let capture = rt
        .block_on(CpuProfiler::new().capture(Duration::from_secs(4), 997))
        .expect("capture");
    let symbolizer = profscope_agent::symbols::Symbolizer::new();
    let profile = capture.to_profile(&symbolizer);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pb.gz");
    std::fs::write(&file, profscope_profile::write_gz(&profile).unwrap()).unwrap();
    let (ours_a, ours_b) = (
        ours(&file, &format!("{key}={a}")),
        ours(&file, &format!("{key}={b}")),
    );
    eprintln!("{key}: {a} {ours_a} samples, {b} {ours_b} samples");
    assert!(
        ours_a + ours_b >= 1500,
        "only {} labelled samples",
        ours_a + ours_b
    );
    let share = ours_a as f64 / (ours_a + ours_b) as f64;
    assert!((share - 0.25).abs() <= 0.05, "{key}={a} share {share:.3}");
    if have_go() {
        let go_a = go_raw_total(&file, &[&format!("-tagfocus={key}={a}")], "samples");
        let go_b = go_raw_total(&file, &[&format!("-tagfocus={key}={b}")], "samples");
        assert_eq!(
            (go_a, go_b),
            (ours_a, ours_b),
            "go tool pprof -tagfocus agrees"
        );
        let share = go_a as f64 / (go_a + go_b) as f64;
        assert!(
            (share - 0.25).abs() <= 0.05,
            "go: {key}={a} share {share:.3}"
        );
    }
}

/// Samples the model keeps with `tagfocus` (the same filter Go applies).
fn ours(file: &Path, tagfocus: &str) -> i64 {
    let bytes = std::fs::read(file).unwrap();
    let mut p = profscope_profile::parse(&bytes, &profscope_profile::Limits::default()).unwrap();
    profscope_profile::Filter::with(&profscope_profile::FilterOptions {
        tagfocus: Some(tagfocus),
        ..Default::default()
    })
    .unwrap()
    .apply(&mut p);
    p.sample_total(0)
}

#[test]
fn route_labels_follow_requests_across_workers() {
    let _turn = turn();
    let rt = two_workers();
    let agent = rt.block_on(async { Agent::builder().build().unwrap() });
    let app = Router::new()
        .route("/a", get(|| async { unit_of_work().await.to_string() }))
        .route("/b", get(|| async { unit_of_work().await.to_string() }))
        .route_layer(agent.route_metrics_layer());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    // One client on /a, three on /b, each with one request in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ["/a", "/b", "/b", "/b"]
        .into_iter()
        .map(|path| {
            let (stop, url) = (stop.clone(), format!("{base}{path}"));
            std::thread::spawn(move || {
                let agent = ureq::agent();
                while !stop.load(Ordering::Relaxed) {
                    let _ = agent.get(&url).call();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    capture_and_check(&rt, "route", "/a", "/b");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
}

/// Tasks looping on `unit_of_work`, one under `a`, three under `b`.
fn spawn_loops(
    rt: &tokio::runtime::Runtime,
    wrap: impl Fn(
        &'static str,
        std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> tokio::task::JoinHandle<()>,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = rt.enter();
    let tasks = ["a", "b", "b", "b"]
        .into_iter()
        .map(|which| {
            let stop = stop.clone();
            wrap(
                which,
                Box::pin(async move {
                    while !stop.load(Ordering::Relaxed) {
                        unit_of_work().await;
                    }
                }),
            )
        })
        .collect();
    (stop, tasks)
}

#[test]
fn tracing_span_fields_label_samples() {
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;
    let _turn = turn();
    let subscriber = tracing_subscriber::registry().with(labels::TracingLayer::new(["tenant"]));
    // The subscriber must be global: the tasks run on the runtime's workers.
    tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    let rt = two_workers();
    let (stop, tasks) = spawn_loops(&rt, |which, fut| {
        tokio::spawn(fut.instrument(tracing::info_span!("job", tenant = which)))
    });
    std::thread::sleep(Duration::from_millis(200));
    capture_and_check(&rt, "tenant", "a", "b");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
}

#[test]
fn scopes_label_samples() {
    let _turn = turn();
    let rt = two_workers();
    let (stop, tasks) = spawn_loops(&rt, |which, fut| {
        tokio::spawn(labels::scope([("job", which)], fut))
    });
    std::thread::sleep(Duration::from_millis(200));
    capture_and_check(&rt, "job", "a", "b");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
}

#[test]
fn scopes_nest_and_restore_across_polls() {
    let rt = two_workers();
    rt.block_on(async {
        labels::scope([("outer", "1")], async {
            assert_eq!(labels::current().get("outer"), Some("1"));
            labels::scope([("inner", "2")], async {
                tokio::task::yield_now().await;
                let here = labels::current();
                assert_eq!(here.get("outer"), Some("1"));
                assert_eq!(here.get("inner"), Some("2"));
            })
            .await;
            tokio::task::yield_now().await;
            assert_eq!(labels::current().get("inner"), None);
            assert_eq!(labels::current().get("outer"), Some("1"));
            // A spawned task inherits nothing unless carried over.
            let bare = tokio::spawn(async { labels::current().get("outer").is_none() });
            assert!(bare.await.unwrap());
            let carried = labels::spawn(async { labels::current().get("outer") == Some("1") });
            assert!(carried.await.unwrap());
        })
        .await;
        assert_eq!(labels::current().get("outer"), None);
    });
}

#[test]
fn task_groups_label_and_monitor() {
    let rt = two_workers();
    let agent = rt.block_on(async { Agent::builder().build().unwrap() });
    let ingest = agent.task_group("ingest");
    let seen = rt.block_on(ingest.instrument(async {
        tokio::task::yield_now().await;
        labels::current().get("task_group").map(str::to_string)
    }));
    assert_eq!(seen.as_deref(), Some("ingest"));
    assert_eq!(ingest.monitor().cumulative().instrumented_count, 1);
}
