//! Go's `block`, `mutex` and their godeltaprof `delta_*` paths, which a
//! Rust runtime has no profile for: answered 501 with the reason.

use crate::Error;

/// Go's `block`, `mutex` and their godeltaprof `delta_*` paths: 501, said
/// plainly, so a scrape config that asks for them learns why.
pub(crate) async fn not_in_rust() -> Error {
    Error::NotAvailable(
        "Rust has no blocking or mutex contention profile (Go records them in its runtime); \
         disable block and mutex in the scrape config. This agent serves profile, heap, \
         allocs, delta_heap, goroutine, tasks and taskleak."
            .into(),
    )
}
