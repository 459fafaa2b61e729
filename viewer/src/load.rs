//! Loading: a PROFILE argument — a path, `-` (stdin), an `http(s)://` URL
//! or a stored snapshot — → bytes (every read capped) → a validated
//! [`Profile`] through the model's [`parse`](profscope_profile::parse).

use std::io;
use std::path::{Path, PathBuf};

use profscope_profile::{Limits, Profile};

use crate::error::{Error, Result};
use crate::fetch::{self, FetchOptions, is_url, read_capped};
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

    /// Whether the name says the bytes are an OTLP profiles request.
    fn names_otlp(&self) -> bool {
        let name = match self {
            Source::Path(p) => p.to_string_lossy().to_ascii_lowercase(),
            Source::Url(u) => u.split(['?', '#']).next().unwrap_or(u).to_ascii_lowercase(),
            Source::Stdin | Source::Snapshot(_) => return false,
        };
        [
            ".otlp",
            ".otlp.pb",
            ".otlp.gz",
            ".otlp.pb.gz",
            profscope_profile::otlp::HTTP_PATH,
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
    }

    /// Reads the raw bytes, capped by `limits.max_input`.
    pub fn read(&self, limits: &Limits) -> Result<Vec<u8>> {
        self.read_with(&FetchOptions::with_limits(*limits))
    }

    /// Reads the raw bytes, capped by `opts.limits`; a URL is fetched with
    /// `opts` (its token, timeout).
    pub fn read_with(&self, opts: &FetchOptions) -> Result<Vec<u8>> {
        let limits = &opts.limits;
        match self {
            Source::Stdin => read_capped(io::stdin().lock(), "stdin", limits.max_input),
            Source::Path(p) => read_path(p, limits),
            Source::Url(u) => fetch::get(u, opts),
            Source::Snapshot(s) => read_path(&s.profile_path, limits),
        }
    }

    /// Reads and parses the profile; errors name the input they came from.
    ///
    /// pprof, folded stacks and OTLP profiles requests are told apart by
    /// their bytes (see [`profscope_profile::parse`]); a name ending in
    /// `.otlp`, `.otlp.pb` or `.otlp.gz`, or a URL on the OTLP path
    /// `/v1development/profiles`, is read as OTLP without guessing.
    pub fn load(&self, limits: &Limits) -> Result<Profile> {
        self.load_with(&FetchOptions::with_limits(*limits))
    }

    /// Like [`load`](Self::load), fetching URLs with `opts`.
    pub fn load_with(&self, opts: &FetchOptions) -> Result<Profile> {
        self.load_parsed(opts, profscope_profile::parse)
    }

    /// As [`load`](Source::load), with samples of one stack and label set
    /// summed while decoding ([`profscope_profile::parse_merged`]): what
    /// the web UI draws from.
    pub fn load_merged(&self, limits: &Limits) -> Result<Profile> {
        self.load_parsed(
            &FetchOptions::with_limits(*limits),
            profscope_profile::parse_merged,
        )
    }

    fn load_parsed(
        &self,
        opts: &FetchOptions,
        parse: fn(&[u8], &Limits) -> profscope_profile::Result<Profile>,
    ) -> Result<Profile> {
        let bytes = self.read_with(opts)?;
        let parsed = if self.names_otlp() {
            profscope_profile::otlp::parse_request(&bytes, &opts.limits)
        } else {
            parse(&bytes, &opts.limits)
        };
        parsed.map_err(|e| Error::In {
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

/// Parses bytes in any format the viewer reads (gzipped or raw pprof,
/// folded stacks), bounded by `limits`: what every PROFILE goes through,
/// and what the `load` fuzz target drives.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    Ok(profscope_profile::parse(bytes, limits)?)
}

/// Loads a PROFILE argument (see [`Source::resolve`], snapshot references
/// resolved in `store`) with default limits: the one way to open a profile.
pub fn load(spec: &str, store: Option<&Store>) -> Result<Profile> {
    Source::resolve(spec, store)?.load(&Limits::default())
}

/// Like [`load`], fetching a URL with `opts` (a bearer token, a timeout).
pub fn load_with(spec: &str, store: Option<&Store>, opts: &FetchOptions) -> Result<Profile> {
    Source::resolve(spec, store)?.load_with(opts)
}

fn read_path(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(&what, e))?;
    read_capped(file, &what, limits.max_input)
}
