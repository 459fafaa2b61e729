//! The pages over the store: the snapshot list, one snapshot's flamegraph
//! and top table, the diff of two, and the relabel/delete/download actions.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{self, esc};
use super::view::{PageView, exclude, tag_exact};
use super::{AppState, PageError, blocking, capture, flame};
use crate::app::{self, Prepared};
use crate::diff::{self, DiffOptions};
use crate::names::Shortener;
use crate::render::{self, IcicleOptions, TopOptions};
use crate::store::{Snapshot, Store, is_valid_id};
use crate::units::percentage;
use crate::views;
use profscope_profile::flamegraph::count_name;
use profscope_profile::{self as model, Profile, SampleType};

/// Rows of the top table beside a flamegraph.
const TOP_ROWS: usize = 40;

/// Values of a label key listed (in its dropdown and the by-label table).
const LABEL_ROWS: usize = 200;

/// Looks up a snapshot by the id in a URL: 400 when the id could name
/// anything but a file in the store, 404 when there is no such snapshot.
pub(crate) fn find(store: &Store, id: &str) -> Result<Snapshot, PageError> {
    if !is_valid_id(id) {
        return Err(PageError::BadRequest(format!(
            "{id:?} is not a snapshot id (ids are letters, digits, '-' and '_')"
        )));
    }
    store
        .get(id)
        .map_err(|e| PageError::Internal(e.to_string()))?
        .ok_or_else(|| {
            PageError::NotFound(format!("no snapshot {id:?} in {}", store.dir().display()))
        })
}

fn title_of(s: &Snapshot) -> String {
    match &s.meta.label {
        Some(l) => format!("{l} ({})", s.meta.id),
        None => s.meta.id.clone(),
    }
}

/// `GET /`: snapshots grouped by source, the groups and the rows in them
/// newest first.
pub(crate) async fn list(State(st): State<AppState>) -> Result<Html<String>, PageError> {
    let store = st.store.clone();
    let all =
        blocking(move || store.list().map_err(|e| PageError::Internal(e.to_string()))).await?;
    let mut groups: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for s in all.iter().rev() {
        let source = s.meta.source.clone().unwrap_or_default();
        groups.entry(source).or_default().push(s);
    }
    let mut groups: Vec<(String, Vec<&Snapshot>)> = groups.into_iter().collect();
    groups.sort_by_key(|(_, v)| std::cmp::Reverse(v[0].meta.unix_nanos));

    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Snapshots</h1>\n<p class=\"sub\">{} snapshot{} in <code>{}</code></p>\n",
        all.len(),
        if all.len() == 1 { "" } else { "s" },
        esc(&st.store.dir().display().to_string())
    );
    if all.is_empty() {
        body.push_str(
            "<p class=\"empty\">No snapshots yet. Capture one from a running agent below, \
             or run <code>profscope fetch URL</code> / <code>profscope demo</code>.</p>\n",
        );
    } else {
        body.push_str(
            "<form id=\"diffform\" class=\"diffbar\" method=\"get\" action=\"/diff\">\
             Pick a <b>BASE</b> and a <b>NEW</b> snapshot below, then \
             <button type=\"submit\" id=\"diff-selected\">Diff selected</button>\
             <label><input type=\"checkbox\" name=\"normalize\" value=\"1\"> normalize</label></form>\n",
        );
    }
    for (source, rows) in &groups {
        let name = if source.is_empty() {
            "imported (no source URL)".to_string()
        } else {
            source.clone()
        };
        let _ = write!(
            body,
            "<section class=\"group\"><h2>{}</h2>\n<table class=\"snapshots\">\n<thead><tr>\
             <th title=\"BASE\">base</th><th title=\"NEW\">new</th><th>time</th><th>label</th>\
             <th>kind</th><th>size</th><th>id</th><th></th></tr></thead>\n<tbody>\n",
            esc(&name)
        );
        for s in rows {
            let m = &s.meta;
            let id = esc(&m.id);
            let _ = writeln!(
                body,
                "<tr data-id=\"{id}\">\
                 <td><input type=\"radio\" name=\"base\" value=\"{id}\" form=\"diffform\" aria-label=\"BASE\"></td>\
                 <td><input type=\"radio\" name=\"new\" value=\"{id}\" form=\"diffform\" aria-label=\"NEW\"></td>\
                 <td><a class=\"open\" href=\"/snapshot/{id}\">{}</a></td>\
                 <td><form class=\"relabel\" method=\"post\" action=\"/snapshot/{id}/label\">\
                 <input name=\"label\" value=\"{}\" placeholder=\"label\" size=\"12\" aria-label=\"label\">\
                 <button type=\"submit\">Rename</button></form></td>\
                 <td>{}</td><td class=\"num\">{}</td><td><code>{id}</code></td>\
                 <td><form class=\"delete\" method=\"post\" action=\"/snapshot/{id}/delete\" data-confirm=\"Delete snapshot {id}?\">\
                 <button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
                esc(&crate::time::display(&m.time)),
                esc(m.label.as_deref().unwrap_or("")),
                esc(&m.kind),
                esc(&html::size(m.size)),
            );
        }
        body.push_str("</tbody></table></section>\n");
    }
    body.push_str("<h2>Capture from an agent</h2>\n");
    body.push_str(&capture::form_html("", "cpu", 5, ""));
    Ok(html::page("Snapshots", "", &body))
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn toolbar(search: Option<&str>, icicle: bool) -> String {
    format!(
        "<div class=\"fg-toolbar\">\
         <input type=\"search\" id=\"fg-search\" placeholder=\"Search functions (regex; / to focus)\" \
         value=\"{}\" aria-label=\"search\" autocomplete=\"off\">\
         <span id=\"fg-matched\" aria-live=\"polite\"></span>\
         <button type=\"button\" id=\"fg-reset\" disabled>Reset zoom</button>\
         <label title=\"roots at the top; untick for a flame graph (roots at the bottom)\">\
         <input type=\"checkbox\" id=\"fg-icicle\"{}> icicle</label>\
         <a id=\"fg-focus\" href=\"#\" hidden title=\"Frames narrower than {}% of the total are \
         left out of the page; this redraws the zoomed frame with all of its stacks\">\
         open the zoomed frame in full detail</a>\
         </div>\n",
        esc(search.unwrap_or("")),
        if icicle { " checked" } else { "" },
        flame::MIN_WIDTH_PCT
    )
}

