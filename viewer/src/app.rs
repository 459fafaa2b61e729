//! One function per command: what the `profscope` binary, the demo and the
//! web UI call. Each takes already-parsed options and returns text or bytes,
//! so front ends stay thin.

use std::fmt::Write as _;
use std::path::Path;

use profscope_profile::Profile;

use crate::diff::{self, DiffOptions};
use crate::error::{Error, Result};
use crate::fetch::{self, FetchOptions};
use crate::load::load;
use crate::render::{self, FlameOptions, TopOptions};
use crate::store::{NewSnapshot, Snapshot, Store};
use profscope_profile::{self as model, Filter, SampleType};

/// A PROFILE argument plus the options every single-profile command takes.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Input {
    /// File, `-`, URL, or snapshot reference.
    pub profile: String,
    /// Sample type name or index.
    pub sample_type: Option<String>,
    /// Keep samples with a frame matching this regex.
    pub focus: Option<String>,
    /// Drop samples with a frame matching this regex.
    pub ignore: Option<String>,
}

impl Input {
    /// An input with no sample type or filters.
    pub fn new(profile: impl Into<String>) -> Self {
        Input {
            profile: profile.into(),
            ..Input::default()
        }
    }

    /// Sets the sample type and filters.
    pub fn with(
        mut self,
        sample_type: Option<String>,
        focus: Option<String>,
        ignore: Option<String>,
    ) -> Self {
        self.sample_type = sample_type;
        self.focus = focus;
        self.ignore = ignore;
        self
    }
}

/// A loaded, filtered profile and its chosen sample type.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The profile, focus/ignore already applied.
    pub profile: Profile,
    /// The sample type to report.
    pub sample_type: SampleType,
    /// The filter applied.
    pub filter: Filter,
}

/// Loads, selects the sample type and applies the filters.
pub fn prepare(input: &Input, store: Option<&Store>) -> Result<Prepared> {
    let filter = Filter::new(input.focus.as_deref(), input.ignore.as_deref())?;
    let mut profile = load(&input.profile, store)?;
    let sample_type = model::select_sample_type(&profile, input.sample_type.as_deref())?;
    filter.apply(&mut profile);
    Ok(Prepared {
        profile,
        sample_type,
        filter,
    })
}

/// `profscope top`: the table as text.
pub fn top(input: &Input, store: Option<&Store>, opts: &TopOptions) -> Result<String> {
    let p = prepare(input, store)?;
    let opts = opts.clone().filters(p.filter.describe());
    Ok(render::top(&p.profile, &p.sample_type, &opts).render())
}

/// `profscope collapse`: folded stacks.
pub fn collapse(input: &Input, store: Option<&Store>) -> Result<String> {
    let p = prepare(input, store)?;
    Ok(render::collapse(&p.profile, &p.sample_type))
}

/// `profscope flamegraph`: the SVG bytes.
pub fn flamegraph(input: &Input, store: Option<&Store>, opts: &FlameOptions) -> Result<Vec<u8>> {
    let p = prepare(input, store)?;
    render::flamegraph(&p.profile, &p.sample_type, opts)
}

/// Writes `bytes` to `path` (creating parent directories), naming the path
/// on failure.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display().to_string(), e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path.display().to_string(), e))
}

/// `profscope flamegraph -o`: renders and writes the SVG.
pub fn flamegraph_to_file(
    input: &Input,
    store: Option<&Store>,
    opts: &FlameOptions,
    out: &Path,
) -> Result<()> {
    write_file(out, &flamegraph(input, store, opts)?)
}

/// What `profscope diff` produces.
#[derive(Debug, Clone)]
pub struct DiffOutput {
    /// The ranked table.
    pub table: String,
    /// The differential flamegraph, when asked for.
    pub svg: Option<Vec<u8>>,
}

/// `profscope diff`: the table and, with `svg`, a differential flamegraph.
/// Filters apply to both profiles.
pub fn diff(
    base: &Input,
    new: &Input,
    store: Option<&Store>,
    opts: &DiffOptions,
    top: &TopOptions,
    svg: bool,
) -> Result<DiffOutput> {
    let filter = Filter::new(new.focus.as_deref(), new.ignore.as_deref())?;
    let labeled = |spec: &str, what: &str| {
        load(spec, store).map_err(|e| match e {
            Error::NotFound(_) | Error::In { .. } => e,
            other => Error::In {
                origin: format!("{what} {spec}"),
                inner: Box::new(other),
            },
        })
    };
    let mut b = labeled(&base.profile, "BASE")?;
    let mut n = labeled(&new.profile, "NEW")?;
    filter.apply(&mut b);
    filter.apply(&mut n);
    let pairing = diff::pair(&b, &n, opts)?;
    let top = top.clone().filters(filter.describe());
    let table = diff::diff_top(&b, &n, &pairing, &top).render();
    let svg = if svg {
        Some(diff::diff_flamegraph(&b, &n, &pairing, None)?)
    } else {
        None
    };
    Ok(DiffOutput { table, svg })
}

/// `diff --since LABEL`: the newest snapshot with that label, and the
/// newest later snapshot of the same source and kind.
pub fn since(store: &Store, label: &str) -> Result<(Snapshot, Snapshot)> {
    let all = store.list()?;
    let base_pos = all
        .iter()
        .rposition(|s| s.meta.label.as_deref() == Some(label))
        .ok_or_else(|| Error::Store(format!("no snapshot labeled {label:?}")))?;
    let base = &all[base_pos];
    let newer = all[base_pos + 1..]
        .iter()
        .rev()
        .find(|s| s.meta.source == base.meta.source && s.meta.kind == base.meta.kind)
        .ok_or_else(|| {
            Error::Store(format!(
                "no snapshot of the same source and kind ({}) is newer than {:?} ({})",
                base.meta.kind, label, base.meta.id
            ))
        })?;
    Ok((base.clone(), newer.clone()))
}

/// `profscope list`: one row per snapshot, oldest first.
pub fn list(store: &Store) -> Result<String> {
    let all = store.list()?;
    let mut out = String::new();
    if all.is_empty() {
        let _ = writeln!(out, "no snapshots in {}", store.dir().display());
        return Ok(out);
    }
    let w = all
        .iter()
        .map(|s| s.meta.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let lw = all
        .iter()
        .map(|s| s.meta.label.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:<w$}  {:<20}  {:<9}  {:<lw$}  SOURCE",
        "ID", "TIME", "KIND", "LABEL"
    );
    for s in &all {
        let m = &s.meta;
        let _ = writeln!(
            out,
            "{:<w$}  {:<20}  {:<9}  {:<lw$}  {}",
            m.id,
            m.time,
            m.kind,
            m.label.as_deref().unwrap_or("-"),
            m.source.as_deref().unwrap_or("-")
        );
    }
    Ok(out)
}

/// GETs `url`, checks that the body is a profile, and saves it in `store`
/// with the URL as its source and the kind its path names.
pub fn capture(store: &Store, url: &str, opts: &FetchOptions) -> Result<Snapshot> {
    if !fetch::is_url(url) {
        return Err(Error::Fetch {
            url: url.to_string(),
            reason: "not an http:// or https:// URL".to_string(),
        });
    }
    let bytes = fetch::get(url, &opts.limits, opts.timeout)?;
    store
        .save(
            &bytes,
            NewSnapshot::new(Some(url.to_string()), opts.label.clone()),
        )
        .map_err(|e| Error::In {
            origin: url.to_string(),
            inner: Box::new(e),
        })
}
