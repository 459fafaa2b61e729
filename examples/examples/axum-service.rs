//! An axum service with the profscope agent merged into its router.
//!
//! ```text
//! cargo run --release -p profscope-examples --example axum-service -- --addr 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/work?n=50'
//! curl -o cpu.pb.gz 'http://127.0.0.1:3000/debug/pprof/profile?seconds=10'
//! ```
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
    let agent = match args.agent_builder().build() {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("axum-service: {e}");
            std::process::exit(1);
        }
    };
    let app = app(&agent);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum-service: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    println!("listening on http://{local}");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("axum-service: {e}");
        std::process::exit(1);
    }
}
