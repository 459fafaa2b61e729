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
use crate::shared::symbols::Symbolizer;

/// What to tell a user whose build cannot dump tasks.
pub const NOT_ENABLED: &str = "task dumps are not enabled: build with RUSTFLAGS=\"--cfg tokio_unstable\" \
     and profscope-agent's `taskdump` feature (tokio's `taskdump`), on Linux x86_64 or aarch64";

/// What to tell a user of an agent whose builder did not enable task dumps.
pub const TASK_DUMPS_OFF: &str = "task dumps are off: enable them with AgentBuilder::task_dumps(true), \
     and only where the service builds profscope's patched tokio ([patch.crates-io] tokio from \
     profscope's vendor/tokio, see its README): on tokio 1.54.1 as released a dump during a poll \
     longer than 250 ms can wedge a worker and the service with it (tokio-rs/tokio#8370); on a \
     current-thread runtime a task that wakes a waker while traced panics the runtime's thread \
     with \"RefCell already borrowed\" (tokio-rs/tokio#8391, unpatched)";

/// How long a dump may take: tokio's dump waits for every worker, and a
/// worker blocked for long would hold the request forever.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// One task's await points: a stack per leaf future it waits on (several
/// under `select!`/`join!`), each leaf first and ending at the task's root
/// future.
pub type TaskLeaves = Vec<Vec<String>>;

/// Tasks with identical await points, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStacks {
    /// (a task's stacks, each leaf first; number of such tasks), most
    /// common first.
    pub stacks: Vec<(TaskLeaves, i64)>,
}

/// The second sample type of a task profile: every await point counts, so
/// a task waiting on k futures counts k times there, once per stack.
pub const LEAVES: &str = "leaves";

impl TaskStacks {
    /// Total tasks dumped.
    pub fn total(&self) -> i64 {
        self.stacks.iter().map(|(_, n)| n).sum()
    }

    /// A pprof profile, one sample per await point of each distinct task
    /// (a task waiting on several futures gives several stacks, each from
    /// its leaf to the task's root). Two sample types: `name` (`tasks`,
    /// `goroutine` or `taskleak`) `/count` counts each task once, on its
    /// first stack, so it sums to the tasks; `leaves/count` (the default,
    /// as the last) counts every stack.
    pub fn to_profile(&self, symbolizer: &Symbolizer, name: &str) -> Profile {
        let mut builder = crate::shared::profile_builder::ProfileBuilder::new(
            symbolizer,
            &[(name, "count"), (LEAVES, "count")],
        )
        .period(name, "count", 1)
        .time(std::time::SystemTime::now(), Duration::ZERO);
        for (leaves, count) in &self.stacks {
            for (i, frames) in leaves.iter().enumerate() {
                let names: Vec<&str> = frames.iter().map(String::as_str).collect();
                let tasks = if i == 0 { *count } else { 0 };
                builder.add_named_sample(&names, vec![tasks, *count]);
            }
        }
        builder.build()
    }

    /// Readable text like `goroutine?debug=1`: each distinct stack with its
    /// count, leaf first.
    pub fn to_text(&self) -> String {
        let mut out = format!("tokio task profile: total {}\n", self.total());
        for (leaves, count) in &self.stacks {
            write_task(&mut out, &format!("{count} @ task"), leaves);
        }
        out
    }

    /// Counts tasks with identical await points, most common first (then
    /// by stacks).
    pub fn from_backtraces(traces: impl IntoIterator<Item = TaskLeaves>) -> Self {
        let mut counts: std::collections::HashMap<TaskLeaves, i64> = Default::default();
        for t in traces {
            *counts.entry(t).or_default() += 1;
        }
        let mut stacks: Vec<(TaskLeaves, i64)> = counts.into_iter().collect();
        stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        TaskStacks { stacks }
    }
}

/// Appends one task group to a text profile: a block per stack, headed
/// `header` (and, for a task with several, which await point of how many).
fn write_task(out: &mut String, header: &str, leaves: &TaskLeaves) {
    for (i, frames) in leaves.iter().enumerate() {
        out.push_str(&format!("\n{header}"));
        if leaves.len() > 1 {
            out.push_str(&format!(" (await point {} of {})", i + 1, leaves.len()));
        }
        out.push('\n');
        for f in frames {
            out.push_str("#\t");
            out.push_str(f);
            out.push('\n');
        }
    }
}