fn type_select(types: &[SampleType], current: &SampleType) -> String {
    let mut out = String::from(
        "<label>sample type <select name=\"type\" id=\"type-select\" data-autosubmit>",
    );
    for t in types {
        let _ = write!(
            out,
            "<option value=\"{}\"{}>{} ({})</option>",
            esc(&t.name),
            if t.index == current.index {
                " selected"
            } else {
                ""
            },
            esc(&t.name),
            esc(&t.unit)
        );
    }
    out.push_str("</select></label><noscript><button type=\"submit\">Show</button></noscript>");
    out
}

/// The last snapshot a page loaded: switching a view, opening a pane or
/// filtering by a label reuses it instead of decoding the file again
/// (snapshot files never change; a deleted one fails `find` first).
#[derive(Debug, Default)]
pub(crate) struct LastLoaded(std::sync::Mutex<Option<(String, Profile)>>);

impl LastLoaded {
    /// The snapshot's profile, repeated stacks summed while decoding.
    fn get(&self, snap: &Snapshot) -> Result<Profile, PageError> {
        let lock = || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((id, p)) = lock().as_ref()
            && *id == snap.meta.id
        {
            return Ok(p.clone());
        }
        // Unaggregated producers repeat stacks: summed while decoding, so
        // everything after works per distinct stack and label set.
        let p = snap.load_merged().map_err(PageError::from_input)?;
        *lock() = Some((snap.meta.id.clone(), p.clone()));
        Ok(p)
    }
}

/// A loaded snapshot prepared for its page: repeated stacks merged, the
/// sample type chosen, the view's filters applied.
struct Loaded {
    snap: Snapshot,
    types: Vec<SampleType>,
    /// Every string label key's values over the whole profile (before
    /// label filters), for the dropdowns and the by-label table.
    labels: BTreeMap<String, Vec<(String, i64)>>,
    /// The whole profile's total of the sample type.
    all: i64,
    prepared: Prepared,
}

