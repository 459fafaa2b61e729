//! Incidents the agent's flight recorder froze, on the viewer's side: list
//! them from `GET /debug/pprof/incidents`, fetch each one's profiles into
//! the snapshot store, and show one against its baseline — the heap growth
//! ranked by function (heap at the trigger vs the heap before the window),
//! the CPU before vs after the trigger — with a differential flamegraph.
//!
//! An incident's profiles are stored as ordinary snapshots labelled
//! `incident-<id>-<part>` ([`Part`]); the agent's ids name the time and the
//! trigger (`<unix seconds>-<trigger>-<n>`), so the labels do too. The
//! incident's listing (trigger, figures, windows) is kept beside them in
//! `incidents/<id>.json` under the store's directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::app::{self, Input};
use crate::diff::DiffOptions;
use crate::error::{Error, Result};
use crate::fetch::{self, FetchOptions};
use crate::render::TopOptions;
use crate::store::{NewSnapshot, Snapshot, Store, is_valid_id};

/// Where the agent lists its incidents, under its base address.
pub const INCIDENTS_PATH: &str = "/debug/pprof/incidents";

/// One incident as the agent lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Incident {
    /// Unique in the agent's process: `<unix seconds>-<trigger>-<n>`.
    pub id: String,
    /// What fired it: `heap_growth`, `cpu`, `latency`, `panic`, `manual`, ….
    pub trigger: String,
    /// `recording` (the after-window is still being recorded), then `complete`.
    pub state: String,
    /// When it fired, seconds since the Unix epoch.
    #[serde(default)]
    pub time_unix_seconds: f64,
    /// When it fired, RFC 3339 (UTC).
    #[serde(default)]
    pub time: String,
    /// The figures that fired it (`growth_bytes`, `cpu_share`, …).
    #[serde(default)]
    pub figures: BTreeMap<String, f64>,
    /// Labels of what fired it (a panic's thread and location, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The window kept before the trigger, seconds.
    #[serde(default)]
    pub before_seconds: f64,
    /// The window recorded after the trigger, seconds.
    #[serde(default)]
    pub after_seconds: f64,
    /// The agent's version.
    #[serde(default)]
    pub agent_version: String,
    /// The agent's base address it was read from (set by the viewer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Incident {
    /// True once the after-window has been recorded.
    pub fn complete(&self) -> bool {
        self.state == "complete"
    }

    /// The key figures, one line: `growth_bytes=33.5MiB window_seconds=60s`.
    pub fn figures_line(&self) -> String {
        self.figures
            .iter()
            .map(|(k, v)| figure(k, *v))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A figure as a person reads it: bytes in binary units, percentages,
/// durations, the rest as numbers; `source_X=1` as `source=X`.
fn figure(key: &str, v: f64) -> String {
    if let Some(source) = key.strip_prefix("source_") {
        return format!("source={source}");
    }
    let value = if key.ends_with("bytes") {
        crate::units::ValueFormat::auto("bytes", v as i64).format(v as i64)
    } else if key.ends_with("percent") || key.ends_with("percent_of_cores") {
        format!("{v:.1}%")
    } else if key.ends_with("seconds") {
        let ns = (v * 1e9) as i64;
        crate::units::ValueFormat::auto("nanoseconds", ns).format(ns)
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    };
    format!("{key}={value}")
}

/// One of an incident's profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The heap snapshot taken at the trigger.
    Heap,
    /// The heap snapshot nearest to the before-window's start: the baseline.
    HeapBefore,
    /// The heap after the after-window (complete incidents).
    HeapAfter,
    /// The CPU of the window before the trigger.
    Cpu,
    /// The CPU of the window after the trigger (complete incidents).
    CpuAfter,
}

impl Part {
    /// Every part, in the order they are fetched.
    pub const ALL: [Part; 5] = [
        Part::Heap,
        Part::HeapBefore,
        Part::Cpu,
        Part::HeapAfter,
        Part::CpuAfter,
    ];

