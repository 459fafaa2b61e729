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
/// profiles are served (and pushed) often and read once. One thread: for
/// work whose CPU counts (the push thread's).
pub fn gzip(raw: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    gz.write_all(raw)
        .and_then(|()| gz.finish())
        .map_err(|e| write_error(e.to_string()))
}

/// [`gzip`] for work whose latency counts (an HTTP response): from
/// [`SPLIT_FROM`] bytes on, with two cores, the two halves deflate on two
/// threads at once, for about the same CPU in a little over half the time.
/// The second thread runs `enter` first and holds what it returns while it
/// works (the agent labels its allocations that way); with one core it is
/// [`gzip`], and without a thread to be had the halves deflate here, one
/// after the other.
pub fn gzip_two_threads<G>(raw: &[u8], enter: impl Fn() -> G + Sync) -> Result<Vec<u8>> {
    if raw.len() < SPLIT_FROM || !two_cores() {
        return gzip(raw);
    }
    gzip_halves(raw, enter)
}

/// Whether a second thread can run beside this one.
fn two_cores() -> bool {
    static TWO_CORES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TWO_CORES.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2))
}

/// Inputs this long or longer are deflated as two halves at once (a 10k-
/// stack heap profile is ~550 KB); smaller ones are not worth a thread.
pub(crate) const SPLIT_FROM: usize = 256 << 10;

/// One gzip member whose deflate stream is the two halves' streams back
/// to back (see [`gzip_made_in_two`]).
fn gzip_halves<G>(raw: &[u8], enter: impl Fn() -> G + Sync) -> Result<Vec<u8>> {
    let (head, tail) = raw.split_at(raw.len() / 2);
    gzip_made_in_two(|| head, || tail, enter)
}

/// gzip of `head()`'s bytes then `tail()`'s, each part made and deflated
/// at once on a thread of its own: `tail` on a second thread (which runs
/// `enter` first and holds what it returns), `head` on this one. For a
/// producer that can make its bytes in two parts (a heap profile's
/// samples, encoded in two halves): the making takes both cores, as the
/// deflating does. With one core, or without a thread to be had, both
/// parts are made here, one after the other.
///
/// One gzip member: the first part's deflate stream ends with a sync flush
/// (byte-aligned, not final), so the second's blocks simply follow;
/// neither refers back into the other, which deflate allows. The trailer's
/// CRC is the parts' CRCs combined.
pub fn gzip_made_in_two<G, H, T>(
    head: impl FnOnce() -> H,
    tail: impl FnOnce() -> T + Send,
    enter: impl Fn() -> G + Sync,
) -> Result<Vec<u8>>
where
    H: AsRef<[u8]>,
    T: AsRef<[u8]>,
{
    made_in_two(head, tail, enter, two_cores())
}

/// [`gzip_made_in_two`], on two threads only when `threads` (the tests
/// take the one-thread way on any machine).
fn made_in_two<G, H, T>(
    head: impl FnOnce() -> H,
    tail: impl FnOnce() -> T + Send,
    enter: impl Fn() -> G + Sync,
    threads: bool,
) -> Result<Vec<u8>>
where
    H: AsRef<[u8]>,
    T: AsRef<[u8]>,
{
    // Taken by whichever thread makes it (the second, or this one when no
    // second thread could be started).
    let tail = std::sync::Mutex::new(Some(tail));
    let make_tail = || {
        let tail = tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        tail.map(|make| deflate_part(make().as_ref(), true))
    };
    if !threads {
        let head = deflate_part(head().as_ref(), false);
        return join_parts(head, make_tail());
    }
    let (head, tail) = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("profscope-gzip".into())
            .spawn_scoped(scope, || {
                let _entered = enter();
                make_tail()
            });
        let head = deflate_part(head().as_ref(), false);
        let tail = match spawned {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Some(Err(write_error("deflate thread panicked".into())))),
            Err(_) => make_tail(),
        };
        (head, tail)
    });
    join_parts(head, tail)
}

