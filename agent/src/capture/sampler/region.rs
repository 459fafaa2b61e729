//! The sampler's memory: one anonymous mapping, made when the first
//! consumer starts and unmapped after the last one ends, holding a
//! single-producer ring per sampled thread and the address ranges the
//! handler validates its reads against.
//!
//! It is mapped, not allocated: nothing of it goes through the global
//! allocator, so it never shows in a heap profile, and only the pages of
//! threads that were sampled become resident. Size: [`MAX_THREADS`] slots of
//! [`RING`] records of [`MAX_DEPTH`] frames, 1,056 bytes a record, 67.6 KB
//! a slot, 69 MB of address space reserved (`MAP_NORESERVE`), about 67 KB
//! resident per busy thread at most.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Frames kept per sample (async Rust stacks run 40–70 frames deep).
pub(super) const MAX_DEPTH: usize = 128;
/// Records per thread between two drains; the aggregator drains when half
/// a ring's worth of periods has passed (and a thread's CPU timer fires at
/// most once per period, or per scheduler tick above the tick rate).
pub(super) const RING: usize = 64;
/// Threads sampled at once; threads past it are counted, not sampled.
pub(super) const MAX_THREADS: usize = 1024;
/// Address ranges of each kind in a snapshot: two writable ranges per
/// sampled thread (its stack and its signal stack) and as many again for
/// the rest of the process (heap arenas, libraries' data).
pub(super) const MAX_RANGES: usize = MAX_THREADS * 2 + 2048;
/// A slot's `tid` while its thread has exited but its records are not
/// drained yet: no handler writes it, no new thread takes it.
pub(super) const RETIRED: i32 = -1;

/// Ranges dropped from snapshots because more mappings existed than
/// [`MAX_RANGES`] (their samples keep only the leaf).
pub(crate) static TRUNCATED: AtomicU64 = AtomicU64::new(0);

/// One sample as the handler wrote it.
#[repr(C)]
pub(super) struct Record {
    /// Frames written, at most [`MAX_DEPTH`].
    pub(super) depth: u32,
    /// The thread's label-set id when it was interrupted (0: none).
    pub(super) labels: u32,
    /// [`KIND_TIMER`] or [`KIND_DIRECTED`].
    pub(super) kind: u32,
    /// Timer periods this sample stands for: 1 + the expirations the
    /// kernel folded into this signal (`si_overrun`). Per-thread CPU timers
    /// are checked at scheduler ticks, so above the kernel's tick rate one
    /// signal stands for several periods.
    pub(super) weight: u32,
    /// The thread that wrote it (a slot's thread can change between two
    /// drains; the record's own says whose it is).
    pub(super) tid: i32,
    _pad: u32,
    /// CLOCK_MONOTONIC when it was taken, in ns.
    pub(super) at: u64,
    /// The interrupted instruction, then return addresses, leaf first.
    pub(super) frames: [u64; MAX_DEPTH],
}

/// A sample taken by the thread's CPU timer.
pub(super) const KIND_TIMER: u32 = 1;
/// A sample asked for by a consumer (`tgkill`/`sigqueue`): not CPU time.
pub(super) const KIND_DIRECTED: u32 = 2;

/// One thread's ring: the handler (on that thread only) writes at `head`,
/// the aggregator reads at `tail`.
#[repr(C)]
pub(super) struct Slot {
    /// The thread sampled into this slot, 0 when free, [`RETIRED`] while
    /// its last records wait for the aggregator.
    pub(super) tid: AtomicI32,
    /// Records written (wrapping), by the handler.
    pub(super) head: AtomicU32,
    /// Records read (wrapping), by the aggregator.
    pub(super) tail: AtomicU32,
    /// Samples dropped because the ring was full.
    pub(super) lost: AtomicU32,
    /// Written by the handler before it publishes `head`, read by the
    /// aggregator after it loads `head`.
    records: UnsafeCell<[Record; RING]>,
}

/// Sorted, non-overlapping `[start, end)` address ranges.
#[repr(C)]
pub(super) struct Ranges {
    len: AtomicUsize,
    /// Written only while no handler can read this snapshot.
    ranges: UnsafeCell<[(u64, u64); MAX_RANGES]>,
}

