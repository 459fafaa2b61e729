//! profscope: load pprof profiles (ours and Go's), summarise them as
//! `go tool pprof -top` does, draw flamegraphs, keep snapshots and diff them.
//!
//! The data path is load → model → filter → render: [`load`] (and [`fetch`],
//! the one HTTP client) bring bytes, capped; the model crate
//! ([`profscope_profile`]) parses, validates and filters them; [`graph`],
//! [`diff`], [`reports`] and [`render`] turn the profile into tables and
//! pictures; [`store`] keeps snapshots on disk; [`incidents`] lists an
//! agent's flight-recorder incidents, stores their profiles and shows one
//! against its baseline; [`serve`] is the web UI's server.
//!
//! ```no_run
//! use profscope::{load, render};
//! let profile = load::load("cpu.pb.gz", None)?;
//! let st = profscope_profile::select_sample_type(&profile, None)?;
//! print!("{}", render::top(&profile, &st, &render::TopOptions::new(20, false)).render());
//! # Ok::<(), profscope::Error>(())
//! ```
//!
//! Front ends (the binary, the web UI) call [`app`], one function per
//! command. The library never links the agent: the binary's `demo` runs one.
//!
//! # Feature flags
//! * `cli` (default): the `profscope` binary's dependencies (clap,
//!   completions, progress bars, anyhow). Library users can turn it off.
//! * `demo` (default): `profscope demo`, which embeds the agent (and runs
//!   the binary on jemalloc with heap profiling).
//!
//! # Supported platforms
//! Anything Rust's standard library supports; nothing here is
//! platform-specific (profiles are read, never captured, by the viewer).

pub mod app;
pub mod diff;
mod error;
pub mod fetch;
pub mod graph;
pub mod incidents;
pub mod load;
pub mod memory;
pub mod names;
pub mod render;
pub mod reports;
pub mod serve;
pub mod store;
mod time;
pub mod units;

pub use error::{Error, Result};
