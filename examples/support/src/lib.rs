//! What the tests and benchmarks of profscope share, in one place (a
//! dev-dependency only):
//! * [`XorShift`]: a seeded generator, so every "random" input reproduces;
//! * [`Service`]: a service in a child process that announces its address;
//! * [`AllocationStorm`]: threads that allocate and free as hard as they can;
//! * [`large_profile`] and [`large_folded`]: large deterministic profiles.

#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod alloc;
mod large;
mod rng;
mod service;

pub use alloc::AllocationStorm;
pub use large::{large_folded, large_profile};
pub use rng::XorShift;
pub use service::Service;
