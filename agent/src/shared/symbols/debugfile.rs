//! Separate debug information for stripped objects, found where gdb, perf
//! and addr2line look: by GNU build id (`<root>/.build-id/xx/rest.debug`),
//! by `.gnu_debuglink` (next to the object, in its `.debug/`, and under
//! `<root>/<object's dir>`), and MiniDebugInfo (an xz-compressed ELF holding
//! a symbol table in the object's own `.gnu_debugdata` section).
//!
//! Distributions strip their libraries (Debian's libc keeps `.dynsym`
//! only, so `memcpy`'s implementations and `start_thread` have no name) and
//! ship the symbols separately (`libc6-dbg`), or, as Fedora does, in
//! MiniDebugInfo.

use std::path::{Path, PathBuf};

use object::Object;

/// Where distributions install separate debug files.
pub const DEFAULT_DEBUG_DIR: &str = "/usr/lib/debug";

/// Most bytes MiniDebugInfo may decompress to: a symbol table of a large
/// library is a few MB; more than this is not a symbol table.
const MAX_MINI_DEBUGINFO: u64 = 64 << 20;

/// The separate debug file of `object` (read from `path`), when one exists
/// under `root` or beside it and belongs to this build (same build id, or
/// the debug link's CRC).
pub(super) fn find(object: &object::File<'_>, path: &str, root: &Path) -> Option<memmap2::Mmap> {
    let build_id = object.build_id().ok().flatten();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        candidates.push(
            root.join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..])),
        );
    }
    let link = object.gnu_debuglink().ok().flatten();
    if let Some((name, _)) = link {
        let name = Path::new(std::str::from_utf8(name).ok()?);
        // `/proc/self/exe` stands for the executable: look beside its path.
        let real = std::fs::canonicalize(path).ok()?;
        let dir = real.parent()?;
        candidates.push(dir.join(name));
        candidates.push(dir.join(".debug").join(name));
        candidates.push(root.join(dir.strip_prefix("/").unwrap_or(dir)).join(name));
    }
    candidates.into_iter().find_map(|candidate| {
        let map = map_file(&candidate)?;
        let debug = object::File::parse(&*map).ok()?;
        let belongs = match (build_id, debug.build_id().ok().flatten()) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => link.is_some_and(|(_, crc)| crc32fast::hash(&map) == crc),
        };
        belongs.then_some(map)
    })
}

/// The ELF file inside `object`'s `.gnu_debugdata` (MiniDebugInfo),
/// decompressed.
pub(super) fn mini_debuginfo(object: &object::File<'_>) -> Option<Vec<u8>> {
    use object::ObjectSection;
    let data = object.section_by_name(".gnu_debugdata")?.data().ok()?;
    let mut out = Limited(Vec::new());
    lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out).ok()?;
    Some(out.0)
}

/// A buffer refusing to grow past [`MAX_MINI_DEBUGINFO`].
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.0.len() + buf.len()) as u64 > MAX_MINI_DEBUGINFO {
            return Err(std::io::Error::other("MiniDebugInfo too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn map_file(path: &Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the mapping is read-only and only read while the `Mmap`
    // lives; debug files and loaded objects are not rewritten in place
    // (package managers replace them by rename), and a truncation of one
    // would break gdb or the process itself in the same way.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}