impl Ranges {
    /// The range holding `addr`, if any. Reads only this struct.
    #[inline(always)]
    pub(super) fn find(&self, addr: u64) -> Option<(u64, u64)> {
        let len = self.len.load(Ordering::Acquire).min(MAX_RANGES);
        // SAFETY: the first `len` entries were written before `len` was
        // released, and are not written again while this snapshot is read.
        let ranges = unsafe { &(&*self.ranges.get())[..len] };
        let i = ranges.partition_point(|&(start, _)| start <= addr);
        let &(start, end) = ranges.get(i.checked_sub(1)?)?;
        (addr < end).then_some((start, end))
    }
}

/// A snapshot of where reads are safe: writable mappings (stacks among
/// them, each its own range: touching ones are not merged, so a walk never
/// strays from a stack into its neighbour) and executable ones (where
/// return addresses must point), the program's own among them (built with
/// frame pointers).
#[repr(C)]
pub(super) struct Snapshot {
    pub(super) stacks: Ranges,
    pub(super) code: Ranges,
    pub(super) own_code: Ranges,
}

/// The whole mapping.
#[repr(C)]
pub(super) struct Region {
    /// Which of `snapshots` handlers read (0 or 1).
    pub(super) current: AtomicUsize,
    pub(super) snapshots: [Snapshot; 2],
    pub(super) slots: [Slot; MAX_THREADS],
}

/// Owner of the mapping.
pub(super) struct Mapping {
    ptr: *mut Region,
}

// SAFETY: the region is shared memory by design; every field that more
// than one thread touches is atomic or follows the ring protocol
// (single producer per slot, single consumer).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps a zeroed region (all slots free, snapshots empty).
    pub(super) fn new() -> std::io::Result<Mapping> {
        // Zeroed pages are a valid `Region`: every field is an atomic, an
        // integer or an array of them.
        Ok(Mapping {
            ptr: map_zeroed::<Region>()?,
        })
    }

    pub(super) fn region(&self) -> &Region {
        // SAFETY: `ptr` is a live mapping of a `Region` until drop.
        unsafe { &*self.ptr }
    }

    pub(super) fn as_ptr(&self) -> *mut Region {
        self.ptr
    }
}

/// Zeroed, private, anonymous pages for a `T`, outside the heap allocator
/// (the caller unmaps them, or keeps them for good). Only for a `T` whose
/// all-zero bytes are a valid value.
pub(super) fn map_zeroed<T>() -> std::io::Result<*mut T> {
    // SAFETY: an anonymous private mapping with no address hint; the
    // result is checked before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<T>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ptr.cast::<T>())
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped. The stream unpublishes
        // the region and waits for handlers in flight before dropping it.
        unsafe {
            libc::munmap(self.ptr.cast(), std::mem::size_of::<Region>());
        }
    }
}

impl Slot {
    /// The record at ring position `index` (wrapping), for the producer.
    #[inline(always)]
    pub(super) fn record_ptr(&self, index: u32) -> *mut Record {
        // SAFETY: `index % RING` is in bounds of the array.
        unsafe {
            self.records
                .get()
                .cast::<Record>()
                .add(index as usize % RING)
        }
    }

    /// Touches every page of the ring, so the handler never takes a page
    /// fault writing a record (faults cost tens of microseconds in a VM).
    /// Only while no handler writes this slot (before it is assigned).
    pub(super) fn prefault(&self) {
        let base = self.records.get().cast::<u8>();
        let len = std::mem::size_of::<[Record; RING]>();
        for offset in (0..len).step_by(4096) {
            // SAFETY: inside the records array; no handler writes an
            // unassigned slot, and a record's contents are only read after
            // the handler rewrote it.
            unsafe { std::ptr::write_volatile(base.add(offset), 0) };
        }
    }

    /// Records waiting for the aggregator, oldest first, then marks them
    /// read. Runs on the aggregator thread only.
    pub(super) fn drain(&self, mut each: impl FnMut(&Record)) {
        let head = self.head.load(Ordering::Acquire);
        let mut tail = self.tail.load(Ordering::Relaxed);
        while tail != head {
            // SAFETY: records before `head` are complete (the handler
            // released `head` after writing) and not rewritten until
            // `tail` passes them.
            each(unsafe { &*self.record_ptr(tail) });
            tail = tail.wrapping_add(1);
        }
        self.tail.store(tail, Ordering::Release);
    }
}

