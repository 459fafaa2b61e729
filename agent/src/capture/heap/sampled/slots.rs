//! Where sampled allocations live: a reserved address range of the
//! wrapper's own, so `dealloc` tells a sampled object from any other by two
//! compares (no lock, no hash; measured in BENCHMARKS.md).
//!
//! The range is split into [`CLASSES`] power-of-two size classes (4 KiB to
//! 8 GiB); a class is a run of equal slots, each aligned to its size (so
//! over-aligned layouts up to 8 GiB come for free), with one [`Record`] per
//! slot in a second mapping: the object's stack, size and label set.
//! Slots are handed out by a bump index the first time and by a lock-free
//! stack (tagged against ABA) after; a freed slot is marked and only
//! recycled by the collector ([`collect`], one thread at a time), which
//! folds it into the cumulative `alloc_*` counts first. The reserve is
//! `PROT_NONE` (no memory committed, even under strict overcommit); a slot
//! is made writable when first handed out, and a freed slot of 64 KiB or
//! more gives its pages back at once.
//!
//! What the allocation side ([`take`], [`release`], [`resize`]) must never
//! do: allocate, take a lock, or call into the global allocator; its only
//! syscalls are the one-time reservation, `mprotect` of a slot's first use
//! and `madvise` of a large slot's free.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Size classes: slot `4 KiB << c`.
pub(crate) const CLASSES: usize = 22;
const PAGE_SHIFT: u32 = 12;
/// Address space per class (each class's base is aligned to it).
const CLASS_SPAN: usize = 1 << 33;
/// Slots per class at most (the smaller classes).
const MAX_SLOTS: usize = 1 << 15;
/// Frames kept per sampled allocation.
pub(crate) const DEPTH: usize = 48;
/// Slots of this size or more return their pages to the OS when freed.
const RELEASE_FROM: usize = 64 << 10;

/// A slot's record states.
const FREE: u32 = 0;
const LIVE: u32 = 1;
const FREED: u32 = 2;

/// One sampled allocation.
#[repr(C)]
pub(crate) struct Record {
    state: AtomicU32,
    /// Frames written in `frames`.
    pub(crate) depth: u32,
    /// The label set current on the allocating thread.
    pub(crate) labels: u32,
    /// Next free slot + 1 (free-stack link).
    next: AtomicU32,
    /// The collector's id for this record's stack + 1, 0 until it has
    /// read the stack once (so each record's stack is looked up once, not
    /// at every snapshot). Written only by the collector, cleared by `take`.
    stack: AtomicU32,
    /// Requested size (a realloc in place updates it).
    size: AtomicU64,
    /// Return addresses, the allocator's own frames first.
    pub(crate) frames: [u64; DEPTH],
}

impl Record {
    /// The object's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// The stack, leaf first.
    pub(crate) fn stack(&self) -> &[u64] {
        &self.frames[..(self.depth as usize).min(DEPTH)]
    }

