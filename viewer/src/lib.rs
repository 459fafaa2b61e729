//! profscope: load pprof profiles (ours and Go's), summarise them as
//! `go tool pprof -top` does, draw flamegraphs, keep snapshots and diff them.
//!
//! The pipeline is `load` → `model` → (`diff`) → `render`, with `store`
//! keeping snapshots on disk and `fetch` capturing them from live agents:
//!
//! ```no_run
//! use profscope::{load, model, render};
//! let profile = load::load("cpu.pb.gz", None)?;
//! let st = model::select_sample_type(&profile, None)?;
//! print!("{}", render::top(&profile, &st, &render::TopOptions::new(20, false)).render());
//! # Ok::<(), profscope::Error>(())
//! ```
//!
//! Front ends (the binary, the demo, the web UI) call [`app`], one function
//! per command; [`store::Store::open_default`], [`store::Store::save`] and
//! [`fetch::fetch`] manage snapshots.
//!
//! # Feature flags
//! * `cli` (default): the `profscope` binary's dependencies (clap,
//!   completions, progress bars). Library users can turn it off.
//!
//! # Supported platforms
//! Anything Rust's standard library supports; nothing here is
//! platform-specific (profiles are read, never captured, by the viewer).

pub mod app;
pub mod demo;
pub mod diff;
mod error;
pub mod fetch;
pub mod graph;
pub mod load;
pub mod model;
pub mod render;
pub mod serve;
pub mod store;
pub mod units;

pub use error::{Error, Result};
