use super::{Core, Handle, Shared};

use crate::loom::sync::Arc;
use crate::runtime::scheduler::multi_thread::Stats;
use crate::runtime::task::trace::trace_multi_thread;
use crate::runtime::{dump, WorkerMetrics};

use crate::loom::sync::atomic::Ordering; // profscope: `trace_pending`
use std::time::Duration;

impl Handle {
    pub(super) fn trace_core(&self, mut core: Box<Core>) -> Box<Core> {
        core.is_traced = false;

        if core.is_shutdown {
            return core;
        }

        // wait for other workers, or timeout without tracing
        let timeout = Duration::from_millis(250); // a _very_ generous timeout
        // profscope: an idle worker waits 40 ms: it parks 10 ms and comes back.
        let timeout = if core.has_tasks() { timeout } else { Duration::from_millis(40) };
        let barrier =
            if let Some(barrier) = self.shared.trace_status.trace_start.wait_timeout(timeout) {
                barrier
            } else {
                // don't attempt to trace
                return core;
            };

        if !barrier.is_leader() {
            // wait for leader to finish tracing
            self.shared.trace_status.trace_end.wait();
            return core;
        }

        // profscope: trace only for an open request without a result yet:
        // after it, no worker comes back for the same request (no stall),
        // and no unrequested trace is left for the next request (no stale dump).
        if self.shared.trace_status.trace_pending.swap(false, Ordering::AcqRel) {
            self.trace_for_request();
        }
        self.shared.trace_status.trace_end.wait();
        core
    }

    fn trace_for_request(&self) {
        // trace

        let owned = &self.shared.owned;
        let mut local = self.shared.steal_all();
        let injection = &self.shared.inject;

        let traces = trace_multi_thread(owned, &mut local, injection)
            .into_iter()
            .map(|(id, trace)| dump::Task::new(id, trace))
            .collect();

        let result = dump::Dump::new(traces);

        // stash the result
        self.shared.trace_status.stash_result(result);
        // profscope: every worker then passes `trace_end` in `trace_core`.
    }
}

impl Shared {
    /// Steal all tasks from remotes into a single local queue.
    pub(super) fn steal_all(&self) -> super::queue::Local<Arc<Handle>> {
        let (_steal, mut local) = super::queue::local();

        let worker_metrics = WorkerMetrics::new();
        let mut stats = Stats::new(&worker_metrics);

        for remote in self.remotes.iter() {
            let steal = &remote.steal;
            while !steal.is_empty() {
                if let Some(task) = steal.steal_into(&mut local, &mut stats) {
                    local.push_back([task].into_iter());
                }
            }
        }

        local
    }
}
