//! Capture: what the agent measures, knowing nothing of HTTP or push. The
//! sample stream and its CPU profiles, jemalloc heap profiles, tokio task
//! dumps, runtime and task-group metrics, the memory report, the labels
//! samples carry, the flight recorder that keeps the recent past, and the
//! watchdog that names a blocking poll while it blocks. Delivery calls into here; nothing here calls back up.

pub mod cpu;
pub mod heap;
pub mod labels;
pub mod memory;
pub mod recorder;
pub mod runtime;
cfg_own_sampler! {
    pub(crate) mod sampler;
}
pub mod tasks;
pub mod watchdog;
