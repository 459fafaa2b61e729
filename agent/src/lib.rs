//! profscope agent: Go-style `/debug/pprof` endpoints for Rust services.

pub mod encode;
mod error;

pub use error::Error;