/// Reads `/proc/self/maps` into `snapshot`: writable mappings into
/// `stacks` (sorted), executable ones into `code` (sorted and merged),
/// those of the file `own` (the program) also into `own_code`. Runs on the
/// aggregator thread, never in a handler.
pub(super) fn fill_snapshot(snapshot: &Snapshot, maps: &str, own: Option<&str>) {
    let mut stacks: Vec<(u64, u64)> = Vec::new();
    let mut code: Vec<(u64, u64)> = Vec::new();
    let mut own_code: Vec<(u64, u64)> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let perms = perms.as_bytes();
        if perms.first() != Some(&b'r') {
            continue;
        }
        if perms.get(2) == Some(&b'x') {
            code.push((start, end));
            // offset, device, inode, then the path.
            if own.is_some() && fields.nth(3) == own {
                own_code.push((start, end));
            }
        } else if perms.get(1) == Some(&b'w') {
            stacks.push((start, end));
        }
    }
    store(&snapshot.stacks, stacks, false);
    store(&snapshot.code, code, true);
    store(&snapshot.own_code, own_code, true);
}

fn store(into: &Ranges, mut ranges: Vec<(u64, u64)>, merge: bool) {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if merge && start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    if merged.len() > MAX_RANGES {
        TRUNCATED.fetch_add((merged.len() - MAX_RANGES) as u64, Ordering::Relaxed);
        merged.truncate(MAX_RANGES);
    }
    // Nobody reads this snapshot now (the stream swaps, then waits for
    // handlers in flight, before refilling the other one): plain writes
    // through the atomic length's release are enough.
    let dst = into.ranges.get();
    for (i, r) in merged.iter().enumerate() {
        // SAFETY: `i < MAX_RANGES`; no handler reads this snapshot while it
        // is refilled (see above).
        unsafe { (*dst)[i] = *r };
    }
    into.len.store(merged.len(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sorts_merges_and_finds() {
        let mapping = Mapping::new().unwrap();
        let snap = &mapping.region().snapshots[0];
        fill_snapshot(
            snap,
            "7f00-7f10 rw-p 0 00:00 0 [stack]\n\
             1000-2000 r-xp 0 08:01 1 /bin/x\n\
             2000-3000 r-xp 0 08:01 1 /bin/x\n\
             5000-6000 r--p 0 08:01 1 /bin/x\n\
             7f10-7f20 rw-p 0 00:00 0\n\
             8000-9000 r-xp 0 08:01 2 /lib/y.so\n\
             garbage\n",
            Some("/bin/x"),
        );
        assert_eq!(snap.code.find(0x1800), Some((0x1000, 0x3000)));
        assert_eq!(snap.own_code.find(0x1800), Some((0x1000, 0x3000)));
        assert_eq!(snap.own_code.find(0x8800), None);
        assert_eq!(snap.code.find(0x8800), Some((0x8000, 0x9000)));
        // Touching writable mappings stay apart: a stack and its neighbour.
        assert_eq!(snap.stacks.find(0x7f10), Some((0x7f10, 0x7f20)));
        assert_eq!(snap.code.find(0x3000), None);
        assert_eq!(snap.stacks.find(0x7f08), Some((0x7f00, 0x7f10)));
        assert_eq!(snap.stacks.find(0x5000), None, "read-only is neither");
    }

    #[test]
    fn ring_drains_in_order() {
        let mapping = Mapping::new().unwrap();
        let slot = &mapping.region().slots[3];
        for depth in 1..=3u32 {
            let h = slot.head.load(Ordering::Relaxed);
            // SAFETY: the only producer, as the handler is for its slot.
            unsafe { (*slot.record_ptr(h)).depth = depth };
            slot.head.store(h + 1, Ordering::Release);
        }
        let mut seen = Vec::new();
        slot.drain(|r| seen.push(r.depth));
        assert_eq!(seen, [1, 2, 3]);
        slot.drain(|_| panic!("drained twice"));
    }
}
