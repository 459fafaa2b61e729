//! One snapshot's page: the icicle (or flame graph) inline, the view's
//! switches and label filters ([`view`](super::view) reads them from the
//! query), the peek and source panes, the by-label and top tables; and the
//! panes' JSON endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};

use super::html::{self, esc};
use super::page_query::{PageQuery, exclude, tag_exact};
use super::pages::{TOP_ROWS, find, title_of, toolbar, type_select};
use super::{AppState, PageError, blocking, flame};
use crate::app::{self, Prepared};
use crate::names::Shortener;
use crate::render::{self, IcicleOptions, TopOptions};
use crate::reports;
use crate::store::Snapshot;
use crate::units::percentage;
use profscope_profile::flamegraph::count_name;
use profscope_profile::{self as model, Profile, SampleType};

/// Values of a label key listed (in its dropdown and the by-label table).
const LABEL_ROWS: usize = 200;

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
    v: &PageQuery,
    whole_names: bool,
) -> Result<Loaded, PageError> {
    let snap = find(&st.store, id)?;
    let profile = st.loaded.get(&snap)?;
    let types = model::sample_types(&profile);
    let stype =
        model::select_sample_type(&profile, v.ty.as_deref()).map_err(PageError::from_input)?;
    let labels = reports::string_label_values(&profile, &stype);
    let all = profile.sample_total(stype.index);
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
    v: &PageQuery,
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
fn by_label_table(id: &str, v: &PageQuery, p: &Prepared, keys: &[&String], all: i64) -> String {
    let Some(key) = v.by.as_ref().or(keys.first().copied()) else {
        return String::new();
    };
    let rows = reports::by_label_rows(&p.profile, &p.sample_type, key);
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
pub(crate) async fn page(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Html<String>, PageError> {
    let v = PageQuery::parse(&pairs)?;
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
                prepared.profile.function.iter().map(|f| prepared.profile.string_at(f.name)),
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
    let v = PageQuery::parse(&pairs)?;
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
            reports::peek_entries(&p.profile, st, &re).map_err(PageError::from_input)?;
        let edge = |(other, v): &(String, i64), cum: i64| {
            let (value, share) = reports::value_and_share(&st.unit, *v, cum);
            serde_json::json!({ "name": other, "value": value, "share": share })
        };
        let entries: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let (flat, flat_share) = reports::value_and_share(&st.unit, e.flat, all);
                let (cum, cum_share) = reports::value_and_share(&st.unit, e.cum, all);
                serde_json::json!({
                    "name": e.name, "flat": flat, "flat_share": flat_share,
                    "cum": cum, "cum_share": cum_share,
                    "callers": e.callers.iter().map(|c| edge(c, e.cum)).collect::<Vec<_>>(),
                    "callees": e.callees.iter().map(|c| edge(c, e.cum)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let peek = reports::peek(&p.profile, st, &re).map_err(PageError::from_input)?;
        let source = reports::source(&p.profile, st, &re).unwrap_or_else(|e| format!("{e}\n"));
        Ok(axum::Json(serde_json::json!({
            "name": name, "entries": entries, "peek": peek, "source": source
        }))
        .into_response())
    })
    .await
}