    /// The label suffix: `heap`, `heap-before`, `heap-after`, `cpu`, `cpu-after`.
    pub fn suffix(self) -> &'static str {
        match self {
            Part::Heap => "heap",
            Part::HeapBefore => "heap-before",
            Part::HeapAfter => "heap-after",
            Part::Cpu => "cpu",
            Part::CpuAfter => "cpu-after",
        }
    }

    /// The agent's path for it, after `/debug/pprof/incidents/{id}/`.
    fn path(self) -> &'static str {
        match self {
            Part::Heap => "heap",
            Part::HeapBefore => "heap?window=before",
            Part::HeapAfter => "heap?window=after",
            Part::Cpu => "cpu",
            Part::CpuAfter => "cpu?window=after",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Part::Heap | Part::HeapBefore | Part::HeapAfter => "heap",
            Part::Cpu | Part::CpuAfter => "cpu",
        }
    }

    /// Recorded only once the incident is complete.
    fn after(self) -> bool {
        matches!(self, Part::HeapAfter | Part::CpuAfter)
    }
}

/// The snapshot label of incident `id`'s `part`: `incident-<id>-<part>`.
pub fn label(id: &str, part: Part) -> String {
    format!("incident-{id}-{}", part.suffix())
}

/// The incident id and part a snapshot label names, if it is an incident's.
pub fn parse_label(label: &str) -> Option<(&str, Part)> {
    let rest = label.strip_prefix("incident-")?;
    // Longest suffixes first: `-heap-before` also ends in no shorter one,
    // but keep the order obviously right.
    let mut parts = Part::ALL;
    parts.sort_by_key(|p| std::cmp::Reverse(p.suffix().len()));
    parts.into_iter().find_map(|p| {
        rest.strip_suffix(p.suffix())
            .and_then(|id| id.strip_suffix('-'))
            .filter(|id| !id.is_empty())
            .map(|id| (id, p))
    })
}

/// The agent's base address from what a user typed: `http://host:port`,
/// with or without a trailing `/`, `/debug/pprof/` or `/debug/pprof/incidents`.
pub fn base_url(url: &str) -> Result<String> {
    if !fetch::is_url(url) {
        return Err(Error::Fetch {
            url: url.to_string(),
            reason: "not an http:// or https:// URL (the agent's base address, e.g. http://127.0.0.1:3000)".into(),
        });
    }
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let mut base = url.trim_end_matches('/');
    for tail in ["/incidents", "/pprof", "/debug"] {
        base = base
            .strip_suffix(tail)
            .unwrap_or(base)
            .trim_end_matches('/');
    }
    Ok(base.to_string())
}

/// `GET {base}/debug/pprof/incidents`: the agent's incidents, oldest first.
pub fn list(base: &str, opts: &FetchOptions) -> Result<Vec<Incident>> {
    let url = format!("{base}{INCIDENTS_PATH}");
    let body = fetch::get(&url, opts)?;
    let mut list: Vec<Incident> = serde_json::from_slice(&body).map_err(|e| Error::Fetch {
        url: url.clone(),
        reason: format!("not an incident list: {e}"),
    })?;
    for i in &mut list {
        i.source = Some(base.to_string());
    }
    Ok(list)
}

