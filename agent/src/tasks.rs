//! Task dumps: the async analogue of Go's goroutine profile. Tokio's
//! `Handle::dump` walks every task's await-point backtrace; identical
//! backtraces are counted, and the result is a pprof profile (`tasks/count`,
//! or `goroutine/count` under Go's name) or readable text like
//! `goroutine?debug=1`.
//!
//! Needs tokio's `taskdump` feature (this crate's `taskdump` feature) and
//! `--cfg tokio_unstable`, on Linux x86/x86_64/aarch64; elsewhere the
//! endpoints answer 501 with how to enable it.

use std::time::Duration;

use profscope_profile::Profile;

use crate::Error;
use crate::symbols::Symbolizer;

/// What to tell a user whose build cannot dump tasks.
pub const NOT_ENABLED: &str = "task dumps are not enabled: build with RUSTFLAGS=\"--cfg tokio_unstable\" \
     and profscope-agent's `taskdump` feature (tokio's `taskdump`), on Linux x86_64 or aarch64";

/// How long a dump may take: tokio's dump waits for every worker, and a
/// worker blocked for long would hold the request forever.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Identical task backtraces, counted. Frames are outermost-last (leaf
/// first), as function names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStacks {
    /// (frames leaf first, number of tasks), most common first.
    pub stacks: Vec<(Vec<String>, i64)>,
}

impl TaskStacks {
    /// Total tasks dumped.
    pub fn total(&self) -> i64 {
        self.stacks.iter().map(|(_, n)| n).sum()
    }

    /// A pprof profile with one sample per distinct stack; `name` is the
    /// sample type (`tasks` or `goroutine`).
    pub fn to_profile(&self, symbolizer: &Symbolizer, name: &str) -> Profile {
        let mut builder = crate::builder::ProfileBuilder::new(symbolizer, &[(name, "count")])
            .period(name, "count", 1)
            .time(std::time::SystemTime::now(), Duration::ZERO);
        for (frames, count) in &self.stacks {
            let names: Vec<&str> = frames.iter().map(String::as_str).collect();
            builder.add_named_sample(&names, vec![*count]);
        }
        builder.build()
    }

    /// Readable text like `goroutine?debug=1`: each distinct stack with its
    /// count, leaf first.
    pub fn to_text(&self) -> String {
        let mut out = format!("tokio task profile: total {}\n", self.total());
        for (frames, count) in &self.stacks {
            out.push_str(&format!("\n{count} @ task\n"));
            for f in frames {
                out.push_str("#\t");
                out.push_str(f);
                out.push('\n');
            }
        }
        out
    }

    /// Counts identical stacks, most common first (then by stack).
    pub fn from_backtraces(traces: impl IntoIterator<Item = Vec<String>>) -> Self {
        let mut counts: std::collections::HashMap<Vec<String>, i64> = Default::default();
        for t in traces {
            *counts.entry(t).or_default() += 1;
        }
        let mut stacks: Vec<(Vec<String>, i64)> = counts.into_iter().collect();
        stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        TaskStacks { stacks }
    }
}

cfg_taskdump! {
    /// Dumps the tasks of the runtime behind `handle`.
    pub async fn dump(handle: &tokio::runtime::Handle) -> Result<TaskStacks, Error> {
        let dump = tokio::time::timeout(DUMP_TIMEOUT, handle.dump())
            .await
            .map_err(|_| {
                Error::Internal(format!(
                    "task dump timed out after {DUMP_TIMEOUT:?} (a runtime worker is blocked)"
                ))
            })?;
        // Resolving backtraces reads debug info: not on the runtime's threads.
        tokio::task::spawn_blocking(move || {
            let stacks = TaskStacks::from_backtraces(dump.tasks().iter().map(|task| {
                let mut frames: Vec<String> = Vec::new();
                for bt in task.trace().resolve_backtraces() {
                    for frame in bt.frames() {
                        for sym in frame.symbols() {
                            if let Some(name) = sym.name_demangled() {
                                frames.push(strip_hash(name).to_string());
                            }
                        }
                    }
                }
                trim_dump_machinery(frames)
            }));
            // tokio resolves through the `backtrace` crate, whose parsed DWARF
            // of the whole binary (tens of MB) would stay cached: free it.
            backtrace::clear_symbol_cache();
            stacks
        })
        .await
        .map_err(|e| Error::Internal(format!("task dump thread failed: {e}")))
    }

    /// `foo::bar::h0123456789abcdef` → `foo::bar`.
    fn strip_hash(name: &str) -> &str {
        match name.rsplit_once("::h") {
            Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => head,
            _ => name,
        }
    }

    /// Tokio's trace starts inside its own tracing machinery (`Trace::capture`,
    /// `trace_leaf`, backtrace internals) and ends in the dump's root: keep the
    /// frames between, leaf first, as the task's await points.
    fn trim_dump_machinery(frames: Vec<String>) -> Vec<String> {
        let is_machinery = |f: &str| {
            f.starts_with("backtrace::")
                || f.starts_with("tokio::runtime::task::trace::")
                || f.starts_with("<tokio::runtime::task::trace::")
                || f.starts_with("tokio::runtime::dump::")
        };
        let start = frames
            .iter()
            .rposition(|f| f.contains("trace_leaf") || f.contains("task::trace::Trace::capture"))
            .map_or(0, |i| i + 1);
        let mut kept: Vec<String> = frames[start.min(frames.len())..]
            .iter()
            .filter(|f| !is_machinery(f))
            .cloned()
            .collect();
        // Stop at the root future: frames past it are the dump's own caller.
        if let Some(root) = kept
            .iter()
            .position(|f| f.contains("task::trace::Root") || f.contains("<tokio::runtime::task::trace::Root"))
        {
            kept.truncate(root);
        }
        if kept.is_empty() {
            kept.push("[unknown task frame]".to_string());
        }
        kept
    }
}

cfg_not_taskdump! {
    /// Dumps the tasks of the runtime behind `handle` (not in this build).
    pub async fn dump(handle: &tokio::runtime::Handle) -> Result<TaskStacks, Error> {
        let _ = handle;
        Err(Error::NotAvailable(NOT_ENABLED.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_identical_stacks_most_common_first() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stacks = TaskStacks::from_backtraces([
            t(&["recv", "worker"]),
            t(&["sleep"]),
            t(&["recv", "worker"]),
        ]);
        assert_eq!(stacks.stacks[0], (t(&["recv", "worker"]), 2));
        assert_eq!(stacks.total(), 3);
        let text = stacks.to_text();
        assert!(text.starts_with("tokio task profile: total 3\n"));
        assert!(text.contains("\n2 @ task\n#\trecv\n#\tworker\n"), "{text}");
        let p = stacks.to_profile(&Symbolizer::new(), "goroutine");
        let folded = profscope_profile::fold::fold(&p, 0);
        assert!(
            folded.contains(&("worker;recv".to_string(), 2)),
            "{folded:?}"
        );
    }

    #[cfg(all(tokio_unstable, feature = "taskdump", target_os = "linux"))]
    #[test]
    fn strips_hashes() {
        assert_eq!(strip_hash("app::main::h0123456789abcdef"), "app::main");
        assert_eq!(strip_hash("app::hello"), "app::hello");
    }
}
