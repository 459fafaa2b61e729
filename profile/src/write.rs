//! Writing: a profile as gzipped protobuf, the form Go serves.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use crate::error::{Error, Result};
use crate::proto::Profile;

/// Serializes `profile` as gzipped protobuf, the form Go serves.
pub fn write_gz(profile: &Profile) -> Result<Vec<u8>> {
    let raw = profile.encode_to_vec();
    // Go's runtime/pprof writes with gzip.BestSpeed: profiles are served
    // often and read once.
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    gz.write_all(&raw)
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
