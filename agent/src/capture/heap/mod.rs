//! Heap profiles from jemalloc: dump, parse, unsample, trim the allocator's
//! frames, symbolize, and build a Go-style heap profile.
//!
//! jemalloc does the sampling (every `2^lg_prof_sample` bytes on average,
//! 512 KiB by default like Go's `MemProfileRate`) and keeps counts per
//! stack; `prof.dump` writes them out. The profile is current at the moment
//! of the request, not as of the last GC as in Go.
//!
//! The jemalloc parts need the `heap` feature and a service that runs on
//! jemalloc with profiling ([`jemalloc_profiling!`](crate::jemalloc_profiling)).
//! Without them the endpoints answer 501 with how to turn it on.

#[doc(hidden)]
pub mod dump;
mod profile;
mod stack;
// One backend or the other, with the same functions: the rest of the module
// reads without feature gates.
#[cfg(feature = "heap")]
#[path = "jemalloc.rs"]
mod backend;
#[cfg(not(feature = "heap"))]
#[path = "disabled.rs"]
mod backend;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use profscope_profile::Profile;

use crate::Error;
use crate::shared::symbols::Symbolizer;
use dump::{HeapDump, unsample};
use profile::StackMemo;
pub use stack::{BuildStackHasher, Stack, StackHasher, StackMap};

#[cfg(feature = "heap")]
pub use backend::{Jemalloc, MallocConf};

cfg_sampled_alloc! {
    pub(crate) mod sampled;
    pub use sampled::{
        DEFAULT_PERIOD, SampledAlloc, estimated_in_use, is_installed, sample_period,
        set_sample_period, start_sampling,
    };
}

cfg_sampled_alloc! {
    /// Whether the sampling allocator serves this process's heap profiles.
    fn wrapper() -> bool {
        sampled::is_installed()
    }

    /// The heap snapshot the sampling allocator holds now.
    fn wrapper_snapshot() -> HeapSnapshot {
        sampled::snapshot()
    }

    /// The sampling allocator's estimate of bytes in use, when it is the
    /// global allocator (for `/debug/memory` and the recorder's trigger).
    pub fn wrapper_in_use() -> Option<u64> {
        sampled::estimated_in_use()
    }
}
cfg_not_sampled_alloc! {
    /// Whether the sampling allocator serves this process's heap profiles:
    /// never without it.
    fn wrapper() -> bool {
        false
    }

    /// Never called: [`wrapper`] is false.
    fn wrapper_snapshot() -> HeapSnapshot {
        HeapSnapshot::default()
    }

    /// The sampling allocator's estimate of bytes in use: none without it.
    pub fn wrapper_in_use() -> Option<u64> {
        None
    }
}

/// jemalloc's allocator statistics, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JemallocStats {
    /// `stats.allocated`: bytes allocated by the application.
    pub allocated: u64,
    /// `stats.active`: bytes in active pages.
    pub active: u64,
    /// `stats.resident`: bytes in resident data pages.
    pub resident: u64,
    /// `stats.mapped`: bytes in mapped active extents.
    pub mapped: u64,
    /// `stats.retained`: bytes retained, not returned to the OS.
    pub retained: u64,
    /// `stats.metadata`: bytes of allocator metadata.
    pub metadata: u64,
}

/// jemalloc's statistics now, when this build runs on jemalloc with the
/// `heap` feature.
pub fn jemalloc_stats() -> Option<JemallocStats> {
    backend::stats()
}

/// What to tell a user whose build cannot produce heap profiles.
pub const NOT_ENABLED: &str = "heap profiling is not enabled: build profscope-agent with the \
     `heap` feature and add `profscope_agent::jemalloc_profiling!();` to the service's main.rs \
     (jemalloc as global allocator with profiling on), or with the `sampled-alloc` feature and \
     `profscope_agent::sampled_alloc!(std::alloc::System);` (any allocator)";

/// Go's heap sample types, in Go's order.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// The index of `sample_type` in [`SAMPLE_TYPES`] (`inuse_space`'s for a
/// name that is not there).
pub(crate) fn sample_index(sample_type: &str) -> usize {
    SAMPLE_TYPES
        .iter()
        .position(|(t, _)| *t == sample_type)
        .unwrap_or(3)
}

