//! One function per command: what the `profscope` binary, the demo and the
//! web UI call. Each takes already-parsed options and returns text or bytes,
//! so front ends stay thin.

use std::fmt::Write as _;
use std::path::Path;

use profscope_profile::Profile;

use crate::diff::{self, DiffOptions};
use crate::error::{Error, Result};
use crate::fetch::Token;
use crate::fetch::{self, FetchOptions};
use crate::load::load_with;
use crate::render::{self, FlameOptions, TopOptions};
use crate::store::{NewSnapshot, Snapshot, Store};
use profscope_profile::{self as model, Filter, SampleType};

/// A PROFILE argument plus the options every single-profile command takes.
/// The label the agent puts on its own allocations; left out by default.
pub const AGENT_LABEL: &str = "profscope=agent";

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
    /// Remove frames matching this regex (added to the built-in hide-list).
    pub hide: Option<String>,
    /// `KEY=VALUE` label filters, all of which a sample must match (Go's
    /// `-tagfocus` syntax: a value is a regex, or a numeric range).
    pub tags: Vec<String>,
    /// Keep function names as they are (default: short Rust names).
    pub full_names: bool,
    /// Keep the runtime and framework frames the built-in hide-list removes.
    pub no_hide: bool,
    /// Keep only frames whose source file is under this directory ("my
    /// code"; mapping and binary paths never count).
    pub my_code: Option<String>,
    /// Drop samples whose labels match (Go's `-tagignore`).
    pub tag_ignore: Option<String>,
    /// The bearer token sent when the profile is an agent URL.
    pub token: Option<Token>,
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
    /// The filters applied, described for a report header.
    pub filter: Vec<String>,
}

impl Input {
    /// The filter this input asks for: focus/ignore, the hide-list (unless
    /// `no_hide`) plus `hide`, "my code", and the label filters.
    pub fn filters(&self) -> Result<Vec<Filter>> {
        let hide = match (self.no_hide, self.hide.as_deref()) {
            (true, user) => user.map(str::to_string),
            (false, None) => Some(crate::names::HIDE.to_string()),
            (false, Some(user)) => Some(format!("(?:{})|(?:{user})", crate::names::HIDE)),
        };
        let mut filters = vec![Filter::with(&model::FilterOptions {
            focus: self.focus.as_deref(),
            ignore: self.ignore.as_deref(),
            hide: hide.as_deref(),
            my_code: self.my_code.as_deref(),
            ..Default::default()
        })?];
        for tag in &self.tags {
            filters.push(Filter::with(&model::FilterOptions {
                tagfocus: Some(tag),
                ..Default::default()
            })?);
        }
        if let Some(ignore) = &self.tag_ignore {
            filters.push(Filter::with(&model::FilterOptions {
                tagignore: Some(ignore),
                ..Default::default()
            })?);
        }
        if !self.no_hide {
            // The agent's own allocations (symbolizer caches, encoders,
            // push buffers): a service owner sees their own memory first.
            filters.push(Filter::with(&model::FilterOptions {
                tagignore: Some(AGENT_LABEL),
                ..Default::default()
            })?);
        }
        Ok(filters)
    }

    /// Applies this input's filters and name form to `profile`; returns the
    /// filter descriptions for a report header.
    pub fn apply(&self, profile: &mut Profile) -> Result<Vec<String>> {
        for f in self.filters()? {
            f.apply(profile);
        }
        // Described from the options, not the compiled filters: the
        // built-in hide-list is named, not spelled out.
        let mut described = Vec::new();
        let mut note = |name: &str, value: Option<&str>| {
            if let Some(v) = value {
                described.push(format!("{name}={v}"));
            }
        };
        note("focus", self.focus.as_deref());
        note("ignore", self.ignore.as_deref());
        note("hide", self.hide.as_deref());
        note("my_code", self.my_code.as_deref());
        for tag in &self.tags {
            note("tagfocus", Some(tag));
        }
        note("tagignore", self.tag_ignore.as_deref());
        if !self.no_hide {
            described.push("hide=<runtime and framework frames> (--no-hide shows them)".into());
            described.push(format!(
                "tagignore={AGENT_LABEL} (the agent's own; --no-hide shows it)"
            ));
        }
        if !self.full_names {
            crate::names::shorten_profile(profile);
        }
        Ok(described)
    }
}

impl Input {
    /// Loads this input's profile (a URL with its token).
    pub fn load(&self, store: Option<&Store>) -> Result<Profile> {
        self.load_spec(&self.profile, store)
    }

