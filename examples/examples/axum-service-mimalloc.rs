//! The `axum-service` example on mimalloc, heap-profiled by the agent's
//! sampling allocator (`SampledAlloc`) instead of jemalloc's profiling.
//!
//! ```text
//! cargo run --release -p profscope-examples --example axum-service-mimalloc -- --addr 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/leak'
//! go tool pprof -tagfocus route=/leak http://127.0.0.1:3000/debug/pprof/heap
//! ```
//!
//! Same routes and flags as `axum-service`, plus `--heap-sample-period
//! BYTES` (mean bytes between samples, 512 KiB by default like Go). Heap
//! samples carry the labels of the request that allocated (`route`, task
//! groups, `labels::scope`).

// Samples every 512 KiB on average; `--heap-sample-period` changes it.
profscope_agent::sampled_alloc!(mimalloc::MiMalloc);

fn main() {
    profscope_examples::run_service("axum-service-mimalloc");
}
