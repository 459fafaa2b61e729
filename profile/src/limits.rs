//! The size caps that keep a reader's memory bounded on hostile input, and
//! the decoded-size estimate a protobuf is checked against before it is
//! decoded (the pprof parser, its merging decoder and the OTLP reader share
//! these, not each other's code).

pub(crate) const GIB: u64 = 1 << 30;

/// Size caps that keep memory bounded on hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most bytes of input (a file, stdin or a response body; default 1 GiB).
    pub max_input: u64,
    /// Most bytes a gzip stream may inflate to (default 1 GiB).
    pub max_decompressed: u64,
    /// Most memory the decoded protobuf may be estimated to take (default 4 GiB).
    pub max_decoded: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input: GIB,
            max_decompressed: GIB,
            max_decoded: 4 * GIB,
        }
    }
}

impl Limits {
    /// Limits with every cap set to `bytes` (tests and fuzzing use small ones).
    pub fn uniform(bytes: u64) -> Self {
        Limits {
            max_input: bytes,
            max_decompressed: bytes,
            max_decoded: bytes,
        }
    }
}

/// The memory a length-delimited top-level field of `len` bytes may take
/// decoded (the parser bounds a profile by their sum before decoding it).
pub(crate) fn decoded_field_size(field: u64, len: usize) -> u64 {
    use crate::proto::{Function, Location, Mapping, Sample, ValueType};
    use std::mem::size_of;
    let element = match field {
        1 | 11 => size_of::<ValueType>(),
        2 => size_of::<Sample>(),
        3 => size_of::<Mapping>(),
        4 => size_of::<Location>(),
        5 => size_of::<Function>(),
        6 => size_of::<String>(),
        _ => 0,
    } as u64;
    // Nested elements are at least 2 bytes and at most ~32 bytes decoded
    // (a `Label`), hence 16x the payload.
    element + 16 * len as u64
}
