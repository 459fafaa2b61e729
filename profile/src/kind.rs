//! Profile kinds and the one table of Go-style endpoints.
//!
//! [`ENDPOINTS`] is the single list of what an agent serves: the agent's
//! router and index page, its auth test, and the viewer's capture form and
//! snapshot store all read it. A new endpoint is a row here plus, for the
//! agent, its handler's line in `agent/src/delivery/http/mod.rs` (whose
//! test fails while a row of this table has no handler).

use crate::proto::Profile;
use crate::sample_type::default_sample_index;

/// One endpoint of the `/debug/pprof` contract (and the pages beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The path, e.g. `/debug/pprof/heap`.
    pub path: &'static str,
    /// The profile kind it answers with (`cpu`, `heap`, …); `None` for
    /// pages that are not profiles (`cmdline`, `/metrics`).
    pub kind: Option<&'static str>,
    /// The sample type readers show by default, for profiles.
    pub default_sample_type: Option<&'static str>,
    /// A short name for menus (`CPU`, `heap (in use)`).
    pub label: &'static str,
    /// One sentence for the index page.
    pub description: &'static str,
    /// The query the index page links with (`?seconds=30`).
    pub example_query: &'static str,
    /// Served by profscope's agent; `false` for Go's paths that the viewer
    /// can capture from Go services but the agent does not serve.
    pub agent: bool,
}

impl Endpoint {
    /// The last path segment (`profile`, `heap`, …): the download's stem.
    pub fn name(&self) -> &'static str {
        self.path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
    }

    /// Whether the endpoint is a profile under `/debug/pprof/`.
    pub fn is_profile(&self) -> bool {
        self.kind.is_some()
    }
}

/// Every endpoint, in index-page order.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/debug/pprof/",
        kind: None,
        default_sample_type: None,
        label: "index",
        description: "This index.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/profile",
        kind: Some("cpu"),
        default_sample_type: Some("cpu"),
        label: "CPU",
        description: "CPU profile. Add seconds=N (default 30) and format=pprof|folded|svg. \
                      After you get the profile file, use the go tool pprof command to investigate it.",
        example_query: "?seconds=30",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/heap",
        kind: Some("heap"),
        default_sample_type: Some("inuse_space"),
        label: "heap (in use)",
        description: "In-use memory by allocation stack (jemalloc sampling, unsampled to estimates \
                      of the true totals), current at the time of the request. Add seconds=N for \
                      the growth over N seconds.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/allocs",
        kind: Some("allocs"),
        default_sample_type: Some("alloc_space"),
        label: "allocations",
        description: "The same data with allocated space (cumulative since start) as the default \
                      sample type.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/delta_heap",
        kind: Some("heap"),
        default_sample_type: Some("alloc_space"),
        label: "heap (delta, godeltaprof)",
        description: "alloc_* as the growth since the previous request to this path, inuse_* \
                      current: godeltaprof's delta_heap, for Grafana Alloy's pyroscope.scrape.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/goroutine",
        kind: Some("goroutine"),
        default_sample_type: Some("goroutine"),
        label: "tasks (goroutine)",
        description: "The task profile under Go's name and sample type, for Pyroscope/Parca \
                      scrapers.",
        example_query: "?debug=1",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/tasks",
        kind: Some("tasks"),
        default_sample_type: Some("tasks"),
        label: "tasks",
        description: "Stack traces of all tokio tasks, counted by identical await-point stacks \
                      (task dump).",
        example_query: "?debug=1",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/taskleak",
        kind: Some("taskleak"),
        default_sample_type: Some("taskleak"),
        label: "stuck tasks (taskleak)",
        description: "Tokio tasks at the same await point in three dumps spread over seconds=N \
                      (default 30), grouped by stack: candidates for leaked or stuck tasks.",
        example_query: "?seconds=10&debug=1",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/recent/profile",
        kind: Some("cpu"),
        default_sample_type: Some("cpu"),
        label: "recent CPU",
        description: "The flight recorder's CPU of the last N seconds, answered at once (seconds, \
                      default 60; the agent's recorder must be on).",
        example_query: "?seconds=60",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/recent/heap",
        kind: Some("heap"),
        default_sample_type: Some("inuse_space"),
        label: "recent heap",
        description: "In use as of the recorder's newest heap snapshot; alloc_* as the growth since \
                      the snapshot nearest to N seconds ago.",
        example_query: "?seconds=300",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/recent/metrics",
        kind: None,
        default_sample_type: None,
        label: "recent metrics",
        description: "The recorder's runtime and task-group metrics of the last N seconds (JSON).",
        example_query: "?seconds=300",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/incidents",
        kind: None,
        default_sample_type: None,
        label: "incidents",
        description: "Incidents the recorder's triggers froze, oldest first (JSON); POST fires a \
                      manual one.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/incidents/{id}/{profile}",
        kind: None,
        default_sample_type: None,
        label: "incident profile",
        description: "An incident's cpu or heap profile (window=before|after).",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/block",
        kind: Some("block"),
        default_sample_type: Some("delay"),
        label: "block",
        description: "Polls that blocked a runtime worker past the watchdog's threshold, caught \
                      while they blocked (not lock contention): stacks, contentions, delay, \
                      state; cumulative (seconds=N: the last N seconds). 501 when the watchdog \
                      is off.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/mutex",
        kind: Some("mutex"),
        default_sample_type: Some("delay"),
        label: "mutex (Go)",
        description: "Go's mutex contention profile; Rust's runtime records none: answers 501 \
                      with why.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/delta_block",
        kind: Some("block"),
        default_sample_type: Some("delay"),
        label: "block (delta)",
        description: "The block profile's growth since the previous request to this path \
                      (godeltaprof's semantics).",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/delta_mutex",
        kind: Some("mutex"),
        default_sample_type: Some("delay"),
        label: "mutex (delta, Go)",
        description: "godeltaprof's delta_mutex; Rust has no mutex profile: answers 501 with why.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/pprof/threadcreate",
        kind: Some("threadcreate"),
        default_sample_type: Some("threadcreate"),
        label: "threadcreate (Go)",
        description: "Go's thread creation profile.",
        example_query: "",
        agent: false,
    },
    Endpoint {
        path: "/debug/pprof/cmdline",
        kind: None,
        default_sample_type: None,
        label: "cmdline",
        description: "The command line invocation of the current program, NUL separated.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/tokio",
        kind: None,
        default_sample_type: None,
        label: "tokio",
        description: "The tokio runtime and task-group figures as JSON.",
        example_query: "",
        agent: true,
    },
    Endpoint {
        path: "/debug/memory",
        kind: None,
        default_sample_type: None,
        label: "memory",
        description: "Where the resident memory goes: RSS, cgroup, jemalloc, heap profile, thread \
                      stacks, mapped files, and what none of them explains (JSON; debug=1 for text).",
        example_query: "?debug=1",
        agent: true,
    },
    Endpoint {
        path: "/metrics",
        kind: None,
        default_sample_type: None,
        label: "metrics",
        description: "Prometheus text: tokio runtime, task groups, jemalloc, process.",
        example_query: "",
        agent: true,
    },
];

