//! Where the resident memory goes: RSS split by the kernel
//! (`/proc/self/smaps_rollup`), the cgroup's charge, jemalloc's own
//! accounting, the last heap profile's in-use estimate, thread stacks and
//! mapped files (`/proc/self/smaps`), and what none of them explains —
//! each line with a sentence on what it means and what to do about it.
//!
//! Everything is read when asked (a few milliseconds); nothing dumps the
//! heap: the heap line is the most recent heap profile's, with its age.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::capture::heap::JemallocStats;

/// The memory report of `/debug/memory`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Resident set size (`Rss` of `smaps_rollup`).
    pub rss_bytes: u64,
    /// Anonymous resident memory (heap, stacks, anonymous maps).
    pub anonymous_bytes: u64,
    /// File-backed resident memory (code, mapped files).
    pub file_backed_bytes: u64,
    /// Resident pages shared with other processes.
    pub shared_bytes: u64,
    /// Swapped-out pages.
    pub swap_bytes: u64,
    /// The cgroup's charge, when the cgroup v2 files are readable.
    pub cgroup: Option<CgroupMemory>,
    /// jemalloc's accounting, when jemalloc is the allocator.
    pub jemalloc: Option<JemallocMemory>,
    /// The most recent heap profile's in-use total.
    pub heap_profile: Option<HeapEstimate>,
    /// Resident pages of thread stacks.
    pub thread_stacks_bytes: u64,
    /// Threads of the process, and how many of their stacks were found.
    pub threads: usize,
    /// Stacks located (threads running on a CPU at the moment cannot be).
    pub stacks_found: usize,
    /// The executable's resident code.
    pub binary_code_bytes: u64,
    /// The executable's other resident mappings (data, debug info the
    /// symbolizer maps).
    pub binary_other_bytes: u64,
    /// Other resident file mappings (shared libraries, mapped files).
    pub other_files_bytes: u64,
    /// RSS that none of the lines above explains.
    pub unexplained_bytes: i64,
    /// The report as lines: name, bytes, what it means and what to do.
    pub lines: Vec<MemoryLine>,
    /// What could not be read, in words.
    pub missing: Vec<String>,
}

/// The cgroup's memory charge.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The cgroup's path under the root.
    pub path: String,
    /// `memory.current`.
    pub current_bytes: u64,
    /// `memory.max`, `None` for `max` (no limit).
    pub max_bytes: Option<u64>,
}

/// jemalloc's figures and the fragmentation they imply.
#[derive(Debug, Clone, Serialize)]
pub struct JemallocMemory {
    /// The statistics as read.
    #[serde(flatten)]
    pub stats: JemallocStats,
    /// `active / allocated`: 1.0 is no fragmentation.
    pub fragmentation: f64,
}

/// The in-use estimate of the most recent heap profile.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HeapEstimate {
    /// Estimated bytes in use (unsampled `inuse_space`).
    pub in_use_bytes: i64,
    /// Seconds since that profile was taken.
    pub age_seconds: f64,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryLine {
    /// Short name (`rss`, `thread stacks`, …).
    pub name: String,
    /// Bytes.
    pub bytes: i64,
    /// What it means and what to do about it.
    pub meaning: String,
}