/// One dump's tasks: (tokio task id, its stacks).
pub type TaskList = Vec<(u64, TaskLeaves)>;

/// Tasks that sat at the same await points through every dump: what a
/// `taskleak` profile shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskLeaks {
    /// Stuck tasks grouped by stacks: (stacks, tasks), most first.
    pub stacks: Vec<(TaskLeaves, i64)>,
    /// Dumps taken.
    pub dumps: usize,
    /// Time from the first dump to the last: every task reported sat still
    /// at least this long.
    pub window: Duration,
    /// Tasks in the last dump.
    pub tasks: usize,
}

impl TaskLeaks {
    /// Tasks present in every dump (matched by task id) with identical
    /// stacks in each, grouped by stacks.
    pub fn find(dumps: &[TaskList], window: Duration) -> TaskLeaks {
        let Some((first, rest)) = dumps.split_first() else {
            return TaskLeaks::default();
        };
        let later: Vec<std::collections::HashMap<u64, &TaskLeaves>> = rest
            .iter()
            .map(|d| d.iter().map(|(id, frames)| (*id, frames)).collect())
            .collect();
        let stuck = first.iter().filter(|(id, frames)| {
            later
                .iter()
                .all(|d| d.get(id).is_some_and(|other| *other == frames))
        });
        let grouped = TaskStacks::from_backtraces(stuck.map(|(_, frames)| frames.clone()));
        TaskLeaks {
            stacks: grouped.stacks,
            dumps: dumps.len(),
            window,
            tasks: dumps.last().map_or(0, Vec::len),
        }
    }

    /// A pprof profile (`taskleak/count`, `leaves/count`), as
    /// [`TaskStacks::to_profile`].
    pub fn to_profile(&self, symbolizer: &Symbolizer) -> Profile {
        TaskStacks {
            stacks: self.stacks.clone(),
        }
        .to_profile(symbolizer, "taskleak")
    }

    /// Readable text like `goroutine?debug=1`.
    pub fn to_text(&self) -> String {
        let stuck: i64 = self.stacks.iter().map(|(_, n)| n).sum();
        let mut out = format!(
            "tokio taskleak profile: {stuck} of {} tasks at the same await point in all {} dumps over {:.1} s\n",
            self.tasks,
            self.dumps,
            self.window.as_secs_f64()
        );
        for (leaves, count) in &self.stacks {
            let header = format!(
                "{count} @ task, stuck for at least {:.1} s",
                self.window.as_secs_f64()
            );
            write_task(&mut out, &header, leaves);
        }
        out
    }
}

/// Takes `dumps` (≥ 2) task dumps spread evenly over `window` and finds the
/// tasks that never moved. Dropping the future stops it.
pub async fn find_leaks(
    handle: &tokio::runtime::Handle,
    window: Duration,
    dumps: usize,
) -> Result<TaskLeaks, Error> {
    let dumps = dumps.max(2);
    let gap = window / (dumps as u32 - 1);
    let started = std::time::Instant::now();
    let mut lists = Vec::with_capacity(dumps);
    for i in 0..dumps {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        lists.push(dump_tasks(handle).await?);
    }
    Ok(TaskLeaks::find(&lists, started.elapsed()))
}

/// Dumps the tasks of the runtime behind `handle`, counted by stacks.
pub async fn dump(handle: &tokio::runtime::Handle) -> Result<TaskStacks, Error> {
    let tasks = dump_tasks(handle).await?;
    Ok(TaskStacks::from_backtraces(
        tasks.into_iter().map(|(_, leaves)| leaves),
    ))
}

