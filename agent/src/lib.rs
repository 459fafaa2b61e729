#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod agent;
pub mod cpu;
pub mod encode;
mod error;
mod extract;
pub mod heap;
mod http;
pub mod profile;
pub mod symbols;

pub use agent::{Agent, AgentBuilder, Config, RunningAgent};
pub use error::Error;
