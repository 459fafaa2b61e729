//! Delivery: how captured profiles leave the process. The HTTP surface
//! (`/debug/pprof/*`, `/debug/*`, the `/metrics` page) answers requests;
//! the push sends profiles on a period to Pyroscope or an OTLP endpoint.
//! Both call capture, never the reverse.

pub(crate) mod http;
pub mod push;
