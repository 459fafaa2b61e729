//! What the tests and benchmarks of profscope share, in one place (a
//! dev-dependency only):
//! * [`XorShift`]: a seeded generator, so every "random" input reproduces;
//! * [`Service`]: a service in a child process that announces its address;
//! * [`AllocationStorm`]: threads that allocate and free as hard as they can;
//! * [`large_profile`] and [`large_folded`]: large deterministic profiles;
//! * [`have_go`], [`go_pprof`]: `go tool pprof`, the reference, with a loud skip.

#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod alloc;
mod go;
mod large;
mod rng;
mod service;

pub use alloc::AllocationStorm;
pub use go::{assert_filters_agree_with_go, go_pprof, go_raw_total, have_go};
pub use large::{large_folded, large_profile};
pub use rng::XorShift;
pub use service::{Service, run_with_stdin};