cfg_taskdump! {
    /// The runtimes tokio is dumping, with when each dump began: from the
    /// request until tokio returns, which may be long after the request
    /// gave up.
    static DUMPING: std::sync::Mutex<Vec<(tokio::runtime::Id, std::time::Instant)>> =
        std::sync::Mutex::new(Vec::new());

    /// Holds a runtime's place in `DUMPING` for as long as tokio's dump runs.
    struct InFlight(tokio::runtime::Id);

    impl InFlight {
        /// The place, or how long the dump holding it has run.
        fn acquire(runtime: tokio::runtime::Id) -> Result<InFlight, Duration> {
            let mut dumping = DUMPING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, began)) = dumping.iter().find(|(id, _)| *id == runtime) {
                return Err(began.elapsed());
            }
            dumping.push((runtime, std::time::Instant::now()));
            Ok(InFlight(runtime))
        }
    }

    impl Drop for InFlight {
        fn drop(&mut self) {
            let mut dumping = DUMPING.lock().unwrap_or_else(|e| e.into_inner());
            dumping.retain(|(id, _)| *id != self.0);
        }
    }

    /// tokio's dump of a multi-thread runtime: every worker meets at a
    /// barrier, so a worker blocked in a poll holds it, and it runs to the
    /// end even when nobody waits any more. One at a time per runtime (as
    /// tokio's barrier is): a second `Handle::dump` behind a stuck one
    /// spins, unparking every worker in a loop, until the first ends, so
    /// it is refused instead. The dump runs on a thread of its own, which
    /// ends (and frees the place) when tokio returns; the request waits at
    /// most `DUMP_TIMEOUT`.
    async fn dump_multi_thread(
        handle: &tokio::runtime::Handle,
    ) -> Result<tokio::runtime::Dump, Error> {
        let waiting = |what: &str| Error::Unavailable {
            reason: format!(
                "{what}: a runtime worker has not reached tokio's dump barrier \
                 (blocked in a poll?); tokio finishes the dump when it does, \
                 and one dump of a runtime runs at a time"
            ),
            retry_after_secs: DUMP_TIMEOUT.as_secs(),
        };
        let in_flight = InFlight::acquire(handle.id()).map_err(|running| {
            if running < DUMP_TIMEOUT {
                Error::Unavailable {
                    reason: "another task dump of this runtime is running \
                             (one at a time: tokio's dump stops every worker)"
                        .into(),
                    retry_after_secs: 1,
                }
            } else {
                waiting(&format!(
                    "an earlier task dump has waited {:.0} s",
                    running.as_secs_f64()
                ))
            }
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = handle.clone();
        std::thread::Builder::new()
            .name("profscope-dump".into())
            .spawn(move || {
                let _in_flight = in_flight;
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
                    return;
                };
                let _ = tx.send(rt.block_on(handle.dump()));
            })
            .map_err(|e| Error::Internal(format!("cannot start the task dump thread: {e}")))?;
        match tokio::time::timeout(DUMP_TIMEOUT, rx).await {
            Ok(Ok(dump)) => Ok(dump),
            Ok(Err(_)) => Err(Error::Internal("the task dump thread failed".into())),
            Err(_) => Err(waiting(&format!("task dump timed out after {DUMP_TIMEOUT:?}"))),
        }
    }

    /// tokio dumps a current-thread runtime only from inside it (asked from
    /// elsewhere, the dump is empty): a task of its own takes the dump, as
    /// soon as the runtime's one thread is free to run it.
    async fn dump_current_thread(
        handle: &tokio::runtime::Handle,
    ) -> Result<tokio::runtime::Dump, Error> {
        let dump = handle.spawn(async { tokio::runtime::Handle::current().dump().await });
        let abort = dump.abort_handle();
        match tokio::time::timeout(DUMP_TIMEOUT, dump).await {
            Ok(Ok(dump)) => Ok(dump),
            Ok(Err(e)) => Err(Error::Internal(format!("the task dump task failed: {e}"))),
            Err(_) => {
                abort.abort();
                Err(Error::Unavailable {
                    reason: format!(
                        "task dump timed out after {DUMP_TIMEOUT:?}: the current-thread \
                         runtime's thread is blocked in a poll"
                    ),
                    retry_after_secs: DUMP_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Dumps the tasks of the runtime behind `handle`, with their ids.
    pub async fn dump_tasks(handle: &tokio::runtime::Handle) -> Result<TaskList, Error> {
        let dump = match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => dump_multi_thread(handle).await?,
            _ => dump_current_thread(handle).await?,
        };
        // Resolving backtraces reads debug info: not on the runtime's threads.
        tokio::task::spawn_blocking(move || {
            let stacks: TaskList = dump.tasks().iter().map(|task| {
                let id: u64 = task.id().to_string().parse().unwrap_or(0);
                // One backtrace per leaf future the task waits on (several
                // under `select!`/`join!`), each from its leaf to the task's
                // root: a stack each, never one glued through another.
                let leaves: TaskLeaves = task.trace().resolve_backtraces().iter().map(|bt| {
                    let mut frames: Vec<String> = Vec::new();
                    for frame in bt.frames() {
                        for sym in frame.symbols() {
                            if let Some(name) = sym.name_demangled() {
                                frames.push(strip_hash(name).to_string());
                            }
                        }
                    }
                    trim_dump_machinery(frames)
                }).collect();
                let leaves = if leaves.is_empty() {
                    vec![vec!["[unknown task frame]".to_string()]]
                } else {
                    leaves
                };
                (id, leaves)
            }).collect();
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
    pub async fn dump_tasks(handle: &tokio::runtime::Handle) -> Result<TaskList, Error> {
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
            vec![t(&["recv", "worker"])],
            vec![t(&["sleep"])],
            vec![t(&["recv", "worker"])],
        ]);
        assert_eq!(stacks.stacks[0], (vec![t(&["recv", "worker"])], 2));
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

    #[test]
    fn leaks_are_tasks_that_never_moved() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stuck = vec![t(&["recv", "stuck_worker"])];
        let d1 = vec![
            (1, stuck.clone()),
            (2, stuck.clone()),
            (3, vec![t(&["sleep", "ticker"])]),
        ];
        // Task 3 moved; task 4 is new; task 2 is gone.
        let d2 = vec![
            (1, stuck.clone()),
            (2, stuck.clone()),
            (3, vec![t(&["work", "ticker"])]),
        ];
        let d3 = vec![
            (1, stuck.clone()),
            (3, vec![t(&["sleep", "ticker"])]),
            (4, stuck.clone()),
        ];
        let leaks = TaskLeaks::find(&[d1, d2, d3], Duration::from_secs(2));
        assert_eq!(leaks.stacks, vec![(stuck, 1)]);
        assert_eq!((leaks.dumps, leaks.tasks), (3, 3));
        assert!(
            leaks
                .to_text()
                .contains("1 @ task, stuck for at least 2.0 s\n#\trecv")
        );
    }

    #[test]
    fn a_task_with_several_leaves_is_a_stack_per_leaf_counted_once() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let select = vec![t(&["recv", "serve"]), t(&["sleep", "serve"])];
        let stacks = TaskStacks::from_backtraces([
            select.clone(),
            select.clone(),
            vec![t(&["accept", "listen"])],
        ]);
        assert_eq!(stacks.total(), 3);
        let text = stacks.to_text();
        assert!(
            text.contains("\n2 @ task (await point 1 of 2)\n#\trecv\n#\tserve\n\n2 @ task (await point 2 of 2)\n#\tsleep\n#\tserve\n"),
            "{text}"
        );
        let p = stacks.to_profile(&Symbolizer::new(), "tasks");
        assert_eq!(p.string_at(p.sample_type[0].ty), "tasks");
        assert_eq!(p.string_at(p.sample_type[1].ty), LEAVES);
        // Tasks counted once; every await point its own stack to the root.
        assert_eq!(p.sample_total(0), 3);
        assert_eq!(p.sample_total(1), 5);
        let leaves = profscope_profile::fold::fold(&p, 1);
        for (stack, n) in [("serve;recv", 2), ("serve;sleep", 2), ("listen;accept", 1)] {
            assert!(leaves.contains(&(stack.to_string(), n)), "{leaves:?}");
        }
        assert_eq!(leaves.len(), 3, "{leaves:?}");
    }

    #[cfg(all(tokio_unstable, feature = "taskdump", target_os = "linux"))]
    #[test]
    fn strips_hashes() {
        assert_eq!(strip_hash("app::main::h0123456789abcdef"), "app::main");
        assert_eq!(strip_hash("app::hello"), "app::hello");
    }
}
