//! Loading: a PROFILE argument — a path, `-` (stdin), an `http(s)://` URL
//! or a stored snapshot — → bytes (every read capped) → a validated
//! [`Profile`] through the model's [`parse`](profscope_profile::parse).

use std::io;
use std::path::{Path, PathBuf};

use profscope_profile::{Limits, Profile};

use crate::error::{Error, Result};
use crate::fetch::{self, is_url, read_capped};
use crate::store::{Snapshot, Store};

/// Where a profile comes from, after a PROFILE argument has been resolved.
#[derive(Debug, Clone)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    Path(PathBuf),
    /// An `http://` or `https://` URL, typically a live agent endpoint.
    Url(String),
    /// A snapshot in the store.
    Snapshot(Snapshot),
}

impl Source {
    /// Resolves a PROFILE argument: `-`, a URL, an existing file, or else a
    /// snapshot reference (`@latest`, `@prev`, an id, a label) in `store`.
    pub fn resolve(spec: &str, store: Option<&Store>) -> Result<Source> {
        if spec == "-" {
            return Ok(Source::Stdin);
        }
        if is_url(spec) {
            return Ok(Source::Url(spec.to_string()));
        }
        let path = Path::new(spec);
        // A file wins over a snapshot label of the same name: the user can
        // always write `@latest` or the id to mean the snapshot.
        if !spec.starts_with('@') && path.exists() {
            return Ok(Source::Path(path.to_path_buf()));
        }
        if let Some(store) = store {
            if let Some(snapshot) = store.resolve(spec)? {
                return Ok(Source::Snapshot(snapshot));
            }
        }
        Err(Error::NotFound(spec.to_string()))
    }

    /// A short description for headers and messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Stdin => "stdin".to_string(),
            Source::Path(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
            Source::Snapshot(s) => format!("snapshot {}", s.meta.id),
        }
    }

    /// Reads the raw bytes, capped by `limits.max_input`.
    pub fn read(&self, limits: &Limits) -> Result<Vec<u8>> {
        match self {
            Source::Stdin => read_capped(io::stdin().lock(), "stdin", limits.max_input),
            Source::Path(p) => read_path(p, limits),
            Source::Url(u) => fetch::get(u, limits, None),
            Source::Snapshot(s) => read_path(&s.profile_path, limits),
        }
    }

    /// Reads and parses the profile; errors name the input they came from.
    pub fn load(&self, limits: &Limits) -> Result<Profile> {
        self.load_with(limits, profscope_profile::parse)
    }

    /// As [`load`](Source::load), with samples of one stack and label set
    /// summed while decoding ([`profscope_profile::parse_merged`]): what
    /// the web UI draws from.
    pub fn load_merged(&self, limits: &Limits) -> Result<Profile> {
        self.load_with(limits, profscope_profile::parse_merged)
    }

    fn load_with(
        &self,
        limits: &Limits,
        parse: fn(&[u8], &Limits) -> profscope_profile::Result<Profile>,
    ) -> Result<Profile> {
        let bytes = self.read(limits)?;
        parse(&bytes, limits).map_err(|e| Error::In {
            origin: self.describe(),
            inner: Box::new(e.into()),
        })
    }
}

impl Snapshot {
    /// Loads the snapshot's profile.
    pub fn load(&self) -> Result<Profile> {
        Source::Snapshot(self.clone()).load(&Limits::default())
    }

    /// Loads the snapshot's profile with repeated stacks summed
    /// ([`Source::load_merged`]).
    pub fn load_merged(&self) -> Result<Profile> {
        Source::Snapshot(self.clone()).load_merged(&Limits::default())
    }
}

/// Loads a PROFILE argument (see [`Source::resolve`], snapshot references
/// resolved in `store`) with default limits: the one way to open a profile.
pub fn load(spec: &str, store: Option<&Store>) -> Result<Profile> {
    Source::resolve(spec, store)?.load(&Limits::default())
}

fn read_path(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(&what, e))?;
    read_capped(file, &what, limits.max_input)
}
