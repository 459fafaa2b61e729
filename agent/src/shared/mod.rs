//! Shared ground under capture and delivery: symbolization, the builder
//! that turns raw addresses into a pprof profile, and the agent's error.

pub(crate) mod error;
pub(crate) mod profile_builder;
pub mod symbols;
