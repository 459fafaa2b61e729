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
pub mod cpu;
pub mod encode;
mod error;
mod extract;
pub mod heap;
mod http;
mod metrics;
pub mod profile;
pub mod runtime;
pub mod symbols;
pub mod tasks;

pub use agent::{Agent, AgentBuilder, Config, RunningAgent};
pub use error::Error;
pub use metrics::TASK_GROUP_METRICS;

/// The repository README's Rust examples compile as doctests, so the
/// embedding instructions cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RepositoryReadme;