/// Where the report reads from (tests point it at fake files).
#[derive(Debug, Clone)]
pub struct Sources {
    /// `/proc/self`.
    pub proc_self: PathBuf,
    /// The cgroup v2 mount, `/sys/fs/cgroup` by default.
    pub cgroup_root: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            proc_self: PathBuf::from("/proc/self"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// One mapping of `smaps`.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    rss: u64,
}

/// Reads the report. `jemalloc` and `heap` come from the agent (absent
/// without the `heap` feature or before any heap profile).
pub fn report(
    sources: &Sources,
    jemalloc: Option<JemallocStats>,
    heap: Option<HeapEstimate>,
) -> MemoryReport {
    let mut missing = Vec::new();
    let rollup = read(&sources.proc_self.join("smaps_rollup"));
    if rollup.is_none() {
        missing.push("/proc/self/smaps_rollup is not readable: RSS split unknown".to_string());
    }
    let field = |name: &str| {
        rollup
            .as_deref()
            .and_then(|r| kib_field(r, name))
            .unwrap_or(0)
    };
    let rss = field("Rss");
    let anonymous = field("Anonymous");
    let shared = field("Shared_Clean") + field("Shared_Dirty");
    let swap = field("Swap");
    let file_backed = rss.saturating_sub(anonymous);

    let maps = read(&sources.proc_self.join("smaps"))
        .map(|s| parse_smaps(&s))
        .unwrap_or_default();
    let exe = std::fs::read_link(sources.proc_self.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut binary_code, mut binary_other, mut other_files) = (0, 0, 0);
    for m in &maps {
        if m.path.starts_with('/') {
            if m.path == exe {
                if m.perms.contains('x') {
                    binary_code += m.rss;
                } else {
                    binary_other += m.rss;
                }
            } else {
                other_files += m.rss;
            }
        }
    }
    let (thread_stacks, threads, stacks_found) = thread_stacks(&sources.proc_self, &maps);
    let cgroup = read_cgroup(sources);
    if cgroup.is_none() {
        missing.push(format!(
            "no cgroup v2 memory.current under {}: cgroup charge unknown",
            sources.cgroup_root.display()
        ));
    }
    let jemalloc = jemalloc.map(|stats| JemallocMemory {
        fragmentation: stats.active as f64 / stats.allocated.max(1) as f64,
        stats,
    });
    if jemalloc.is_none() {
        missing.push(
            "jemalloc is not the allocator (the agent's `heap` feature and \
             `jemalloc_profiling!()`): heap memory is not split out and counts as unexplained"
                .to_string(),
        );
    }
    // jemalloc's `resident` is a maximum (pages of its extents it has not
    // touched, or freed lazily, count too): the kernel's anonymous count
    // caps what it can explain.
    let by_jemalloc = jemalloc.as_ref().map_or(0, |j| {
        j.stats
            .resident
            .min(anonymous.saturating_sub(thread_stacks))
    });
    let unexplained = rss as i64 - file_backed as i64 - thread_stacks as i64 - by_jemalloc as i64;
    let mut report = MemoryReport {
        rss_bytes: rss,
        anonymous_bytes: anonymous,
        file_backed_bytes: file_backed,
        shared_bytes: shared,
        swap_bytes: swap,
        cgroup,
        jemalloc,
        heap_profile: heap,
        thread_stacks_bytes: thread_stacks,
        threads,
        stacks_found,
        binary_code_bytes: binary_code,
        binary_other_bytes: binary_other,
        other_files_bytes: other_files,
        unexplained_bytes: unexplained,
        lines: Vec::new(),
        missing,
    };
    report.lines = lines(&report);
    report
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A `Name:   123 kB` field in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or("").to_string();
            let path = fields.nth(3).map(str::to_string).unwrap_or_default();
            maps.push(Mapping {
                start,
                end,
                perms,
                path,
                rss: 0,
            });
        } else if let Some(rest) = line.strip_prefix("Rss:")
            && let Some(m) = maps.last_mut()
        {
            m.rss = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                * 1024;
        }
    }
    maps
}

/// Resident stack pages: the mapping holding each thread's stack pointer
/// (from `task/<tid>/syscall`, available for threads blocked or waiting,
/// which idle threads are) and the main thread's `[stack]`.
fn thread_stacks(proc_self: &Path, maps: &[Mapping]) -> (u64, usize, usize) {
    let mut stacks: HashSet<u64> = HashSet::new();
    if let Some(main) = maps.iter().find(|m| m.path == "[stack]") {
        stacks.insert(main.start);
    }
    let mut threads = 0;
    let mut found = 0;
    if let Ok(dir) = std::fs::read_dir(proc_self.join("task")) {
        for entry in dir.flatten() {
            threads += 1;
            let Some(text) = read(&entry.path().join("syscall")) else {
                continue;
            };
            // `NR a1 … a6 sp pc`, or `-1 sp pc` when blocked outside a
            // syscall, or `running`.
            let fields: Vec<&str> = text.split_whitespace().collect();
            if fields.len() < 3 {
                continue;
            }
            let Some(sp) = fields[fields.len() - 2]
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            if let Some(m) = maps.iter().find(|m| m.start <= sp && sp < m.end) {
                found += 1;
                stacks.insert(m.start);
            }
        }
    }
    let bytes = maps
        .iter()
        .filter(|m| stacks.contains(&m.start))
        .map(|m| m.rss)
        .sum();
    (bytes, threads, found)
}

