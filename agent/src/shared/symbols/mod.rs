//! Address → function, file and line, in-process, cached across requests;
//! and the process's executable mappings (path, range, offset, build id) so
//! offline tools can re-symbolize what the agent serves.
//!
//! One symbolizer serves every profile kind (CPU, heap, tasks). Its memory
//! stays small by construction:
//! - answers are cached per address, with function and file names
//!   interned, so a warm cache costs one copy of each distinct name;
//! - debug info is read from the mapped file one compilation unit at a
//!   time (`dwarf.rs`), so a lookup never holds a whole binary's parsed DWARF
//!   (tens of MB for a large service, the cost that addr2line-based
//!   symbolizers carry);
//! - the per-object indexes (symbols, unit ranges: a few MB) are dropped
//!   after [`DEBUG_INFO_IDLE`] without use.
//!
//! Stripped objects (a distribution's libc) are named from their separate
//! debug files or MiniDebugInfo (`debugfile.rs`), looked up under
//! [`DEFAULT_DEBUG_DIR`] unless configured otherwise; without them their
//! frames keep only the object's name.
//!
//! pprof-rs (at each capture start) and tokio (for task dumps) still resolve
//! through the `backtrace` crate, which parses the whole binary's DWARF into
//! its own cache; the agent clears that cache right after each such use.

mod debugfile;
mod demangle;
mod dwarf;
mod maps;
mod object;
mod reader;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

pub use debugfile::DEFAULT_DEBUG_DIR;
pub use maps::{Mapping, parse_maps};

use dwarf::RawFrame;
use object::ObjectFile;

/// One frame of an address's symbolization. An address inside inlined code
/// yields several, innermost first (pprof's `Line` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name, without the Rust hash suffix.
    pub function: Arc<str>,
    /// The linkage (mangled) symbol name, when the symbol table or DWARF's
    /// `DW_AT_linkage_name` has one (`_ZN…E` for Rust, `malloc` for C).
    pub linkage: Option<Arc<str>>,
    /// Source file, when debug info has it.
    pub file: Option<Arc<str>>,
    /// Source line, 0 when unknown.
    pub line: u32,
}

#[derive(Default)]
struct Cache {
    frames: HashMap<u64, Arc<[Frame]>>,
    names: HashSet<Arc<str>>,
    build_ids: HashMap<String, String>,
}

impl Cache {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.names.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.names.insert(new.clone());
        new
    }

    fn insert(&mut self, addr: u64, raw: Vec<RawFrame>) {
        let frames: Arc<[Frame]> = raw
            .into_iter()
            .map(|f| Frame {
                function: self.intern(&f.function),
                linkage: f.linkage.map(|l| self.intern(&l)),
                file: f.file.map(|file| self.intern(&file)),
                line: f.line,
            })
            .collect();
        self.frames.insert(addr, frames);
    }
}

/// How long an object's symbol and unit indexes are kept after their last
/// use.
pub const DEBUG_INFO_IDLE: Duration = Duration::from_secs(10);

/// Past this many cached addresses the cache starts over, so it stays
/// bounded (~125 bytes an address with two frames: 16 MB at most) in a
/// process that keeps meeting new code. A busy service's CPU profile holds
/// some 10–30k distinct addresses, a heap profile a few thousand.
const MAX_CACHED_ADDRESSES: usize = 1 << 17;

/// Resolves addresses of this process to frames, remembering every answer.
///
/// ```
/// use profscope_agent::symbols::Symbolizer;
///
/// #[inline(never)]
/// fn answer() -> u32 { 42 }
///
/// let symbolizer = Symbolizer::new();
/// let frames = symbolizer.resolve(answer as *const () as usize as u64);
/// assert!(frames.last().unwrap().function.ends_with("answer"));
/// ```
/// Clones share the caches (the recorder's thread and the HTTP layer use
/// one).
#[derive(Clone)]
pub struct Symbolizer {
    inner: Arc<Inner>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer::new()
    }
}

struct Inner {
    /// Where separate debug files are looked up; `None`: nowhere.
    debug_dir: Option<std::path::PathBuf>,
    state: Mutex<State>,
    /// Last use of the indexes, as milliseconds since `EPOCH`.
    last_use_ms: AtomicU64,
    /// Indexes are loaded and not yet released.
    loaded: AtomicBool,
    janitor: OnceLock<()>,
}

