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
//! Routes (see `profscope_examples::app`): `/hello`; `/work?n=N` hashes a
//! 1 KiB buffer with SHA-256 N times (in `hash_work`); `/leak` retains 1 MiB
//! per call (in `leak_one_mib`); `/drip?kib=N` leaks slowly (for the flight
//! recorder's `--recorder --heap-trigger-mib N`); `/block?ms=N` and
//! `/spin?ms=N` hold a worker (for `--watchdog-ms N`).

// jemalloc with heap profiling on, sampling every 512 KiB on average like Go.
profscope_agent::jemalloc_profiling!();

fn main() {
    profscope_examples::run_service("axum-service");
}
