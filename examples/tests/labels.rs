//! Labels that follow the task, read back with `go tool pprof -tagfocus`:
//! two kinds of work in a 1:3 CPU ratio on a 2-worker runtime, where tasks
//! move between workers at every yield, labelled three ways (the route
//! layer, a `tracing` span field, `labels::scope`). Among labelled samples
//! the shares must read 25 % / 75 % ± 5 points. And they compose: tower-
//! http's request span around the route layer labels samples with both.

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
    // ~2,000 at most (a timer fires at most once per kernel tick, 250 Hz,
    // on each of two cores); a floor, not a figure: a loaded machine
    // steals some.
    assert!(
        ours_a + ours_b >= 1000,
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

/// The one global subscriber of this binary (the tasks run on the
/// runtime's workers, so it must be global): `tenant` for the span test,
/// `method` from tower-http's request spans, as the README sets it up.
fn global_subscriber() {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber =
            tracing_subscriber::registry().with(labels::TracingLayer::new(["tenant", "method"]));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
}

/// Samples of `file` carrying `key=value` for every pair of `pairs`.
fn samples_with(file: &Path, pairs: &[(&str, &str)]) -> i64 {
    let bytes = std::fs::read(file).unwrap();
    let p = profscope_profile::parse(&bytes, &profscope_profile::Limits::default()).unwrap();
    p.sample
        .iter()
        .filter(|s| {
            pairs.iter().all(|(k, v)| {
                s.label
                    .iter()
                    .any(|l| p.string_at(l.key) == *k && p.string_at(l.str) == *v)
            })
        })
        .map(|s| s.value[0])
        .sum()
}

/// tower-http's `TraceLayer` span (its `method` field through the tracing
/// layer) around the route layer: the route's samples carry both, so
/// `-tagfocus method=GET` and `-tagfocus route=/x` find the same CPU.
#[test]
fn route_and_tracing_labels_compose() {
    let _turn = turn();
    global_subscriber();
    let rt = two_workers();
    let agent = rt.block_on(async { Agent::builder().build().unwrap() });
    let app = Router::new()
        .route("/x", get(|| async { unit_of_work().await.to_string() }))
        .route_layer(agent.route_metrics_layer())
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = ureq::agent();
                while !stop.load(Ordering::Relaxed) {
                    let _ = agent.get(&url).call();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let capture = rt
        .block_on(CpuProfiler::new().capture(Duration::from_secs(3), 997))
        .expect("capture");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let profile = capture.to_profile(&profscope_agent::symbols::Symbolizer::new());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pb.gz");
    std::fs::write(&file, profscope_profile::write_gz(&profile).unwrap()).unwrap();
    let route = ours(&file, "route=/x");
    let method = ours(&file, "method=GET");
    let both = samples_with(&file, &[("route", "/x"), ("method", "GET")]);
    eprintln!("route=/x {route}, method=GET {method}, both {both}");
    assert!(route >= 300, "only {route} samples of route=/x");
    assert!(
        both as f64 >= 0.95 * route as f64,
        "{both} of {route} route samples carry method=GET"
    );
    assert!(
        (method - route).abs() as f64 <= 0.05 * route as f64,
        "method=GET {method} vs route=/x {route}"
    );
    if have_go() {
        let go_route = go_raw_total(&file, &["-tagfocus=route=/x"], "samples");
        let go_method = go_raw_total(&file, &["-tagfocus=method=GET"], "samples");
        assert_eq!((go_route, go_method), (route, method), "go agrees");
        assert!(
            (go_method - go_route).abs() as f64 <= 0.05 * go_route as f64,
            "go: method=GET {go_method} vs route=/x {go_route}"
        );
    }
}

#[test]
fn tracing_span_fields_label_samples() {
    use tracing::Instrument;
    let _turn = turn();
    global_subscriber();
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
    // A scope inside the group adds to it, across polls; the group's
    // labels apply again after the scope.
    let (inner, after) = rt.block_on(ingest.instrument(async {
        let inner = labels::scope([("job", "batch")], async {
            tokio::task::yield_now().await;
            labels::current()
        })
        .await;
        (inner, labels::current())
    }));
    assert_eq!(
        (inner.get("task_group"), inner.get("job")),
        (Some("ingest"), Some("batch"))
    );
    assert_eq!(
        (after.get("task_group"), after.get("job")),
        (Some("ingest"), None)
    );
}

/// The README's embedding, as it is written there: state, the route layer,
/// tower-http's `TraceLayer` and a 10 s `TimeoutLayer`, then `with_state`
/// and only then `merge(agent.router())`, so the agent's routes are outside
/// the app's timeout. A 15 s capture succeeds while an app route that takes
/// 11 s is cut at 10 s (the timeout is live in this very app).
#[test]
fn a_capture_outlives_the_apps_timeout_layer() {
    use axum::extract::State;
    use axum::http::StatusCode;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    #[derive(Clone, Default)]
    struct Db;

    async fn todos(State(_db): State<Db>) -> &'static str {
        tokio::time::sleep(Duration::from_secs(11)).await;
        "[]"
    }

    let rt = two_workers();
    let agent = rt.block_on(async { Agent::builder().build().unwrap() });
    let app = Router::new()
        .route("/todos", get(todos))
        .route_layer(agent.route_metrics_layer())
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .with_state(Db)
        .merge(agent.router());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    let slow = {
        let url = format!("{base}/todos");
        std::thread::spawn(move || match ureq::get(&url).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{e}"),
        })
    };
    let started = std::time::Instant::now();
    let reply = ureq::get(&format!("{base}/debug/pprof/profile?seconds=15"))
        .timeout(Duration::from_secs(60))
        .call()
        .expect("the 15 s capture answers 200");
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut reply.into_reader(), &mut body).unwrap();
    assert!(started.elapsed() >= Duration::from_secs(15));
    let profile = profscope_profile::parse(&body, &profscope_profile::Limits::default())
        .expect("a whole profile");
    assert!(
        (14_500_000_000..16_000_000_000).contains(&profile.duration_nanos),
        "{} ns",
        profile.duration_nanos
    );
    assert_eq!(slow.join().unwrap(), 408, "the app's own timeout applies");
}
