//! The local web UI over the snapshot store and live agents (`profscope serve`).

use std::net::SocketAddr;

use crate::store::Store;

/// Serves the web UI on `addr` until interrupted.
pub fn run(store: Store, addr: SocketAddr, open: bool) -> crate::Result<()> {
    let _ = (store, addr, open);
    Err(crate::Error::Server("the web UI is not built yet".into()))
}
