//! One mapped object (the executable or a shared library) as the symbolizer
//! reads it: the file mapped read-only, its loadable segments, its function
//! symbols, and an index from addresses to DWARF compilation units.
//!
//! Only the indexes live on the heap, a few MB for a large binary. The DWARF
//! itself is read from the mapped file at each lookup, one compilation unit
//! at a time, and dropped after it (see `dwarf.rs`): parsed DWARF kept
//! for a whole binary, as addr2line-based symbolizers do, costs tens of MB.
//!
//! A stripped object (a distribution's libraries) takes its symbols, and
//! DWARF when it has none, from its separate debug file or MiniDebugInfo
//! (`debugfile.rs`). Compressed DWARF sections (Debian's `-dbg` files)
//! are skipped: reading them would mean inflating a whole library's debug
//! info on every capture, and their symbol tables already name every
//! function.

use std::path::Path;

use std::borrow::Cow;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use super::debugfile;
use super::demangle::demangle;
use super::dwarf::{self, RawFrame};
use super::reader::Reader;

/// A function symbol: `[start, end)` in the object's own addresses, name as
/// an offset and length into the mapped file (the string table is there),
/// or into the debug file when `name_len` has [`IN_DEBUG`] set.
#[derive(Clone, Copy)]
struct Symbol {
    start: u64,
    end: u64,
    name_at: u32,
    name_len: u32,
}

/// The bit of `Symbol::name_len` saying the name is in the debug file.
const IN_DEBUG: u32 = 1 << 31;

/// Bytes of a separate debug file: mapped, or MiniDebugInfo decompressed.
enum DebugBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for DebugBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            DebugBytes::Mapped(map) => map,
            DebugBytes::Owned(bytes) => bytes,
        }
    }
}

/// `[start, end)` belongs to the compilation unit at `units[unit]`.
#[derive(Clone, Copy)]
struct UnitRange {
    start: u64,
    end: u64,
    unit: u32,
}

pub(super) struct ObjectFile {
    map: memmap2::Mmap,
    /// The separate debug file or MiniDebugInfo, when the object is
    /// stripped and one was found.
    debug: Option<DebugBytes>,
    /// The DWARF indexed is the debug file's.
    dwarf_in_debug: bool,
    /// (file offset, file size, address) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// Function symbols by start address.
    symbols: Vec<Symbol>,
    /// Unit ranges by start address, adjacent ranges of one unit merged.
    ranges: Vec<UnitRange>,
    /// `.debug_info` offsets of the compilation units, ascending.
    units: Vec<usize>,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFile")
            .field("symbols", &self.symbols.len())
            .field("unit_ranges", &self.ranges.len())
            .field("units", &self.units.len())
            .finish()
    }
}

impl ObjectFile {
    /// Maps and indexes the object at `path`, with its separate debug
    /// information looked up under `debug_dir` (and beside it) when it is
    /// stripped; `None` when it cannot be read or is not an object file
    /// (addresses in it then stay unsymbolized).
    pub(super) fn open(path: &str, debug_dir: Option<&Path>) -> Option<ObjectFile> {
        let map = debugfile::map_file(Path::new(path))?;
        let object = object::File::parse(&*map).ok()?;
        let segments = object
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect();
        let (mut symbols, own_symtab) = index_symbols(&object, map.as_ptr() as usize, 0);
        let (mut ranges, mut units) = index_dwarf(&object);
        let mut debug = None;
        if !own_symtab || ranges.is_empty() {
            debug = debug_dir
                .and_then(|dir| debugfile::find(&object, path, dir))
                .map(DebugBytes::Mapped);
            if debug.is_none() && !own_symtab {
                debug = debugfile::mini_debuginfo(&object).map(DebugBytes::Owned);
            }
        }
        let mut dwarf_in_debug = false;
        if let Some(bytes) = &debug
            && let Ok(theirs) = object::File::parse(&**bytes)
        {
            if !own_symtab {
                // Together: MiniDebugInfo leaves out what `.dynsym` has.
                let (more, _) = index_symbols(&theirs, bytes.as_ptr() as usize, IN_DEBUG);
                symbols.extend(more);
                symbols = finish_symbols(symbols);
            }
            if ranges.is_empty() {
                (ranges, units) = index_dwarf(&theirs);
                dwarf_in_debug = !ranges.is_empty();
            }
        }
        Some(ObjectFile {
            map,
            debug,
            dwarf_in_debug,
            segments,
            symbols,
            ranges,
            units,
        })
    }

    /// The bytes of the file the indexed DWARF is in.
    fn dwarf_bytes(&self) -> &[u8] {
        match (&self.debug, self.dwarf_in_debug) {
            (Some(debug), true) => debug,
            _ => &self.map,
        }
    }

