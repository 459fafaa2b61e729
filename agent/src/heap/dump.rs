//! Parser of jemalloc's heap dump (`prof.dump`, format `heap_v2`), kept
//! apart from jemalloc itself so it can be unit-tested on real dumps and
//! fuzzed without an allocator in the loop.
//!
//! ```text
//! heap_v2/524288
//!   t*: 28: 4194304 [0: 0]            ← totals: in-use objs: bytes [accum objs: bytes]
//!   t0: 28: 4194304 [0: 0]            ← per thread (ignored)
//! @ 0x55d0a1 0x55d0b2 …               ← a stack, return addresses, leaf first
//!   t*: 4: 4194304 [4: 4194304]       ← its counts, summed over threads
//!   t0: 4: 4194304 [4: 4194304]
//!
//! MAPPED_LIBRARIES:
//! …/proc/self/maps…
//! ```

/// Sampled counts of one stack (or of the whole heap), as jemalloc dumps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sampled objects live now.
    pub inuse_objects: u64,
    /// Bytes of the sampled objects live now.
    pub inuse_bytes: u64,
    /// Sampled objects allocated since start (with `prof_accum:true`).
    pub alloc_objects: u64,
    /// Bytes of the sampled objects allocated since start.
    pub alloc_bytes: u64,
}

/// One stack of a dump: return addresses, leaf first, and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpStack {
    /// Addresses as dumped (jemalloc's own frames included).
    pub addresses: Vec<u64>,
    /// Counts summed over threads (`t*`).
    pub counts: Counts,
}

/// A parsed heap dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapDump {
    /// Average sampling interval in bytes (`2^lg_prof_sample`).
    pub sample_period: u64,
    /// Whole-heap totals.
    pub total: Counts,
    /// Every stack with a count.
    pub stacks: Vec<DumpStack>,
}

/// Why a dump could not be parsed; names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("heap dump line {line}: {problem}")]
pub struct DumpError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: String,
}

/// Stacks deeper than this are cut: jemalloc's own limit is 128 frames.
const MAX_FRAMES: usize = 1024;

/// Parses a `heap_v2` dump. Unknown trailing sections (the mapped libraries)
/// are ignored: the agent reads `/proc/self/maps` itself.
pub fn parse(text: &str) -> Result<HeapDump, DumpError> {
    parse_bytes(text.as_bytes())
}

/// [`parse`] on the dump's bytes as read from the file: no UTF-8 pass over
/// megabytes of hex. A dump of 10k stacks holds ~650k addresses, so stack
/// lines are scanned byte by byte once, without splitting them into words.
pub fn parse_bytes(bytes: &[u8]) -> Result<HeapDump, DumpError> {
    let err = |line: usize, problem: &str| DumpError {
        line,
        problem: problem.to_string(),
    };
    let mut lines = Lines { rest: bytes, n: 0 };
    let (n, header) = lines.next().ok_or_else(|| err(1, "empty dump"))?;
    let period = header
        .strip_prefix(b"heap_v2/")
        .ok_or_else(|| err(n, "expected a heap_v2/<period> header"))?;
    let sample_period: u64 = std::str::from_utf8(period)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| err(n, "sampling period is not a number"))?;
    let mut dump = HeapDump {
        sample_period,
        total: Counts::default(),
        stacks: Vec::new(),
    };
    let mut current: Option<Vec<u64>> = None;
    let mut seen_total = false;
    for (n, line) in lines {
        if line.starts_with(b"MAPPED_LIBRARIES") {
            break;
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(addrs) = trimmed.strip_prefix(b"@") {
            let mut addresses = Vec::with_capacity(64);
            parse_addresses(addrs, &mut addresses).ok_or_else(|| err(n, "bad stack address"))?;
            current = Some(addresses);
        } else if let Some(counts) = trimmed.strip_prefix(b"t*:") {
            let counts = std::str::from_utf8(counts)
                .ok()
                .and_then(parse_counts)
                .ok_or_else(|| err(n, "bad t*: counts"))?;
            match current.take() {
                Some(addresses) => dump.stacks.push(DumpStack { addresses, counts }),
                None if !seen_total => {
                    dump.total = counts;
                    seen_total = true;
                }
                None => return Err(err(n, "t*: counts without a stack")),
            }
        } else if trimmed.starts_with(b"t") {
            // Per-thread counts: the `t*` line already sums them.
        } else {
            return Err(err(n, "unexpected line"));
        }
    }
    if !seen_total {
        return Err(err(1, "no heap totals (t*:) line"));
    }
    Ok(dump)
}

/// Lines with their 1-based numbers, found with `memchr`.
struct Lines<'a> {
    rest: &'a [u8],
    n: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        self.n += 1;
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some((self.n, line))
    }
}