fn load_view(
    st: &AppState,
    id: &str,
    v: &PageView,
    whole_names: bool,
) -> Result<Loaded, PageError> {
    let snap = find(&st.store, id)?;
    let profile = st.loaded.get(&snap)?;
    let types = model::sample_types(&profile);
    let stype =
        model::select_sample_type(&profile, v.ty.as_deref()).map_err(PageError::from_input)?;
    let labels = views::string_label_values(&profile, &stype);
    let all = model::total(&profile, stype.index);
    let prepared = app::prepare_loaded(&v.input(&snap.meta.id, whole_names), profile)
        .map_err(PageError::from_input)?;
    Ok(Loaded {
        snap,
        types,
        labels,
        all,
        prepared,
    })
}

/// The switches and label filters, one form that reloads on change.
fn view_form(
    id: &str,
    v: &PageView,
    types: &[SampleType],
    stype: &SampleType,
    labels: &BTreeMap<String, Vec<(String, i64)>>,
    all: i64,
) -> String {
    let check = |on: bool| if on { " checked" } else { "" };
    let mut out = format!(
        "<form class=\"controls\" id=\"view-form\" method=\"get\" action=\"/snapshot/{}\">\
         <input type=\"hidden\" name=\"v\" value=\"1\">{}",
        esc(id),
        type_select(types, stype)
    );
    if !v.icicle {
        out.push_str("<input type=\"hidden\" name=\"icicle\" value=\"0\">");
    }
    let _ = write!(
        out,
        "<label title=\"Type::method instead of whole paths with generics (whole names on hover)\">\
         <input type=\"checkbox\" name=\"short\" value=\"1\" id=\"sw-short\" data-autosubmit{}> short names</label>\
         <label title=\"hide the tokio, hyper, tower, axum, futures and std frames between a thread's entry and your code\">\
         <input type=\"checkbox\" name=\"hide\" value=\"1\" id=\"sw-hide\" data-autosubmit{}> hide runtime frames</label>\
         <label title=\"only frames whose source file is under this directory\">\
         <input type=\"checkbox\" name=\"my\" value=\"1\" id=\"sw-my\" data-autosubmit{}> my code under</label>\
         <input name=\"mydir\" id=\"sw-mydir\" value=\"{}\" size=\"24\" aria-label=\"my code directory\">",
        check(v.short),
        check(v.hide),
        check(v.my_code),
        esc(&v.my_dir)
    );
    for (key, values) in labels {
        let chosen = v
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(key.as_str())?.strip_prefix('='));
        let _ = write!(
            out,
            "<label>{} <select name=\"tag\" class=\"tag-select\" data-key=\"{}\" data-autosubmit>\
             <option value=\"\">all</option>",
            esc(key),
            esc(key)
        );
        for (value, total) in values.iter().take(LABEL_ROWS) {
            let tag = tag_exact(key, value);
            let _ = write!(
                out,
                "<option value=\"{}\" data-value=\"{}\"{}>{} ({})</option>",
                esc(&tag),
                esc(value),
                if chosen == tag.split_once('=').map(|t| t.1) {
                    " selected"
                } else {
                    ""
                },
                esc(value),
                percentage(*total, all).trim()
            );
        }
        // A filter typed into the URL that is not one of the values.
        if let Some(c) = chosen.filter(|c| {
            !values
                .iter()
                .any(|(val, _)| tag_exact(key, val).ends_with(*c))
        }) {
            let _ = write!(
                out,
                "<option value=\"{}={}\" selected>{}</option>",
                esc(key),
                esc(c),
                esc(c)
            );
        }
        out.push_str("</select></label>");
    }
    for t in v.tags.iter().filter(|t| {
        let key = t.split('=').next().unwrap_or("");
        !labels.contains_key(key)
    }) {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"tag\" value=\"{}\">",
            esc(t)
        );
    }
    if let Some(b) = &v.by {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"by\" value=\"{}\">",
            esc(b)
        );
    }
    if let Some(n) = &v.tag_ignore {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"notag\" value=\"{}\"><span class=\"notag\">leaving out \
             <code>{}</code> <a href=\"/snapshot/{}?{}\" id=\"notag-clear\" title=\"show them again\">×</a></span>",
            esc(n),
            esc(n),
            esc(id),
            esc(&v.query_with(&v.tags, None))
        );
    }
    out.push_str("<noscript><button type=\"submit\">Show</button></noscript></form>\n");
    out
}