#[derive(Default)]
struct State {
    cache: Cache,
    /// Mapped objects by path; `None` for one that cannot be read.
    objects: HashMap<String, Option<ObjectFile>>,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(self: &Arc<Self>) {
        self.last_use_ms
            .store(EPOCH.elapsed().as_millis() as u64, Ordering::Release);
        self.janitor.get_or_init(|| {
            let weak: Weak<Inner> = Arc::downgrade(self);
            // A thread, not a task: the symbolizer does not require a runtime.
            let _ = std::thread::Builder::new()
                .name("profscope-symbols".into())
                .spawn(move || {
                    let _agent = crate::capture::labels::agent_scope();
                    loop {
                        std::thread::sleep(DEBUG_INFO_IDLE / 4);
                        let Some(inner) = weak.upgrade() else { break };
                        inner.release_if_idle(DEBUG_INFO_IDLE);
                    }
                });
        });
    }

    fn release_if_idle(&self, idle: Duration) -> bool {
        let last = self.last_use_ms.load(Ordering::Acquire);
        let now = EPOCH.elapsed().as_millis() as u64;
        if now.saturating_sub(last) >= idle.as_millis() as u64
            && self.loaded.swap(false, Ordering::AcqRel)
        {
            self.lock().objects = HashMap::default();
            return true;
        }
        false
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Symbolizer")
            .field("addresses", &state.cache.frames.len())
            .field("names", &state.cache.names.len())
            .field("objects", &state.objects.len())
            .finish()
    }
}

/// The environment variable naming the debug directory for
/// [`Symbolizer::new`] (empty: look for no separate debug files).
pub const DEBUG_DIR_ENV: &str = "PROFSCOPE_DEBUG_DIR";

impl Symbolizer {
    /// An empty symbolizer reading separate debug files from
    /// `$PROFSCOPE_DEBUG_DIR`, or [`DEFAULT_DEBUG_DIR`] when it is unset.
    pub fn new() -> Self {
        let dir = match std::env::var_os(DEBUG_DIR_ENV) {
            Some(dir) if dir.is_empty() => None,
            Some(dir) => Some(dir.into()),
            None => Some(DEFAULT_DEBUG_DIR.into()),
        };
        Self::with_debug_dir(dir)
    }

    /// An empty symbolizer reading separate debug files (by build id:
    /// `DIR/.build-id/xx/….debug`; by `.gnu_debuglink`: beside the object,
    /// in its `.debug/` and under `DIR/<object's directory>`) from `dir`;
    /// `None` reads none (MiniDebugInfo, inside the object, still counts).
    pub fn with_debug_dir(dir: Option<std::path::PathBuf>) -> Self {
        Symbolizer {
            inner: Arc::new(Inner {
                debug_dir: dir,
                state: Mutex::default(),
                last_use_ms: AtomicU64::default(),
                loaded: AtomicBool::default(),
                janitor: OnceLock::default(),
            }),
        }
    }

