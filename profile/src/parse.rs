//! Bytes → a validated [`Profile`]: gzip (one or more members), raw pprof
//! protobuf and folded text are told apart by their bytes, never by a name
//! (with the `otlp` feature, OTLP profiles export requests too: pprof is
//! tried first, OTLP when pprof fails).
//!
//! Hostile input is expected: every size is capped ([`Limits`]), the
//! decoded size is estimated before protobuf decoding allocates anything,
//! and the decoded profile is checked for dangling ids ([`validate`]) before
//! anything indexes it, so later stages can trust it.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use prost::Message;

use crate::error::one_line;
use crate::error::{Error, Result};
use crate::gzip::{GZIP_MAGIC, gunzip};
use crate::limits::{Limits, decoded_field_size};
use crate::proto::Profile;
use crate::read_folded::{folded_to_profile, looks_folded};
use crate::validate::validate;
use crate::varint::read_varint;

/// Parses bytes as gzip (of either form below), a raw pprof protobuf, or
/// folded stacks, and validates the result.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    parse_with(bytes, limits, false)
}

/// As [`parse`], with samples of the same stack and labels summed into
/// one record while decoding ([`merge_samples`](crate::merge::merge_samples)
/// without ever holding the repeats): a producer's 1M records over 100k
/// stacks decode into 100k samples, in a fraction of the time and memory.
/// For every report but a listing of raw samples the result is the same.
pub fn parse_merged(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    parse_with(bytes, limits, true)
}

fn parse_with(bytes: &[u8], limits: &Limits, merge: bool) -> Result<Profile> {
    if bytes.is_empty() {
        return Err(Error::Empty("input".to_string()));
    }
    if bytes.len() as u64 > limits.max_input {
        return Err(Error::TooLarge {
            what: "input",
            limit: limits.max_input,
        });
    }
    if bytes.starts_with(&GZIP_MAGIC) {
        if merge {
            let merged = parse_gzip_merged(bytes, limits);
            // The streaming decoder reads pprof only; an OTLP request
            // (whose conversion sums samples anyway) is read whole.
            #[cfg(feature = "otlp")]
            if let Err(e) = &merged {
                if !matches!(e, Error::TooLarge { .. }) {
                    if let Ok(profile) = crate::otlp::parse_request(bytes, limits) {
                        return Ok(profile);
                    }
                }
            }
            return merged;
        }
        let raw = gunzip(bytes, limits.max_decompressed)?;
        if raw.is_empty() {
            return Err(Error::Empty("decompressed input".to_string()));
        }
        if raw.starts_with(&GZIP_MAGIC) {
            return Err(Error::Format("gzip inside gzip".to_string()));
        }
        return parse_plain(&raw, limits, merge);
    }
    parse_plain(bytes, limits, merge)
}

fn parse_plain(bytes: &[u8], limits: &Limits, merge: bool) -> Result<Profile> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if looks_folded(text) {
            return folded_to_profile(text);
        }
    }
    let decoded = if merge {
        decode_merged(bytes, limits)
    } else {
        decode_protobuf(bytes, limits)
    };
    let pprof = decoded.and_then(|profile| {
        validate(&profile)?;
        Ok(profile)
    });
    #[cfg(feature = "otlp")]
    if let Err(pprof_error) = &pprof {
        // Both formats open with a length-delimited field 1; pprof is tried
        // first and wins a tie. An OTLP request with a resource cannot pass
        // as pprof: its field 1 holds messages where pprof's `ValueType`
        // holds integers, so prost fails on the wire type.
        if matches!(pprof_error, Error::TooLarge { .. }) {
            return pprof;
        }
        return crate::otlp::parse_request(bytes, limits).map_err(|otlp_error| match otlp_error {
            Error::TooLarge { .. } => otlp_error,
            _ => Error::Format(format!(
                "as pprof: {}; as OTLP: {}",
                reason(pprof_error),
                reason(&otlp_error)
            )),
        });
    }
    pprof
}

/// What went wrong, without the "not a … profile" preamble.
#[cfg(feature = "otlp")]
fn reason(e: &Error) -> String {
    match e {
        Error::Format(r) => r.clone(),
        other => other.to_string(),
    }
}

/// Decodes a `Profile` with repeated samples summed (see
/// [`MergedDecoder`](crate::merge::MergedDecoder)).
fn decode_merged(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    let mut decoder = crate::merge::MergedDecoder::new(limits.max_decoded);
    let used = decoder.feed(bytes)?;
    decoder.finish(bytes.len() - used)
}