fn read_cgroup(sources: &Sources) -> Option<CgroupMemory> {
    let own = read(&sources.proc_self.join("cgroup"))?;
    // cgroup v2: the one line `0::/path`.
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .to_string();
    let dir = sources.cgroup_root.join(path.trim_start_matches('/'));
    let current = read(&dir.join("memory.current"))?.trim().parse().ok()?;
    let max = read(&dir.join("memory.max")).and_then(|m| m.trim().parse().ok());
    Some(CgroupMemory {
        path,
        current_bytes: current,
        max_bytes: max,
    })
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn lines(r: &MemoryReport) -> Vec<MemoryLine> {
    let mut out = Vec::new();
    let mut line = |name: &str, bytes: i64, meaning: String| {
        out.push(MemoryLine {
            name: name.to_string(),
            bytes,
            meaning,
        })
    };
    line(
        "rss",
        r.rss_bytes as i64,
        format!(
            "Resident memory the kernel charges this process: {} anonymous, {} file-backed, {} shared with other processes.",
            mib(r.anonymous_bytes as i64),
            mib(r.file_backed_bytes as i64),
            mib(r.shared_bytes as i64)
        ),
    );
    if let Some(c) = &r.cgroup {
        let limit = c.max_bytes.map_or("no limit".to_string(), |m| {
            format!("limit {}", mib(m as i64))
        });
        line(
            "cgroup",
            c.current_bytes as i64,
            format!(
                "What the cgroup {} is charged ({limit}): this process plus page cache and any other process in it; near the limit the kernel reclaims, then kills.",
                c.path
            ),
        );
    }
    if let Some(h) = &r.heap_profile {
        line(
            "heap in use (profile)",
            h.in_use_bytes,
            format!(
                "Live allocations estimated by the heap profile taken {:.0} s ago: /debug/pprof/heap shows by which stacks; a diff of two shows growth.",
                h.age_seconds
            ),
        );
    }
    if let Some(j) = &r.jemalloc {
        let s = &j.stats;
        line(
            "allocated",
            s.allocated as i64,
            "Bytes the application holds in live allocations (jemalloc stats.allocated).".into(),
        );
        line(
            "fragmentation",
            s.active as i64 - s.allocated as i64,
            format!(
                "Pages in use for allocations minus the bytes allocated (active/allocated = {:.2}): above ~1.2, many partly used pages; fewer arenas (narenas) or fewer size classes in play help.",
                j.fragmentation
            ),
        );
        line(
            "freed, kept by the allocator",
            s.resident as i64 - s.active as i64 - s.metadata as i64,
            "Freed pages jemalloc keeps for reuse (dirty; an upper bound, as jemalloc counts pages it has not touched): lower dirty_decay_ms / muzzy_decay_ms (or enable background_thread) to return them to the OS sooner.".into(),
        );
        line(
            "allocator metadata",
            s.metadata as i64,
            "jemalloc's own bookkeeping; grows with the number of arenas and extents.".into(),
        );
        line(
            "retained (not resident)",
            s.retained as i64,
            "Address space jemalloc returned to the OS but keeps mapped for reuse: not in RSS, only virtual size.".into(),
        );
    }
    line(
        "thread stacks",
        r.thread_stacks_bytes as i64,
        format!(
            "Resident stack pages of {} threads ({} located): many threads, or deep recursion; tokio's blocking pool grows to 512 threads by default.",
            r.threads, r.stacks_found
        ),
    );
    line(
        "binary code",
        r.binary_code_bytes as i64,
        "The executable's resident machine code (shared page cache).".into(),
    );
    line(
        "binary data and debug info",
        r.binary_other_bytes as i64,
        "The executable's other mapped pages: data, and the debug info the symbolizer maps while it symbolizes (page cache, reclaimable).".into(),
    );
    line(
        "other files",
        r.other_files_bytes as i64,
        "Shared libraries and other mapped files (page cache, mostly shared and reclaimable)."
            .into(),
    );
    let unexplained_meaning = if r.jemalloc.is_some() {
        "Resident memory none of the above explains: allocations that bypass jemalloc (C libraries with their own malloc, direct mmap), stacks of threads running at the moment, or memory mapped by other allocators."
    } else {
        "Resident memory none of the above explains; without jemalloc this includes the whole heap (turn on the agent's `heap` feature to split it out)."
    };
    line(
        "unexplained",
        r.unexplained_bytes,
        unexplained_meaning.into(),
    );
    out
}

/// Why the lines do not add up to `rss`, under the text form's lines.
pub const WHY_MORE_THAN_RSS: &str = "\
Why the lines add up to more than rss: they overlap and some are bounds.
- rss and cgroup are totals of the lines under them (the cgroup's also
  counts page cache and the other processes in it);
- heap in use (profile) estimates the same live bytes allocated counts:
  count one of the two;
- freed, kept by the allocator is an upper bound (jemalloc's resident counts
  pages it reserved but never touched), and retained is not resident at all;
- binary code, binary data and other files are page cache, shared with
  other processes and counted in rss only for the pages this one touched.
The parts of rss are allocated, fragmentation, freed (at most), metadata,
thread stacks, binary code and data, other files and unexplained.
";

impl MemoryReport {
    /// The report as aligned text (`/debug/memory?debug=1`).
    pub fn to_text(&self) -> String {
        let mut out = String::from("memory: where the resident set goes\n\n");
        for l in &self.lines {
            out.push_str(&format!(
                "{:>12}  {:<30} {}\n",
                mib(l.bytes),
                l.name,
                l.meaning
            ));
        }
        for m in &self.missing {
            out.push_str(&format!("\nmissing: {m}"));
        }
        if !self.missing.is_empty() {
            out.push('\n');
        }
        out.push('\n');
        out.push_str(WHY_MORE_THAN_RSS);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn cgroup_lines_come_from_the_configured_root() {
        let dir = std::env::temp_dir().join(format!("profscope-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fake(
            &dir,
            &[
                ("proc/cgroup", "0::/system.slice/app.service\n"),
                ("cg/system.slice/app.service/memory.current", "123456789\n"),
                ("cg/system.slice/app.service/memory.max", "max\n"),
            ],
        );
        let sources = Sources {
            proc_self: dir.join("proc"),
            cgroup_root: dir.join("cg"),
        };
        let cg = read_cgroup(&sources).expect("cgroup");
        assert_eq!(
            cg,
            CgroupMemory {
                path: "/system.slice/app.service".into(),
                current_bytes: 123_456_789,
                max_bytes: None,
            }
        );
        std::fs::write(
            dir.join("cg/system.slice/app.service/memory.max"),
            "1073741824\n",
        )
        .unwrap();
        assert_eq!(read_cgroup(&sources).unwrap().max_bytes, Some(1 << 30));
        // cgroup v1 only (no `0::` line): no cgroup line, and it says so.
        std::fs::write(dir.join("proc/cgroup"), "4:memory:/app\n").unwrap();
        assert!(read_cgroup(&sources).is_none());
        let r = report(&sources, None, None);
        assert!(
            r.missing.iter().any(|m| m.contains("cgroup")),
            "{:?}",
            r.missing
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn smaps_fields_and_mappings() {
        let smaps = "55d0a000-55d0b000 r-xp 00001000 08:01 42 /usr/bin/app\n\
                     Rss:                   8 kB\n\
                     7ffd0000-7ffd2000 rw-p 00000000 00:00 0 [stack]\n\
                     Rss:                   4 kB\n";
        let maps = parse_smaps(smaps);
        assert_eq!(maps.len(), 2);
        assert_eq!((maps[0].rss, maps[0].path.as_str()), (8192, "/usr/bin/app"));
        assert_eq!(maps[1].path, "[stack]");
        assert_eq!(kib_field("Rss:   10 kB\nSwap: 2 kB\n", "Swap"), Some(2048));
    }

    #[test]
    fn this_process_adds_up() {
        let r = report(&Sources::default(), None, None);
        assert!(r.rss_bytes > 0);
        assert!(r.threads >= 1);
        assert!(
            r.thread_stacks_bytes > 0,
            "the main thread's stack at least"
        );
        let text = r.to_text();
        assert!(
            text.contains("unexplained") && text.contains("jemalloc is not the allocator"),
            "{text}"
        );
    }
}
