//! The pages over the store: the snapshot list, the diff of two, and the
//! relabel/delete/download actions (one snapshot's page is in
//! [`snapshot`](super::snapshot)).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{self, esc};
use super::{AppState, PageError, blocking, capture, flame};
use crate::diff::{self, DiffOptions};
use crate::incidents::{self, Part};
use crate::render::TopOptions;
use crate::store::{Snapshot, Store, is_valid_id};
use profscope_profile::{self as model, SampleType};

/// Rows of the top table beside a flamegraph.
pub(crate) const TOP_ROWS: usize = 40;

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

pub(crate) fn title_of(s: &Snapshot) -> String {
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
    let store = st.store.clone();
    let stored_incidents =
        blocking(move || incidents::stored(&store).map_err(|e| PageError::Internal(e.to_string())))
            .await?;
    let mut groups: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for s in all.iter().rev() {
        groups.entry(group_of(s)).or_default().push(s);
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
    body.push_str(&incidents_section(&stored_incidents));
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

/// The group a snapshot is listed under: its source URL, except that an
/// incident's profiles share one group, the incident's.
fn group_of(s: &Snapshot) -> String {
    let source = s.meta.source.clone().unwrap_or_default();
    match s.meta.label.as_deref().and_then(incidents::parse_label) {
        Some((id, _)) => match source.find(incidents::INCIDENTS_PATH) {
            Some(at) => format!("{}{}/{id}", &source[..at], incidents::INCIDENTS_PATH),
            None => source,
        },
        None => source,
    }
}

/// The incidents the store holds, newest first, each opening as its heap
/// diff (and its CPU diff once complete).
fn incidents_section(all: &[incidents::StoredIncident]) -> String {
    if all.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<section class=\"incidents\"><h2>Incidents</h2>\n<p class=\"sub\">What the agents' \
         flight recorders froze when a trigger fired (<code>profscope incidents URL</code> \
         fetches them).</p>\n<table class=\"snapshots incidents\">\n<thead><tr><th>time</th>\
         <th>trigger</th><th>figures</th><th>state</th><th>id</th><th></th></tr></thead>\n<tbody>\n",
    );
    for i in all.iter().rev() {
        let id = esc(&i.id);
        let cpu = match (i.part(Part::Cpu), i.part(Part::CpuAfter)) {
            (Some(b), Some(a)) => format!(
                " · <a href=\"/diff?base={}&amp;new={}&amp;normalize=1\">CPU diff</a>",
                esc(&b.meta.id),
                esc(&a.meta.id)
            ),
            (Some(b), None) => format!(" · <a href=\"/snapshot/{}\">CPU</a>", esc(&b.meta.id)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr data-incident=\"{id}\"><td><a class=\"open-incident\" href=\"/incident/{id}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td><code>{id}</code></td>\
             <td><a href=\"/incident/{id}\">heap diff</a>{cpu}</td></tr>",
            esc(&crate::time::display(&i.time())),
            esc(&i.trigger()),
            esc(&i
                .info
                .as_ref()
                .map(|i| i.figures_line())
                .unwrap_or_default()),
            esc(i.info.as_ref().map_or("", |i| i.state.as_str())),
        );
    }
    out.push_str("</tbody></table></section>\n");
    out
}

/// `GET /incident/{id}`: a stored incident as its heap diff (heap at the
/// trigger vs before the window), under a header saying what fired.
pub(crate) async fn incident(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Html<String>, PageError> {
    let store = st.store.clone();
    blocking(move || {
        if !is_valid_id(&id) {
            return Err(PageError::BadRequest(format!(
                "{id:?} is not an incident id (letters, digits, '-' and '_')"
            )));
        }
        let i = incidents::resolve_stored(&store, Some(&id)).map_err(|e| match e {
            crate::Error::NoIncident(m) => PageError::NotFound(m),
            other => PageError::Internal(other.to_string()),
        })?;
        let (Some(before), Some(at)) = (i.part(Part::HeapBefore), i.part(Part::Heap)) else {
            return Err(PageError::NotFound(format!(
                "incident {id} has no heap snapshot from before its window to diff against"
            )));
        };
        let mut intro = format!(
            "<h1>Incident <code>{}</code>: {}</h1>\n<p class=\"sub incident-head\">{}",
            esc(&i.id),
            esc(&i.trigger()),
            esc(&crate::time::display(&i.time()))
        );
        if let Some(info) = &i.info {
            let _ = write!(
                intro,
                " · {} · {} · {:.0}s before, {:.0}s after",
                esc(&info.state),
                esc(&info.figures_line()),
                info.before_seconds,
                info.after_seconds
            );
        }
        if let Some(source) = i.source() {
            let _ = write!(intro, " · {}", esc(&source));
        }
        if let (Some(b), Some(a)) = (i.part(Part::Cpu), i.part(Part::CpuAfter)) {
            let _ = write!(
                intro,
                " · <a href=\"/diff?base={}&amp;new={}&amp;normalize=1\">CPU after vs before</a>",
                esc(&b.meta.id),
                esc(&a.meta.id)
            );
        }
        intro.push_str(
            "</p>\n<p class=\"sub\">Heap growth: the heap at the trigger (NEW) vs the heap \
             before the window (BASE).</p>\n",
        );
        let q = DiffQuery {
            base: Some(before.meta.id.clone()),
            new: Some(at.meta.id.clone()),
            normalize: None,
            ..q
        };
        diff_page(&store, &q, Some(&intro))
    })
    .await
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

pub(crate) fn toolbar(search: Option<&str>, icicle: bool) -> String {
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

pub(crate) fn type_select(types: &[SampleType], current: &SampleType) -> String {
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
    blocking(move || diff_page(&store, &q, None)).await
}

/// The diff page of `q`; `intro` (an incident's header) replaces its title.
fn diff_page(store: &Store, q: &DiffQuery, intro: Option<&str>) -> Result<Html<String>, PageError> {
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
            if q.normalize.is_some() {
                " checked"
            } else {
                ""
            },
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
    let base = find(store, &base_id)?;
    let new = find(store, &new_id)?;
    let pb = base.load().map_err(PageError::from_input)?;
    let pn = new.load().map_err(PageError::from_input)?;
    let opts = DiffOptions::new(nonempty(&q.ty), q.normalize.is_some());
    let pairing = diff::pair(&pb, &pn, &opts).map_err(PageError::from_input)?;
    let report = diff::diff_top(&pb, &pn, &pairing, &TopOptions::new(TOP_ROWS, false));
    let svg =
        flame::diff_svg(&pb, &pn, &pairing).map_err(|e| PageError::Internal(e.to_string()))?;
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
    if let Some(intro) = intro {
        body.push_str(intro);
    }
    // Under an incident's header the diff's own title is a subheading.
    let h = if intro.is_some() { "h2" } else { "h1" };
    let _ = write!(
        body,
        "<{h}>Diff: <a href=\"/snapshot/{}\">{}</a> → <a href=\"/snapshot/{}\">{}</a></{h}>\n\
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
    body.push_str(
        "<div class=\"view\">\n<div class=\"graph\">\n<div class=\"flamegraph diff\" id=\"fg\">\n",
    );
    body.push_str(&svg);
    body.push_str(
        "\n</div>\n<div id=\"fg-details\" class=\"details\">&nbsp;</div>\n</div>\n<aside class=\"side\">\n",
    );
    body.push_str(&html::top_table(
        &report,
        "change by function (NEW − BASE), ranked by |flat|",
    ));
    body.push_str("</aside>\n</div>\n");
    Ok(html::page(
        if intro.is_some() { "Incident" } else { "Diff" },
        "",
        &body,
    ))
}