    /// The object's own address (as its symbols and DWARF use) for an offset
    /// in the file, through the loadable segment that maps it.
    pub(super) fn address_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(start, size, _)| offset >= start && offset - start < size)
            .map(|&(start, _, address)| address + (offset - start))
    }

    /// Frames, innermost first, for each `(address, slot)` probe, written
    /// to `out[slot]`. Addresses are the object's own; probes are sorted by
    /// address on return. Any DWARF error leaves the affected probes to the
    /// symbol table.
    pub(super) fn resolve(&self, probes: &mut [(u64, usize)], out: &mut [Vec<RawFrame>]) {
        probes.sort_unstable();
        let mut locations: Vec<Option<(Option<String>, u32)>> = vec![None; probes.len()];
        let mut qualified = vec![false; probes.len()];
        if !self.ranges.is_empty()
            && let Ok(object) = object::File::parse(self.dwarf_bytes())
            && let Some(sections) = load_dwarf(&object)
        {
            let dwarf = borrow_dwarf(&sections, &object);
            // Probes by unit, each group in address order.
            let mut by_unit: rustc_hash::FxHashMap<u32, Vec<usize>> = Default::default();
            for (i, &(addr, _)) in probes.iter().enumerate() {
                if let Some(unit) = self.unit_of(addr) {
                    by_unit.entry(unit).or_default().push(i);
                }
            }
            let mut units: Vec<(u32, Vec<usize>)> = by_unit.into_iter().collect();
            units.sort_unstable_by_key(|(unit, _)| *unit);
            for (unit, members) in units {
                let offset = self.units[unit as usize];
                let addrs: Vec<u64> = members.iter().map(|&i| probes[i].0).collect();
                let Ok(answers) = dwarf::resolve_in_unit(&dwarf, offset, &self.units, &addrs)
                else {
                    continue;
                };
                for (&i, answer) in members.iter().zip(answers) {
                    out[probes[i].1] = answer.frames;
                    locations[i] = answer.location;
                    qualified[i] = answer.qualified;
                }
            }
        }
        // The symbol table names what DWARF does not, and qualifies the
        // outermost frame of builds whose DWARF has bare names only
        // (`debug = "line-tables-only"`).
        for (i, &(addr, slot)) in probes.iter().enumerate() {
            let frames = &mut out[slot];
            if !frames.is_empty() && qualified[i] {
                continue;
            }
            let Some((name, linkage)) = self.symbol_name(addr) else {
                continue;
            };
            match frames.last_mut() {
                // Only when the symbol is the same function, qualified, or
                // DWARF could not name it at all.
                Some(outer) => {
                    if outer.function.is_empty()
                        || outer.function == name
                        || qualifies(&name, &outer.function)
                    {
                        outer.function = name;
                        outer.linkage = Some(linkage);
                    }
                }
                None => {
                    let (file, line) = locations[i].take().unwrap_or((None, 0));
                    frames.push(RawFrame {
                        function: name,
                        linkage: Some(linkage),
                        file,
                        line,
                    });
                }
            }
        }
        // Frames nothing could name carry no information a tool can use.
        for &(_, slot) in probes.iter() {
            out[slot].retain(|f| !f.function.is_empty());
        }
    }

    fn unit_of(&self, addr: u64) -> Option<u32> {
        let i = self.ranges.partition_point(|r| r.start <= addr);
        let range = self.ranges.get(i.checked_sub(1)?)?;
        (addr < range.end).then_some(range.unit)
    }

    /// The symbol at `addr`: demangled name and linkage name.
    fn symbol_name(&self, addr: u64) -> Option<(String, String)> {
        let i = self.symbols.partition_point(|s| s.start <= addr);
        let symbol = self.symbols.get(i.checked_sub(1)?)?;
        // The end itself counts, as in the `backtrace` crate: a call that
        // ends a function (to a `!` function) returns there.
        if addr > symbol.end {
            return None;
        }
        let at = symbol.name_at as usize;
        let file: &[u8] = match (&self.debug, symbol.name_len & IN_DEBUG != 0) {
            (Some(debug), true) => debug,
            _ => &self.map,
        };
        let bytes = file.get(at..at + (symbol.name_len & !IN_DEBUG) as usize)?;
        let linkage = String::from_utf8_lossy(bytes).into_owned();
        Some((demangle(&linkage), linkage))
    }

    /// Heap bytes held by the indexes (the mapped file is not counted: it
    /// is page cache, shared and reclaimable).
    pub(super) fn heap_bytes(&self) -> usize {
        self.segments.capacity() * std::mem::size_of::<(u64, u64, u64)>()
            + self.symbols.capacity() * std::mem::size_of::<Symbol>()
            + self.ranges.capacity() * std::mem::size_of::<UnitRange>()
            + self.units.capacity() * std::mem::size_of::<usize>()
            + match &self.debug {
                Some(DebugBytes::Owned(bytes)) => bytes.capacity(),
                _ => 0,
            }
    }
}