    /// Loads `spec` as this input would (a URL with its token): the shell's
    /// `diff_base=`, a diff's two sides.
    pub fn load_spec(&self, spec: &str, store: Option<&Store>) -> Result<Profile> {
        load_with(
            spec,
            store,
            &FetchOptions::default().with_token(self.token.clone()),
        )
    }
}

/// Loads, selects the sample type and applies the filters.
pub fn prepare(input: &Input, store: Option<&Store>) -> Result<Prepared> {
    prepare_loaded(input, input.load(store)?)
}

/// Selects the sample type and applies `input`'s filters and name form to
/// an already loaded profile (the shell loads once, prepares per command).
pub fn prepare_loaded(input: &Input, mut profile: Profile) -> Result<Prepared> {
    let sample_type = model::select_sample_type(&profile, input.sample_type.as_deref())?;
    let described = input.apply(&mut profile)?;
    Ok(Prepared {
        profile,
        sample_type,
        filter: described,
    })
}

/// `profscope top`: the table as text.
pub fn top(input: &Input, store: Option<&Store>, opts: &TopOptions) -> Result<String> {
    report(input, store, &Report::Top(opts.clone()))
}

/// A report over one prepared profile: what the one-shot commands and the
/// shell print.
#[derive(Debug, Clone)]
pub enum Report {
    /// The `go tool pprof -top` table.
    Top(TopOptions),
    /// The table broken down by a label's values.
    By(String),
    /// Callers and callees of the functions matching a regex.
    Peek(String),
    /// Per-line cost of the functions matching a regex.
    Source(String),
    /// Every sample's stack.
    Traces,
    /// Label keys and values with their shares.
    Tags,
}

/// Renders `report` of a prepared profile.
pub fn render_report(p: &Prepared, report: &Report, full_names: bool) -> Result<String> {
    Ok(match report {
        Report::Top(opts) => {
            let mut opts = opts.clone().filters(p.filter.clone());
            if !full_names && opts.max_name == 0 {
                // Rows stay under 160 columns: 50 for the numbers, 110 for the name.
                opts = opts.max_name(110);
            }
            render::top(&p.profile, &p.sample_type, &opts).render()
        }
        Report::By(key) => crate::reports::by_label(&p.profile, &p.sample_type, key),
        Report::Peek(re) => crate::reports::peek(&p.profile, &p.sample_type, re)?,
        Report::Source(re) => crate::reports::source(&p.profile, &p.sample_type, re)?,
        Report::Traces => crate::reports::traces(&p.profile, &p.sample_type),
        Report::Tags => crate::reports::tags(&p.profile, &p.sample_type),
    })
}

/// `profscope top|peek|source|tags|traces`: one report of one input.
pub fn report(input: &Input, store: Option<&Store>, report: &Report) -> Result<String> {
    render_report(&prepare(input, store)?, report, input.full_names)
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
    let labeled = |spec: &str, what: &str| {
        new.load_spec(spec, store).map_err(|e| match e {
            Error::NotFound(_) | Error::In { .. } => e,
            other => Error::In {
                origin: format!("{what} {spec}"),
                inner: Box::new(other),
            },
        })
    };
    let mut b = labeled(&base.profile, "BASE")?;
    let mut n = labeled(&new.profile, "NEW")?;
    // Both sides the same way (NEW's options), so names pair up.
    new.apply(&mut b)?;
    let described = new.apply(&mut n)?;
    let pairing = diff::pair(&b, &n, opts)?;
    let top = top.clone().filters(described);
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
    let bytes = fetch::get(url, opts)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_profile::{Function, Label, Line, Location, Sample};

    /// Two samples, one labelled as the agent's own.
    fn labelled() -> Profile {
        Profile {
            string_table: vec!["".into(), "profscope".into(), "agent".into(), "main".into()],
            function: vec![Function {
                id: 1,
                name: 3,
                ..Default::default()
            }],
            location: vec![Location {
                id: 1,
                line: vec![Line {
                    function_id: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            sample: vec![
                Sample {
                    location_id: vec![1],
                    value: vec![1],
                    label: vec![Label {
                        key: 1,
                        str: 2,
                        ..Default::default()
                    }],
                },
                Sample {
                    location_id: vec![1],
                    value: vec![2],
                    label: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn agent_allocations_are_hidden_unless_no_hide() {
        let mut p = labelled();
        Input::new("x").apply(&mut p).unwrap();
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, [2]);
        let mut p = labelled();
        let mut input = Input::new("x");
        input.no_hide = true;
        input.apply(&mut p).unwrap();
        assert_eq!(p.sample.len(), 2);
    }
}
