//! An axum service with the profscope agent merged into its router.
//!
//! ```text
//! cargo run --release -p profscope-examples --example axum-service -- --addr 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/work?n=50'
//! curl -o cpu.pb.gz 'http://127.0.0.1:3000/debug/pprof/profile?seconds=10'
//! ```
//!
//! With `--push-pyroscope URL` and/or `--push-otlp URL` (and
//! `--push-period-s N`, default 15) it also pushes its profiles; Ctrl-C
//! flushes what is queued for up to two seconds.
//!
//! Routes: `/hello`; `/work?n=N` hashes a 1 KiB buffer with SHA-256 N times
//! (in `hash_work`); `/leak` retains 1 MiB per call (in `leak_one_mib`).

use profscope_examples::{ExampleArgs, app};

// jemalloc with heap profiling on, sampling every 512 KiB on average like Go.
profscope_agent::jemalloc_profiling!();

#[tokio::main]
async fn main() {
    let args = ExampleArgs::from_env();
    let addr = args.addr_or(([127, 0, 0, 1], 3000).into());
    let mut builder = args.agent_builder();
    if let Some(push) = args.push_config("axum-service") {
        builder = builder.push(push);
    }
    let agent = match builder.build() {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("axum-service: {e}");
            std::process::exit(1);
        }
    };
    let service = app(&agent);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum-service: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    println!("listening on http://{local}");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(stop)
        .await
    {
        eprintln!("axum-service: {e}");
        std::process::exit(1);
    }
    if let Some(stats) = agent.shutdown_push(std::time::Duration::from_secs(2)) {
        println!(
            "push: {} sent, {} failed attempts",
            stats.sent, stats.errors
        );
    }
}