/// The gzip member of two deflated parts (the second made when `Some`).
fn join_parts(head: Result<Part>, tail: Option<Result<Part>>) -> Result<Vec<u8>> {
    let tail = tail.unwrap_or_else(|| Err(write_error("the second part was not made".into())));
    let (head, tail) = (head?, tail?);
    let mut crc = head.crc;
    crc.combine(&tail.crc);
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + head.bytes.len() + tail.bytes.len() + 8);
    out.extend_from_slice(&GZIP_HEADER);
    out.extend_from_slice(&head.bytes);
    out.extend_from_slice(&tail.bytes);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the input's length modulo 2^32 (the CRC counts it).
    out.extend_from_slice(&crc.amount().to_le_bytes());
    Ok(out)
}

/// One part of a gzip member: its raw deflate stream and its CRC.
struct Part {
    bytes: Vec<u8>,
    crc: flate2::Crc,
}

fn deflate_part(data: &[u8], last: bool) -> Result<Part> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    Ok(Part {
        bytes: deflate(data, last)?,
        crc,
    })
}

/// A gzip header as Go's writer makes one at best speed: deflate, no name,
/// no time, XFL 4 (fastest), OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

/// Raw deflate of `data` at best speed, ending with the final block when
/// `last`, else with a sync flush.
fn deflate(data: &[u8], last: bool) -> Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut deflater = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let read = deflater.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        let status = deflater
            .compress_vec(&data[read..], &mut out, flush)
            .map_err(|e| write_error(e.to_string()))?;
        let done = deflater.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete when all input is in and the output
            // buffer was not filled (so nothing is left to emit).
            Status::Ok | Status::BufError if !last && done && out.len() < out.capacity() => {
                return Ok(out);
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

fn write_error(reason: String) -> Error {
    Error::Write {
        what: "gzip",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Random bytes, runs and repeats, around the split size and far past it.
    fn inputs() -> Vec<Vec<u8>> {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        for len in [
            0,
            1,
            SPLIT_FROM - 1,
            SPLIT_FROM,
            SPLIT_FROM + 1,
            3 * SPLIT_FROM + 17,
        ] {
            out.push((0..len).map(|_| next() as u8).collect());
            out.push((0..len).map(|i| (i / 1000) as u8).collect());
            // A call-tree-like shape: short repeated records with a few
            // varying bytes.
            out.push(
                (0..len)
                    .map(|i| {
                        if i % 40 < 30 {
                            (i % 40) as u8
                        } else {
                            next() as u8 % 4
                        }
                    })
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn gzip_in_halves_reads_back_whole() {
        for raw in inputs() {
            for gz in [gzip(&raw).unwrap(), gzip_two_threads(&raw, || ()).unwrap()] {
                assert_eq!(gunzip(&gz, u64::MAX).unwrap(), raw, "{} bytes", raw.len());
            }
            let halves = gzip_halves(&raw, || ()).unwrap();
            assert_eq!(
                gunzip(&halves, u64::MAX).unwrap(),
                raw,
                "{} bytes",
                raw.len()
            );
            // One member: a reader that stops after the first still gets
            // it all (Go's gzip.Reader with Multistream(false)).
            let mut one = Vec::new();
            flate2::read::GzDecoder::new(&halves[..])
                .read_to_end(&mut one)
                .unwrap();
            assert_eq!(one, raw);
        }
    }

    #[test]
    fn gzip_made_in_two_reads_back_whole() {
        let inputs = inputs();
        for (i, raw) in inputs.iter().enumerate() {
            // Uneven parts, empty ones included.
            for (at, threads) in [0, raw.len() / 3, raw.len()]
                .into_iter()
                .flat_map(|at| [(at, true), (at, false)])
            {
                let (head, tail) = raw.split_at(at);
                let gz = made_in_two(|| head.to_vec(), || tail, || (), threads).unwrap();
                let mut one = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut one)
                    .unwrap();
                assert_eq!(&one, raw, "input {i} split at {at}, threads {threads}");
            }
        }
    }
}
