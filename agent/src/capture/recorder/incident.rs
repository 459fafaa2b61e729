//! Incidents: what a trigger froze. The CPU of the window before it, the
//! heap snapshot nearest to that window's start, the heap at the trigger,
//! and, once the after-window has passed, the CPU and heap after it. Kept
//! in memory (served at once) and written as pprof files plus a JSON
//! manifest into a bounded private directory (oldest removed first).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::trigger::TriggerKind;
use crate::Error;
use crate::capture::cpu::CpuCapture;
use crate::capture::heap::HeapSnapshot;
use crate::shared::symbols::Symbolizer;

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Fired; the after-window is still being recorded.
    Recording,
    /// Every file written.
    Complete,
}

/// One incident as `/debug/pprof/incidents` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncidentInfo {
    /// Unique in this process: `<unix seconds>-<trigger>-<n>`.
    pub id: String,
    /// What fired it.
    pub trigger: &'static str,
    /// `recording`, then `complete`.
    pub state: IncidentState,
    /// When it fired, seconds since the Unix epoch.
    pub time_unix_seconds: f64,
    /// When it fired, RFC 3339 (UTC).
    pub time: String,
    /// The figures that fired it.
    pub figures: BTreeMap<String, f64>,
    /// Labels of what fired it (a panic's thread and location, ...).
    pub labels: BTreeMap<String, String>,
    /// The windows kept, seconds.
    pub before_seconds: f64,
    /// The window recorded after the trigger, seconds.
    pub after_seconds: f64,
    /// The agent's version.
    pub agent_version: &'static str,
    /// Files written so far, in the incident's directory.
    pub files: Vec<String>,
}

struct Incident {
    info: IncidentInfo,
    fired: SystemTime,
    after: Duration,
    cpu_before: CpuCapture,
    heap_before: Option<Arc<HeapSnapshot>>,
    /// The heap at the trigger: `None` until the recorder's thread took it.
    heap_at: Option<Arc<HeapSnapshot>>,
    heap_at_taken: bool,
    cpu_after: Option<CpuCapture>,
    heap_after: Option<Arc<HeapSnapshot>>,
    dir: Option<PathBuf>,
}

/// Work for the recorder's thread.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) time: SystemTime,
    /// The after-window (else the heap at the trigger).
    pub(crate) after: bool,
}

/// What one file of an incident holds.
pub(crate) enum Content {
    Cpu(CpuCapture),
    Heap(Arc<HeapSnapshot>),
    Json(String),
}

/// Files to write, outside the recorder's lock.
pub(crate) struct Files {
    dir: PathBuf,
    entries: Vec<(&'static str, Content)>,
}

/// Every incident kept, and where they go on disk.
pub(crate) struct Incidents {
    root: PathBuf,
    private: bool,
    max: usize,
    max_bytes: u64,
    list: VecDeque<Incident>,
    totals: BTreeMap<&'static str, u64>,
    seq: u64,
}

impl Incidents {
    /// The incident directory: `dir` (created 0700 when missing), or a
    /// private one under the temp dir, removed with the recorder.
    pub(crate) fn open(dir: Option<PathBuf>, max: usize, max_bytes: u64) -> Result<Self, Error> {
        use std::os::unix::fs::DirBuilderExt;
        let (root, private) = match dir {
            Some(d) => (d, false),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                (
                    std::env::temp_dir().join(format!(
                        "profscope-incidents-{}-{nanos:x}",
                        std::process::id()
                    )),
                    true,
                )
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| {
                Error::InvalidConfig(format!(
                    "cannot create the incident directory {}: {e}",
                    root.display()
                ))
            })?;
        Ok(Incidents {
            root,
            private,
            max,
            max_bytes,
            list: VecDeque::new(),
            totals: TriggerKind::ALL.iter().map(|k| (k.name(), 0)).collect(),
            seq: 0,
        })
    }

