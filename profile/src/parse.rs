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

use crate::error::{Error, Result};
use crate::folded::{folded_to_profile, looks_folded};
use crate::proto::Profile;
use crate::validate::validate;

const GIB: u64 = 1 << 30;

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

/// Parses bytes as gzip (of either form below), a raw pprof protobuf, or
/// folded stacks, and validates the result.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Profile> {
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
        let raw = gunzip(bytes, limits.max_decompressed)?;
        if raw.is_empty() {
            return Err(Error::Empty("decompressed input".to_string()));
        }
        if raw.starts_with(&GZIP_MAGIC) {
            return Err(Error::Format("gzip inside gzip".to_string()));
        }
        return parse_plain(&raw, limits);
    }
    parse_plain(bytes, limits)
}

fn parse_plain(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if looks_folded(text) {
            return folded_to_profile(text);
        }
    }
    let pprof = decode_protobuf(bytes, limits).and_then(|profile| {
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
    use crate::proto::{Function, Location, Mapping, Sample, ValueType};
    use std::mem::size_of;
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
                let element = match field {
                    1 | 11 => size_of::<ValueType>(),
                    2 => size_of::<Sample>(),
                    3 => size_of::<Mapping>(),
                    4 => size_of::<Location>(),
                    5 => size_of::<Function>(),
                    6 => size_of::<String>(),
                    _ => 0,
                } as u64;
                // Nested elements are at least 2 bytes and at most ~32 bytes
                // decoded (a `Label`), hence 16x the payload.
                total = total.saturating_add(element + 16 * len as u64);
            }
            _ => return None,
        }
    }
    Some(total)
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
