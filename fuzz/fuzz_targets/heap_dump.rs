//! The jemalloc heap dump parser on arbitrary input: it must return a value
//! or an error, never panic, and its totals must never overflow when the
//! profile is built from what it returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profscope_agent::fuzzing::{HeapSnapshot, parse, parse_bytes, parse_bytes_in_halves_from};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_bytes(data);
    // Split in two halves at any size, the answer is the same.
    assert_eq!(parse_bytes_in_halves_from(data, 0), parsed);
    // The text entry point agrees wherever the bytes are text.
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(parse(text), parsed);
    }
    if let Ok(dump) = parsed {
        let _ = HeapSnapshot::from_dump(dump, std::time::SystemTime::UNIX_EPOCH);
    }
});
