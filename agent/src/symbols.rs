//! Address → function, file and line, in-process, cached across requests;
//! and the process's executable mappings (path, range, offset, build id) so
//! offline tools can re-symbolize what the agent serves.
//!
//! One symbolizer serves every profile kind: CPU now, heap and task
//! profiles later. Names are interned so a warm cache costs one copy of each
//! distinct function and file name, not one per address.

use std::collections::HashSet;

use rustc_hash::FxHashMap as HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

/// One frame of an address's symbolization. An address inside inlined code
/// yields several, innermost first (pprof's `Line` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name, without the Rust hash suffix.
    pub function: Arc<str>,
    /// Source file, when debug info has it.
    pub file: Option<Arc<str>>,
    /// Source line, 0 when unknown.
    pub line: u32,
}

/// An executable mapping of the process (a `r-xp` line of `/proc/self/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    /// Path of the mapped object, or a pseudo-name such as `[vdso]`.
    pub path: String,
    /// Hex GNU build id of the object, empty when it has none.
    pub build_id: String,
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
}

/// Resolves addresses of this process to frames, remembering every answer.
///
/// The debug info it reads through (the `backtrace` crate's parsed DWARF,
/// tens of MB for a large binary) is released once no profile has been
/// built for [`DEBUG_INFO_IDLE`]: what stays is this cache of answers, a few
/// hundred bytes per address. A warm request reads no debug info at all;
/// a burst of requests with new addresses parses it once.
#[derive(Default)]
pub struct Symbolizer {
    cache: Mutex<Cache>,
    debug_info: Arc<DebugInfo>,
}

/// How long parsed debug info is kept after its last use.
pub const DEBUG_INFO_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether debug info is loaded, and since when it is unused; watched by a
/// janitor thread that frees it after [`DEBUG_INFO_IDLE`].
#[derive(Default)]
struct DebugInfo {
    /// Loaded and not yet released.
    loaded: std::sync::atomic::AtomicBool,
    /// Last use, as milliseconds since `EPOCH`.
    last_use_ms: std::sync::atomic::AtomicU64,
    janitor: std::sync::OnceLock<()>,
}

static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

impl DebugInfo {
    fn touch(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        self.last_use_ms
            .store(EPOCH.elapsed().as_millis() as u64, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
        self.janitor.get_or_init(|| {
            let weak = Arc::downgrade(self);
            // A thread, not a task: the symbolizer does not require a runtime.
            let _ = std::thread::Builder::new()
                .name("profscope-symbols".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(DEBUG_INFO_IDLE / 4);
                        let Some(info) = weak.upgrade() else { break };
                        info.release_if_idle(DEBUG_INFO_IDLE);
                    }
                });
        });
    }

    fn release_if_idle(&self, idle: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last_use_ms.load(Ordering::Acquire);
        let now = EPOCH.elapsed().as_millis() as u64;
        if now.saturating_sub(last) >= idle.as_millis() as u64
            && self.loaded.swap(false, Ordering::AcqRel)
        {
            backtrace::clear_symbol_cache();
            return true;
        }
        false
    }
}

/// Past this many cached addresses the cache starts over, so it stays
/// bounded in a process that keeps loading new code.
const MAX_CACHED_ADDRESSES: usize = 1 << 20;

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Symbolizer")
            .field("addresses", &cache.frames.len())
            .field("names", &cache.names.len())
            .finish()
    }
}