/// The endpoints the agent serves.
pub fn agent_endpoints() -> impl Iterator<Item = &'static Endpoint> {
    ENDPOINTS.iter().filter(|e| e.agent)
}

/// The main profile endpoint of `kind` (`cpu`, `heap`, …): the first in
/// the table (`heap`, not `delta_heap`).
pub fn endpoint_of_kind(kind: &str) -> Option<&'static Endpoint> {
    ENDPOINTS.iter().find(|e| e.kind == Some(kind))
}

/// The kind a Go-style endpoint URL serves, from its last path segment.
pub fn kind_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    ENDPOINTS
        .iter()
        .filter(|e| e.path.starts_with("/debug/pprof/"))
        .find(|e| e.name() == last)
        .and_then(|e| e.kind)
}

/// The kind of a profile, guessed from its sample types.
pub fn kind_of_profile(p: &Profile) -> &'static str {
    let types: Vec<&str> = p.sample_type.iter().map(|t| p.string_at(t.ty)).collect();
    let has = |name: &str| types.contains(&name);
    let default = types.get(default_sample_index(p)).copied().unwrap_or("");
    if has("cpu") {
        "cpu"
    } else if has("inuse_space") && default.starts_with("alloc") {
        "allocs"
    } else if has("inuse_space") || has("alloc_space") {
        "heap"
    } else if has("taskleak") {
        "taskleak"
    } else if has("goroutine") {
        "goroutine"
    } else if types.iter().any(|t| t.contains("task")) {
        "tasks"
    } else if has("delay") || has("contentions") {
        "contention"
    } else if has("samples")
        && p.period_type
            .as_ref()
            .is_some_and(|t| p.string_at(t.ty) == "cpu")
    {
        "cpu"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_urls() {
        assert_eq!(
            kind_from_url("http://h/debug/pprof/profile?seconds=3"),
            Some("cpu")
        );
        assert_eq!(kind_from_url("http://h/debug/pprof/heap"), Some("heap"));
        assert_eq!(kind_from_url("http://h/debug/pprof/mutex"), Some("mutex"));
        assert_eq!(kind_from_url("http://h/debug/pprof/cmdline"), None);
        assert_eq!(kind_from_url("http://h/metrics"), None);
    }

    #[test]
    fn the_table_is_consistent() {
        let mut paths: Vec<&str> = ENDPOINTS.iter().map(|e| e.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ENDPOINTS.len(), "paths are unique");
        for e in ENDPOINTS {
            assert_eq!(e.kind.is_some(), e.default_sample_type.is_some(), "{e:?}");
            if let Some(kind) = e.kind {
                assert_eq!(endpoint_of_kind(kind).and_then(|k| k.kind), Some(kind));
            }
        }
    }
}
