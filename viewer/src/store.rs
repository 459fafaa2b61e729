//! The snapshot store: profiles kept on local disk, each as a gzipped pprof
//! file beside a JSON metadata file (id, time, source URL, kind, label, size).
//!
//! The directory is `$PROFSCOPE_HOME` when set, else `profscope/` under the
//! user's data directory (`$XDG_DATA_HOME`, else `~/.local/share`). Snapshot
//! ids are generated here and checked on the way in, so a reference typed by
//! a user can never name a path outside the store.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use profscope_profile::Limits;
use profscope_profile::kind::{kind_from_url, kind_of_profile};

use crate::time::{rfc3339, utc_parts};

/// Metadata stored beside each snapshot's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Unique id, also the file stem: `YYYYMMDD-HHMMSS-kind[-N]`.
    pub id: String,
    /// When it was saved, RFC 3339 UTC.
    pub time: String,
    /// Nanoseconds since the Unix epoch, for ordering.
    pub unix_nanos: u64,
    /// The URL it was fetched from, or the file it was imported from.
    #[serde(default)]
    pub source: Option<String>,
    /// `cpu`, `heap`, `allocs`, `tasks`, `goroutine`, … or `unknown`.
    pub kind: String,
    /// A user-given name, e.g. `before`.
    #[serde(default)]
    pub label: Option<String>,
    /// Size of the stored profile file in bytes.
    pub size: u64,
    /// The profile's sample types, `name/unit`.
    #[serde(default)]
    pub sample_types: Vec<String>,
}

/// A stored snapshot: its metadata and where its profile is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The metadata.
    pub meta: SnapshotMeta,
    /// The gzipped pprof file.
    pub profile_path: PathBuf,
}

/// What the caller knows about a profile being saved; the rest is derived.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NewSnapshot {
    /// Where it came from (URL or path).
    pub source: Option<String>,
    /// Its kind; derived from the URL path or the sample types when `None`.
    pub kind: Option<String>,
    /// A label.
    pub label: Option<String>,
}

impl NewSnapshot {
    /// Metadata for a profile from `source` with an optional label.
    pub fn new(source: Option<String>, label: Option<String>) -> Self {
        NewSnapshot {
            source,
            kind: None,
            label,
        }
    }

    /// Sets the kind instead of deriving it (`cpu`, `heap`, …).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }
}