    /// The frames at `addr`, innermost first; empty when nothing is known
    /// of it. `addr` must point inside the instruction of interest: callers
    /// pass return addresses minus one. Resolve many addresses with
    /// [`Symbolizer::resolve_all`] first: it reads each compilation unit
    /// once for all of them.
    pub fn resolve(&self, addr: u64) -> Arc<[Frame]> {
        if let Some(found) = self.inner.lock().cache.frames.get(&addr) {
            return found.clone();
        }
        self.resolve_all([addr]);
        let state = self.inner.lock();
        state
            .cache
            .frames
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| Arc::from([]))
    }

    /// Resolves every address not yet cached, in one pass over the debug
    /// info; [`Symbolizer::resolve`] then answers from the cache.
    pub fn resolve_all(&self, addrs: impl IntoIterator<Item = u64>) {
        let mut state = self.inner.lock();
        let mut missing: Vec<u64> = addrs
            .into_iter()
            .filter(|a| !state.cache.frames.contains_key(a))
            .collect();
        if missing.is_empty() {
            return;
        }
        missing.sort_unstable();
        missing.dedup();
        if state.cache.frames.len() + missing.len() > MAX_CACHED_ADDRESSES {
            state.cache = Cache {
                build_ids: std::mem::take(&mut state.cache.build_ids),
                ..Cache::default()
            };
        }
        self.inner.loaded.store(true, Ordering::Release);
        self.inner.touch();
        let mut found: Vec<Vec<RawFrame>> = vec![Vec::new(); missing.len()];
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut mappings = maps::parse_maps(&maps);
        mappings.sort_unstable_by_key(|m| m.start);
        // Probes per object: (the object's own address, slot in `found`).
        let mut probes: HashMap<&str, Vec<(u64, usize)>> = HashMap::default();
        let mut objects = std::mem::take(&mut state.objects);
        for (slot, &addr) in missing.iter().enumerate() {
            let i = mappings.partition_point(|m| m.start <= addr);
            let Some(m) = i.checked_sub(1).map(|i| &mappings[i]) else {
                continue;
            };
            if addr >= m.end || !m.path.starts_with('/') {
                continue;
            }
            let object = objects.entry(m.path.clone()).or_insert_with(|| {
                ObjectFile::open(&maps::object_file(&m.path), self.inner.debug_dir.as_deref())
            });
            if let Some(address) = object
                .as_ref()
                .and_then(|o| o.address_of_offset(addr - m.start + m.offset))
            {
                probes.entry(&m.path).or_default().push((address, slot));
            }
        }
        for (path, mut probes) in probes {
            if let Some(Some(object)) = objects.get(path) {
                object.resolve(&mut probes, &mut found);
            }
        }
        state.objects = objects;
        for (addr, raw) in missing.into_iter().zip(found) {
            state.cache.insert(addr, raw);
        }
    }

    /// Drops the per-object indexes now; returns whether any were loaded.
    /// The janitor thread does this by itself after [`DEBUG_INFO_IDLE`]
    /// without use; the answers cached so far stay.
    pub fn release_debug_info(&self) -> bool {
        self.inner.release_if_idle(Duration::ZERO)
    }

    /// Number of addresses resolved so far (for tests and memory accounting).
    pub fn cached_addresses(&self) -> usize {
        self.inner.lock().cache.frames.len()
    }

    /// Heap bytes held by the loaded per-object indexes (0 once released).
    pub fn index_bytes(&self) -> usize {
        self.inner
            .lock()
            .objects
            .values()
            .flatten()
            .map(ObjectFile::heap_bytes)
            .sum()
    }

    /// The executable mappings of this process, read now (libraries come and
    /// go), with build ids read once per object and cached.
    pub fn mappings(&self) -> Vec<Mapping> {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return Vec::new();
        };
        let mut mappings = parse_maps(&maps);
        let mut state = self.inner.lock();
        for m in &mut mappings {
            if !m.path.starts_with('/') {
                continue;
            }
            let id = state
                .cache
                .build_ids
                .entry(m.path.clone())
                .or_insert_with(|| {
                    maps::read_build_id(&maps::object_file(&m.path)).unwrap_or_default()
                });
            m.build_id = id.clone();
        }
        mappings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbols() -> u64 {
        marker_function_for_symbols as *const () as usize as u64
    }

    #[test]
    fn resolves_a_known_function_with_file_and_line() {
        let s = Symbolizer::new();
        // The very first instruction must resolve to the function itself.
        let frames = s.resolve(marker_function_for_symbols());
        let f = frames.last().expect("symbolized");
        assert!(
            f.function.ends_with("marker_function_for_symbols"),
            "{frames:?}"
        );
        assert!(f.file.as_deref().unwrap_or("").ends_with("symbols/mod.rs"));
        assert!(f.line > 0);
        // Cached: the same allocation comes back.
        assert!(Arc::ptr_eq(
            &frames,
            &s.resolve(marker_function_for_symbols())
        ));
        assert_eq!(s.cached_addresses(), 1);
    }

    #[test]
    fn indexes_are_released_and_answers_stay() {
        let s = Symbolizer::new();
        let addr = marker_function_for_symbols();
        let before = s.resolve(addr);
        assert!(s.index_bytes() > 0);
        assert!(s.release_debug_info());
        assert_eq!(s.index_bytes(), 0);
        assert!(!s.release_debug_info(), "nothing left to release");
        assert!(Arc::ptr_eq(&before, &s.resolve(addr)));
        assert_eq!(s.index_bytes(), 0, "a cached answer reads no debug info");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let s = Symbolizer::new();
        // Unmapped low addresses: cached as "nothing known", cheaply.
        s.resolve_all((1..=MAX_CACHED_ADDRESSES as u64).map(|i| i * 16));
        assert_eq!(s.cached_addresses(), MAX_CACHED_ADDRESSES);
        s.resolve_all((1..=10u64).map(|i| (MAX_CACHED_ADDRESSES as u64 + i) * 16));
        assert_eq!(s.cached_addresses(), 10, "started over");
    }

    #[test]
    fn unmapped_addresses_resolve_to_nothing() {
        let s = Symbolizer::new();
        assert!(s.resolve(8).is_empty());
        assert!(s.resolve(u64::MAX - 8).is_empty());
    }

    #[test]
    fn maps_put_the_main_binary_first_with_a_build_id() {
        let s = Symbolizer::new();
        let maps = s.mappings();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(maps[0].path, exe.to_string_lossy());
        assert!(!maps[0].build_id.is_empty(), "{:?}", maps[0]);
        let addr = marker_function_for_symbols();
        assert!(maps[0].start <= addr && addr < maps[0].end);
    }
}