    /// The collector's id for this record's stack, once it set one.
    pub(crate) fn stack_id(&self) -> Option<u32> {
        self.stack.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Notes the collector's id for this record's stack.
    pub(crate) fn set_stack_id(&self, id: u32) {
        self.stack.store(id.saturating_add(1), Ordering::Relaxed);
    }
}

/// A class's allocation state.
struct Class {
    /// Slots handed out for the first time so far.
    bump: AtomicUsize,
    /// Free stack: (tag << 32) | (slot + 1), 0 when empty.
    free: AtomicU64,
}

static CLASS: [Class; CLASSES] = [const {
    Class {
        bump: AtomicUsize::new(0),
        free: AtomicU64::new(0),
    }
}; CLASSES];

/// The object range `[BASE, BASE + CLASSES * CLASS_SPAN)`, 0 until made.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// The records' mapping.
static RECORDS: AtomicUsize = AtomicUsize::new(0);
/// Set when the reservation failed: sampling stays off.
static FAILED: AtomicBool = AtomicBool::new(false);
/// Sampled allocations that found no slot (class full, reservation
/// failed, object larger than the largest class) and were left unsampled.
pub(crate) static OVERFLOW: AtomicU64 = AtomicU64::new(0);

const SPAN: usize = CLASSES * CLASS_SPAN;

fn slots(class: usize) -> usize {
    MAX_SLOTS.min(CLASS_SPAN >> (PAGE_SHIFT as usize + class))
}

fn stride(class: usize) -> usize {
    1 << (PAGE_SHIFT as usize + class)
}

/// Index of the first record of `class` in the records mapping.
fn first_record(class: usize) -> usize {
    (0..class).map(slots).sum()
}

fn total_records() -> usize {
    first_record(CLASSES)
}

/// Whether `ptr` is a sampled object: the unsampled `dealloc`'s only cost.
#[inline(always)]
pub(crate) fn contains(ptr: *mut u8) -> bool {
    (ptr as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < SPAN
}

/// The object range, made on first use. Never unmapped.
fn base() -> Option<usize> {
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        return Some(base);
    }
    if FAILED.load(Ordering::Relaxed) {
        return None;
    }
    reserve()
}

#[cold]
fn reserve() -> Option<usize> {
    let reserve = SPAN + CLASS_SPAN;
    // SAFETY: an anonymous reservation with no access (nothing committed);
    // checked before use.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserve,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    let records_len = total_records() * std::mem::size_of::<Record>();
    // SAFETY: as above, readable and writable; zeroed pages are valid
    // records (state FREE).
    let records = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            records_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED || records == libc::MAP_FAILED {
        // SAFETY: unmaps only what was mapped just now.
        unsafe {
            if raw != libc::MAP_FAILED {
                libc::munmap(raw, reserve);
            }
            if records != libc::MAP_FAILED {
                libc::munmap(records, records_len);
            }
        }
        FAILED.store(true, Ordering::Relaxed);
        return None;
    }
    let aligned = (raw as usize).next_multiple_of(CLASS_SPAN);
    // Another thread may have won the race: ours goes.
    if RECORDS
        .compare_exchange(0, records as usize, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SAFETY: both mappings are ours alone, nothing handed out of them.
        unsafe {
            libc::munmap(raw, reserve);
            libc::munmap(records, records_len);
        }
        while BASE.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        return Some(BASE.load(Ordering::Acquire));
    }
    BASE.store(aligned, Ordering::Release);
    Some(aligned)
}

fn record(index: usize) -> &'static Record {
    let records = RECORDS.load(Ordering::Acquire) as *const Record;
    // SAFETY: `index < total_records()` (callers derive it from a class
    // and a slot below `slots(class)`), and the mapping lives forever.
    unsafe { &*records.add(index) }
}

/// The class whose slots hold `size` bytes aligned to `align`.
fn class_of(size: usize, align: usize) -> Option<usize> {
    let need = size.max(align).max(1);
    let class = (need.next_power_of_two().trailing_zeros()).saturating_sub(PAGE_SHIFT) as usize;
    (class < CLASSES).then_some(class)
}

/// Where `ptr` lives: (class, slot).
fn locate(ptr: *mut u8) -> (usize, usize) {
    let offset = (ptr as usize).wrapping_sub(BASE.load(Ordering::Relaxed));
    let class = offset / CLASS_SPAN;
    (class, (offset % CLASS_SPAN) / stride(class))
}

