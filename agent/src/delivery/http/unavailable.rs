//! Go's `mutex` and godeltaprof's `delta_mutex`, which a Rust runtime has
//! no profile for: answered 501 with the reason.

use crate::Error;

/// Go's `mutex` paths: 501, said plainly, so a scrape config that asks for
/// them learns why.
pub(crate) async fn not_in_rust() -> Error {
    Error::NotAvailable(
        "Rust's runtime records no mutex contention profile (Go records it in its runtime); \
         disable mutex in the scrape config. Blocking polls are at /debug/pprof/block with \
         the agent's watchdog on."
            .into(),
    )
}