/// The by-label table: the shown samples' values per value of one key;
/// each value links to the page filtered to it.
fn by_label_table(id: &str, v: &PageView, p: &Prepared, keys: &[&String], all: i64) -> String {
    let Some(key) = v.by.as_ref().or(keys.first().copied()) else {
        return String::new();
    };
    let rows = views::by_label_rows(&p.profile, &p.sample_type, key);
    let shown: i64 = rows.iter().map(|r| r.1).sum();
    let fmt = crate::units::ValueFormat::auto(&p.sample_type.unit, shown);
    let mut out = String::from("<table class=\"toptable bylabel\" id=\"by-label\"");
    let _ = write!(
        out,
        " data-key=\"{}\" data-total=\"{shown}\"><caption>by label <select id=\"by-select\" aria-label=\"label key\">",
        esc(key)
    );
    for k in keys {
        let mut other = v.clone();
        other.by = Some((*k).clone());
        let _ = write!(
            out,
            "<option value=\"/snapshot/{}?{}\"{}>{}</option>",
            esc(id),
            esc(&other.query(&v.tags)),
            if *k == key { " selected" } else { "" },
            esc(k)
        );
    }
    let _ = write!(
        out,
        "</select> · {} of {} ({})</caption>\n<thead><tr><th>value</th><th>share</th>\
         <th class=\"name\">{}</th><th></th></tr></thead>\n<tbody>\n",
        esc(&fmt.format(shown)),
        esc(&crate::units::ValueFormat::auto(&p.sample_type.unit, all).format(all)),
        percentage(shown, all).trim(),
        esc(key)
    );
    // High-cardinality keys (span or trace ids) would make the page huge.
    for (value, total) in rows.iter().take(LABEL_ROWS) {
        let mut tags: Vec<String> = v
            .tags
            .iter()
            .filter(|t| !t.starts_with(&format!("{key}=")))
            .cloned()
            .collect();
        let (link, leave_out) = if value == "(none)" {
            (String::new(), String::new())
        } else {
            let notag = exclude(v.tag_ignore.as_deref(), key, value);
            let leave_out = format!(
                "<a class=\"notag\" title=\"leave these samples out (tagignore)\" href=\"/snapshot/{}?{}\">−</a>",
                esc(id),
                esc(&v.query_with(&v.tags, Some(&notag)))
            );
            tags.push(tag_exact(key, value));
            let link = format!(
                " title=\"only these samples (tagfocus)\" href=\"/snapshot/{}?{}\"",
                esc(id),
                esc(&v.query(&tags))
            );
            (link, leave_out)
        };
        let _ = writeln!(
            out,
            "<tr data-value=\"{}\" data-raw=\"{total}\"><td>{}</td><td>{}</td><td class=\"name\"><a{link}>{}</a></td><td>{leave_out}</td></tr>",
            esc(value),
            esc(&fmt.format(*total)),
            percentage(*total, shown).trim(),
            esc(value)
        );
    }
    if rows.len() > LABEL_ROWS {
        let rest: i64 = rows[LABEL_ROWS..].iter().map(|r| r.1).sum();
        let _ = writeln!(
            out,
            "<tr class=\"more\"><td>{}</td><td>{}</td><td class=\"name\">{} more values</td><td></td></tr>",
            esc(&fmt.format(rest)),
            percentage(rest, shown).trim(),
            rows.len() - LABEL_ROWS
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// `GET /snapshot/{id}`: the flamegraph (an icicle by default), inline,
/// beside the peek and source panes, the by-label and the top table.
pub(crate) async fn snapshot(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Html<String>, PageError> {
    let v = PageView::parse(&pairs)?;
    blocking(move || {
        let Loaded { snap, types, labels, all, prepared } = load_view(&st, &id, &v, true)?;
        let stype = prepared.sample_type.clone();
        let title = format!("{} · {} ({})", title_of(&snap), stype.name, stype.unit);
        let mut opts = IcicleOptions::new(title.clone(), count_name(&stype.unit));
        opts.icicle = v.icicle;
        opts.short_names = v.short;
        opts.min_width_pct = flame::MIN_WIDTH_PCT;
        opts.focus = v.focus.clone();
        let drawn = render::icicle_svg(&prepared.profile, stype.index, &opts);
        let mut report = render::top(
            &prepared.profile,
            &stype,
            &TopOptions::new(TOP_ROWS, false).filters(prepared.filter.clone()),
        );
        if v.short {
            let names = Shortener::new(report.rows.iter().map(|r| r.name.as_str()).chain(
                prepared.profile.function.iter().map(|f| model::string(&prepared.profile, f.name)),
            ));
            for row in &mut report.rows {
                row.name = names.get(&row.name).to_string();
            }
        }
        let m = &snap.meta;
        let mut body = String::with_capacity(drawn.svg.len() + 16 * 1024);
        let _ = write!(
            body,
            "<h1>{}</h1>\n<p class=\"sub\"><b>{}</b> · {} · {} · source <code>{}</code> · \
             <a href=\"/snapshot/{}/profile.pb.gz\" download>download .pb.gz</a></p>\n",
            esc(&title_of(&snap)),
            esc(&m.kind),
            esc(&crate::time::display(&m.time)),
            esc(&html::size(m.size)),
            esc(m.source.as_deref().unwrap_or("-")),
            esc(&m.id)
        );
        body.push_str(&view_form(&m.id, &v, &types, &stype, &labels, all));
        if let Some(f) = &v.focus {
            let leaf = f.rsplit(';').next().unwrap_or(f);
            let _ = writeln!(
                body,
                "<p class=\"focus\">Showing only the stacks under <code title=\"{}\">{}</code> · \
                 <a href=\"/snapshot/{}?{}\">show all</a></p>",
                esc(f),
                esc(leaf),
                esc(&m.id),
                esc(&v.query(&v.tags))
            );
        }
        body.push_str(&toolbar(v.search.as_deref(), v.icicle));
        let _ = write!(
            body,
            "<div class=\"view\">\n<div class=\"graph\">\n<div class=\"flamegraph\" id=\"fg\" \
             data-total=\"{}\" data-all=\"{all}\" data-peek=\"/snapshot/{}/peek?{}\">\n",
            drawn.total,
            esc(&m.id),
            esc(&v.query(&v.tags))
        );
        body.push_str(&drawn.svg);
        body.push_str(
            "\n</div>\n<div id=\"fg-details\" class=\"details\">&nbsp;</div>\n</div>\n<aside class=\"side\">\n",
        );
        body.push_str(
            "<section id=\"panes\" hidden><div class=\"panes-head\"><b id=\"pane-name\"></b>\
             <button type=\"button\" id=\"panes-close\" aria-label=\"close\">×</button></div>\
             <h3>peek: callers and callees</h3><div id=\"pane-peek\"></div>\
             <h3>source: per-line cost</h3><pre id=\"pane-source\"></pre></section>\n",
        );
        let keys: Vec<&String> = labels.keys().collect();
        body.push_str(&by_label_table(&m.id, &v, &prepared, &keys, all));
        body.push_str(&html::top_table(&report, "top functions (flat)"));
        body.push_str("</aside>\n</div>\n");
        Ok(html::page(&title_of(&snap), "", &body))
    })
    .await
}

/// `GET /snapshot/{id}/peek?fn=NAME&…`: the shell's `peek` and `list` of
/// one function (its name as the page shows it), under the page's view
/// settings, as JSON: `entries` (per function matched: flat, cum, callers
/// and callees with values and shares), `peek` and `source` (the shell's
/// text).
pub(crate) async fn peek(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let v = PageView::parse(&pairs)?;
    let name = pairs
        .iter()
        .find(|(k, _)| k == "fn")
        .map(|(_, n)| n.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PageError::BadRequest("peek needs fn=NAME".into()))?;
    blocking(move || {
        let loaded = load_view(&st, &id, &v, false)?;
        let p = &loaded.prepared;
        let re = format!("^{}$", regex::escape(&name));
        let st = &p.sample_type;
        let (all, entries) =
            views::peek_entries(&p.profile, st, &re).map_err(PageError::from_input)?;
        let edge = |(other, v): &(String, i64), cum: i64| {
            let (value, share) = views::value_and_share(&st.unit, *v, cum);
            serde_json::json!({ "name": other, "value": value, "share": share })
        };
        let entries: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let (flat, flat_share) = views::value_and_share(&st.unit, e.flat, all);
                let (cum, cum_share) = views::value_and_share(&st.unit, e.cum, all);
                serde_json::json!({
                    "name": e.name, "flat": flat, "flat_share": flat_share,
                    "cum": cum, "cum_share": cum_share,
                    "callers": e.callers.iter().map(|c| edge(c, e.cum)).collect::<Vec<_>>(),
                    "callees": e.callees.iter().map(|c| edge(c, e.cum)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let peek = views::peek(&p.profile, st, &re).map_err(PageError::from_input)?;
        let source = views::source(&p.profile, st, &re).unwrap_or_else(|e| format!("{e}\n"));
        Ok(axum::Json(serde_json::json!({
            "name": name, "entries": entries, "peek": peek, "source": source
        }))
        .into_response())
    })
    .await
}

/// `GET /snapshot/{id}/profile.pb.gz`: the stored file.
pub(crate) async fn download(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let store = st.store.clone();
    blocking(move || {
        let snap = find(&store, &id)?;
        let bytes = std::fs::read(&snap.profile_path)
            .map_err(|e| PageError::Internal(format!("{}: {e}", snap.profile_path.display())))?;
        Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}.pb.gz\"", snap.meta.id),
                ),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct LabelForm {
    #[serde(default)]
    label: String,
}

/// Labels are one line of printable text.
fn check_label(label: &str) -> Result<&str, PageError> {
    let label = label.trim();
    if label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(PageError::BadRequest(
            "a label is at most 100 characters, without control characters".into(),
        ));
    }
    Ok(label)
}

/// `POST /snapshot/{id}/label`: sets or clears the label.
pub(crate) async fn relabel(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<LabelForm>,
) -> Result<Redirect, PageError> {
    let store = st.store.clone();
    blocking(move || {
        find(&store, &id)?;
        let label = check_label(&form.label)?;
        store
            .relabel(&id, Some(label))
            .map_err(|e| PageError::Internal(e.to_string()))?
            .ok_or_else(|| PageError::NotFound(format!("no snapshot {id:?}")))?;
        Ok(Redirect::to("/"))
    })
    .await
}

/// `POST /snapshot/{id}/delete`: deletes the snapshot.
pub(crate) async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    let store = st.store.clone();
    blocking(move || {
        find(&store, &id)?;
        store
            .delete(&id)
            .map_err(|e| PageError::Internal(e.to_string()))?
            .ok_or_else(|| PageError::NotFound(format!("no snapshot {id:?}")))?;
        Ok(Redirect::to("/"))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct DiffQuery {
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    new: Option<String>,
    #[serde(rename = "type", default)]
    ty: Option<String>,
    #[serde(default)]
    normalize: Option<String>,
    #[serde(default)]
    icicle: Option<String>,
    #[serde(default)]
    s: Option<String>,
}

fn snapshot_select(name: &str, all: &[Snapshot], selected: Option<&str>) -> String {
    let mut out = format!(
        "<label>{} <select name=\"{}\" id=\"diff-{}\"><option value=\"\">choose…</option>",
        name.to_uppercase(),
        name,
        name
    );
    for s in all.iter().rev() {
        let _ = write!(
            out,
            "<option value=\"{}\"{}>{} · {} · {}</option>",
            esc(&s.meta.id),
            if selected == Some(s.meta.id.as_str()) {
                " selected"
            } else {
                ""
            },
            esc(&crate::time::display(&s.meta.time)),
            esc(&s.meta.kind),
            esc(s.meta.label.as_deref().unwrap_or(&s.meta.id))
        );
    }
    out.push_str("</select></label>");
    out
}

/// `GET /diff`: chooser, and with `base` and `new` the differential
/// flamegraph and the delta table of `profscope diff`.
pub(crate) async fn diff(
    State(st): State<AppState>,
    Query(q): Query<DiffQuery>,
) -> Result<Html<String>, PageError> {
    let store = st.store.clone();
    blocking(move || {
        let base_id = nonempty(&q.base);
        let new_id = nonempty(&q.new);
        let all = store
            .list()
            .map_err(|e| PageError::Internal(e.to_string()))?;
        let chooser = |types: &str| {
            format!(
                "<form class=\"controls\" method=\"get\" action=\"/diff\">{} {} {}\
                 <label><input type=\"checkbox\" name=\"normalize\" value=\"1\"{}> normalize \
                 (scale BASE to NEW's total; for CPU profiles of different lengths)</label> \
                 <button type=\"submit\" id=\"diff-go\">Diff</button></form>\n",
                snapshot_select("base", &all, base_id.as_deref()),
                snapshot_select("new", &all, new_id.as_deref()),
                types,
                if q.normalize.is_some() { " checked" } else { "" },
            )
        };
        let (Some(base_id), Some(new_id)) = (base_id.clone(), new_id.clone()) else {
            if base_id.is_some() || new_id.is_some() {
                return Err(PageError::BadRequest(
                    "a diff needs both a BASE and a NEW snapshot".into(),
                ));
            }
            let body = format!(
                "<h1>Diff two snapshots</h1>\n<p class=\"sub\">Choose BASE (before) and NEW (after).</p>\n{}",
                chooser("")
            );
            return Ok(html::page("Diff", "", &body));
        };
        let base = find(&store, &base_id)?;
        let new = find(&store, &new_id)?;
        let pb = base.load().map_err(PageError::from_input)?;
        let pn = new.load().map_err(PageError::from_input)?;
        let opts = DiffOptions::new(nonempty(&q.ty), q.normalize.is_some());
        let pairing = diff::pair(&pb, &pn, &opts).map_err(PageError::from_input)?;
        let report = diff::diff_top(&pb, &pn, &pairing, &TopOptions::new(TOP_ROWS, false));
        let svg = flame::diff_svg(&pb, &pn, &pairing)
            .map_err(|e| PageError::Internal(e.to_string()))?;
        let types = format!(
            "<label>sample type <select name=\"type\">{}</select></label>",
            model::sample_types(&pn)
                .iter()
                .map(|t| format!(
                    "<option value=\"{}\"{}>{} ({})</option>",
                    esc(&t.name),
                    if t.index == pairing.new.index {
                        " selected"
                    } else {
                        ""
                    },
                    esc(&t.name),
                    esc(&t.unit)
                ))
                .collect::<String>()
        );
        let mut body = String::with_capacity(svg.len() + 16 * 1024);
        let _ = write!(
            body,
            "<h1>Diff: <a href=\"/snapshot/{}\">{}</a> → <a href=\"/snapshot/{}\">{}</a></h1>\n\
             <p class=\"sub\">BASE {} · NEW {} · {}{}</p>\n",
            esc(&base.meta.id),
            esc(&title_of(&base)),
            esc(&new.meta.id),
            esc(&title_of(&new)),
            esc(&crate::time::display(&base.meta.time)),
            esc(&crate::time::display(&new.meta.time)),
            esc(&pairing.new.name),
            if opts.normalize {
                format!(" · BASE scaled by {:.4}", pairing.base_scale)
            } else {
                String::new()
            }
        );
        body.push_str(&chooser(&types));
        body.push_str(&toolbar(
            q.s.as_deref(),
            q.icicle.as_deref().is_none_or(|v| v != "0" && v != "false"),
        ));
        body.push_str("<div class=\"view\">\n<div class=\"graph\">\n<div class=\"flamegraph diff\" id=\"fg\">\n");
        body.push_str(&svg);
        body.push_str(
            "\n</div>\n<div id=\"fg-details\" class=\"details\">&nbsp;</div>\n</div>\n<aside class=\"side\">\n",
        );
        body.push_str(&html::top_table(
            &report,
            "change by function (NEW − BASE), ranked by |flat|",
        ));
        body.push_str("</aside>\n</div>\n");
        Ok(html::page("Diff", "", &body))
    })
    .await
}