/// Whether `symbol` (demangled) is bare DWARF name `name` with its path:
/// `app::handler::{closure#0}` for `{closure#0}`, `<S as Future>::poll` for
/// `poll<T>` (such names carry generic arguments where symbols carry the
/// path), never another function.
fn qualifies(symbol: &str, name: &str) -> bool {
    let base = name.split('<').next().unwrap_or(name);
    !base.is_empty()
        && symbol
            .strip_suffix(base)
            .is_some_and(|path| path.ends_with("::"))
}

/// Function symbols from `.symtab`, or `.dynsym` when the object is stripped,
/// sorted; a symbol without a size ends where the next one starts. `flag`
/// is or-ed into each name length. Also says whether they came from
/// `.symtab`.
fn index_symbols(object: &object::File<'_>, base: usize, flag: u32) -> (Vec<Symbol>, bool) {
    let mut symbols: Vec<Symbol> = Vec::new();
    collect_symbols(object.symbols(), base, &mut symbols);
    let symtab = !symbols.is_empty();
    if !symtab {
        collect_symbols(object.dynamic_symbols(), base, &mut symbols);
    }
    for s in &mut symbols {
        s.name_len |= flag;
    }
    (finish_symbols(symbols), symtab)
}

/// Sorts `symbols`, drops aliases and gives sizeless ones an end.
fn finish_symbols(mut symbols: Vec<Symbol>) -> Vec<Symbol> {
    // Aliases share an address: keep the one with a size.
    symbols.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    symbols.dedup_by_key(|s| s.start);
    for i in 0..symbols.len() {
        if symbols[i].end == symbols[i].start {
            symbols[i].end = symbols.get(i + 1).map_or(u64::MAX, |next| next.start);
        }
    }
    symbols.shrink_to_fit();
    symbols
}

fn collect_symbols<'data: 'file, 'file>(
    iter: impl Iterator<Item = object::Symbol<'data, 'file>>,
    base: usize,
    out: &mut Vec<Symbol>,
) {
    for s in iter {
        if s.kind() != SymbolKind::Text || s.address() == 0 || s.is_undefined() {
            continue;
        }
        let Ok(name) = s.name_bytes() else { continue };
        if name.is_empty() {
            continue;
        }
        let (Ok(name_at), Ok(name_len @ ..IN_DEBUG)) = (
            u32::try_from(name.as_ptr() as usize - base),
            u32::try_from(name.len()),
        ) else {
            continue;
        };
        out.push(Symbol {
            start: s.address(),
            end: s.address().saturating_add(s.size()),
            name_at,
            name_len,
        });
    }
}

/// The unit index of `object`'s DWARF, empty without any.
fn index_dwarf(object: &object::File<'_>) -> (Vec<UnitRange>, Vec<usize>) {
    match load_dwarf(object) {
        Some(sections) => {
            let dwarf = borrow_dwarf(&sections, object);
            index_units(&dwarf).unwrap_or_default()
        }
        None => Default::default(),
    }
}

/// The DWARF sections of `object`, decompressed when they are compressed;
/// `None` when it has no `.debug_info`.
fn load_dwarf<'a>(object: &object::File<'a>) -> Option<gimli::DwarfSections<Cow<'a, [u8]>>> {
    object.section_by_name(".debug_info")?;
    gimli::DwarfSections::load(|id| -> Result<Cow<'a, [u8]>, gimli::Error> {
        Ok(object
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    })
    .ok()
}

fn borrow_dwarf<'a>(
    sections: &'a gimli::DwarfSections<Cow<'_, [u8]>>,
    object: &object::File<'_>,
) -> gimli::Dwarf<Reader<'a>> {
    let endian = if object.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    sections.borrow(|section| gimli::EndianSlice::new(section, endian))
}