    /// Registers a fired incident with its frozen before-window; listed
    /// and served at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &mut self,
        kind: TriggerKind,
        time: SystemTime,
        figures: BTreeMap<String, f64>,
        labels: BTreeMap<String, String>,
        cpu_before: CpuCapture,
        heap_before: Option<Arc<HeapSnapshot>>,
        after: Duration,
    ) -> String {
        self.seq += 1;
        let unix = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("{}-{}-{}", unix.as_secs(), kind.name(), self.seq);
        *self.totals.entry(kind.name()).or_default() += 1;
        let before_seconds = cpu_before.duration.as_secs_f64();
        self.list.push_back(Incident {
            info: IncidentInfo {
                id: id.clone(),
                trigger: kind.name(),
                state: IncidentState::Recording,
                time_unix_seconds: unix.as_secs_f64(),
                time: rfc3339(unix),
                figures,
                labels,
                before_seconds,
                after_seconds: after.as_secs_f64(),
                agent_version: env!("CARGO_PKG_VERSION"),
                files: Vec::new(),
            },
            fired: time,
            after,
            cpu_before,
            heap_before,
            heap_at: None,
            heap_at_taken: false,
            cpu_after: None,
            heap_after: None,
            dir: None,
        });
        self.enforce_bounds();
        id
    }

