//! A plain tokio program (no axum of its own) doing periodic work, with the
//! profscope agent on a port of its own.
//!
//! ```text
//! cargo run --release -p profscope-examples --example side-port -- --addr 127.0.0.1:6060
//! curl -o cpu.pb.gz 'http://127.0.0.1:6060/debug/pprof/profile?seconds=5'
//! ```

use std::time::Duration;

use profscope_examples::{ExampleArgs, hash_work};

// jemalloc with heap profiling on, sampling every 512 KiB on average like Go.
profscope_agent::jemalloc_profiling!();

#[tokio::main]
async fn main() {
    let args = ExampleArgs::from_env();
    let addr = args.addr_or(([127, 0, 0, 1], 6060).into());
    let running = match args.agent_builder().addr(addr).build() {
        Ok(agent) => agent.spawn().await,
        Err(e) => Err(e),
    };
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            eprintln!("side-port: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{}", running.local_addr());
    // The service's own work: a batch of hashing every 10 ms.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                tokio::task::spawn_blocking(|| hash_work(200)).await.ok();
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = running.shutdown().await;
}