/// A slot for `size` bytes aligned to `align`, with its record to fill
/// (then [`publish`]), or `None` (counted in [`OVERFLOW`]).
///
/// Never allocates or locks.
pub(crate) fn take(size: usize, align: usize) -> Option<(*mut u8, &'static mut Record)> {
    let found = class_of(size, align).and_then(|class| Some((class, base()?)));
    let Some((class, base)) = found else {
        OVERFLOW.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let c = &CLASS[class];
    let slot = match pop(class) {
        Some(slot) => slot,
        None => {
            let slot = c.bump.fetch_add(1, Ordering::Relaxed);
            if slot >= slots(class) {
                c.bump.fetch_sub(1, Ordering::Relaxed);
                OVERFLOW.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let at = base + class * CLASS_SPAN + slot * stride(class);
            // SAFETY: the slot is inside our reservation and handed to no
            // one yet.
            let made = unsafe {
                libc::mprotect(
                    at as *mut libc::c_void,
                    stride(class),
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if made != 0 {
                // Left unused (the bump moved on): rare, bounded.
                OVERFLOW.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            slot
        }
    };
    let at = base + class * CLASS_SPAN + slot * stride(class);
    let index = first_record(class) + slot;
    let records = RECORDS.load(Ordering::Acquire) as *mut Record;
    // SAFETY: the slot is this caller's alone until published (popped or
    // bumped once), and its record is not read while its state is FREE.
    let record = unsafe { &mut *records.add(index) };
    record.size.store(size as u64, Ordering::Relaxed);
    record.stack.store(0, Ordering::Relaxed);
    Some((at as *mut u8, record))
}

/// Makes a filled record visible to the collector.
pub(crate) fn publish(record: &Record) {
    record.state.store(LIVE, Ordering::Release);
}

/// Frees the sampled object at `ptr`. Never allocates or locks.
pub(crate) fn release(ptr: *mut u8) {
    let (class, slot) = locate(ptr);
    if class >= CLASSES || slot >= slots(class) {
        return;
    }
    let record = record(first_record(class) + slot);
    if stride(class) >= RELEASE_FROM {
        // SAFETY: the whole slot is ours and its object is being freed;
        // its pages read as zero when reused.
        unsafe {
            libc::madvise(
                ptr.cast(),
                stride(class),
                libc::MADV_DONTNEED,
            )
        };
    }
    record.state.store(FREED, Ordering::Release);
}

/// The size of the sampled object at `ptr` becomes `size` if its slot holds
/// it (a `realloc` in place); false when it must move.
pub(crate) fn resize(ptr: *mut u8, size: usize, align: usize) -> bool {
    let (class, slot) = locate(ptr);
    // Grown within its slot or shrunk (a smaller class fits too: the slot
    // is aligned to its own size).
    if class >= CLASSES || slot >= slots(class) || class_of(size, align).is_none_or(|c| c > class)
    {
        return false;
    }
    record(first_record(class) + slot)
        .size
        .store(size as u64, Ordering::Relaxed);
    true
}

fn pop(class: usize) -> Option<usize> {
    let c = &CLASS[class];
    let mut head = c.free.load(Ordering::Acquire);
    loop {
        let top = (head & 0xffff_ffff) as usize;
        if top == 0 {
            return None;
        }
        let slot = top - 1;
        let next = record(first_record(class) + slot).next.load(Ordering::Relaxed) as u64;
        let tag = (head >> 32).wrapping_add(1);
        match c
            .free
            .compare_exchange_weak(head, (tag << 32) | next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(slot),
            Err(now) => head = now,
        }
    }
}

fn push(class: usize, slot: usize) {
    let c = &CLASS[class];
    let record = record(first_record(class) + slot);
    let mut head = c.free.load(Ordering::Acquire);
    loop {
        record
            .next
            .store((head & 0xffff_ffff) as u32, Ordering::Relaxed);
        let tag = (head >> 32).wrapping_add(1);
        match c.free.compare_exchange_weak(
            head,
            (tag << 32) | (slot as u64 + 1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// Visits every sampled object, with `true` for those in use and `false`
/// for those freed since the last call (their slots are recycled after).
/// One caller at a time (the collector holds its lock); not on the
/// allocation path.
pub(crate) fn collect(mut visit: impl FnMut(&Record, bool)) {
    if RECORDS.load(Ordering::Acquire) == 0 {
        return;
    }
    for (class, state) in CLASS.iter().enumerate() {
        let used = state.bump.load(Ordering::Acquire).min(slots(class));
        for slot in 0..used {
            let record = record(first_record(class) + slot);
            match record.state.load(Ordering::Acquire) {
                LIVE => visit(record, true),
                FREED => {
                    visit(record, false);
                    record.state.store(FREE, Ordering::Relaxed);
                    push(class, slot);
                }
                _ => {}
            }
        }
    }
}

/// Visits every live sampled object, recycling nothing (any thread, any
/// time; not on the allocation path).
pub(crate) fn collect_live(mut live: impl FnMut(&Record)) {
    if RECORDS.load(Ordering::Acquire) == 0 {
        return;
    }
    for (class, state) in CLASS.iter().enumerate() {
        let used = state.bump.load(Ordering::Acquire).min(slots(class));
        for slot in 0..used {
            let record = record(first_record(class) + slot);
            if record.state.load(Ordering::Acquire) == LIVE {
                live(record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_fit_size_and_alignment() {
        assert_eq!(class_of(1, 1), Some(0));
        assert_eq!(class_of(4096, 8), Some(0));
        assert_eq!(class_of(4097, 8), Some(1));
        assert_eq!(class_of(64, 1 << 16), Some(4));
        assert_eq!(class_of(8 << 30, 8), Some(21));
        assert_eq!(class_of((8 << 30) + 1, 8), None);
        assert_eq!(slots(0), MAX_SLOTS);
        assert_eq!(slots(21), 1);
    }
}
