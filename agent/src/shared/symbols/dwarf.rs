//! Addresses → frames within one DWARF compilation unit, parsing that unit
//! for the lookup and dropping it after: the peak is one unit's
//! abbreviations, line program and entries, never the whole binary's.
//!
//! The answers match addr2line's (what the `backtrace` crate and `go tool
//! pprof` report): the innermost frame takes the line table's location, each
//! outer frame of an inlined chain takes the call site of the one inside it,
//! and names come from the linkage name, else the plain name, following
//! `DW_AT_abstract_origin` and `DW_AT_specification`.

use gimli::{AttributeValue, DebugInfoOffset, UnitOffset};
use rustc_hash::FxHashMap as HashMap;

use super::demangle::demangle;
use super::reader::Reader;

type Dwarf<'a> = gimli::Dwarf<Reader<'a>>;
type Unit<'a> = gimli::Unit<Reader<'a>>;

/// One frame as found, before interning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawFrame {
    pub function: String,
    /// The linkage (mangled) symbol, when DWARF or the symbol table has one.
    pub linkage: Option<String>,
    pub file: Option<String>,
    pub line: u32,
}

/// What a unit says of one address.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// Innermost first; empty when no function entry covers the address.
    pub frames: Vec<RawFrame>,
    /// The line table's location (file when known, line), for the symbol
    /// table's frame when there is no function entry.
    pub location: Option<(Option<String>, u32)>,
    /// Whether the outermost name is a linkage name (fully qualified).
    pub qualified: bool,
}

/// How deep `DW_AT_abstract_origin`/`DW_AT_specification` chains are
/// followed (malformed DWARF can loop).
const NAME_DEPTH: u8 = 16;

/// One function entry on an address's chain, outermost first.
#[derive(Clone, Copy)]
struct Link {
    entry: UnitOffset,
    /// Where the caller called it (inlined entries only).
    call_file: Option<u64>,
    call_line: u32,
}

/// Resolves `addrs` (ascending, the object's own addresses) in the unit at
/// `offset` of `.debug_info`; `units` are all units' offsets, for
/// references into other units.
pub(super) fn resolve_in_unit(
    dwarf: &Dwarf<'_>,
    offset: usize,
    units: &[usize],
    addrs: &[u64],
) -> gimli::Result<Vec<Answer>> {
    let header = dwarf
        .debug_info
        .header_from_offset(DebugInfoOffset(offset))?;
    let unit = dwarf.unit(header)?;
    let mut files = Files::default();
    let rows = line_rows(&unit, addrs)?;

    let mut chains: Vec<Vec<Link>> = vec![Vec::new(); addrs.len()];
    let mut tree = unit.entries_tree(None)?;
    walk(dwarf, &unit, tree.root()?, &[], addrs, &mut chains)?;

    let mut names: HashMap<UnitOffset, Option<(String, Option<String>)>> = HashMap::default();
    let mut others = OtherUnits {
        units,
        parsed: HashMap::default(),
    };
    let mut answers = Vec::with_capacity(addrs.len());
    for (row, chain) in rows.into_iter().zip(chains) {
        // A line is kept even when its file cannot be named.
        let location = row.map(|(file, line)| {
            let path = files.path(dwarf, &unit, file).map(str::to_string);
            (path, line)
        });
        let mut answer = Answer::default();
        // Innermost first: the line table's location, then call sites.
        let mut at = location.clone();
        for (depth, link) in chain.iter().enumerate().rev() {
            let name = names
                .entry(link.entry)
                .or_insert_with(|| entry_name(dwarf, &unit, &mut others, link.entry, NAME_DEPTH))
                .clone();
            // An unnamed inlined frame is left out, as the `backtrace` crate
            // does; an unnamed outermost one keeps its place and location
            // for the symbol table to name.
            if name.is_some() || depth == 0 {
                let (function, linkage) = name.unwrap_or_default();
                let (file, line) = at.take().unwrap_or((None, 0));
                answer.qualified = depth == 0 && linkage.is_some();
                answer.frames.push(RawFrame {
                    function,
                    linkage,
                    file,
                    line,
                });
            }
            let call_file = link
                .call_file
                .and_then(|file| files.path(dwarf, &unit, file));
            at = (link.call_line > 0 || call_file.is_some())
                .then(|| (call_file.map(str::to_string), link.call_line));
        }
        answer.location = location;
        answers.push(answer);
    }
    Ok(answers)
}

