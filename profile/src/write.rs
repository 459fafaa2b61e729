//! Writing: a profile as gzipped protobuf, the form Go serves.

use prost::encoding::{self, WireType, encode_key, encoded_len_varint};

use crate::error::Result;
use crate::gzip::gzip;
use crate::proto::{Label, Profile};

/// Serializes `profile` as gzipped protobuf, the form Go serves.
pub fn write_gz(profile: &Profile) -> Result<Vec<u8>> {
    gzip(&encode(profile))
}

/// `profile` as protobuf: the bytes prost's `encode_to_vec` writes (a test
/// holds it to that), in about 40 % less time. Samples are nearly all of a
/// CPU profile's bytes, and prost sizes each one twice before writing it
/// and walks every packed field twice more; this sizes a sample once. The
/// push thread encodes a profile every period.
pub fn encode(profile: &Profile) -> Vec<u8> {
    encode_around(profile, None)
}

/// Samples encoded as a producer makes them, for large profiles whose
/// samples would otherwise be built (three vectors each) only to be
/// encoded once and freed: [`finish`](Self::finish) gives the bytes
/// [`encode`] gives for the profile with these samples.
#[derive(Debug, Default)]
pub struct SampleEncoder {
    samples: Vec<u8>,
}

impl SampleEncoder {
    /// An encoder with room for about `bytes` of samples.
    pub fn with_capacity(bytes: usize) -> Self {
        SampleEncoder {
            samples: Vec::with_capacity(bytes),
        }
    }

    /// An encoder whose samples follow `bytes` (the head
    /// [`encode_split`] gives), with room for about `more` bytes of them.
    /// Its result is [`into_bytes`](Self::into_bytes) (`finish` would write
    /// the head again).
    pub fn after(mut bytes: Vec<u8>, more: usize) -> Self {
        bytes.reserve(more);
        SampleEncoder { samples: bytes }
    }

    /// The bytes written: whatever the encoder started after, then the
    /// samples.
    pub fn into_bytes(self) -> Vec<u8> {
        self.samples
    }

    /// Appends a sample.
    pub fn push(&mut self, location_id: &[u64], value: &[i64], label: &[Label]) {
        encode_sample(location_id, value, label, &mut self.samples);
    }

    /// Appends a sample whose location ids are already packed (by
    /// [`pack`](Self::pack)): for producers that meet the same stack in
    /// many profiles.
    pub fn push_packed(&mut self, packed_location_id: &[u8], value: &[i64], label: &[Label]) {
        encode_sample_with(
            packed_location_id.len(),
            |buf| buf.extend_from_slice(packed_location_id),
            value,
            label,
            &mut self.samples,
        );
    }

    /// Appends `location_id` to `out` packed as a sample's field holds
    /// them (varints, no key or length).
    pub fn pack(location_id: impl IntoIterator<Item = u64>, out: &mut Vec<u8>) {
        for id in location_id {
            put_varint(id, out);
        }
    }

