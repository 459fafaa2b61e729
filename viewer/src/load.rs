//! Loading: a path, `-` (stdin), an `http(s)://` URL or a stored snapshot →
//! bytes → a validated [`Profile`]. gzip, raw pprof protobuf and folded text
//! are told apart by their bytes, never by a file name.
//!
//! Hostile input is expected: every read is capped ([`Limits`]), the decoded
//! size is estimated before protobuf decoding allocates anything, and the
//! decoded profile is checked for dangling ids before anything indexes it,
//! so later stages can trust it.

mod folded;
mod validate;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use pprof::protos::Profile;
use prost::Message;

use crate::error::{Error, Result};
use crate::store::{Snapshot, Store};

pub use folded::{folded_to_profile, looks_folded};
pub use validate::validate;

const GIB: u64 = 1 << 30;

/// Size caps that keep memory bounded on hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most bytes read from a file, stdin or URL (default 1 GiB).
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

/// Where a profile comes from, after a PROFILE argument has been resolved.
#[derive(Debug, Clone)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    Path(PathBuf),
    /// An `http://` or `https://` URL, typically a live agent endpoint.
    Url(String),
    /// A snapshot in the store.
    Snapshot(Snapshot),
}

impl Source {
    /// Resolves a PROFILE argument: `-`, a URL, an existing file, or else a
    /// snapshot reference (`@latest`, `@prev`, an id, a label) in `store`.
    pub fn resolve(spec: &str, store: Option<&Store>) -> Result<Source> {
        if spec == "-" {
            return Ok(Source::Stdin);
        }
        if is_url(spec) {
            return Ok(Source::Url(spec.to_string()));
        }
        let path = Path::new(spec);
        // A file wins over a snapshot label of the same name: the user can
        // always write `@latest` or the id to mean the snapshot.
        if !spec.starts_with('@') && path.exists() {
            return Ok(Source::Path(path.to_path_buf()));
        }
        if let Some(store) = store {
            if let Some(snapshot) = store.resolve(spec)? {
                return Ok(Source::Snapshot(snapshot));
            }
        }
        Err(Error::NotFound(spec.to_string()))
    }

    /// A short description for headers and messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Stdin => "stdin".to_string(),
            Source::Path(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
            Source::Snapshot(s) => format!("snapshot {}", s.meta.id),
        }
    }

    /// Reads the raw bytes, capped by `limits.max_input`.
    pub fn read(&self, limits: &Limits) -> Result<Vec<u8>> {
        match self {
            Source::Stdin => read_capped(io::stdin().lock(), "stdin", limits.max_input),
            Source::Path(p) => read_path(p, limits),
            Source::Url(u) => fetch_url(u, limits, None),
            Source::Snapshot(s) => read_path(&s.profile_path, limits),
        }
    }

    /// Reads and parses the profile; errors name the input they came from.
    pub fn load(&self, limits: &Limits) -> Result<Profile> {
        let bytes = self.read(limits)?;
        parse(&bytes, limits).map_err(|e| Error::In {
            origin: self.describe(),
            inner: Box::new(e),
        })
    }
}

/// Loads a PROFILE argument (see [`Source::resolve`]) with default limits.
pub fn load(spec: &str, store: Option<&Store>) -> Result<Profile> {
    Source::resolve(spec, store)?.load(&Limits::default())
}

/// True for `http://` and `https://` URLs.
pub fn is_url(spec: &str) -> bool {
    let lower = spec.get(..8).unwrap_or(spec).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn read_path(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(&what, e))?;
    read_capped(file, &what, limits.max_input)
}

/// Reads at most `limit` bytes; one more means the input is too large.
fn read_capped(reader: impl Read, what: &str, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(what, e))?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: "input",
            limit,
        });
    }
    Ok(buf)
}

/// GETs `url` and returns the body, capped by `limits.max_input`.
///
/// `timeout` bounds the whole request; a CPU capture's `seconds` must fit in
/// it, so by default it is that many seconds plus a minute.
pub fn fetch_url(url: &str, limits: &Limits, timeout: Option<Duration>) -> Result<Vec<u8>> {
    let timeout = timeout.unwrap_or_else(|| {
        Duration::from_secs(capture_seconds(url).unwrap_or(0).saturating_add(60))
    });
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(timeout)
        .build();
    let fail = |reason: String| Error::Fetch {
        url: url.to_string(),
        reason,
    };
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            // The agent answers errors with a one-line plain-text reason.
            let status = r.status_text().to_string();
            let body = read_capped(r.into_reader(), url, 4096).unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            let reason = body.lines().next().unwrap_or("").trim().to_string();
            return Err(fail(if reason.is_empty() {
                format!("HTTP {code} {status}")
            } else {
                format!("HTTP {code} {status}: {reason}")
            }));
        }
        Err(ureq::Error::Transport(t)) => return Err(fail(one_line(&t.to_string()))),
    };
    read_capped(response.into_reader(), url, limits.max_input).map_err(|e| match e {
        Error::Io { error, .. } => fail(one_line(&error.to_string())),
        other => other,
    })
}

/// The `seconds` query parameter of a capture URL, if any.
pub fn capture_seconds(url: &str) -> Option<u64> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "seconds")
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

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
    let profile = decode_protobuf(bytes, limits)?;
    validate(&profile)?;
    Ok(profile)
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
    use pprof::protos::{Function, Location, Mapping, Sample, ValueType};
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

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_agent::encode;

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
        let folded = encode::fold(&p, 0);
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

    #[test]
    fn capture_seconds_reads_the_query() {
        assert_eq!(
            capture_seconds("http://h/debug/pprof/profile?seconds=5&x=1"),
            Some(5)
        );
        assert_eq!(capture_seconds("http://h/debug/pprof/heap"), None);
    }
}
