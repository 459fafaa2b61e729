//! `profscope demo`: a service with the agent, load, captured snapshots,
//! flamegraphs, and the web UI at the end.

use std::net::SocketAddr;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Serve the web UI after the captures (until Ctrl-C).
    pub serve: bool,
    /// Address of the web UI.
    pub addr: SocketAddr,
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> crate::Result<()> {
    let _ = opts;
    Err(crate::Error::Server("the demo is not built yet".into()))
}
