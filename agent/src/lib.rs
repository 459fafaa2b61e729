#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

/// Items compiled only where tokio task dumps work: `tokio_unstable`, this
/// crate's `taskdump` feature, Linux on x86/x86_64/aarch64.
macro_rules! cfg_taskdump {
    ($($item:item)*) => {
        $(
            #[cfg(all(
                tokio_unstable,
                feature = "taskdump",
                target_os = "linux",
                any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64")
            ))]
            $item
        )*
    };
}

/// The complement of `cfg_taskdump!`.
macro_rules! cfg_not_taskdump {
    ($($item:item)*) => {
        $(
            #[cfg(not(all(
                tokio_unstable,
                feature = "taskdump",
                target_os = "linux",
                any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64")
            )))]
            $item
        )*
    };
}

/// Items compiled where the agent's own CPU sampler runs: Linux on x86_64
/// (and aarch64, compiled there but untested), unless the `pprof-rs`
/// feature asks for pprof-rs instead.
macro_rules! cfg_own_sampler {
    ($($item:item)*) => {
        $(
            #[cfg(all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64"),
                not(feature = "pprof-rs")
            ))]
            $item
        )*
    };
}

/// The complement of `cfg_own_sampler!`.
macro_rules! cfg_not_own_sampler {
    ($($item:item)*) => {
        $(
            #[cfg(not(all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64"),
                not(feature = "pprof-rs")
            )))]
            $item
        )*
    };
}

/// Items compiled with `--cfg tokio_unstable` (tokio's poll hooks).
macro_rules! cfg_tokio_unstable {
    ($($item:item)*) => {
        $(
            #[cfg(tokio_unstable)]
            $item
        )*
    };
}

/// Items compiled where the sampling allocator works: the `sampled-alloc`
/// feature on the platforms of the agent's own sampler (whose walker it
/// uses; compiled for it even when `pprof-rs` samples the CPU).
macro_rules! cfg_sampled_alloc {
    ($($item:item)*) => {
        $(
            #[cfg(all(
                feature = "sampled-alloc",
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64")
            ))]
            $item
        )*
    };
}

/// The complement of `cfg_sampled_alloc!`.
macro_rules! cfg_not_sampled_alloc {
    ($($item:item)*) => {
        $(
            #[cfg(not(all(
                feature = "sampled-alloc",
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64")
            )))]
            $item
        )*
    };
}

/// Items compiled with the `tracing` feature.
macro_rules! cfg_tracing {
    ($($item:item)*) => {
        $(
            #[cfg(feature = "tracing")]
            $item
        )*
    };
}

// Wiring: the agent, its builder and settings. Below it three layers, each
// using only the ones under it: delivery (HTTP, push) calls capture
// (sampler, CPU, heap, task dumps, runtime, memory, labels), and both
// stand on shared (symbols, the profile builder, errors).
mod agent;
mod builder;
mod config;

mod capture;
mod delivery;
mod shared;

pub use capture::{cpu, heap, labels, memory, recorder, runtime, tasks, watchdog};
pub use delivery::push;
pub use shared::symbols;

/// What tests and benchmarks observe inside the agent: not part of the API.
#[doc(hidden)]
pub mod probes {
    /// Encodes `profile` as one period's push to both backends, the way the
    /// push does: (Pyroscope multipart body bytes, OTLP gzip body bytes).
    pub fn push_bodies(profile: &profscope_profile::Profile) -> (usize, usize) {
        crate::delivery::push::encode_for_bench(profile)
    }

    cfg_sampled_alloc! {
        /// Whether this thread is inside the sampling allocator's sampled
        /// path now (an inner allocator called then is a re-entry).
        pub fn in_sampled_path() -> bool {
            crate::capture::heap::sampled::in_sampled_path()
        }

        /// The sampling allocator's counters: (sampled allocations,
        /// overflowed to the inner allocator, re-entries refused).
        pub fn sampled_counters() -> (u64, u64, u64) {
            crate::capture::heap::sampled::counters()
        }
    }

