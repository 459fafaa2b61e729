//! Writing: a profile as gzipped protobuf, the form Go serves.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use crate::error::{Error, Result};
use crate::proto::Profile;

/// Serializes `profile` as gzipped protobuf, the form Go serves.
pub fn write_gz(profile: &Profile) -> Result<Vec<u8>> {
    gzip(&profile.encode_to_vec())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_profile;

    #[test]
    fn gz_round_trips() {
        use std::io::Read;
        let gz = write_gz(&sample_profile()).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(Profile::decode(&raw[..]).unwrap(), sample_profile());
    }
}