/// Address ranges of every compilation unit, from `.debug_aranges` where it
/// covers a unit and from the unit's own root entry otherwise.
fn index_units(dwarf: &gimli::Dwarf<Reader<'_>>) -> gimli::Result<(Vec<UnitRange>, Vec<usize>)> {
    let mut units: Vec<usize> = Vec::new();
    let mut headers = dwarf.units();
    while let Some(header) = headers.next()? {
        if let Some(offset) = header.offset().as_debug_info_offset() {
            units.push(offset.0);
        }
    }
    let mut covered = vec![false; units.len()];
    let mut ranges: Vec<UnitRange> = Vec::new();
    let mut aranges = dwarf.debug_aranges.headers();
    // A bad entry (rustc has written aranges whose end overflows) costs
    // that entry, not the object's debug info.
    while let Ok(Some(header)) = aranges.next() {
        let Ok(unit) = units.binary_search(&header.debug_info_offset().0) else {
            continue;
        };
        let mut entries = header.entries();
        while let Some(entry) = entries.next().transpose() {
            let Ok(entry) = entry else { continue };
            let range = entry.range();
            if range.begin < range.end {
                covered[unit] = true;
                ranges.push(UnitRange {
                    start: range.begin,
                    end: range.end,
                    unit: unit as u32,
                });
            }
        }
    }
    for (unit, &offset) in units.iter().enumerate() {
        if covered[unit] {
            continue;
        }
        // Parsed for its root entry only, then dropped.
        let Ok(header) = dwarf
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(offset))
        else {
            continue;
        };
        let Ok(parsed) = dwarf.unit(header) else {
            continue;
        };
        let mut entries = parsed.entries();
        let Ok(Some((_, root))) = entries.next_dfs() else {
            continue;
        };
        let Ok(found) = dwarf::entry_ranges(dwarf, &parsed, root) else {
            continue;
        };
        ranges.extend(found.into_iter().map(|(start, end)| UnitRange {
            start,
            end,
            unit: unit as u32,
        }));
    }
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut merged: Vec<UnitRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if last.unit == r.unit && r.start <= last.end => {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
    }
    merged.shrink_to_fit();
    Ok((merged, units))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_take_their_symbol_path_only() {
        assert!(qualifies("app::handler::{closure#0}", "{closure#0}"));
        assert!(qualifies("<app::Svc as tower::Service<R>>::call", "call"));
        assert!(qualifies(
            "<hyper::server::Connection<I> as core::future::Future>::poll",
            "poll<core::result::Result<(), hyper::Error>>"
        ));
        assert!(!qualifies("app::recall", "call"));
        assert!(!qualifies("app::<", "<"));
        assert!(!qualifies("call", "call"));
        assert!(!qualifies("_rjem_je_malloc_default", "je_malloc_default"));
    }

    fn fixture(name: &str) -> String {
        format!(
            "{}/../testdata/debuginfo/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// The names `object` gives the fixture's two local functions (at their
    /// addresses in the unstripped build, which the stripped ones share).
    fn local_names(object: &ObjectFile) -> Vec<String> {
        // fixture_local_alpha, fixture_local_beta, fixture_exported
        [0x10f9u64, 0x10fe, 0x1107]
            .iter()
            .map(|&addr| {
                let mut probes = [(addr, 0)];
                let mut out = vec![Vec::new()];
                object.resolve(&mut probes, &mut out);
                out[0].last().map_or(String::new(), |f| f.function.clone())
            })
            .collect()
    }

    #[test]
    fn a_stripped_object_is_named_by_its_debug_file() {
        let names = [
            "fixture_local_alpha",
            "fixture_local_beta",
            "fixture_exported",
        ];
        // By build id under the debug directory.
        let root = tempfile::tempdir().unwrap();
        let lib = fixture("libdebuglink.so");
        let map = debugfile::map_file(Path::new(&lib)).unwrap();
        let id: String = object::File::parse(&*map)
            .unwrap()
            .build_id()
            .unwrap()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let at = root.path().join(".build-id").join(&id[..2]);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::copy(
            fixture("libdebuglink.debug"),
            at.join(format!("{}.debug", &id[2..])),
        )
        .unwrap();
        let copy = tempfile::tempdir().unwrap();
        let alone = copy.path().join("libdebuglink.so");
        std::fs::copy(&lib, &alone).unwrap();
        let object = ObjectFile::open(alone.to_str().unwrap(), Some(root.path())).unwrap();
        assert_eq!(local_names(&object), names, "by build id");
        // Without a debug directory: only the exported name.
        let object = ObjectFile::open(alone.to_str().unwrap(), None).unwrap();
        assert_eq!(local_names(&object), ["", "", "fixture_exported"]);
        // By .gnu_debuglink, beside the object (as in testdata/).
        let object = ObjectFile::open(&lib, Some(Path::new("/nonexistent"))).unwrap();
        assert_eq!(local_names(&object), names, "by debug link");
        // A debug file of another build (this test binary) is refused.
        std::os::unix::fs::symlink(
            std::env::current_exe().unwrap(),
            copy.path().join("libdebuglink.debug"),
        )
        .unwrap();
        let object =
            ObjectFile::open(alone.to_str().unwrap(), Some(Path::new("/nonexistent"))).unwrap();
        assert_eq!(local_names(&object), ["", "", "fixture_exported"]);
    }

    #[test]
    fn minidebuginfo_names_local_functions() {
        let object = ObjectFile::open(&fixture("libmini.so"), None).unwrap();
        assert_eq!(
            local_names(&object),
            [
                "fixture_local_alpha",
                "fixture_local_beta",
                "fixture_exported"
            ]
        );
        assert!(object.heap_bytes() > 0);
    }
}
