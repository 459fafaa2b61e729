//! The agent's query-string parsing (every extractor the handlers use, over
//! the part after `?`) on arbitrary bytes: each parameter parses or is
//! rejected with one short line naming it, never a panic, and a rejection
//! never echoes the whole of a long input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profscope_agent::fuzzing::query;

fuzz_target!(|data: &[u8]| {
    // A request line is bytes; the server hands the handlers a `&str`.
    let text = String::from_utf8_lossy(data);
    // The first byte picks the agent's `max_seconds` limit (1..=256).
    let max_seconds = u64::from(data.first().copied().unwrap_or(0)) + 1;
    for result in query(&text, max_seconds) {
        if let Err(reason) = result {
            assert!(!reason.contains('\n'), "{reason:?}");
            assert!(reason.len() < 400, "{} bytes", reason.len());
            assert!(reason.starts_with("bad parameter `"), "{reason:?}");
        }
    }
});
