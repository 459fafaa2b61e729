//! The jemalloc heap dump parser on arbitrary input: it must return a value
//! or an error, never panic, and its totals must never overflow when the
//! profile is built from what it returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profscope_agent::heap::HeapSnapshot;
use profscope_agent::heap::dump::parse;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(dump) = parse(&text) {
        let _ = HeapSnapshot::from_dump(dump, std::time::SystemTime::UNIX_EPOCH);
    }
});