/// The incident `id` names in `list` (its id, or one of its snapshot
/// labels), or the newest when `id` is `None`.
pub fn find<'a>(list: &'a [Incident], id: Option<&str>, base: &str) -> Result<&'a Incident> {
    let Some(id) = id else {
        return list.last().ok_or_else(|| {
            Error::NoIncident(format!(
                "{base}: no incidents yet (the agent lists them at {INCIDENTS_PATH} once a trigger fires)"
            ))
        });
    };
    let id = incident_id(id);
    list.iter().find(|i| i.id == id).ok_or_else(|| {
        let known = match list.len() {
            0 => "it has none".to_string(),
            n => format!(
                "it has {n}: {}",
                list.iter()
                    .rev()
                    .take(5)
                    .map(|i| i.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Error::NoIncident(format!("{base}: no incident {id:?} ({known})"))
    })
}

/// `incident-<id>[-<part>]` → `<id>`; anything else as it is.
fn incident_id(reference: &str) -> &str {
    parse_label(reference)
        .map(|(id, _)| id)
        .or_else(|| reference.strip_prefix("incident-"))
        .unwrap_or(reference)
}

/// One of an incident's profiles as [`fetch_into`] left it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Fetched {
    /// Which profile.
    pub part: Part,
    /// The stored snapshot (`None` when the agent has no such profile).
    pub snapshot: Option<Snapshot>,
    /// True when fetched now, false when it was already stored.
    pub new: bool,
    /// Why the agent had none (e.g. no heap snapshot before the window).
    pub missing: Option<String>,
}

/// The stored incident [`fetch_into`] left: `incident`'s listing and the
/// snapshots it stored or found.
pub fn stored_from(incident: &Incident, fetched: &[Fetched]) -> StoredIncident {
    StoredIncident {
        id: incident.id.clone(),
        info: Some(incident.clone()),
        parts: fetched
            .iter()
            .filter_map(|f| Some((f.part, f.snapshot.clone()?)))
            .collect(),
    }
}

/// Fetches `incident`'s profiles from the agent at `base` into `store`,
/// skipping those already stored (same label and source), and keeps its
/// listing beside them. The after-window's profiles are fetched once the
/// incident is complete.
pub fn fetch_into(
    store: &Store,
    base: &str,
    incident: &Incident,
    opts: &FetchOptions,
) -> Result<Vec<Fetched>> {
    if !is_valid_id(&incident.id) {
        return Err(Error::Fetch {
            url: format!("{base}{INCIDENTS_PATH}"),
            reason: format!(
                "incident id {:?} is not letters, digits, '-', '_'",
                incident.id
            ),
        });
    }
    save_info(store, incident)?;
    let stored = store.list()?;
    let mut out = Vec::new();
    for part in Part::ALL {
        if part.after() && !incident.complete() {
            continue;
        }
        let label = label(&incident.id, part);
        let url = format!("{base}{INCIDENTS_PATH}/{}/{}", incident.id, part.path());
        if let Some(s) = stored.iter().rev().find(|s| {
            s.meta.label.as_deref() == Some(&label) && s.meta.source.as_ref() == Some(&url)
        }) {
            out.push(Fetched {
                part,
                snapshot: Some(s.clone()),
                new: false,
                missing: None,
            });
            continue;
        }
        let bytes = match fetch::get(&url, opts) {
            Ok(b) => b,
            // 501: the agent took no such heap snapshot (none yet before
            // the window, or heap profiles off). The others still count.
            Err(Error::Fetch { reason, .. }) if reason.starts_with("HTTP 501") => {
                out.push(Fetched {
                    part,
                    snapshot: None,
                    new: false,
                    missing: Some(reason),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let snapshot = store
            .save(
                &bytes,
                NewSnapshot::new(Some(url.clone()), Some(label)).kind(part.kind()),
            )
            .map_err(|e| Error::In {
                origin: url,
                inner: Box::new(e),
            })?;
        out.push(Fetched {
            part,
            snapshot: Some(snapshot),
            new: true,
            missing: None,
        });
    }
    Ok(out)
}

fn incidents_dir(store: &Store) -> PathBuf {
    store.dir().join("incidents")
}

/// Keeps an incident's listing in `incidents/<id>.json` (replacing an
/// older state, e.g. `recording` by `complete`).
fn save_info(store: &Store, incident: &Incident) -> Result<()> {
    let dir = incidents_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let json = serde_json::to_vec_pretty(incident)
        .map_err(|e| Error::Store(format!("encode incident: {e}")))?;
    let path = dir.join(format!("{}.json", incident.id));
    let tmp = dir.join(format!(".{}.json.tmp", incident.id));
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(path.display().to_string(), e))
}

fn load_info(store: &Store, id: &str) -> Option<Incident> {
    if !is_valid_id(id) {
        return None;
    }
    let bytes = std::fs::read(incidents_dir(store).join(format!("{id}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// An incident as the store holds it: its snapshots by part, and its
/// listing when it was kept.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredIncident {
    /// The agent's incident id.
    pub id: String,
    /// The listing (trigger, time, figures), when the store has it.
    pub info: Option<Incident>,
    /// The newest snapshot of each part the store has.
    pub parts: BTreeMap<Part, Snapshot>,
}

impl StoredIncident {
    /// The snapshot of `part`, if stored.
    pub fn part(&self, part: Part) -> Option<&Snapshot> {
        self.parts.get(&part)
    }

    /// The trigger: from the listing, else from the id (`<secs>-<trigger>-<n>`).
    pub fn trigger(&self) -> String {
        if let Some(i) = &self.info {
            return i.trigger.clone();
        }
        let mut words = self.id.split('-');
        words.next();
        let mut rest: Vec<&str> = words.collect();
        rest.pop();
        if rest.is_empty() {
            "?".into()
        } else {
            rest.join("-")
        }
    }

    /// When it fired, RFC 3339: from the listing, else from the id.
    pub fn time(&self) -> String {
        if let Some(i) = self.info.as_ref().filter(|i| !i.time.is_empty()) {
            return i.time.clone();
        }
        self.id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .map(crate::time::rfc3339)
            .unwrap_or_default()
    }

    /// Seconds since the epoch it fired, for ordering.
    fn unix(&self) -> f64 {
        self.info.as_ref().map_or_else(
            || {
                self.id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0)
            },
            |i| i.time_unix_seconds,
        )
    }

    /// Where it was fetched from: the agent's base address.
    pub fn source(&self) -> Option<String> {
        if let Some(s) = self.info.as_ref().and_then(|i| i.source.clone()) {
            return Some(s);
        }
        let url = self.parts.values().next()?.meta.source.clone()?;
        url.find(INCIDENTS_PATH).map(|at| url[..at].to_string())
    }
}

/// Every incident the store holds, oldest first, from its snapshots'
/// labels.
pub fn stored(store: &Store) -> Result<Vec<StoredIncident>> {
    let mut by_id: BTreeMap<String, StoredIncident> = BTreeMap::new();
    for s in store.list()? {
        let Some((id, part)) = s.meta.label.as_deref().and_then(parse_label) else {
            continue;
        };
        let entry = by_id
            .entry(id.to_string())
            .or_insert_with(|| StoredIncident {
                id: id.to_string(),
                info: None,
                parts: BTreeMap::new(),
            });
        // Oldest first, so the newest of a part wins.
        entry.parts.insert(part, s);
    }
    let mut all: Vec<StoredIncident> = by_id
        .into_values()
        .map(|mut i| {
            i.info = load_info(store, &i.id);
            i
        })
        .collect();
    all.sort_by(|a, b| a.unix().total_cmp(&b.unix()).then_with(|| a.id.cmp(&b.id)));
    Ok(all)
}

/// The stored incident `reference` names (its id, or one of its snapshot
/// labels), or the newest stored one when `None`.
pub fn resolve_stored(store: &Store, reference: Option<&str>) -> Result<StoredIncident> {
    let mut all = stored(store)?;
    match reference {
        None => all.pop().ok_or_else(|| {
            Error::NoIncident(format!(
                "no incidents in {} (fetch them with `profscope incidents URL`)",
                store.dir().display()
            ))
        }),
        Some(r) => {
            let id = incident_id(r);
            all.into_iter().find(|i| i.id == id).ok_or_else(|| {
                Error::NoIncident(format!(
                    "{r}: no incident of that id or label in the store (`profscope incidents URL` fetches them)"
                ))
            })
        }
    }
}

/// `profscope incidents`: one row per incident, oldest first, and whether
/// its profiles are stored.
pub fn table(list: &[Incident], stored: &[StoredIncident]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no incidents\n");
        return out;
    }
    let w = list.iter().map(|i| i.id.len()).max().unwrap_or(2).max(2);
    let tw = list
        .iter()
        .map(|i| i.trigger.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        out,
        "{:<w$}  {:<tw$}  {:<9}  {:<23}  FIGURES",
        "ID", "TRIGGER", "STATE", "TIME"
    );
    for i in list {
        let parts = stored
            .iter()
            .find(|s| s.id == i.id)
            .map_or(0, |s| s.parts.len());
        let _ = writeln!(
            out,
            "{:<w$}  {:<tw$}  {:<9}  {:<23}  {}{}",
            i.id,
            i.trigger,
            i.state,
            crate::time::display(&i.time),
            i.figures_line(),
            if parts > 0 {
                format!("  [{parts} stored]")
            } else {
                String::new()
            }
        );
    }
    out
}

/// What `profscope incident` shows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IncidentReport {
    /// The header, the heap growth table and the CPU table.
    pub text: String,
    /// The heap growth's differential flamegraph, when there is a baseline.
    pub heap_svg: Option<Vec<u8>>,
    /// The CPU before → after differential flamegraph, when complete.
    pub cpu_svg: Option<Vec<u8>>,
}

/// Shows a stored incident against its baseline: the heap at the trigger
/// vs the heap before the window, ranked by function (`profscope diff`'s
/// table), and the CPU before vs after the trigger (BASE scaled to NEW's
/// total: the windows differ in length), or the CPU before alone while the
/// after-window is recording. `view` carries the filters and name form;
/// its sample type applies to the heap.
pub fn report(
    store: &Store,
    incident: &StoredIncident,
    view: &Input,
    rows: usize,
) -> Result<IncidentReport> {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "incident {}: {} at {}{}",
        incident.id,
        incident.trigger(),
        crate::time::display(&incident.time()),
        incident
            .info
            .as_ref()
            .map(|i| format!(" ({})", i.state))
            .unwrap_or_default()
    );
    if let Some(i) = &incident.info {
        if !i.figures.is_empty() {
            let _ = writeln!(text, "figures: {}", i.figures_line());
        }
        if !i.labels.is_empty() {
            let labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(text, "labels: {}", labels.join(" "));
        }
        let _ = writeln!(
            text,
            "windows: {:.0}s before, {:.0}s after the trigger",
            i.before_seconds, i.after_seconds
        );
    }
    if let Some(source) = incident.source() {
        let _ = writeln!(text, "agent: {source}");
    }
    let top = TopOptions::new(rows, false);
    let side = |s: &Snapshot| {
        let mut input = view.clone();
        input.profile = s.meta.id.clone();
        input
    };
    let mut heap_svg = None;
    match (incident.part(Part::HeapBefore), incident.part(Part::Heap)) {
        (Some(before), Some(at)) => {
            let opts = DiffOptions::new(view.sample_type.clone(), false);
            let d = app::diff(&side(before), &side(at), Some(store), &opts, &top, true)?;
            let _ = write!(
                text,
                "\nHeap growth by function: at the trigger ({}) vs before the window ({})\n{}",
                at.meta.id, before.meta.id, d.table
            );
            heap_svg = d.svg;
        }
        (None, Some(at)) => {
            let _ = write!(
                text,
                "\nThe heap at the trigger ({}; no snapshot before the window to diff against)\n{}",
                at.meta.id,
                app::report(&side(at), Some(store), &app::Report::Top(top.clone()))?
            );
        }
        _ => text.push_str("\nNo heap profile was stored for this incident.\n"),
    }
    let mut cpu_svg = None;
    let mut cpu_view = view.clone();
    cpu_view.sample_type = None;
    let cpu_side = |s: &Snapshot| {
        let mut input = cpu_view.clone();
        input.profile = s.meta.id.clone();
        input
    };
    match (incident.part(Part::Cpu), incident.part(Part::CpuAfter)) {
        (Some(before), Some(after)) => {
            let opts = DiffOptions::new(None, true);
            let d = app::diff(
                &cpu_side(before),
                &cpu_side(after),
                Some(store),
                &opts,
                &top,
                true,
            )?;
            let _ = write!(
                text,
                "\nCPU after the trigger ({}) vs before it ({}), BEFORE scaled to AFTER's total\n{}",
                after.meta.id, before.meta.id, d.table
            );
            cpu_svg = d.svg;
        }
        (Some(before), None) => {
            let _ = write!(
                text,
                "\nCPU in the window before the trigger ({}; the after-window is not stored yet)\n{}",
                before.meta.id,
                app::report(&cpu_side(before), Some(store), &app::Report::Top(top))?
            );
        }
        _ => text.push_str("\nNo CPU profile was stored for this incident.\n"),
    }
    Ok(IncidentReport {
        text,
        heap_svg,
        cpu_svg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let id = "1767000000-heap_growth-1";
        for p in Part::ALL {
            assert_eq!(parse_label(&label(id, p)), Some((id, p)), "{p:?}");
        }
        assert_eq!(parse_label("incident-heap"), None);
        assert_eq!(parse_label("before"), None);
        assert_eq!(incident_id("incident-1-manual-2-cpu-after"), "1-manual-2");
        assert_eq!(incident_id("1-manual-2"), "1-manual-2");
    }

    #[test]
    fn base_urls() {
        for u in [
            "http://127.0.0.1:3000",
            "http://127.0.0.1:3000/",
            "http://127.0.0.1:3000/debug/pprof/",
            "http://127.0.0.1:3000/debug/pprof/incidents",
        ] {
            assert_eq!(base_url(u).unwrap(), "http://127.0.0.1:3000", "{u}");
        }
        assert!(base_url("127.0.0.1:3000").is_err());
    }

    #[test]
    fn stored_incident_from_its_id() {
        let i = StoredIncident {
            id: "1795566060-heap_growth-3".into(),
            info: None,
            parts: BTreeMap::new(),
        };
        assert_eq!(i.trigger(), "heap_growth");
        assert_eq!(i.time(), "2026-11-25T00:21:00Z");
        assert_eq!(
            figure("growth_bytes", 33.0 * 1048576.0),
            "growth_bytes=33MiB"
        );
        assert_eq!(figure("growth_percent", 12.34), "growth_percent=12.3%");
        assert_eq!(figure("window_seconds", 60.0), "window_seconds=60s");
        assert_eq!(figure("source_rss", 1.0), "source=rss");
    }
}