/// A snapshot store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The default store directory (see the module docs).
    pub fn default_dir() -> Result<PathBuf> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(home) = env("PROFSCOPE_HOME") {
            return Ok(PathBuf::from(home));
        }
        if let Some(data) = env("XDG_DATA_HOME") {
            return Ok(PathBuf::from(data).join("profscope"));
        }
        if let Some(home) = env("HOME") {
            return Ok(PathBuf::from(home).join(".local/share/profscope"));
        }
        Err(Error::Store(
            "no data directory: set PROFSCOPE_HOME or HOME".to_string(),
        ))
    }

    /// Opens the default store. Nothing is created until a snapshot is
    /// saved, so reading a plain file never touches the data directory.
    pub fn open_default() -> Result<Store> {
        Store::open(Store::default_dir()?)
    }

    /// Opens a store at `dir` (created on the first save).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        Ok(Store { dir: dir.into() })
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Validates `bytes` as a profile and saves it. Anything that is not
    /// already gzipped pprof is re-encoded as such, so every stored file is
    /// one `go tool pprof` reads.
    pub fn save(&self, bytes: &[u8], new: NewSnapshot) -> Result<Snapshot> {
        let profile = profscope_profile::parse(bytes, &Limits::default())?;
        let stored: Vec<u8> = if bytes.starts_with(&[0x1f, 0x8b]) && !is_folded_gzip(bytes) {
            bytes.to_vec()
        } else {
            profscope_profile::write_gz(&profile)?
        };
        let kind = new
            .kind
            .or_else(|| {
                new.source
                    .as_deref()
                    .and_then(kind_from_url)
                    .map(String::from)
            })
            .unwrap_or_else(|| kind_of_profile(&profile).to_string());
        let kind = sanitize(&kind);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let (date, time) = utc_parts(now.as_secs());
        let stem = format!("{date}-{time}-{kind}");
        fs::create_dir_all(self.snapshots_dir())
            .map_err(|e| Error::io(self.snapshots_dir().display().to_string(), e))?;
        let (id, mut file) = self.claim(&stem)?;
        let profile_path = self.snapshots_dir().join(format!("{id}.pb.gz"));
        file.write_all(&stored)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(profile_path.display().to_string(), e))?;
        let meta = SnapshotMeta {
            id: id.clone(),
            time: rfc3339(now.as_secs()),
            unix_nanos: nanos,
            source: new.source,
            kind,
            label: new.label.filter(|l| !l.is_empty()),
            size: stored.len() as u64,
            sample_types: profile
                .sample_type
                .iter()
                .map(|t| format!("{}/{}", profile.string_at(t.ty), profile.string_at(t.unit)))
                .collect(),
        };
        // Written under a temporary name and renamed, so `list` never sees
        // half a snapshot.
        self.write_meta(&meta)?;
        Ok(Snapshot { meta, profile_path })
    }

    /// Creates `<stem>[-N].pb.gz` exclusively, so two concurrent saves in
    /// the same second get different ids.
    fn claim(&self, stem: &str) -> Result<(String, fs::File)> {
        for n in 1..10_000 {
            let id = if n == 1 {
                stem.to_string()
            } else {
                format!("{stem}-{n}")
            };
            let path = self.snapshots_dir().join(format!("{id}.pb.gz"));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => return Ok((id, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            }
        }
        Err(Error::Store(format!("too many snapshots named {stem}")))
    }

    /// All snapshots, oldest first. Unreadable metadata files are skipped.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let dir = self.snapshots_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_valid_id(id) {
                continue;
            }
            if let Ok(Some(s)) = self.get(id) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| (a.meta.unix_nanos, &a.meta.id).cmp(&(b.meta.unix_nanos, &b.meta.id)));
        Ok(out)
    }

    /// The snapshot with this id, if any. Ids that could escape the store
    /// directory are rejected.
    pub fn get(&self, id: &str) -> Result<Option<Snapshot>> {
        if !is_valid_id(id) {
            return Err(Error::Store(format!("{id:?} is not a valid snapshot id")));
        }
        let json_path = self.snapshots_dir().join(format!("{id}.json"));
        let bytes = match fs::read(&json_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(json_path.display().to_string(), e)),
        };
        let meta: SnapshotMeta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(format!("{}: {e}", json_path.display())))?;
        if meta.id != id {
            return Err(Error::Store(format!(
                "{}: metadata names id {:?}",
                json_path.display(),
                meta.id
            )));
        }
        let profile_path = self.snapshots_dir().join(format!("{id}.pb.gz"));
        Ok(Some(Snapshot { meta, profile_path }))
    }

    /// Deletes a snapshot (metadata first, so `list` never shows a snapshot
    /// without its profile). Returns the deleted snapshot, `None` when there
    /// was none with this id.
    pub fn delete(&self, id: &str) -> Result<Option<Snapshot>> {
        let Some(snapshot) = self.get(id)? else {
            return Ok(None);
        };
        let json_path = self.snapshots_dir().join(format!("{id}.json"));
        fs::remove_file(&json_path).map_err(|e| Error::io(json_path.display().to_string(), e))?;
        match fs::remove_file(&snapshot.profile_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(snapshot.profile_path.display().to_string(), e)),
        }
        Ok(Some(snapshot))
    }

    /// Sets (or, with `None` or an empty string, removes) a snapshot's label.
    /// Returns the updated snapshot, `None` when there is none with this id.
    pub fn relabel(&self, id: &str, label: Option<&str>) -> Result<Option<Snapshot>> {
        let Some(mut snapshot) = self.get(id)? else {
            return Ok(None);
        };
        snapshot.meta.label = label
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string);
        self.write_meta(&snapshot.meta)?;
        Ok(Some(snapshot))
    }

    /// Writes metadata under a temporary name and renames it into place.
    fn write_meta(&self, meta: &SnapshotMeta) -> Result<()> {
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::Store(format!("encode metadata: {e}")))?;
        let tmp = self.snapshots_dir().join(format!(".{}.json.tmp", meta.id));
        let json_path = self.snapshots_dir().join(format!("{}.json", meta.id));
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &json_path))
            .map_err(|e| Error::io(json_path.display().to_string(), e))
    }

    /// Resolves a snapshot reference: `@latest`, `@prev` (the one before
    /// it), an id, or a label (the newest snapshot with it).
    pub fn resolve(&self, reference: &str) -> Result<Option<Snapshot>> {
        if let Some(name) = reference.strip_prefix('@') {
            let mut all = self.list()?;
            let back = match name {
                "latest" => 0,
                "prev" => 1,
                _ => {
                    return Err(Error::Store(format!(
                        "unknown reference {reference:?}: use @latest, @prev, an id or a label"
                    )));
                }
            };
            if all.len() <= back {
                return Err(Error::Store(format!(
                    "{reference}: the store has {} snapshot(s)",
                    all.len()
                )));
            }
            return Ok(Some(all.swap_remove(all.len() - 1 - back)));
        }
        if is_valid_id(reference) {
            if let Some(s) = self.get(reference)? {
                return Ok(Some(s));
            }
        }
        Ok(self
            .list()?
            .into_iter()
            .rev()
            .find(|s| s.meta.label.as_deref() == Some(reference)))
    }
}

