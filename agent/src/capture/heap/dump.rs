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
/// lines are scanned byte by byte once, without splitting them into words,
/// and a dump of a megabyte or more is parsed in two halves at once.
pub fn parse_bytes(bytes: &[u8]) -> Result<HeapDump, DumpError> {
    parse_bytes_in_halves_from(bytes, PARALLEL_BYTES)
}

/// Dumps this large are parsed in two halves on two threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// [`parse_bytes`] with the size from which it splits the work (for tests
/// and fuzzing, which check that both ways give the same answer).
#[doc(hidden)]
pub fn parse_bytes_in_halves_from(bytes: &[u8], min_len: usize) -> Result<HeapDump, DumpError> {
    if bytes.len() >= min_len
        && let Some(at) = memchr::memmem::find(&bytes[bytes.len() / 2..], b"\n@")
        && let Some(dump) = parse_in_halves(bytes, bytes.len() / 2 + at + 1)
    {
        return Ok(dump);
    }
    parse_whole(bytes)
}

/// The header and the stacks up to `at` on this thread, the stacks from
/// `at` (the start of a stack line) on another. `None` whenever the halves
/// do not simply add up (any error, the mapped libraries before `at`): the
/// caller then parses the whole, which also numbers an error's line.
fn parse_in_halves(bytes: &[u8], at: usize) -> Option<HeapDump> {
    let (head, tail) = bytes.split_at(at);
    let (head, tail) = std::thread::scope(|scope| {
        let tail = std::thread::Builder::new()
            .name("profscope-heap-parse".into())
            .spawn_scoped(scope, || scan_body(Lines { rest: tail, n: 0 }, true))
            .ok()?;
        let head = parse_header(head).and_then(|(mut dump, lines)| {
            let body = scan_body(lines, false)?;
            dump.stacks = body.stacks;
            Ok((dump, body.total, body.ended))
        });
        Some((head, tail.join().ok()?))
    })?;
    match (head, tail) {
        (Ok((mut dump, Some(total), false)), Ok(tail)) => {
            dump.total = total;
            dump.stacks.extend(tail.stacks);
            Some(dump)
        }
        _ => None,
    }
}

fn parse_whole(bytes: &[u8]) -> Result<HeapDump, DumpError> {
    let (mut dump, lines) = parse_header(bytes)?;
    let body = scan_body(lines, false)?;
    dump.stacks = body.stacks;
    dump.total = body
        .total
        .ok_or_else(|| err(1, "no heap totals (t*:) line"))?;
    Ok(dump)
}

/// `heap_v2/<period>`: the dump so far, and the lines after the header.
fn parse_header(bytes: &[u8]) -> Result<(HeapDump, Lines<'_>), DumpError> {
    let mut lines = Lines { rest: bytes, n: 0 };
    let (n, header) = lines.next().ok_or_else(|| err(1, "empty dump"))?;
    let period = header
        .strip_prefix(b"heap_v2/")
        .ok_or_else(|| err(n, "expected a heap_v2/<period> header"))?;
    let sample_period: u64 = std::str::from_utf8(period)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| err(n, "sampling period is not a number"))?;
    let dump = HeapDump {
        sample_period,
        total: Counts::default(),
        stacks: Vec::new(),
    };
    Ok((dump, lines))
}

/// What the lines after the header hold.
struct Body {
    stacks: Vec<DumpStack>,
    /// The heap totals: the first `t*` line outside a stack.
    total: Option<Counts>,
    /// The mapped libraries section was reached.
    ended: bool,
}

