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

mod agent;
mod builder;
pub mod cpu;
mod error;
pub mod heap;
mod http;
mod metrics;
pub mod runtime;
pub mod symbols;
pub mod tasks;

/// What the out-of-workspace fuzz crates (`agent/fuzz`) drive: the jemalloc
/// heap dump parser and the snapshot built from it. Not part of the API;
/// `.ci/run` checks the fuzz crates so this cannot rot.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::heap::HeapSnapshot;
    pub use crate::heap::dump::{parse, parse_bytes, parse_bytes_in_halves_from};
}

pub use agent::{Agent, AgentBuilder, Config, RunningAgent};
pub use error::Error;
pub use metrics::TASK_GROUP_METRICS;

/// The repository README's Rust examples compile as doctests, so the
/// embedding instructions cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RepositoryReadme;
