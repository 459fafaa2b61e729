//! What every reader of profile bytes shares: the size limits, gzip, and
//! protobuf framing (the pprof parser, its merging decoder and the OTLP
//! reader stand on this, not on each other).

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

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

pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Inflates a (possibly multi-member) gzip stream, refusing to grow past `limit`.
pub fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(Error::Gzip)?;
    if out.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: "decompressed input",
            limit,
        });
    }
    Ok(out)
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

/// A varint; `None` when cut short or longer than 10 bytes.
pub(crate) fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Collapses whitespace (protobuf errors span lines) into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