    cfg_own_sampler! {
        /// Whether this thread is inside the sampler's SIGPROF handler now.
        pub fn in_sampler_handler() -> bool {
            crate::capture::sampler::in_handler()
        }

        /// Handler runs so far by duration: (bucket width in ns, counts).
        pub fn handler_cost_histogram() -> (u64, Vec<u64>) {
            crate::capture::sampler::cost_histogram()
        }

        /// How the handler reads: through the guarded load (else plain
        /// reads checked by the snapshot alone, as before the guard), and
        /// with the leaf's caller taken from the stack where frame pointers
        /// skip it. Both on by default; for before/after in one run.
        pub fn set_sampler_reads(guarded: bool, leaf_fixup: bool) {
            crate::capture::sampler::set_reads(guarded, leaf_fixup)
        }

        /// One directed sample of each thread of `tids` (a directed
        /// consumer's `tgkill`s, no timer armed if no capture runs), as
        /// (tid, frames as the handler saw them), within `within`.
        pub fn directed_samples(
            tids: &[i32],
            within: std::time::Duration,
        ) -> Result<Vec<(i32, Vec<u64>)>, String> {
            crate::capture::sampler::directed_samples(tids, within)
        }

        /// `n` poll stamps (enter + exit, as every watched poll pays): the
        /// benchmark's measure of their cost.
        pub fn poll_stamps(n: u64) {
            for _ in 0..n {
                let stamp = crate::capture::poll_stamp::Stamp::enter();
                drop(std::hint::black_box(stamp));
            }
        }

        /// One poll stamped on this thread that blocks for `d` (a
        /// `std::thread::sleep` inside it), as a stuck poll looks to the
        /// watchdog: the benchmark's measure of detection latency.
        pub fn blocking_poll(d: std::time::Duration) {
            let _stamp = crate::capture::poll_stamp::Stamp::enter();
            std::thread::sleep(d);
        }

        /// The sampler's counters since the process started, by name:
        /// `dropped_<reason>`, `stack_unknown`, `faults_recovered`,
        /// `ranges_truncated`, `signal_taken`, `threads_unsampled`.
        pub fn sampler_counters() -> Vec<(String, u64)> {
            let s = crate::capture::sampler::stats();
            let mut all: Vec<(String, u64)> =
                s.dropped.iter().map(|(r, n)| (format!("dropped_{r}"), *n)).collect();
            all.extend([
                ("stack_unknown".to_string(), s.stack_unknown),
                ("faults_recovered".to_string(), s.faults_recovered),
                ("ranges_truncated".to_string(), s.ranges_truncated),
                ("signal_taken".to_string(), s.signal_taken),
                ("threads_unsampled".to_string(), s.threads_unsampled),
            ]);
            all
        }
    }
}

/// What the out-of-workspace fuzz crate (`fuzz/`) drives: the jemalloc
/// heap dump parser, the snapshot built from it, and the HTTP layer's query
/// parsing. Not part of the API; `.ci/run` builds and runs the fuzz targets
/// so this cannot rot.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::capture::heap::HeapSnapshot;
    pub use crate::capture::heap::dump::{parse, parse_bytes, parse_bytes_in_halves_from};

    /// Every query-parameter extractor over `query` (the part after `?`)
    /// with `max_seconds` as the agent's limit: each parsed value in
    /// `Debug` form, or the rejection's one-line text.
    pub fn query(query: &str, max_seconds: u64) -> Vec<Result<String, String>> {
        let config = crate::Config {
            max_seconds,
            ..Default::default()
        };
        crate::delivery::http::extract::check_query(query, &config)
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }
}

pub use agent::{Agent, RunningAgent};
pub use builder::AgentBuilder;
pub use config::Config;
pub use delivery::http::metrics::page::TASK_GROUP_METRICS;
pub use shared::error::Error;

/// The repository README's Rust examples compile as doctests, so the
/// embedding instructions cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RepositoryReadme;