/// One stack's estimated true values, in [`SAMPLE_TYPES`] order.
pub type Values = [i64; 4];

/// A heap snapshot with sampling undone: per stack (dumped addresses, leaf
/// first) the estimated allocated/in-use objects and bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeapSnapshot {
    /// Sampling period of the dump, bytes.
    pub sample_period: u64,
    /// When the dump was taken.
    pub time: Option<SystemTime>,
    /// Estimated values per stack.
    pub stacks: StackMap<Values>,
    /// Each stack's first element is its label-set id, not an address (the
    /// sampling allocator's snapshots; jemalloc's dumps carry no labels).
    pub labelled: bool,
}

impl HeapSnapshot {
    /// Undoes sampling on a parsed dump (see [`dump::unsample`]), taking its
    /// stacks over rather than copying them.
    pub fn from_dump(dump: HeapDump, time: SystemTime) -> Self {
        let period = dump.sample_period;
        let mut stacks: StackMap<Values> =
            StackMap::with_capacity_and_hasher(dump.stacks.len(), Default::default());
        for s in dump.stacks {
            let c = s.counts;
            let (alloc_objects, alloc_space) = unsample(c.alloc_objects, c.alloc_bytes, period);
            let (inuse_objects, inuse_space) = unsample(c.inuse_objects, c.inuse_bytes, period);
            let v = stacks.entry(Stack::from(s.addresses)).or_default();
            for (slot, add) in
                v.iter_mut()
                    .zip([alloc_objects, alloc_space, inuse_objects, inuse_space])
            {
                // Saturating: a hostile dump must not overflow (and panic).
                *slot = slot.saturating_add(add);
            }
        }
        HeapSnapshot {
            sample_period: period,
            time: Some(time),
            stacks,
            labelled: false,
        }
    }

    /// `alloc_*` as the growth since `base`, `inuse_*` as now: godeltaprof's
    /// `delta_heap` (allocation counts are cumulative; what is in use is a
    /// level, not a flow).
    pub fn alloc_delta(&self, base: &HeapSnapshot) -> HeapSnapshot {
        let mut stacks = self.stacks.clone();
        for (stack, v) in stacks.iter_mut() {
            if let Some(old) = base.stacks.get(stack) {
                v[0] = v[0].saturating_sub(old[0]);
                v[1] = v[1].saturating_sub(old[1]);
            }
        }
        stacks.retain(|_, v| v.iter().any(|x| *x != 0));
        HeapSnapshot {
            sample_period: self.sample_period,
            time: base.time,
            stacks,
            labelled: self.labelled,
        }
    }

    /// The same snapshot, said to be taken at `time` (a delta's span starts
    /// at its base).
    pub fn with_time(mut self, time: SystemTime) -> Self {
        self.time = Some(time);
        self
    }

    /// `self − base`, per stack: Go's `?seconds=N` delta semantics.
    pub fn delta(&self, base: &HeapSnapshot) -> HeapSnapshot {
        let mut stacks = self.stacks.clone();
        for (stack, old) in &base.stacks {
            let v = stacks.entry(stack.clone()).or_default();
            for (slot, sub) in v.iter_mut().zip(old) {
                *slot = slot.saturating_sub(*sub);
            }
        }
        stacks.retain(|_, v| v.iter().any(|x| *x != 0));
        HeapSnapshot {
            sample_period: self.sample_period,
            time: base.time,
            stacks,
            labelled: self.labelled,
        }
    }
}

/// Takes jemalloc heap dumps into a private directory, one at a time, and
/// removes every file it writes, errors included.
#[derive(Debug)]
pub struct HeapProfiler {
    dir: DumpDir,
    /// Serializes dumps: jemalloc writes one file per call and the dump
    /// itself holds jemalloc's profiling locks.
    lock: tokio::sync::Mutex<u64>,
    /// In-use bytes and time of the most recent snapshot (for `/debug/memory`).
    last: std::sync::Mutex<Option<(i64, std::time::Instant)>>,
    /// The snapshot the last `delta_heap` request answered from: one state
    /// for the path, as godeltaprof keeps one per profile.
    delta_base: tokio::sync::Mutex<Option<HeapSnapshot>>,
    /// What profiles learned of the sampling allocator's stacks.
    memo: std::sync::Mutex<StackMemo>,
}