    /// Location ids [`pack`](Self::pack) packed, unpacked (a malformed tail
    /// ends them).
    pub fn unpack(mut packed: &[u8]) -> Vec<u64> {
        let mut ids = Vec::with_capacity(packed.len());
        while !packed.is_empty() {
            match encoding::decode_varint(&mut packed) {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        ids
    }

    /// `profile`, whose own samples must be none, with the samples pushed,
    /// as protobuf.
    pub fn finish(self, profile: &Profile) -> Vec<u8> {
        debug_assert!(profile.sample.is_empty(), "the samples are the encoder's");
        encode_around(profile, Some(&self.samples))
    }
}

/// `profile`, whose own samples must be none, as the protobuf that goes
/// before samples (field 1) and the protobuf that goes after them (fields
/// 3–14): head, samples, tail are the bytes [`SampleEncoder::finish`]
/// gives. For producers that encode (and compress) a large profile's
/// samples in two parts at once.
pub fn encode_split(profile: &Profile) -> (Vec<u8>, Vec<u8>) {
    debug_assert!(profile.sample.is_empty(), "the samples are the caller's");
    let mut head = Vec::with_capacity(64);
    encode_head(profile, &mut head);
    let mut tail = Vec::with_capacity(profile.string_table.len() * 32 + 64);
    encode_tail(profile, &mut tail);
    (head, tail)
}

/// `profile` as protobuf, with `samples` (already encoded) in place of its
/// own when given.
fn encode_around(profile: &Profile, samples: Option<&[u8]>) -> Vec<u8> {
    let p = profile;
    let samples_len = samples.map_or(p.sample.len() * 64, <[u8]>::len);
    let mut buf = Vec::with_capacity(samples_len + p.string_table.len() * 32 + 64);
    encode_head(p, &mut buf);
    match samples {
        Some(encoded) => buf.extend_from_slice(encoded),
        None => {
            for sample in &p.sample {
                encode_sample(&sample.location_id, &sample.value, &sample.label, &mut buf);
            }
        }
    }
    encode_tail(p, &mut buf);
    buf
}

/// The fields before the samples, in field order.
fn encode_head(p: &Profile, buf: &mut Vec<u8>) {
    encoding::message::encode_repeated(1, &p.sample_type, buf);
}

/// The fields after the samples, in field order.
fn encode_tail(p: &Profile, buf: &mut Vec<u8>) {
    use encoding::{int64, message, string};
    message::encode_repeated(3, &p.mapping, buf);
    message::encode_repeated(4, &p.location, buf);
    message::encode_repeated(5, &p.function, buf);
    string::encode_repeated(6, &p.string_table, buf);
    for (tag, value) in [
        (7, p.drop_frames),
        (8, p.keep_frames),
        (9, p.time_nanos),
        (10, p.duration_nanos),
    ] {
        if value != 0 {
            int64::encode(tag, &value, buf);
        }
    }
    if let Some(period_type) = &p.period_type {
        message::encode(11, period_type, buf);
    }
    if p.period != 0 {
        int64::encode(12, &p.period, buf);
    }
    int64::encode_packed(13, &p.comment, buf);
    if p.default_sample_type != 0 {
        int64::encode(14, &p.default_sample_type, buf);
    }
}

/// Field 2 of the profile: one sample, sized in one pass over its fields.
fn encode_sample(location_id: &[u64], value: &[i64], label: &[Label], buf: &mut Vec<u8>) {
    let locations = || location_id.iter().copied();
    encode_sample_with(
        varints_len(locations()),
        |buf| locations().for_each(|id| put_varint(id, buf)),
        value,
        label,
        buf,
    );
}

/// A sample whose location ids take `locations_len` bytes as varints,
/// written by `put_locations`.
#[inline]
fn encode_sample_with(
    locations_len: usize,
    put_locations: impl FnOnce(&mut Vec<u8>),
    value: &[i64],
    label: &[Label],
    buf: &mut Vec<u8>,
) {
    let values = || value.iter().map(|&v| v as u64);
    let values_len = varints_len(values());
    let len = packed_len(locations_len)
        + packed_len(values_len)
        + encoding::message::encoded_len_repeated(3, label);
    buf.reserve(len + 11);
    length_prefix(2, len, buf);
    if locations_len > 0 {
        length_prefix(1, locations_len, buf);
        put_locations(buf);
    }
    put_packed(2, values_len, values(), buf);
    encoding::message::encode_repeated(3, label, buf);
}

/// A varint, as prost's `encode_varint` writes it, pushed straight onto a
/// `Vec`: prost's goes through `BufMut` and is not inlined, a fifth of an
/// encode. (Pushes, not a copy from a scratch array: a copy of a
/// run-time length is a `memmove` call per varint.)
#[inline]
pub(crate) fn put_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Bytes the varints of `values` take.
#[inline]
pub(crate) fn varints_len(values: impl Iterator<Item = u64>) -> usize {
    values.map(encoded_len_varint).sum()
}

/// The key and length of a length-delimited field; its `len` bytes follow.
#[inline]
pub(crate) fn length_prefix(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
}

/// A packed field of `values`, whose varints take `payload` bytes (from
/// [`varints_len`]); nothing when there are none, as protobuf leaves empty
/// fields out.
#[inline]
pub(crate) fn put_packed(
    tag: u32,
    payload: usize,
    values: impl Iterator<Item = u64>,
    buf: &mut Vec<u8>,
) {
    if payload > 0 {
        length_prefix(tag, payload, buf);
        for v in values {
            put_varint(v, buf);
        }
    }
}

/// Bytes of a packed field (one-byte key) whose values take `payload`
/// bytes; nothing when there are none, as protobuf leaves empty fields out.
pub(crate) fn packed_len(payload: usize) -> usize {
    if payload == 0 {
        0
    } else {
        1 + encoded_len_varint(payload as u64) + payload
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost::encoding::encode_varint;

    use super::*;
    use crate::testing::sample_profile;

    #[test]
    fn encode_writes_the_bytes_prost_writes() {
        let mut labelled = sample_profile();
        labelled.string_table.extend(["route".into(), "/a".into()]);
        labelled.sample[0].label = vec![
            crate::Label {
                key: 6,
                str: 7,
                ..Default::default()
            },
            crate::Label {
                key: 6,
                num: -5,
                num_unit: 7,
                ..Default::default()
            },
        ];
        labelled.sample[1].value = vec![i64::MIN, 0, -1];
        labelled.sample[2].location_id.clear();
        labelled.sample[2].value.clear();
        labelled.sample.push(crate::Sample {
            location_id: vec![1, 2],
            value: vec![],
            label: vec![],
        });
        labelled.comment = vec![6, 7];
        labelled.drop_frames = 6;
        labelled.default_sample_type = 7;
        let mut profiles = vec![sample_profile(), labelled, Profile::default()];
        for name in ["go-cpu.pb.gz", "go-heap-after.pb.gz", "go-goroutine.pb.gz"] {
            let path = format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            profiles.push(crate::parse(&bytes, &Default::default()).unwrap());
        }
        for (i, p) in profiles.iter().enumerate() {
            assert_eq!(encode(p), p.encode_to_vec(), "profile {i}");
            // The same bytes when the samples are encoded as they come.
            let mut tables = p.clone();
            let samples = std::mem::take(&mut tables.sample);
            let mut encoder = SampleEncoder::with_capacity(16);
            let mut packed_encoder = SampleEncoder::default();
            for s in &samples {
                encoder.push(&s.location_id, &s.value, &s.label);
                let mut packed = Vec::new();
                SampleEncoder::pack(s.location_id.iter().copied(), &mut packed);
                assert_eq!(SampleEncoder::unpack(&packed), s.location_id);
                packed_encoder.push_packed(&packed, &s.value, &s.label);
            }
            assert_eq!(
                encoder.finish(&tables),
                p.encode_to_vec(),
                "profile {i}, streamed"
            );
            assert_eq!(
                packed_encoder.finish(&tables),
                p.encode_to_vec(),
                "profile {i}, packed"
            );
            // Split around the samples, the samples in two parts (the
            // first few split points and the last: all in the first).
            let (head, tail) = encode_split(&tables);
            for at in (0..=samples.len().min(5)).chain([samples.len()]) {
                let mut first = SampleEncoder::after(head.clone(), 16);
                let mut second = SampleEncoder::with_capacity(16);
                for (n, s) in samples.iter().enumerate() {
                    let part = if n < at { &mut first } else { &mut second };
                    part.push(&s.location_id, &s.value, &s.label);
                }
                let mut bytes = first.into_bytes();
                bytes.extend(second.into_bytes());
                bytes.extend_from_slice(&tail);
                assert_eq!(bytes, p.encode_to_vec(), "profile {i}, split at {at}");
            }
        }
    }

    #[test]
    fn varints_are_prosts() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::MAX >> 1,
            u64::MAX,
            -1i64 as u64,
        ] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_varint(v, &mut ours);
            encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(ours.len(), encoded_len_varint(v), "{v}");
        }
    }

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
