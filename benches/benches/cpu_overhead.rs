//! CPU profiling overhead, measured the way the issue asks: the example
//! service under loopback load on `/work?n=50`, throughput and CPU-ms per
//! 1,000 requests with and without a running 99 Hz capture, alternating A/B
//! pairs, medians with their spread; and Go's net/http/pprof measured the
//! same way in the same run when `go` is installed.
//!
//! ```text
//! cargo bench -p profscope-benches --bench cpu_overhead
//! PROFSCOPE_BENCH_PAIRS=7 PROFSCOPE_BENCH_SECS=5 cargo bench -p profscope-benches --bench cpu_overhead
//! ```

use std::process::Command;
use std::time::Duration;

use profscope_benches::{
    AbOutcome, SERVE_ENV, Service, Trial, ab_pairs, env_or, run_load, serve_child, spawn_self,
};

fn main() {
    if std::env::var_os(SERVE_ENV).is_some() {
        serve();
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let secs: u64 = env_or("PROFSCOPE_BENCH_SECS", 5);
    let pairs: usize = env_or("PROFSCOPE_BENCH_PAIRS", 5);
    println!(
        "cpu_overhead: {pairs} A/B pairs of {secs} s, {CONNECTIONS} load connections on /work?n=50"
    );

    let rust = spawn_self("rust", &[]);
    let rust_result = measure("profscope (own sampler, 99 Hz)", &rust, secs, pairs, 99);
    drop(rust);
    // pprof-rs's sampler, from a service built with it: any binary that
    // prints `listening on http://…` and serves `/work` and the agent
    // (e.g. the axum-service example built with `--features
    // profscope-agent/pprof-rs`).
    let pprof_rs_result = std::env::var_os("PROFSCOPE_BENCH_PPROF_RS_BIN").map(|bin| {
        let svc = Service::start(Command::new(bin).args(["--addr", "127.0.0.1:0"]));
        let r = measure("profscope (pprof-rs sampler, 99 Hz)", &svc, secs, pairs, 99);
        drop(svc);
        r
    });
    let go_result = go_service().map(|go| {
        let r = measure("Go net/http/pprof (100 Hz)", &go, secs, pairs, 0);
        drop(go);
        r
    });
    println!();
    rust_result.print();
    if let Some(r) = pprof_rs_result {
        r.print();
    }
    match go_result {
        Some(go) => go.print(),
        None => println!("Go: skipped (`go` not installed)"),
    }
}

/// Child mode: the axum-service example's app, on an ephemeral port.
fn serve() {
    serve_child(|| {
        let agent = profscope_agent::Agent::builder().build().expect("agent");
        profscope_examples::app(&agent)
    });
}

/// The Go twin service, built from `benches/go/cpu-service` when `go` is
/// installed.
fn go_service() -> Option<Service> {
    let dir = std::env::temp_dir().join(format!("profscope-bench-go-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let bin = dir.join("go-cpu-service");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/go/cpu-service/main.go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(src)
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "off")
        .status()
        .is_ok_and(|s| s.success());
    let service = built.then(|| Service::start(&mut Command::new(&bin)));
    let _ = std::fs::remove_dir_all(&dir);
    service
}

/// Load connections. With 2, throughput was bimodal (≈24k or ≈44k req/s per
/// trial, whichever way the connections fell on the two runtime workers),
/// which drowned any profiling effect; 8 spread evenly.
const CONNECTIONS: usize = 8;

/// Drives the issue's load: `CONNECTIONS` keep-alive connections on `/work?n=50`.
fn load(svc: &Service, secs: u64) -> Trial {
    run_load(svc, "/work?n=50", CONNECTIONS, secs as f64)
}

/// Starts a CPU capture on its own connection; dropping the returned
/// connection cancels it (both agents stop on client disconnect).
fn start_capture(svc: &Service, secs: u64, frequency: u32) -> std::net::TcpStream {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(svc.host()).expect("connect");
    let freq = if frequency > 0 {
        format!("&frequency={frequency}")
    } else {
        String::new()
    };
    write!(
        conn,
        "GET /debug/pprof/profile?seconds={}{freq} HTTP/1.1\r\nHost: {}\r\n\r\n",
        secs + 5,
        svc.host()
    )
    .expect("send");
    // Let the capture start before the load window opens: starting it can
    // parse debug info (pprof-rs resolves a backtrace), which is not what
    // this measures.
    std::thread::sleep(Duration::from_millis(1500));
    conn
}

fn measure(name: &str, svc: &Service, secs: u64, pairs: usize, frequency: u32) -> AbOutcome {
    // Warm up: load, and one short capture (symbol caches, JIT-free but
    // page-cache and branch predictors all the same).
    let _ = load(svc, 2);
    drop(start_capture(svc, 1, frequency));
    std::thread::sleep(Duration::from_millis(500));
    ab_pairs(name, pairs, |profiled| {
        if profiled {
            let capture = start_capture(svc, secs, frequency);
            let t = load(svc, secs);
            drop(capture);
            std::thread::sleep(Duration::from_millis(300));
            t
        } else {
            load(svc, secs)
        }
    })
}