/// For each address, the (file index, line) of the line-table row that
/// covers it: the last row at or below it in its sequence.
fn line_rows(unit: &Unit<'_>, addrs: &[u64]) -> gimli::Result<Vec<Option<(u64, u32)>>> {
    let mut found: Vec<Option<(u64, u32)>> = vec![None; addrs.len()];
    let Some(program) = unit.line_program.clone() else {
        return Ok(found);
    };
    let mut rows = program.rows();
    let mut previous: Option<(u64, u64, u32)> = None;
    while let Some((_, row)) = rows.next_row()? {
        let address = row.address();
        if let Some((start, file, line)) = previous
            && start < address
        {
            let lo = addrs.partition_point(|&a| a < start);
            let hi = addrs.partition_point(|&a| a < address);
            for slot in &mut found[lo..hi] {
                *slot = Some((file, line));
            }
        }
        previous = (!row.end_sequence()).then(|| {
            let line = row
                .line()
                .map_or(0, |l| u32::try_from(l.get()).unwrap_or(0));
            (address, row.file_index(), line)
        });
    }
    Ok(found)
}

/// Walks the entry tree, giving each address its chain: the subprogram
/// whose ranges hold it, then the inlined subroutines nested in it that
/// hold it too. `inner` are the addresses inside the enclosing function.
fn walk(
    dwarf: &Dwarf<'_>,
    unit: &Unit<'_>,
    node: gimli::EntriesTreeNode<'_, '_, '_, Reader<'_>>,
    inner: &[usize],
    addrs: &[u64],
    chains: &mut [Vec<Link>],
) -> gimli::Result<()> {
    let mut children = node.children();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        match entry.tag() {
            gimli::DW_TAG_subprogram => {
                let hits = covered(dwarf, unit, entry, addrs, |i| chains[i].is_empty())?;
                let link = Link {
                    entry: entry.offset(),
                    call_file: None,
                    call_line: 0,
                };
                for &i in &hits {
                    chains[i].push(link);
                }
                // Nested subprograms are searched even when this one holds
                // none of the addresses.
                walk(dwarf, unit, child, &hits, addrs, chains)?;
            }
            gimli::DW_TAG_inlined_subroutine => {
                if inner.is_empty() {
                    continue;
                }
                let hits = covered(dwarf, unit, entry, addrs, |i| {
                    inner.binary_search(&i).is_ok()
                })?;
                if hits.is_empty() {
                    continue;
                }
                let call_file = match entry.attr_value(gimli::DW_AT_call_file)? {
                    Some(AttributeValue::FileIndex(f)) | Some(AttributeValue::Udata(f)) => {
                        // File 0 means "none" before DWARF 5.
                        (f > 0 || unit.header.version() >= 5).then_some(f)
                    }
                    _ => None,
                };
                let call_line = entry
                    .attr_value(gimli::DW_AT_call_line)?
                    .and_then(|v| v.udata_value())
                    .map_or(0, |l| u32::try_from(l).unwrap_or(0));
                let link = Link {
                    entry: entry.offset(),
                    call_file,
                    call_line,
                };
                for &i in &hits {
                    chains[i].push(link);
                }
                walk(dwarf, unit, child, &hits, addrs, chains)?;
            }
            _ => walk(dwarf, unit, child, inner, addrs, chains)?,
        }
    }
    Ok(())
}

/// Indices (ascending) of the addresses in the entry's ranges that `take`
/// accepts.
fn covered(
    dwarf: &Dwarf<'_>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'_>>,
    addrs: &[u64],
    take: impl Fn(usize) -> bool,
) -> gimli::Result<Vec<usize>> {
    let mut hits = Vec::new();
    for (begin, end) in entry_ranges(dwarf, unit, entry)? {
        let lo = addrs.partition_point(|&a| a < begin);
        let hi = addrs.partition_point(|&a| a < end);
        hits.extend((lo..hi).filter(|&i| take(i)));
    }
    if hits.len() > 1 {
        hits.sort_unstable();
        hits.dedup();
    }
    Ok(hits)
}