/// Value of each byte as a hex digit; 0xff for any other byte.
const HEX: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// `0x55d0a1c0e1a2 0x55d0a1c0d0f3 …` (the `0x` is optional), at most
/// [`MAX_FRAMES`] of them; `None` on any other word.
fn parse_addresses(line: &[u8], out: &mut Vec<u64>) -> Option<()> {
    let n = line.len();
    let mut i = 0;
    while out.len() < MAX_FRAMES {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == n {
            break;
        }
        if line[i..].starts_with(b"0x") {
            i += 2;
        }
        let start = i;
        let mut value = 0u64;
        while i < n {
            let digit = HEX[line[i] as usize];
            if digit == 0xff {
                break;
            }
            value = value << 4 | u64::from(digit);
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 16 || (i < n && !line[i].is_ascii_whitespace()) {
            return None;
        }
        out.push(value);
    }
    Some(())
}

/// `28: 4194304 [4: 4194304]`
fn parse_counts(s: &str) -> Option<Counts> {
    let (cur, accum) = s.split_once('[')?;
    let (inuse_objects, inuse_bytes) = pair(cur)?;
    let (alloc_objects, alloc_bytes) = pair(accum.trim().strip_suffix(']')?)?;
    Some(Counts {
        inuse_objects,
        inuse_bytes,
        alloc_objects,
        alloc_bytes,
    })
}

fn pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Estimates the true `(objects, bytes)` from sampled ones, as Go does
/// (`scaleHeapSample`): an object of size `s` is sampled with probability
/// `1 − e^(−s/period)`, so each stack's counts are divided by that
/// probability at the stack's average object size.
pub fn unsample(objects: u64, bytes: u64, period: u64) -> (i64, i64) {
    if objects == 0 || bytes == 0 {
        return (0, 0);
    }
    if period <= 1 {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        return (clamp(objects), clamp(bytes));
    }
    let average = bytes as f64 / objects as f64;
    let scale = 1.0 / (1.0 - (-average / period as f64).exp());
    (
        (objects as f64 * scale) as i64,
        (bytes as f64 * scale) as i64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape of a real jemalloc 5.3.1 dump (addresses shortened).
    const DUMP: &str = "heap_v2/524288\n\
  t*: 66: 68157440 [70: 69206016]\n\
  t0: 64: 67108864 [66: 68157440]\n\
  t1: 2: 1048576 [4: 1048576]\n\
@ 0x55b3a1c0e1a2 0x55b3a1c0d0f3 0x55b3a1b2c4d5 0x7f1e2a229d90\n\
  t*: 64: 67108864 [64: 67108864]\n\
  t0: 64: 67108864 [64: 67108864]\n\
@ 0x55b3a1c0e1a2 0x55b3a1c0aaaa\n\
  t*: 2: 1048576 [6: 2097152]\n\
  t1: 2: 1048576 [6: 2097152]\n\
\n\
MAPPED_LIBRARIES:\n\
55b3a1a00000-55b3a1e00000 r-xp 00000000 08:01 1234 /usr/bin/service\n";

    #[test]
    fn parses_a_dump() {
        let dump = parse(DUMP).unwrap();
        assert_eq!(dump.sample_period, 524_288);
        assert_eq!(dump.total.inuse_objects, 66);
        assert_eq!(dump.stacks.len(), 2);
        assert_eq!(dump.stacks[0].addresses.len(), 4);
        assert_eq!(dump.stacks[0].addresses[0], 0x55b3_a1c0_e1a2);
        assert_eq!(
            dump.stacks[1].counts,
            Counts {
                inuse_objects: 2,
                inuse_bytes: 1_048_576,
                alloc_objects: 6,
                alloc_bytes: 2_097_152
            }
        );
    }

    /// A dump written by jemalloc 5.3.1 (tikv-jemalloc-sys 0.7.1): 16 × 1 MiB
    /// and 4096 × 1 KiB retained on the main thread, 16 × 1 MiB on another.
    const REAL: &str = include_str!("../../tests/data/jemalloc-5.3.1.heap");

    #[test]
    fn parses_a_real_dump() {
        let dump = parse(REAL).unwrap();
        assert_eq!(dump.sample_period, 524_288);
        assert_eq!(dump.stacks.len(), 5);
        let sum = |f: fn(&Counts) -> u64| dump.stacks.iter().map(|s| f(&s.counts)).sum::<u64>();
        // The header's totals are the sums over stacks.
        assert_eq!(sum(|c| c.inuse_objects), dump.total.inuse_objects);
        assert_eq!(sum(|c| c.inuse_bytes), dump.total.inuse_bytes);
        assert_eq!(sum(|c| c.alloc_bytes), dump.total.alloc_bytes);
        // 1 MiB objects are sampled whole: 14 + 13 of the 32 retained.
        let mib: Vec<u64> = dump
            .stacks
            .iter()
            .filter(|s| {
                s.counts.inuse_objects > 0
                    && s.counts.inuse_bytes / s.counts.inuse_objects == 1 << 20
            })
            .map(|s| s.counts.inuse_objects)
            .collect();
        assert_eq!(mib, [14, 13]);
        // Every stack starts inside jemalloc (same leaf address).
        assert!(
            dump.stacks
                .iter()
                .all(|s| s.addresses[0] == dump.stacks[0].addresses[0])
        );
        // A freed stack keeps its cumulative counts (prof_accum).
        assert!(
            dump.stacks
                .iter()
                .any(|s| s.counts.inuse_objects == 0 && s.counts.alloc_objects > 0)
        );
    }

    #[test]
    fn rejects_garbage_with_a_line_number() {
        assert_eq!(parse("").unwrap_err().problem, "empty dump");
        assert_eq!(parse("heap_v3/1\n").unwrap_err().line, 1);
        let e = parse("heap_v2/512\n  t*: 1: 2 [3: 4]\n@ 0xzz\n").unwrap_err();
        assert_eq!((e.line, e.problem.as_str()), (3, "bad stack address"));
        assert!(parse("heap_v2/512\n  t*: 1: 2\n").is_err());
        assert!(parse("heap_v2/512\n").is_err());
        assert!(parse("heap_v2/512\n  t*: 1: 2 [3: 4]\n  t*: 1: 2 [3: 4]\n").is_err());
    }

    /// Mutations of a real dump (seeded, so the run is the same every time):
    /// the parser answers a dump or an error, and unsampling what it accepts
    /// never overflows. The cargo-fuzz target in `agent/fuzz` goes further.
    #[test]
    fn mutated_dumps_never_panic() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let base = REAL.as_bytes();
        let tokens: [&[u8]; 8] = [
            b"@",
            b" 0x",
            b"t*:",
            b": ",
            b"[",
            b"]",
            b"18446744073709551615",
            b"\n",
        ];
        for _ in 0..3000 {
            let mut bytes = base.to_vec();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 4 {
                    0 => bytes.truncate(at),
                    1 if at < bytes.len() => bytes[at] = next() as u8,
                    2 => {
                        let t = tokens[(next() % tokens.len() as u64) as usize];
                        bytes.splice(at..at, t.iter().copied());
                    }
                    _ => {
                        let end = (at + (next() % 64) as usize).min(bytes.len());
                        bytes.drain(at..end);
                    }
                }
            }
            if let Ok(dump) = parse_bytes(&bytes) {
                let _ =
                    crate::heap::HeapSnapshot::from_dump(dump, std::time::SystemTime::UNIX_EPOCH);
            }
        }
        // Extreme counts saturate instead of overflowing.
        let huge = "heap_v2/1\n  t*: 1: 1 [1: 1]\n@ 0x1\n  t*: 18446744073709551615: 18446744073709551615 [1: 1]\n@ 0x1\n  t*: 18446744073709551615: 18446744073709551615 [1: 1]\n";
        let snap = crate::heap::HeapSnapshot::from_dump(
            parse(huge).unwrap(),
            std::time::SystemTime::UNIX_EPOCH,
        );
        assert_eq!(snap.stacks[&vec![1]][3], i64::MAX);
    }

    #[test]
    fn hex_addresses() {
        let parse_one = |s: &str| {
            let mut out = Vec::new();
            parse_addresses(s.as_bytes(), &mut out).and_then(|()| out.first().copied())
        };
        assert_eq!(parse_one("0x55d0a1c0e1a2"), Some(0x55d0_a1c0_e1a2));
        assert_eq!(parse_one("FFFFFFFFFFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_one("0x1FFFFFFFFFFFFFFFF"), None);
        assert_eq!(parse_one("0x"), None);
        assert_eq!(parse_one("0xg1"), None);
        assert_eq!(parse_one("0x1g"), None);
        let mut out = Vec::new();
        assert_eq!(parse_addresses(b" 0x1\t0x2  3 \r", &mut out), Some(()));
        assert_eq!(out, [1, 2, 3]);
        let many = " 0x1".repeat(MAX_FRAMES + 10);
        out.clear();
        assert_eq!(parse_addresses(many.as_bytes(), &mut out), Some(()));
        assert_eq!(out.len(), MAX_FRAMES);
    }

    #[test]
    fn bytes_and_text_parse_alike() {
        assert_eq!(parse_bytes(REAL.as_bytes()), parse(REAL));
        assert_eq!(
            parse_bytes(DUMP.replace('\n', "\r\n").as_bytes()),
            parse(DUMP)
        );
        // Invalid UTF-8 in a stack line is a bad address, not a panic.
        let e = parse_bytes(b"heap_v2/512\n  t*: 1: 2 [3: 4]\n@ 0x1 \xff\n").unwrap_err();
        assert_eq!((e.line, e.problem.as_str()), (3, "bad stack address"));
    }

    #[test]
    fn unsampling_matches_go() {
        // 55 sampled 1 MiB objects at a 512 KiB period: each was sampled
        // with probability 1 − e^−2 ≈ 0.8647, so ≈ 63.6 were allocated.
        let (objs, bytes) = unsample(55, 55 << 20, 512 << 10);
        assert_eq!(objs, 63);
        assert!((bytes as f64 / (63.6 * (1 << 20) as f64) - 1.0).abs() < 0.001);
        // Tiny objects: scale ≈ period / size.
        let (objs, _) = unsample(100, 100 * 16, 1 << 19);
        assert!((3_276_000..3_277_000).contains(&objs), "{objs}");
        assert_eq!(unsample(0, 0, 512), (0, 0));
        assert_eq!(unsample(3, 30, 1), (3, 30));
    }
}
