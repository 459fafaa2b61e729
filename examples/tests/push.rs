//! Push, checked on loopback receivers with independent decoders (the
//! engines themselves cannot be installed here):
//! * a Pyroscope-ingest receiver parses the multipart body with a real
//!   multipart parser (axum's, multer) and hands the `profile` part to
//!   `go tool pprof`;
//! * an OTLP receiver's bodies are decoded by the PyPI
//!   `opentelemetry-proto` package (installed by `.ci/run` into
//!   `target/pydeps`);
//! * a receiver that answers 503, then hangs, then is gone, then returns:
//!   the service's own routes never fail, the queue stays under its cap
//!   (and jemalloc agrees), drops are counted and delivery resumes.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use profscope_agent::Agent;
use profscope_agent::push::PushConfig;
use profscope_test_support::{Service, go_pprof, go_raw_total, have_go, have_tool};

mod common;
use common::{example_path, serial, two_workers};

profscope_agent::jemalloc_profiling!(lg_prof_sample = 19);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    /// Multipart parts by name (Pyroscope), or the raw body under "" (OTLP).
    parts: HashMap<String, Vec<u8>>,
}

impl Received {
    /// A Pyroscope ingest of `kind` (`cpu`, `heap`) from the example.
    fn is_ingest_of(&self, kind: &str) -> bool {
        self.query
            .get("name")
            .is_some_and(|n| n.starts_with(&format!("axum-service.{kind}{{")))
    }

    /// An OTLP export request.
    fn is_otlp(&self) -> bool {
        self.path.starts_with("/v1development")
    }
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Received>>>);

impl Inbox {
    fn all(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

async fn ingest(
    State(inbox): State<Inbox>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> StatusCode {
    let mut parts = HashMap::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                match field.bytes().await {
                    Ok(bytes) => {
                        parts.insert(name, bytes.to_vec());
                    }
                    Err(e) => {
                        eprintln!("receiver: {e}");
                        return StatusCode::BAD_REQUEST;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("receiver: {e}");
                return StatusCode::BAD_REQUEST;
            }
        }
    }
    inbox.0.lock().unwrap().push(Received {
        path: "/ingest".into(),
        query,
        headers,
        parts,
    });
    StatusCode::OK
}

async fn otlp(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.0.lock().unwrap().push(Received {
        path: "/v1development/profiles".into(),
        query: HashMap::new(),
        headers,
        parts: HashMap::from([(String::new(), body.to_vec())]),
    });
    StatusCode::OK
}

/// Serves `app` at `addr` (port 0: any free one) from a thread of its own,
/// for `life` (`None`: as long as the test runs); the port closes with it.
fn serve_in_thread(
    addr: SocketAddr,
    app: Router,
    life: Option<Duration>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let serving = axum::serve(listener, app);
            match life {
                Some(life) => {
                    let _ = tokio::time::timeout(life, serving).await;
                }
                None => serving.await.unwrap(),
            }
        });
    });
    (addr, thread)
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A receiver for both protocols on a loopback port, on a thread of its own.
fn receiver() -> (SocketAddr, Inbox) {
    let inbox = Inbox::default();
    let app = Router::new()
        .route("/ingest", post(ingest))
        .route("/v1development/profiles", post(otlp))
        .with_state(inbox.clone());
    let (addr, _) = serve_in_thread(any_port(), app, None);
    (addr, inbox)
}

/// Where `.ci/run` installs the PyPI decoder.
fn pydeps() -> PathBuf {
    std::env::var_os("PROFSCOPE_PYDEPS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps"),
        PathBuf::from,
    )
}

fn have_python_otlp() -> bool {
    have_tool(
        Command::new("python3")
            .args([
                "-c",
                "import opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2",
            ])
            .env("PYTHONPATH", pydeps()),
        "the PyPI package opentelemetry-proto==1.45.2 in target/pydeps \
         (pip install --target target/pydeps opentelemetry-proto==1.45.2)",
    )
}

fn python_summary(body: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/push/otlp_summary.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(body)
        .env("PYTHONPATH", pydeps())
        .output()
        .expect("run python3");
    serde_json::from_str(&profscope_test_support::stdout_of(
        &out,
        "the Python decoder",
    ))
    .unwrap()
}