/// The entry's non-empty address ranges, from `DW_AT_low_pc` with
/// `DW_AT_high_pc`, or `DW_AT_ranges`. Unlike gimli's `die_ranges`, a size
/// past the end of the address space (a tombstoned `low_pc`) wraps and is
/// left out instead of overflowing, as in addr2line.
pub(super) fn entry_ranges(
    dwarf: &Dwarf<'_>,
    unit: &Unit<'_>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'_>>,
) -> gimli::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let (mut low, mut high, mut size) = (None, None, None);
    let mut attrs = entry.attrs();
    while let Some(attr) = attrs.next()? {
        match attr.name() {
            gimli::DW_AT_low_pc => low = dwarf.attr_address(unit, attr.value())?,
            gimli::DW_AT_high_pc => match attr.value() {
                AttributeValue::Udata(s) => size = Some(s),
                value => high = dwarf.attr_address(unit, value)?,
            },
            gimli::DW_AT_ranges => {
                if let Some(offset) = dwarf.attr_ranges_offset(unit, attr.value())? {
                    let mut list = dwarf.ranges(unit, offset)?;
                    while let Some(r) = list.next()? {
                        if r.begin < r.end {
                            ranges.push((r.begin, r.end));
                        }
                    }
                    return Ok(ranges);
                }
            }
            _ => {}
        }
    }
    if let Some(begin) = low
        && let Some(end) = size.map(|s| begin.wrapping_add(s)).or(high)
        && begin < end
    {
        ranges.push((begin, end));
    }
    Ok(ranges)
}

/// Units that names refer into (`DW_FORM_ref_addr`, common with LTO),
/// parsed once per lookup.
struct OtherUnits<'u, 'a> {
    /// `.debug_info` offsets of all units, ascending.
    units: &'u [usize],
    parsed: HashMap<usize, std::rc::Rc<Unit<'a>>>,
}

/// The entry's name and, when it came from a linkage name (fully
/// qualified), that mangled linkage name.
fn entry_name<'a>(
    dwarf: &Dwarf<'a>,
    unit: &Unit<'a>,
    others: &mut OtherUnits<'_, 'a>,
    offset: UnitOffset,
    depth: u8,
) -> Option<(String, Option<String>)> {
    let depth = depth.checked_sub(1)?;
    let entry = unit.entry(offset).ok()?;
    let mut name = None;
    let mut next = None;
    let mut attrs = entry.attrs();
    while let Ok(Some(attr)) = attrs.next() {
        match attr.name() {
            gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                if let Ok(s) = dwarf.attr_string(unit, attr.value()) {
                    let linkage = s.to_string_lossy().into_owned();
                    return Some((demangle(&linkage), Some(linkage)));
                }
            }
            gimli::DW_AT_name => {
                if let Ok(s) = dwarf.attr_string(unit, attr.value()) {
                    name = Some(s.to_string_lossy().into_owned());
                }
            }
            gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => next = Some(attr.value()),
            _ => {}
        }
    }
    if let Some(name) = name {
        return Some((name, None));
    }
    match next? {
        AttributeValue::UnitRef(offset) => entry_name(dwarf, unit, others, offset, depth),
        AttributeValue::DebugInfoRef(target) => {
            let i = others
                .units
                .partition_point(|&u| u <= target.0)
                .checked_sub(1)?;
            let start = others.units[i];
            let other = match others.parsed.get(&start) {
                Some(parsed) => parsed.clone(),
                None => {
                    let header = dwarf
                        .debug_info
                        .header_from_offset(DebugInfoOffset(start))
                        .ok()?;
                    let parsed = std::rc::Rc::new(dwarf.unit(header).ok()?);
                    others.parsed.insert(start, parsed.clone());
                    parsed
                }
            };
            let offset = target.to_unit_offset(&other.header)?;
            entry_name(dwarf, &other, others, offset, depth)
        }
        _ => None,
    }
}

/// File paths of one unit's line program, rendered once each.
#[derive(Default)]
struct Files {
    paths: HashMap<u64, Option<String>>,
}

impl Files {
    fn path(&mut self, dwarf: &Dwarf<'_>, unit: &Unit<'_>, index: u64) -> Option<&str> {
        self.paths
            .entry(index)
            .or_insert_with(|| render_path(dwarf, unit, index))
            .as_deref()
    }
}

/// Compilation directory, then the file's directory, then its name; an
/// absolute part replaces what comes before it.
fn render_path(dwarf: &Dwarf<'_>, unit: &Unit<'_>, index: u64) -> Option<String> {
    let header = unit.line_program.as_ref()?.header();
    let file = header.file(index)?;
    let mut path = unit
        .comp_dir
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Directory 0 is the compilation directory itself.
    if file.directory_index() != 0
        && let Some(directory) = file.directory(header)
    {
        push_path(
            &mut path,
            &dwarf.attr_string(unit, directory).ok()?.to_string_lossy(),
        );
    }
    push_path(
        &mut path,
        &dwarf
            .attr_string(unit, file.path_name())
            .ok()?
            .to_string_lossy(),
    );
    Some(path)
}

fn push_path(path: &mut String, part: &str) {
    if part.starts_with('/') {
        *path = part.to_string();
    } else {
        if !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
}