#[derive(Debug)]
enum DumpDir {
    /// Created on first use under the system temp dir, removed on drop;
    /// made anew (under a new name) when it vanished or was replaced.
    Private(std::sync::Mutex<Option<PathBuf>>),
    /// Given by the service; only our files in it are removed. Created
    /// (0700) when missing.
    Configured(PathBuf),
}

impl HeapProfiler {
    /// A heap profiler dumping into `dir`, or into a private temporary
    /// directory when `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        #[cfg(all(
            feature = "sampled-alloc",
            target_os = "linux",
            any(target_arch = "x86_64", target_arch = "aarch64")
        ))]
        if wrapper() {
            sampled::start_helper();
            // Allocations are sampled only once the walker's snapshot is
            // published, which the helper thread does as soon as it runs;
            // on a loaded machine that can be after the service's first
            // requests (whose large objects would then go unsampled). The
            // agent is built in `main`, after std's set-up, where it can be
            // published at once.
            sampled::walker_ready_now();
        }
        if dir.is_none() && backend::profiling_enabled() {
            sweep_dead_dirs(&std::env::temp_dir());
        }
        HeapProfiler {
            dir: match dir {
                Some(d) => DumpDir::Configured(d),
                None => DumpDir::Private(std::sync::Mutex::new(None)),
            },
            lock: tokio::sync::Mutex::new(0),
            last: std::sync::Mutex::new(None),
            delta_base: tokio::sync::Mutex::new(None),
            memo: Default::default(),
        }
    }

    /// Whether this process can produce heap profiles (the `heap` feature
    /// and jemalloc running with `prof:true`).
    pub fn is_available() -> bool {
        wrapper() || backend::profiling_enabled()
    }

    /// Switches sampling of new allocations on or off (`prof.active`).
    pub fn set_active(active: bool) -> Result<(), Error> {
        #[cfg(all(
            feature = "sampled-alloc",
            target_os = "linux",
            any(target_arch = "x86_64", target_arch = "aarch64")
        ))]
        if wrapper() {
            sampled::set_active(active);
            return Ok(());
        }
        backend::set_active(active)
    }

    /// Whether sampling of new allocations is on (`prof.active`).
    pub fn is_active() -> bool {
        #[cfg(all(
            feature = "sampled-alloc",
            target_os = "linux",
            any(target_arch = "x86_64", target_arch = "aarch64")
        ))]
        if wrapper() {
            return sampled::is_active();
        }
        backend::is_active()
    }

    /// The directory to dump into, checked before every dump: someone may
    /// have removed it, or put a file (or a symlink) in its place, while
    /// the service ran. A private directory is then made anew under a new
    /// name (the old path is left alone: it may be someone else's now); a
    /// configured one is created when missing, and anything else there is
    /// a 500 naming it until it is fixed.
    fn dir(&self) -> Result<PathBuf, Error> {
        match &self.dir {
            DumpDir::Configured(d) => match std::fs::symlink_metadata(d) {
                Ok(m) if m.is_dir() => Ok(d.clone()),
                Ok(_) => Err(Error::Internal(format!(
                    "heap dump directory {} is not a directory",
                    d.display()
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(d)
                        .map_err(|e| {
                            Error::Internal(format!(
                                "cannot create heap dump directory {}: {e}",
                                d.display()
                            ))
                        })?;
                    Ok(d.clone())
                }
                Err(e) => Err(Error::Internal(format!(
                    "cannot use heap dump directory {}: {e}",
                    d.display()
                ))),
            },
            DumpDir::Private(current) => {
                let mut current = current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(dir) = current.as_ref().filter(|d| is_private_dir(d)) {
                    return Ok(dir.clone());
                }
                let dir = create_private_dir().map_err(Error::Internal)?;
                *current = Some(dir.clone());
                Ok(dir)
            }
        }
    }

    /// Dumps the heap now and undoes sampling.
    pub async fn snapshot(&self) -> Result<HeapSnapshot, Error> {
        if wrapper() {
            // No dump, no file: the wrapper's records, read in place.
            return Ok(self.keep(wrapper_snapshot()));
        }
        if !Self::is_available() {
            return Err(Error::NotAvailable(NOT_ENABLED.into()));
        }
        let dir = self.dir()?;
        let mut counter = self.lock.lock().await;
        *counter += 1;
        let path = dir.join(format!("heap-{}-{}.dump", std::process::id(), *counter));
        let time = SystemTime::now();
        let dump = tokio::task::spawn_blocking(move || dump_and_parse(&path))
            .await
            .map_err(|e| Error::Internal(format!("heap dump thread failed: {e}")))??;
        drop(counter);
        Ok(self.keep(HeapSnapshot::from_dump(dump, time)))
    }

    /// Dumps the heap now on this thread (never a runtime's: the flight
    /// recorder's own thread and the heap endpoint's blocking task call
    /// it).
    pub(crate) fn snapshot_blocking(&self) -> Result<HeapSnapshot, Error> {
        if wrapper() {
            return Ok(self.keep(wrapper_snapshot()));
        }
        if !Self::is_available() {
            return Err(Error::NotAvailable(NOT_ENABLED.into()));
        }
        let dir = self.dir()?;
        let mut counter = self.lock.blocking_lock();
        *counter += 1;
        let path = dir.join(format!("heap-{}-{}.dump", std::process::id(), *counter));
        let time = SystemTime::now();
        let dump = dump_and_parse(&path)?;
        drop(counter);
        Ok(self.keep(HeapSnapshot::from_dump(dump, time)))
    }

    /// Notes a snapshot's in-use bytes for `/debug/memory`.
    fn keep(&self, snapshot: HeapSnapshot) -> HeapSnapshot {
        let in_use = snapshot
            .stacks
            .values()
            .fold(0i64, |sum, v| sum.saturating_add(v[3]));
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((in_use, std::time::Instant::now()));
        snapshot
    }

    /// A snapshot whose `alloc_*` values are the growth since the previous
    /// call (everything since start at the first), `inuse_*` current:
    /// what `/debug/pprof/delta_heap` serves.
    pub async fn delta_snapshot(&self) -> Result<HeapSnapshot, Error> {
        // Held across the dump, so two requests cannot take the same base.
        let mut base = self.delta_base.lock().await;
        let now = self.snapshot().await?;
        let answer = match base.as_ref() {
            Some(previous) => now.alloc_delta(previous),
            None => now.clone(),
        };
        *base = Some(now);
        Ok(answer)
    }

    /// `snapshot` as a pprof profile ([`HeapSnapshot::to_profile`]).
    pub fn profile(
        &self,
        snapshot: &HeapSnapshot,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Profile {
        self.with_memo(snapshot, |memo| {
            snapshot.to_profile_with(memo, symbolizer, default_type, end)
        })
    }

    /// [`profile`](Self::profile) as protobuf, written as it is built (no
    /// profile's worth of sample vectors in between).
    pub fn pprof(
        &self,
        snapshot: &HeapSnapshot,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Vec<u8> {
        self.with_memo(snapshot, |memo| {
            snapshot.to_pprof_with(memo, symbolizer, default_type, end)
        })
    }

    /// [`pprof`](Self::pprof) gzipped: the body `/debug/pprof/heap`
    /// answers with, made for an HTTP answer (whose latency counts): a
    /// large profile's samples are encoded and deflated in two parts at
    /// once, on two threads.
    pub fn gzipped_pprof(
        &self,
        snapshot: &HeapSnapshot,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Result<Vec<u8>, Error> {
        let enter = crate::capture::labels::agent_scope;
        if snapshot.stacks.len() < TWO_PARTS_FROM {
            let raw = self.pprof(snapshot, symbolizer, default_type, end);
            return Ok(profscope_profile::gzip_two_threads(&raw, enter)?);
        }
        // The memo stays locked through both deflates (the samples are
        // copied from it as they are encoded): concurrent heap requests
        // take turns on it.
        Ok(self.with_memo(snapshot, |memo| {
            snapshot.to_gzipped_pprof_with(memo, symbolizer, default_type, end, enter)
        })?)
    }

    /// Runs `f` with the memo for `snapshot`'s stacks. The sampling
    /// allocator's stacks are shared between its snapshots, so what one
    /// profile learned of them serves the next; a jemalloc dump's are new
    /// each time, and are not kept.
    fn with_memo<R>(&self, snapshot: &HeapSnapshot, f: impl FnOnce(&mut StackMemo) -> R) -> R {
        if !snapshot.labelled {
            return f(&mut StackMemo::default());
        }
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut memo)
    }

    /// The most recent snapshot's estimated in-use bytes and its age.
    pub fn last_in_use(&self) -> Option<(i64, Duration)> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|(bytes, at)| (bytes, at.elapsed()))
    }
}

/// Stacks from which a heap profile is encoded and deflated in two parts
/// at once (~110 KB of protobuf; smaller ones are not worth a thread).
const TWO_PARTS_FROM: usize = 2048;

impl Drop for HeapProfiler {
    fn drop(&mut self) {
        if let DumpDir::Private(current) = &self.dir
            && let Ok(current) = current.lock()
            && let Some(dir) = current.as_ref().filter(|d| is_private_dir(d))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether `dir` is still the directory we made: a real directory (not a
/// symlink), ours, readable by us alone.
fn is_private_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0
    })
}

/// Removes the empty `profscope-heap-<pid>-*` directories that processes
/// killed while running left in `tmp`: only those of dead pids, owned by
/// us, private and empty (a live process's, or anything else, stays).
pub fn sweep_dead_dirs(tmp: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("profscope-heap-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid <= 0 || pid as u32 == std::process::id() || pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        // `remove_dir` only removes an empty directory.
        if is_private_dir(&path) && std::fs::remove_dir(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn create_private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("profscope-heap-{}-{nanos:08x}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create heap dump directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Removes the dump file however the dump went.
struct RemoveOnDrop<'a>(&'a std::path::Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn dump_and_parse(path: &std::path::Path) -> Result<HeapDump, Error> {
    let _remove = RemoveOnDrop(path);
    backend::dump(path)?;
    let unreadable = |e: std::io::Error| {
        Error::Internal(format!("cannot read heap dump {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    // Mapped rather than read: no copy of megabytes into fresh heap pages.
    // SAFETY: the file is this request's own, in a directory only this
    // process writes to, and jemalloc has closed it; it is not modified
    // while mapped.
    let parsed = match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => dump::parse_bytes(&map),
        // An empty file cannot be mapped.
        Err(_) => dump::parse_bytes(&std::fs::read(path).map_err(unreadable)?),
    };
    parsed.map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_delta_subtracts_allocations_only() {
        let mut a = HeapSnapshot::default();
        a.stacks.insert(Stack::from([1]), [1, 10, 1, 10]);
        let mut b = a.clone();
        b.stacks.insert(Stack::from([1]), [3, 30, 1, 10]);
        b.stacks.insert(Stack::from([2]), [2, 20, 2, 20]);
        let d = b.alloc_delta(&a);
        assert_eq!(d.stacks[&[1][..]], [2, 20, 1, 10]);
        assert_eq!(d.stacks[&[2][..]], [2, 20, 2, 20]);
    }

    #[test]
    fn sweep_removes_empty_dirs_of_dead_pids_only() {
        let tmp = std::env::temp_dir().join(format!("profscope-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: String| {
            use std::os::unix::fs::DirBuilderExt;
            let d = tmp.join(name);
            std::fs::DirBuilder::new().mode(0o700).create(&d).unwrap();
            d
        };
        let gone = make(format!("profscope-heap-{dead}-0001"));
        let full = make(format!("profscope-heap-{dead}-0002"));
        std::fs::write(full.join("keep"), b"x").unwrap();
        let live = make(format!("profscope-heap-{}-0003", std::process::id()));
        let other = make(format!("other-{dead}"));
        assert_eq!(sweep_dead_dirs(&tmp), 1);
        assert!(!gone.exists());
        assert!(full.exists() && live.exists() && other.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn delta_subtracts_per_stack() {
        let mut a = HeapSnapshot::default();
        a.stacks.insert(Stack::from([1, 2]), [1, 10, 1, 10]);
        a.stacks.insert(Stack::from([3]), [5, 50, 5, 50]);
        let mut b = a.clone();
        b.stacks.insert(Stack::from([1, 2]), [3, 30, 2, 20]);
        b.stacks.remove(&[3][..]);
        let d = b.delta(&a);
        assert_eq!(d.stacks[&[1, 2][..]], [2, 20, 1, 10]);
        assert_eq!(d.stacks[&[3][..]], [-5, -50, -5, -50]);
        assert!(a.delta(&a).stacks.is_empty());
    }
}