/// Stack lines with their counts, until the mapped libraries. With
/// `seen_total`, a `t*` line outside a stack is an error.
fn scan_body(lines: Lines<'_>, mut seen_total: bool) -> Result<Body, DumpError> {
    let mut body = Body {
        stacks: Vec::new(),
        total: None,
        ended: false,
    };
    let mut current: Option<Vec<u64>> = None;
    for (n, line) in lines {
        if line.starts_with(b"MAPPED_LIBRARIES") {
            body.ended = true;
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
                Some(addresses) => body.stacks.push(DumpStack { addresses, counts }),
                None if !seen_total => {
                    body.total = Some(counts);
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
    Ok(body)
}

/// The error for `problem` at 1-based `line`.
fn err(line: usize, problem: &str) -> DumpError {
    DumpError {
        line,
        problem: problem.to_string(),
    }
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

    /// A seeded generator: the same inputs on every run.
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut rng = profscope_test_support::XorShift::new(seed);
        move || rng.next()
    }

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
    const REAL: &str = include_str!("../../../tests/data/jemalloc-5.3.1.heap");

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
    /// never overflows. The cargo-fuzz target `heap_dump` (`fuzz/`) goes further.
    #[test]
    fn mutated_dumps_never_panic() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
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
            let parsed = parse_bytes(&bytes);
            assert_eq!(parse_bytes_in_halves_from(&bytes, 0), parsed);
            if let Ok(dump) = parsed {
                let _ = crate::capture::heap::HeapSnapshot::from_dump(
                    dump,
                    std::time::SystemTime::UNIX_EPOCH,
                );
            }
        }
        // Extreme counts saturate instead of overflowing.
        let huge = "heap_v2/1\n  t*: 1: 1 [1: 1]\n@ 0x1\n  t*: 18446744073709551615: 18446744073709551615 [1: 1]\n@ 0x1\n  t*: 18446744073709551615: 18446744073709551615 [1: 1]\n";
        let snap = crate::capture::heap::HeapSnapshot::from_dump(
            parse(huge).unwrap(),
            std::time::SystemTime::UNIX_EPOCH,
        );
        assert_eq!(snap.stacks[&[1][..]][3], i64::MAX);
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

    /// The one-pass scanner against a split-then-parse reference, on
    /// seeded random words of every length and alphabet.
    #[test]
    fn fast_hex_matches_the_reference() {
        fn reference(line: &[u8]) -> Option<Vec<u64>> {
            let words: Vec<&[u8]> = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .collect();
            words
                .iter()
                .take(MAX_FRAMES)
                .map(|w| {
                    let d = w.strip_prefix(b"0x").unwrap_or(w);
                    if d.is_empty() || d.len() > 16 {
                        return None;
                    }
                    d.iter().try_fold(0u64, |v, &b| {
                        (HEX[b as usize] != 0xff).then(|| v << 4 | u64::from(HEX[b as usize]))
                    })
                })
                .collect()
        }
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let alphabet = b"0123456789abcdefABCDEFxg \t\xff";
        for _ in 0..20_000 {
            let mut line = Vec::new();
            for _ in 0..(next() % 6) {
                line.push(b' ');
                if next() % 2 == 0 {
                    line.extend_from_slice(b"0x");
                }
                let len = next() % 20;
                for _ in 0..len {
                    // Mostly lowercase hex, sometimes anything.
                    let pick = if next() % 16 == 0 {
                        next() % alphabet.len() as u64
                    } else {
                        next() % 16
                    };
                    line.push(alphabet[pick as usize]);
                }
            }
            let mut out = Vec::new();
            let fast = parse_addresses(&line, &mut out).map(|()| out);
            assert_eq!(
                fast,
                reference(&line),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    /// A dump of `copies` times the real dump's stacks.
    fn big_dump(copies: usize) -> String {
        let (head, rest) = REAL.split_once("\n@").unwrap();
        let (stacks, maps) = rest.split_once("\nMAPPED_LIBRARIES").unwrap();
        let mut text = format!("{head}\n");
        for _ in 0..copies {
            text.push('@');
            text.push_str(stacks);
            text.push('\n');
        }
        text.push_str("MAPPED_LIBRARIES");
        text.push_str(maps);
        text
    }

    #[test]
    fn halves_add_up_to_the_whole() {
        let big = big_dump(1000);
        assert!(big.len() > PARALLEL_BYTES, "{} bytes", big.len());
        let whole = parse_whole(big.as_bytes()).unwrap();
        assert_eq!(whole.stacks.len(), 1000 * 5);
        assert!(parse_in_halves(big.as_bytes(), big.find("\n@").unwrap() + 1).is_some());
        assert_eq!(parse_bytes(big.as_bytes()), Ok(whole));
        // The mapped libraries early in the first half end the stacks there.
        let cut = big.find("\n@").unwrap() + 1;
        let early = format!("{}MAPPED_LIBRARIES:\n{}", &big[..cut], &big[cut..]);
        let whole_early = parse_whole(early.as_bytes()).unwrap();
        assert_eq!(whole_early.stacks.len(), 0);
        assert_eq!(parse_bytes(early.as_bytes()), Ok(whole_early));
        // Broken anywhere, in either half: the same error, same line.
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        for _ in 0..40 {
            let rng = next();
            let mut bytes = big.clone().into_bytes();
            let at = (rng as usize) % bytes.len();
            bytes[at] = b"@tz\n 0"[(rng >> 40) as usize % 6];
            assert_eq!(
                parse_bytes_in_halves_from(&bytes, 0),
                parse_whole(&bytes),
                "byte {at}"
            );
        }
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
