//! The process's executable mappings, as `/proc/self/maps` lists them, with
//! the GNU build id of each mapped object.

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

/// Where to read a mapped object from. The executable is read through
/// `/proc/self/exe`, which stays the running binary even after a deploy
/// replaced or deleted the file at its path (maps then say `… (deleted)`).
/// Other objects are read by path.
pub(super) fn object_file(path: &str) -> std::borrow::Cow<'_, str> {
    let exe = std::fs::read_link("/proc/self/exe");
    match exe {
        Ok(exe) if exe.as_os_str() == path => "/proc/self/exe".into(),
        _ => path.into(),
    }
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        rest = tail;
        (!word.is_empty()).then_some(word)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let _dev = field()?;
    let _inode = field()?;
    // The path is the rest of the line, inner spaces and all.
    let path = rest.trim().to_string();
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

pub(super) fn read_build_id(path: &str) -> Option<String> {
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

    #[test]
    fn the_executable_is_read_through_proc_self_exe() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(object_file(exe.to_str().unwrap()), "/proc/self/exe");
        assert_eq!(object_file("/usr/lib/libc.so.6"), "/usr/lib/libc.so.6");
    }

    #[test]
    fn parses_maps_lines() {
        let text = "55d0a0000000-55d0a0100000 r-xp 00002000 08:01 123     /usr/bin/my  service\n\
                    7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]\n\
                    7ffd10000000-7ffd10002000 rw-p 00000000 00:00 0 [stack]\n\
                    garbage\n";
        let maps: Vec<Mapping> = text.lines().filter_map(parse_maps_line).collect();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].path, "/usr/bin/my  service");
        assert_eq!(maps[0].offset, 0x2000);
        assert_eq!(maps[1].path, "[vdso]");
    }
}