/// The example pushes every 2 s to both protocols while it serves load.
#[test]
fn pyroscope_and_otlp_receive_each_periods_profiles() {
    // One at a time: the backpressure test reads process-wide jemalloc figures.
    let _serial = serial();
    let (addr, inbox) = receiver();
    let base = format!("http://{addr}");
    let service = Service::start(Command::new(example_path("axum-service")).args([
        "--addr",
        "127.0.0.1:0",
        "--push-pyroscope",
        &base,
        "--push-otlp",
        &base,
        "--push-period-s",
        "2",
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (url, stop) = (service.url("/work?n=3000"), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                ureq::get(&url).call().expect("the service's own route");
            }
        })
    };
    // Two full periods of both kinds, and an OTLP request.
    let deadline = Instant::now() + Duration::from_secs(40);
    let got = loop {
        let got = inbox.all();
        let cpu = got.iter().filter(|r| r.is_ingest_of("cpu")).count();
        let heap = got.iter().filter(|r| r.is_ingest_of("heap")).count();
        let otlp = got.iter().filter(|r| r.is_otlp()).count();
        if cpu >= 3 && heap >= 2 && otlp >= 3 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "pushes so far: {cpu} cpu, {heap} heap, {otlp} otlp"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    // Pyroscope: the name, the window, the parts; go tool pprof reads the profile.
    // (The first period may have started before the load; take the last.)
    let cpu = got.iter().rfind(|r| r.is_ingest_of("cpu")).unwrap();
    let name = &cpu.query["name"];
    assert!(
        name.contains("service_name=axum-service") && name.contains(",version="),
        "{name}"
    );
    let from: u64 = cpu.query["from"].parse().unwrap();
    let until: u64 = cpu.query["until"].parse().unwrap();
    assert!(
        (1..=4).contains(&(until - from)),
        "from {from} until {until}"
    );
    assert_eq!(cpu.query["spyName"], "profscope");
    assert_eq!(cpu.query["sampleRate"], "99");
    let types: serde_json::Value =
        serde_json::from_slice(&cpu.parts["sample_type_config"]).unwrap();
    assert_eq!(types["samples"]["units"], "samples", "{types}");
    let cpu_file = tmp.path().join("cpu.pb.gz");
    std::fs::write(&cpu_file, &cpu.parts["profile"]).unwrap();
    let heap = got.iter().rfind(|r| r.is_ingest_of("heap")).unwrap();
    let heap_types: serde_json::Value =
        serde_json::from_slice(&heap.parts["sample_type_config"]).unwrap();
    assert_eq!(
        heap_types["alloc_space"]["cumulative"], false,
        "{heap_types}"
    );
    let heap_file = tmp.path().join("heap.pb.gz");
    std::fs::write(&heap_file, &heap.parts["profile"]).unwrap();
    let cpu_samples = if have_go() {
        let (top, _) = go_pprof(&["-top", "-nodecount=1000"], &cpu_file);
        assert!(
            top.contains("hash_work"),
            "the period's hot function:\n{top}"
        );
        let (raw, _) = go_pprof(&["-raw"], &heap_file);
        assert!(
            raw.contains("alloc_space/bytes") && raw.contains("inuse_space/bytes"),
            "{raw}"
        );
        Some(go_raw_total(&cpu_file, &[], "samples"))
    } else {
        None
    };

    // OTLP: decoded by the PyPI package.
    if !have_python_otlp() {
        return;
    }
    let otlp_requests: Vec<&Received> = got.iter().filter(|r| r.is_otlp()).collect();
    assert_eq!(
        otlp_requests[0].headers["content-type"],
        "application/x-protobuf"
    );
    assert_eq!(otlp_requests[0].headers["content-encoding"], "gzip");
    let mut matched = false;
    for request in otlp_requests {
        let body = tmp.path().join("otlp.bin");
        std::fs::write(&body, &request.parts[""]).unwrap();
        let summary = python_summary(&body);
        let resource = &summary["resource"];
        assert_eq!(resource["service.name"], "axum-service", "{summary}");
        assert!(
            resource["service.version"].is_string() && resource["host.name"].is_string(),
            "{summary}"
        );
        assert_eq!(resource["process.pid"], service.pid(), "{summary}");
        let profiles = summary["profiles"].as_array().unwrap();
        let types: Vec<String> = profiles
            .iter()
            .map(|p| format!("{}/{}", p["type"], p["unit"]))
            .collect();
        let mut distinct = types.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            types.len(),
            "one profile per sample type: {types:?}"
        );
        assert!(
            types.len() >= 6,
            "CPU (2) and heap (4) sample types: {types:?}"
        );
        // The same period's CPU profile as the Pyroscope push: same sums.
        let otlp_cpu = profiles
            .iter()
            .find(|p| p["type"] == "samples")
            .expect("a CPU profile");
        if otlp_cpu["time_unix_nano"].as_u64().unwrap() / 1_000_000_000 == from {
            matched = true;
            let names = summary["functions"].as_array().unwrap();
            assert!(
                names
                    .iter()
                    .any(|n| n.as_str().unwrap().contains("hash_work")),
                "{names:?}"
            );
            if let Some(total) = cpu_samples {
                assert_eq!(otlp_cpu["sum"].as_i64().unwrap(), total, "{summary}");
            }
        }
    }
    assert!(matched, "no OTLP request for the period starting at {from}");
}

