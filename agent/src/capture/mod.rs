//! Capture: what the agent measures, knowing nothing of HTTP or push. The
//! sample stream and its CPU profiles, jemalloc heap profiles, tokio task
//! dumps, runtime and task-group metrics, the memory report, the labels
//! samples carry, the flight recorder that keeps the recent past, and the
//! watchdog that names a blocking poll while it blocks. Delivery calls into here; nothing here calls back up.

pub mod cpu;
pub mod heap;
pub mod labels;
pub mod memory;
pub(crate) mod poll_stamp;
pub mod recorder;
pub mod runtime;
// The sampler, and its walker for the sampling allocator (compiled for it
// even when `pprof-rs` samples the CPU: then only the walker is used).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    any(not(feature = "pprof-rs"), feature = "sampled-alloc")
))]
#[cfg_attr(feature = "pprof-rs", allow(dead_code, unused_imports))]
pub(crate) mod sampler;
pub mod tasks;
pub mod watchdog;