impl Symbolizer {
    /// An empty symbolizer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frames at `addr`, innermost first. `addr` must point inside the
    /// instruction of interest: callers pass return addresses minus one.
    pub fn resolve(&self, addr: u64) -> Arc<[Frame]> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = cache.frames.get(&addr) {
            return found.clone();
        }
        if cache.frames.len() >= MAX_CACHED_ADDRESSES {
            *cache = Cache::default();
        }
        self.debug_info.touch();
        let mut raw: Vec<(String, Option<String>, u32)> = Vec::new();
        // `backtrace::resolve` treats its argument as a return address and
        // looks up the byte before it; ours already point inside the
        // instruction, so compensate (a leaf sampled on a function's first
        // instruction would otherwise land in the previous function).
        let lookup = addr.wrapping_add(1) as usize as *mut c_void;
        backtrace::resolve(lookup, |symbol| {
            let function = symbol.name().map(|n| format!("{n:#}")).unwrap_or_default();
            let file = symbol.filename().map(|p| p.to_string_lossy().into_owned());
            raw.push((function, file, symbol.lineno().unwrap_or(0)));
        });
        let frames: Arc<[Frame]> = raw
            .into_iter()
            .filter(|(function, _, _)| !function.is_empty())
            .map(|(function, file, line)| Frame {
                function: cache.intern(&function),
                file: file.map(|f| cache.intern(&f)),
                line,
            })
            .collect();
        cache.frames.insert(addr, frames.clone());
        frames
    }

    /// Frees the parsed debug info held by the `backtrace` crate now, if
    /// this symbolizer (or pprof-rs, at a capture start) loaded it; returns
    /// whether it did. The janitor does this by itself after
    /// [`DEBUG_INFO_IDLE`]. Process-wide: other users of `backtrace` in the
    /// process re-read it when they need it.
    pub fn release_debug_info(&self) -> bool {
        self.debug_info.release_if_idle(std::time::Duration::ZERO)
    }

    /// Notes that debug info was used now (by this symbolizer, or by
    /// pprof-rs when a capture starts), so the janitor frees it only after
    /// [`DEBUG_INFO_IDLE`] without use.
    pub(crate) fn debug_info_used(&self) {
        self.debug_info.touch();
    }

    /// Number of addresses resolved so far (for tests and memory accounting).
    pub fn cached_addresses(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .frames
            .len()
    }

    /// The executable mappings of this process, read now (libraries come and
    /// go), with build ids read once per object and cached.
    pub fn mappings(&self) -> Vec<Mapping> {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return Vec::new();
        };
        let mut mappings = parse_maps(&maps);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        for m in &mut mappings {
            if !m.path.starts_with('/') {
                continue;
            }
            let id = cache
                .build_ids
                .entry(m.path.clone())
                .or_insert_with(|| read_build_id(&m.path).unwrap_or_default());
            m.build_id = id.clone();
        }
        mappings
    }
}

/// Parses `/proc/<pid>/maps` text into its executable mappings; the main
/// binary comes first because the kernel lists mappings by address and
/// `go tool pprof` treats the first mapping as the main binary.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = text.lines().filter_map(parse_maps_line).collect();
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        let exe = exe.to_string_lossy();
        if let Some(i) = out.iter().position(|m| m.path == exe) {
            let main = out.remove(i);
            out.insert(0, main);
        }
    }
    out
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || path.is_empty() {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
        build_id: String::new(),
    })
}

fn read_build_id(path: &str) -> Option<String> {
    use object::Object;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the mapping is read-only and only read while `map` lives; a
    // concurrent truncation of a loaded object would already break the
    // process itself, which has it mapped too.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let object = object::File::parse(&*map).ok()?;
    let id = object.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
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
        assert!(f.file.as_deref().unwrap_or("").ends_with("symbols.rs"));
        assert!(f.line > 0);
        // Cached: the same allocation comes back.
        assert!(Arc::ptr_eq(
            &frames,
            &s.resolve(marker_function_for_symbols())
        ));
        assert_eq!(s.cached_addresses(), 1);
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

    #[test]
    fn parses_maps_lines() {
        let text = "55d0a0000000-55d0a0100000 r-xp 00002000 08:01 123 /usr/bin/my service\n\
                    7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]\n\
                    7ffd10000000-7ffd10002000 rw-p 00000000 00:00 0 [stack]\n\
                    garbage\n";
        let maps: Vec<Mapping> = text.lines().filter_map(parse_maps_line).collect();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].path, "/usr/bin/my service");
        assert_eq!(maps[0].offset, 0x2000);
        assert_eq!(maps[1].path, "[vdso]");
    }
}