/// How the misbehaving receiver answers.
const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const HANG: u8 = 2;

/// A receiver whose behaviour the test switches; it serves for 12 s, then
/// its port closes.
fn unreliable_receiver(
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    sent: Arc<Mutex<usize>>,
) -> std::thread::JoinHandle<()> {
    let app = Router::new().route(
        "/v1development/profiles",
        post(move |_body: Bytes| {
            let (mode, sent) = (mode.clone(), sent.clone());
            async move {
                match mode.load(Ordering::Relaxed) {
                    UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
                    HANG => {
                        std::future::pending::<()>().await;
                        StatusCode::OK
                    }
                    _ => {
                        *sent.lock().unwrap() += 1;
                        StatusCode::OK
                    }
                }
            }
        }),
    );
    // Serves for 12 s: long enough for its phases, then the port closes.
    serve_in_thread(addr, app, Some(Duration::from_secs(12))).1
}

fn allocated() -> u64 {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap() as u64
}

/// 503, then a hang, then nothing listening, then back: the service's own
/// routes never fail, the queue stays under its cap (jemalloc agrees),
/// drops are counted, delivery resumes.
#[test]
fn a_failing_backend_never_reaches_the_service() {
    // One at a time: the backpressure test reads process-wide jemalloc figures.
    let _serial = serial();
    let rt = two_workers();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cap = 256 << 10;
    let agent = rt.block_on(async {
        Agent::builder()
            .push(
                PushConfig::new("victim")
                    .otlp(format!("http://{port}"))
                    .period(Duration::from_secs(1))
                    .queue_bytes(cap)
                    .request_timeout(Duration::from_secs(2))
                    // CPU only: a heap profile's working memory (MiBs)
                    // would drown the queue's figure in jemalloc's.
                    .profiles(true, false, false)
                    .gzip(false),
            )
            .build()
            .unwrap()
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let service_addr = listener.local_addr().unwrap();
    let service = profscope_examples::app(&agent);
    rt.spawn(async move {
        axum::serve(listener, service).await.unwrap();
    });

    let mode = Arc::new(AtomicU8::new(UNAVAILABLE));
    let delivered = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    // The service's own routes, all along: every request must succeed.
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            let (mut n, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let body = client
                    .get(&format!("http://{service_addr}/work?n=200"))
                    .call()
                    .expect("the service's own route failed while the backend misbehaved")
                    .into_string()
                    .unwrap();
                assert_eq!(body.len(), 9);
                slowest = slowest.max(t.elapsed());
                n += 1;
            }
            (n, slowest)
        })
    };
    let metrics = |name: &str| -> f64 {
        let page = ureq::get(&format!("http://{service_addr}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        page.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };

    let peak_allocated = Cell::new(allocated());
    let peak_queue = Cell::new(0.0f64);
    let watch = |secs: u64| {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            peak_queue.set(peak_queue.get().max(metrics("profscope_push_queue_bytes")));
            peak_allocated.set(peak_allocated.get().max(allocated()));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // 503s.
    let receiver = unreliable_receiver(port, mode.clone(), delivered.clone());
    // (The first period takes a few seconds in a debug build: the
    // symbolizer reads the test binary's DWARF once.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics("profscope_push_errors_total") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "503s count as errors: {:?}",
            agent.push_stats()
        );
        watch(1);
    }
    // Warmed up now (the symbolizer's caches hold this binary's names):
    // from here on, what jemalloc sees grow is the push's own holding.
    let baseline = allocated();
    peak_allocated.set(baseline);
    // A hang: attempts time out; the queue fills and drops its oldest.
    mode.store(HANG, Ordering::Relaxed);
    watch(8);
    // Gone: the receiver's runtime ends, the port refuses.
    receiver.join().unwrap();
    watch(4);
    let dropped = metrics("profscope_push_dropped_total");
    assert!(
        dropped >= 1.0,
        "drops are counted (queue_full or retries_exhausted)"
    );
    // Back.
    mode.store(OK, Ordering::Relaxed);
    let _receiver = unreliable_receiver(port, mode.clone(), delivered.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while *delivered.lock().unwrap() < 2 {
        assert!(Instant::now() < deadline, "delivery did not resume");
        watch(1);
    }
    stop.store(true, Ordering::Relaxed);
    let (requests, slowest) = load.join().unwrap();
    let (peak_allocated, peak_queue) = (peak_allocated.get(), peak_queue.get());
    eprintln!(
        "{requests} service requests, slowest {slowest:?}; queue peak {peak_queue} B of {cap}; \
         jemalloc peak growth {} KiB; dropped {dropped}",
        peak_allocated.saturating_sub(baseline) >> 10
    );
    assert!(requests > 10, "the service kept serving: {requests}");
    assert!(
        peak_queue <= cap as f64,
        "queue {peak_queue} over its cap {cap}"
    );
    // Everything the push holds is under the cap; the rest is the working
    // memory of a capture and an encode.
    assert!(
        peak_allocated.saturating_sub(baseline) < (cap as u64) + (1 << 20),
        "jemalloc saw {} KiB more at the peak",
        peak_allocated.saturating_sub(baseline) >> 10
    );
    assert!(metrics("profscope_push_sent_total") >= 2.0);
}

/// A receiver that answers 200 after `delay`, counting what it got; the
/// bodies are kept for decoding.
fn slow_receiver(delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let bodies = got.clone();
    let app = Router::new().route(
        "/v1development/profiles",
        post(move |body: Bytes| {
            let bodies = bodies.clone();
            async move {
                tokio::time::sleep(delay).await;
                bodies.lock().unwrap().push(body.to_vec());
                StatusCode::OK
            }
        }),
    );
    let (addr, _) = serve_in_thread(any_port(), app, None);
    (addr, got)
}

/// An agent pushing 1 s CPU profiles over OTLP to `addr`, once something
/// waits in its queue.
fn cpu_pusher_with_a_queue(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Agent {
    let agent = rt.block_on(async {
        Agent::builder()
            .push(
                PushConfig::new("flusher")
                    .otlp(format!("http://{addr}"))
                    .period(Duration::from_secs(1))
                    .profiles(true, false, false),
            )
            .build()
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.push_stats().unwrap().queue_bytes == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing queued: {:?}",
            agent.push_stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// `shutdown_push` delivers what is queued before returning, and returns by
/// its deadline even when the backend hangs.
#[test]
fn shutdown_flushes_the_queue_within_its_deadline() {
    // One at a time: the backpressure test reads process-wide jemalloc figures.
    let _serial = serial();
    let rt = two_workers();
    // A slow backend (1.5 s per request, 1 s periods): deliveries queue up.
    let (addr, got) = slow_receiver(Duration::from_millis(1500));
    let agent = cpu_pusher_with_a_queue(&rt, addr);
    let t = Instant::now();
    let stats = agent.shutdown_push(Duration::from_secs(10)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(11), "{:?}", t.elapsed());
    assert_eq!(stats.queue_bytes, 0, "flushed: {stats:?}");
    assert!(stats.sent >= 1, "{stats:?}");
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len() as u64, stats.sent);
    let profile =
        profscope_profile::parse(&bodies[0], &Default::default()).expect("an OTLP request");
    assert_eq!(profile.string_at(profile.sample_type[0].ty), "samples");

    // A backend that never answers: shutdown still returns by its deadline.
    let (addr, _) = slow_receiver(Duration::from_secs(3600));
    let agent = cpu_pusher_with_a_queue(&rt, addr);
    let t = Instant::now();
    agent.shutdown_push(Duration::from_secs(1)).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "shutdown took {:?}",
        t.elapsed()
    );
}

/// Waits at one await point: what the task profile shows.
#[inline(never)]
async fn wait_for_orders(mut rx: tokio::sync::mpsc::Receiver<u32>) -> Option<u32> {
    rx.recv().await
}

/// The task profile, when asked for, goes out each period.
#[test]
fn task_profiles_are_pushed_when_asked() {
    // One at a time: the backpressure test reads process-wide jemalloc figures.
    let _serial = serial();
    let service = two_workers();
    let (tx, rx) = tokio::sync::mpsc::channel::<u32>(1);
    // A parked task for the dump to find.
    service.spawn(wait_for_orders(rx));
    let handle = service.handle().clone();
    let (addr, got) = slow_receiver(Duration::ZERO);
    let agent = Agent::builder()
        .runtime(handle)
        .task_dumps(true)
        .push(
            PushConfig::new("tasks")
                .otlp(format!("http://{addr}"))
                .period(Duration::from_secs(1))
                .profiles(false, false, true),
        )
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no task profile pushed: {:?}",
            agent.push_stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.shutdown_push(Duration::from_secs(2));
    drop(tx);
    let body = got.lock().unwrap()[0].clone();
    let profile = profscope_profile::parse(&body, &Default::default()).expect("an OTLP request");
    assert_eq!(profile.string_at(profile.sample_type[0].ty), "tasks");
    assert!(
        profile.sample_total(0) >= 1,
        "the parked task is counted: {profile:?}"
    );
}

/// Credentials and the tenant reach the backend; a 4xx other than 429 is
/// dropped at once (`rejected`), never retried.
#[test]
fn credentials_reach_the_backend_and_4xx_is_not_retried() {
    let _serial = serial();
    let rt = two_workers();
    let (addr, inbox) = receiver();
    // Answers OTLP requests carrying the bearer token with 400 (anything
    // else with 500, which would be retried instead), counting the 400s.
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = refused.clone();
    let app = Router::new().route(
        "/v1development/profiles",
        post(move |headers: HeaderMap| async move {
            if headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer otlp-token")
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }),
    );
    let (refusing_addr, _) = serve_in_thread(any_port(), app, None);
    let agent = rt.block_on(async {
        Agent::builder()
            .push(
                PushConfig::new("secret")
                    .pyroscope(
                        profscope_agent::push::Endpoint::new(format!("http://{addr}"))
                            .basic_auth("123456", "glc_token")
                            .tenant("team-a"),
                    )
                    .otlp(
                        profscope_agent::push::Endpoint::new(format!("http://{refusing_addr}"))
                            .bearer("otlp-token"),
                    )
                    .period(Duration::from_secs(1))
                    .profiles(true, false, false),
            )
            .build()
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = agent.push_stats().unwrap();
        let rejected = stats
            .dropped
            .iter()
            .find(|(r, _)| r.as_str() == "rejected")
            .unwrap()
            .1;
        if stats.sent >= 2 && rejected >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.shutdown_push(Duration::from_secs(1));
    let stats = agent.push_stats().unwrap();
    let rejected = stats
        .dropped
        .iter()
        .find(|(r, _)| r.as_str() == "rejected")
        .unwrap()
        .1;
    // Every 400 answered dropped its delivery at once: as many 400s as
    // rejected deliveries, none sent again. (Other failed attempts, such
    // as a connection refused while a server starts, are retried.)
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::SeqCst),
        rejected,
        "a 400 was retried: {stats:?}"
    );
    let got = inbox.all();
    let headers = &got[0].headers;
    // base64("123456:glc_token")
    assert_eq!(headers["authorization"], "Basic MTIzNDU2OmdsY190b2tlbg==");
    assert_eq!(headers["x-scope-orgid"], "team-a");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
}

/// With the flight recorder on, each incident is pushed too, labelled
/// `incident=<id>`: the CPU of its before-window (and the heap at the
/// trigger, where heap profiles run).
#[test]
fn incidents_are_pushed_labelled_with_their_id() {
    let _serial = serial();
    let (addr, inbox) = receiver();
    let mut recorder = profscope_agent::recorder::RecorderConfig::default();
    recorder.before = Duration::from_secs(5);
    recorder.after = Duration::from_secs(1);
    let agent = Agent::builder()
        .recorder(recorder)
        .push(
            PushConfig::new("incidents")
                .pyroscope(format!("http://{addr}"))
                .period(Duration::from_secs(1))
                .profiles(true, false, false),
        )
        .build()
        .unwrap();
    // Some CPU for the window, then a manual incident.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
            x
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let id = agent
        .recorder()
        .unwrap()
        .fire(
            profscope_agent::recorder::TriggerKind::Manual,
            Default::default(),
            Default::default(),
        )
        .expect("fired");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pushed = loop {
        let found = inbox.all().into_iter().find(|r| {
            r.query
                .get("name")
                .is_some_and(|n| n.contains(&format!("incident={id}")))
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no incident pushed: {:?}",
            agent.push_stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    agent.shutdown_push(Duration::from_secs(2));
    let name = &pushed.query["name"];
    assert!(name.starts_with("incidents.cpu{"), "{name}");
    let profile = profscope_profile::parse(&pushed.parts["profile"], &Default::default())
        .expect("the incident's CPU profile");
    assert!(!profile.sample.is_empty(), "the before-window's CPU");
}
