//! gzip both ways: inflating what readers are given (bounded, any number
//! of members) and deflating what the model writes (at Go's speed).

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::{Error, Result};

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

/// gzip at best speed: Go's runtime/pprof writes with gzip.BestSpeed, since
/// profiles are served (and pushed) often and read once.
pub fn gzip(raw: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    gz.write_all(raw)
        .and_then(|()| gz.finish())
        .map_err(|e| Error::Write {
            what: "gzip",
            reason: e.to_string(),
        })
}