/// `parse_merged` of gzip: inflated on a second thread in 1 MiB chunks
/// while this one decodes the fields that have arrived, so the two
/// overlap. Input that is not a protobuf (text) is collected and parsed as
/// `parse` would.
fn parse_gzip_merged(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    const CHUNK: u64 = 1 << 20;
    let limit = limits.max_decompressed;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
        scope.spawn(move || {
            let mut gz = MultiGzDecoder::new(bytes).take(limit.saturating_add(1));
            loop {
                let mut chunk = Vec::with_capacity(CHUNK as usize);
                match (&mut gz).take(CHUNK).read_to_end(&mut chunk) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(chunk)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut decoder = crate::merge::MergedDecoder::new(limits.max_decoded);
        let mut data: Vec<u8> = Vec::new();
        let (mut used, mut inflated) = (0usize, 0u64);
        let mut protobuf: Option<bool> = None;
        for chunk in rx {
            let chunk = chunk.map_err(Error::Gzip)?;
            inflated += chunk.len() as u64;
            if inflated > limit {
                return Err(Error::TooLarge {
                    what: "decompressed input",
                    limit,
                });
            }
            data.extend_from_slice(&chunk);
            let is_protobuf = *protobuf.get_or_insert_with(|| {
                // Text (folded stacks) is valid UTF-8 throughout; a pprof
                // protobuf stops being so within its first bytes.
                std::str::from_utf8(&data).is_err_and(|e| e.error_len().is_some())
            });
            if data.starts_with(&GZIP_MAGIC) {
                return Err(Error::Format("gzip inside gzip".to_string()));
            }
            if is_protobuf {
                used += decoder.feed(&data[used..])?;
                // Keep only the unfinished field.
                if used > data.len() / 2 {
                    data.drain(..used);
                    used = 0;
                }
            }
        }
        if inflated == 0 {
            return Err(Error::Empty("decompressed input".to_string()));
        }
        if protobuf == Some(true) {
            let profile = decoder.finish(data.len() - used)?;
            validate(&profile)?;
            Ok(profile)
        } else {
            parse_plain(&data, limits, true)
        }
    })
}

fn decode_protobuf(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    let estimate = estimate_decoded_size(bytes)
        .ok_or_else(|| Error::Format("malformed protobuf framing".to_string()))?;
    if estimate > limits.max_decoded {
        return Err(Error::TooLarge {
            what: "decoded profile (estimated)",
            limit: limits.max_decoded,
        });
    }
    Profile::decode(bytes)
        .map_err(|e| Error::Format(format!("protobuf: {}", one_line(&e.to_string()))))
}

/// Walks the top-level protobuf fields without decoding them and bounds the
/// memory decoding would take: tiny messages can expand tens of times (an
/// empty 2-byte `Sample` becomes a 72-byte struct), so the count of
/// elements matters as much as the byte length. `None` on broken framing.
fn estimate_decoded_size(mut buf: &[u8]) -> Option<u64> {
    let mut total: u64 = 0;
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                read_varint(&mut buf)?;
                total += 8;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                buf = buf.get(len..)?;
                total = total.saturating_add(decoded_field_size(field, len));
            }
            _ => return None,
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::GIB;
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn loads_go_fixtures_gzipped_and_raw() {
        for name in ["go-cpu.pb.gz", "go-heap-after.pb.gz", "go-goroutine.pb.gz"] {
            let gz = fixture(name);
            let p = parse(&gz, &Limits::default()).unwrap();
            assert!(!p.sample.is_empty(), "{name}");
            let raw = gunzip(&gz, GIB).unwrap();
            assert_eq!(parse(&raw, &Limits::default()).unwrap(), p);
        }
    }

    #[test]
    fn merged_decoding_sums_repeats_and_matches_merge_samples() {
        for name in ["go-cpu.pb.gz", "go-heap-after.pb.gz", "go-goroutine.pb.gz"] {
            let gz = fixture(name);
            let mut whole = parse(&gz, &Limits::default()).unwrap();
            // Repeat every sample, as an unaggregating producer would.
            let again = whole.sample.clone();
            whole.sample.extend(again);
            let doubled = crate::write_gz(&whole).unwrap();
            let merged = parse_merged(&doubled, &Limits::default()).unwrap();
            crate::merge::merge_samples(&mut whole);
            assert_eq!(merged, whole, "{name}");
            assert_eq!(
                parse_merged(&gunzip(&doubled, GIB).unwrap(), &Limits::default()).unwrap(),
                whole
            );
        }
        // The same errors and limits as `parse`.
        let limits = Limits::default();
        assert!(parse_merged(b"\xff\xfe\xfd garbage", &limits).is_err());
        let raw = gunzip(&fixture("go-cpu.pb.gz"), GIB).unwrap();
        for cut in [1, 7, raw.len() / 3, raw.len() - 1] {
            assert!(parse_merged(&raw[..cut], &limits).is_err(), "cut at {cut}");
        }
        let tiny: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], 1 << 20)
            .flatten()
            .collect();
        let small = Limits {
            max_decoded: 32 << 20,
            ..Limits::default()
        };
        assert!(matches!(
            parse_merged(&tiny, &small),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn merged_decoding_reads_packed_and_unpacked_values() {
        let mut p = crate::testing::sample_profile();
        p.sample_type.push(p.sample_type[0]);
        p.sample.clear();
        let mut bytes = p.encode_to_vec();
        for body in [
            // location 1, values [5, 1] packed
            &[0x0a, 0x01, 0x01, 0x12, 0x02, 0x05, 0x01][..],
            // the same stack, values as one varint field each: 7, 1
            &[0x0a, 0x01, 0x01, 0x10, 0x07, 0x10, 0x01][..],
            // values split around the locations: [2, 3]
            &[0x12, 0x01, 0x02, 0x0a, 0x01, 0x01, 0x12, 0x01, 0x03][..],
        ] {
            bytes.push(0x12);
            bytes.push(body.len() as u8);
            bytes.extend_from_slice(body);
        }
        let merged = parse_merged(&bytes, &Limits::default()).unwrap();
        let plain = parse(&bytes, &Limits::default()).unwrap();
        assert_eq!(plain.sample.len(), 3);
        assert_eq!(merged.sample.len(), 1);
        assert_eq!(merged.sample[0].value, vec![14, 5]);
        for i in 0..2 {
            assert_eq!(merged.sample_total(i), plain.sample_total(i));
        }
        // A repeat whose values do not decode is an error, not a sum.
        bytes.extend_from_slice(&[0x12, 0x05, 0x0a, 0x01, 0x01, 0x12, 0x05]);
        assert!(parse_merged(&bytes, &Limits::default()).is_err());
    }

    #[test]
    fn merged_gzip_streams_across_chunks_and_refuses_what_parse_refuses() {
        let mut p = parse(&fixture("go-cpu.pb.gz"), &Limits::default()).unwrap();
        let once = p.sample.clone();
        for _ in 0..400 {
            p.sample.extend(once.iter().cloned());
        }
        let gz = crate::write_gz(&p).unwrap();
        assert!(
            gunzip(&gz, GIB).unwrap().len() > 3 << 20,
            "several 1 MiB chunks"
        );
        let merged = parse_merged(&gz, &Limits::default()).unwrap();
        crate::merge::merge_samples(&mut p);
        assert_eq!(merged, p);
        let limits = Limits::default();
        // Cut short, gzip in gzip, empty, folded text, a decompression cap.
        assert!(matches!(
            parse_merged(&gz[..gz.len() / 2], &limits),
            Err(Error::Gzip(_))
        ));
        let inner = crate::write_gz(&p).unwrap();
        let nested = crate::gzip(&inner).unwrap();
        assert!(matches!(
            parse_merged(&nested, &limits),
            Err(Error::Format(_))
        ));
        let empty = crate::gzip(&[]).unwrap();
        assert!(matches!(
            parse_merged(&empty, &limits),
            Err(Error::Empty(_))
        ));
        let text = parse_merged(&crate::gzip(b"main;work 3\nmain 2\n").unwrap(), &limits).unwrap();
        assert_eq!(text.sample_total(0), 5);
        let capped = Limits {
            max_decompressed: 1 << 20,
            ..Limits::default()
        };
        assert!(matches!(
            parse_merged(&gz, &capped),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn merged_decoding_of_damaged_bytes_agrees_or_fails() {
        // Flipped bytes in a real profile: both decoders fail, or both give
        // a profile with the same totals. Never a panic.
        let raw = gunzip(&fixture("go-cpu.pb.gz"), GIB).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut agreed = 0;
        for _ in 0..400 {
            let mut bytes = raw.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % bytes.len() as u64) as usize;
                bytes[i] ^= (x >> 32) as u8 | 1;
            }
            let limits = Limits::uniform(64 << 20);
            match (parse(&bytes, &limits), parse_merged(&bytes, &limits)) {
                (Ok(a), Ok(b)) => {
                    for i in 0..a.sample_type.len() {
                        assert_eq!(a.sample_total(i), b.sample_total(i));
                    }
                    agreed += 1;
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("decoders disagree: {:?} vs {:?}", a.err(), b.err()),
            }
        }
        assert!(agreed > 0, "some damaged profiles still decode");
    }

    #[test]
    fn folded_text_becomes_a_profile() {
        let p = parse(b"main;work 3\nmain 2\n", &Limits::default()).unwrap();
        let folded = crate::fold::fold(&p, 0);
        assert_eq!(
            folded,
            vec![("main".to_string(), 2), ("main;work".to_string(), 3)]
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let limits = Limits::default();
        assert!(matches!(parse(b"", &limits), Err(Error::Empty(_))));
        assert!(parse(b"\xff\xfe\xfd garbage", &limits).is_err());
        let gz = fixture("go-cpu.pb.gz");
        let err = parse(&gz[..gz.len() / 2], &limits).unwrap_err();
        assert!(matches!(err, Error::Gzip(_)), "{err}");
    }

    #[test]
    fn decompression_is_capped() {
        let gz = fixture("go-cpu.pb.gz");
        let err = parse(
            &gz,
            &Limits {
                max_decompressed: 1000,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }

    #[test]
    fn many_tiny_messages_are_refused_before_decoding() {
        // 1M empty samples: 2 MB on the wire, ~72 MB decoded.
        let bytes: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], 1 << 20)
            .flatten()
            .collect();
        let limits = Limits {
            max_decoded: 32 << 20,
            ..Limits::default()
        };
        assert!(matches!(
            parse(&bytes, &limits),
            Err(Error::TooLarge { .. })
        ));
    }
}