fn is_folded_gzip(bytes: &[u8]) -> bool {
    profscope_profile::gunzip(bytes, 1 << 30)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|t| profscope_profile::read_folded::looks_folded(&t))
}

/// Ids are generated as `[a-z0-9_-]`; anything else (`/`, `..`, NUL) is refused.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sanitize(kind: &str) -> String {
    let s: String = kind
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect();
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn save_list_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let a = store
            .save(
                &fixture("go-heap-before.pb.gz"),
                NewSnapshot::new(
                    Some("http://127.0.0.1:6060/debug/pprof/heap".into()),
                    Some("before".into()),
                ),
            )
            .unwrap();
        let b = store
            .save(
                &fixture("go-heap-after.pb.gz"),
                NewSnapshot::new(None, Some("after".into())),
            )
            .unwrap();
        assert_eq!(a.meta.kind, "heap");
        assert_ne!(a.meta.id, b.meta.id);
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(
            store.resolve("@latest").unwrap().unwrap().meta.id,
            b.meta.id
        );
        assert_eq!(store.resolve("@prev").unwrap().unwrap().meta.id, a.meta.id);
        assert_eq!(store.resolve("before").unwrap().unwrap().meta.id, a.meta.id);
        assert_eq!(store.resolve(&a.meta.id).unwrap().unwrap(), a);
        assert!(store.resolve("nothing").unwrap().is_none());
        assert!(a.load().is_ok());
    }

    #[test]
    fn relabel_and_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let a = store
            .save(&fixture("go-cpu.pb.gz"), NewSnapshot::new(None, None))
            .unwrap();
        let id = a.meta.id.as_str();
        let r = store.relabel(id, Some(" fast ")).unwrap().unwrap();
        assert_eq!(r.meta.label.as_deref(), Some("fast"));
        assert_eq!(store.resolve("fast").unwrap().unwrap().meta.id, id);
        let r = store.relabel(id, Some("")).unwrap().unwrap();
        assert_eq!(r.meta.label, None);
        assert!(store.relabel("nope", Some("x")).unwrap().is_none());
        assert!(store.relabel("../x", Some("x")).is_err());
        assert!(store.delete(id).unwrap().is_some());
        assert!(!a.profile_path.exists());
        assert!(store.list().unwrap().is_empty());
        assert!(store.delete(id).unwrap().is_none());
        assert!(store.delete("..").is_err());
    }

    #[test]
    fn ids_cannot_traverse() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for id in ["../x", "a/b", "..", ".hidden", "a\0b", ""] {
            assert!(!is_valid_id(id), "{id:?}");
            assert!(store.get(id).is_err());
            assert!(store.resolve(id).unwrap().is_none());
        }
    }
}