    /// Incidents fired since start, by trigger (every trigger, zeros too).
    pub(crate) fn totals(&self) -> BTreeMap<&'static str, u64> {
        self.totals.clone()
    }

    pub(crate) fn list(&self) -> Vec<IncidentInfo> {
        self.list.iter().map(|i| i.info.clone()).collect()
    }

    fn find(&self, id: &str) -> Result<&Incident, Error> {
        self.list.iter().find(|i| i.info.id == id).ok_or_else(|| {
            Error::NotFound(format!("no incident {id:?} (see /debug/pprof/incidents)"))
        })
    }

    pub(crate) fn cpu(&self, id: &str, after: bool) -> Result<CpuCapture, Error> {
        let i = self.find(id)?;
        if !after {
            return Ok(i.cpu_before.clone());
        }
        i.cpu_after.clone().ok_or_else(|| Error::Unavailable {
            reason: format!("incident {id} is still recording its after-window"),
            retry_after_secs: i.after.as_secs().max(1),
        })
    }

    pub(crate) fn heap(
        &self,
        id: &str,
        window: Option<bool>,
    ) -> Result<Option<Arc<HeapSnapshot>>, Error> {
        let i = self.find(id)?;
        let not_taken = |what: &str| {
            Error::NotAvailable(format!(
                "incident {id} has no {what} heap snapshot (heap profiles are not enabled, or \
                 the recorder had taken none yet)"
            ))
        };
        match window {
            Some(false) => i
                .heap_before
                .clone()
                .map(Some)
                .ok_or_else(|| not_taken("before")),
            Some(true) => match (&i.heap_after, i.info.state) {
                (Some(h), _) => Ok(Some(h.clone())),
                (None, IncidentState::Complete) => Err(not_taken("after")),
                (None, IncidentState::Recording) => Err(Error::Unavailable {
                    reason: format!("incident {id} is still recording its after-window"),
                    retry_after_secs: i.after.as_secs().max(1),
                }),
            },
            None if i.heap_at_taken => i
                .heap_at
                .clone()
                .map(Some)
                .ok_or_else(|| not_taken("trigger")),
            None => Ok(None),
        }
    }

    /// What the recorder's thread must do now.
    pub(crate) fn due(&self, now: SystemTime) -> Vec<Job> {
        self.list
            .iter()
            .filter_map(|i| {
                let job = |after| Job {
                    id: i.info.id.clone(),
                    time: i.fired,
                    after,
                };
                if !i.heap_at_taken {
                    Some(job(false))
                } else if i.info.state == IncidentState::Recording && now >= i.fired + i.after {
                    Some(job(true))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Records a job's result; the files it completes, to be written.
    pub(crate) fn complete_step(
        &mut self,
        job: &Job,
        heap: Option<Arc<HeapSnapshot>>,
        cpu_after: Option<CpuCapture>,
    ) -> Option<Files> {
        let root = self.root.clone();
        let i = self.list.iter_mut().find(|i| i.info.id == job.id)?;
        let dir = i.dir.get_or_insert_with(|| root.join(&job.id)).clone();
        let mut entries: Vec<(&'static str, Content)> = Vec::new();
        if job.after {
            i.cpu_after = cpu_after;
            i.heap_after = heap;
            i.info.state = IncidentState::Complete;
            if let Some(c) = &i.cpu_after {
                entries.push(("cpu-after.pb.gz", Content::Cpu(c.clone())));
            }
            if let Some(h) = &i.heap_after {
                entries.push(("heap-after.pb.gz", Content::Heap(h.clone())));
            }
        } else {
            i.heap_at = heap;
            i.heap_at_taken = true;
            entries.push(("cpu-before.pb.gz", Content::Cpu(i.cpu_before.clone())));
            if let Some(h) = &i.heap_before {
                entries.push(("heap-before.pb.gz", Content::Heap(h.clone())));
            }
            if let Some(h) = &i.heap_at {
                entries.push(("heap.pb.gz", Content::Heap(h.clone())));
            }
        }
        for (name, _) in &entries {
            if !i.info.files.iter().any(|f| f == name) {
                i.info.files.push(name.to_string());
            }
        }
        if !i.info.files.iter().any(|f| f == "manifest.json") {
            i.info.files.push("manifest.json".into());
        }
        let manifest = serde_json::to_string_pretty(&i.info).unwrap_or_default();
        entries.push(("manifest.json", Content::Json(manifest)));
        Some(Files { dir, entries })
    }

    /// The before-part's files at once (a panic with `panic = "abort"`).
    /// The heap at the trigger is still the recorder thread's to take, if
    /// the process lives on.
    pub(crate) fn before_files(&mut self, id: &str) -> Option<Files> {
        let job = Job {
            id: id.to_string(),
            time: SystemTime::now(),
            after: false,
        };
        let files = self.complete_step(&job, None, None);
        if let Some(i) = self.list.iter_mut().find(|i| i.info.id == id) {
            i.heap_at_taken = false;
        }
        files
    }

    /// Removes the oldest incidents (and their files) past the count or
    /// the bytes on disk.
    pub(crate) fn enforce_bounds(&mut self) {
        let on_disk = |list: &VecDeque<Incident>| -> u64 {
            list.iter()
                .filter_map(|i| i.dir.as_ref())
                .map(|d| dir_bytes(d))
                .sum()
        };
        while self.list.len() > self.max
            || (self.list.len() > 1 && on_disk(&self.list) > self.max_bytes)
        {
            if let Some(old) = self.list.pop_front()
                && let Some(dir) = old.dir
            {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl Drop for Incidents {
    fn drop(&mut self) {
        if self.private {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Writes an incident's files (symbolizing its profiles), each through a
/// temporary name and a rename, so a reader never sees half a file.
pub(crate) fn write_files(files: &Files, symbolizer: &Symbolizer) {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&files.dir)
        .is_err()
    {
        return;
    }
    for (name, content) in &files.entries {
        let bytes = match content {
            Content::Cpu(c) => profscope_profile::write_gz(&c.to_profile(symbolizer)).ok(),
            Content::Heap(h) => {
                let profile = h.to_profile(
                    symbolizer,
                    "inuse_space",
                    h.time.unwrap_or_else(SystemTime::now),
                );
                profscope_profile::write_gz(&profile).ok()
            }
            Content::Json(s) => Some(s.clone().into_bytes()),
        };
        let Some(bytes) = bytes else { continue };
        let tmp = files.dir.join(format!(".{name}.tmp"));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, files.dir.join(name));
        }
    }
}

/// `2026-12-07T12:15:30Z` from a duration since the Unix epoch.
fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(Duration::from_secs(1_796_645_730)),
            "2026-12-07T12:15:30Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
