//! Capturing from a live agent: the form, a background job per capture
//! (one [`app::capture`](crate::app::capture) on a blocking thread), a progress page that polls
//! a JSON status endpoint, and the redirect to the new snapshot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{self, esc};
use super::{AppState, PageError};
use crate::fetch::{self, FetchOptions};

use profscope_profile::kind::{ENDPOINTS, Endpoint, kind_from_url};

/// The kinds the form offers: every profile endpoint of the table (Go's
/// too, since the viewer captures from Go services as well).
fn capture_kinds() -> impl Iterator<Item = &'static Endpoint> {
    // One entry a kind: the godeltaprof `delta_*` paths are for scrapers,
    // the recorder's `recent/*` answer from its ring.
    ENDPOINTS.iter().filter(|e| {
        e.is_profile() && !e.name().starts_with("delta_") && !e.path.contains("/recent/")
    })
}

/// The longest capture the form accepts, in seconds.
const MAX_SECONDS: u64 = 600;
/// Captures running at once.
const MAX_RUNNING: usize = 4;
/// Finished jobs are forgotten after this long.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
enum JobState {
    Running,
    Done(String),
    Failed(String),
}

#[derive(Debug, Clone)]
struct Job {
    url: String,
    kind: String,
    seconds: u64,
    started: Instant,
    finished: Option<Instant>,
    state: JobState,
}

/// The capture jobs of one server.
#[derive(Debug, Default)]
pub(crate) struct Captures {
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Job>>,
}

impl Captures {
    fn get(&self, id: u64) -> Option<Job> {
        self.jobs.lock().ok()?.get(&id).cloned()
    }

    fn finish(&self, id: u64, state: JobState) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if let Some(job) = jobs.get_mut(&id) {
                job.state = state;
                job.finished = Some(Instant::now());
            }
        }
    }
}

/// The capture form (also embedded in the snapshot list).
pub(crate) fn form_html(url: &str, kind: &str, seconds: u64, label: &str) -> String {
    let mut kinds = String::new();
    for e in capture_kinds() {
        let (k, name) = (e.kind.unwrap_or(""), e.label);
        let _ = write!(
            kinds,
            "<option value=\"{k}\"{}>{name}</option>",
            if k == kind { " selected" } else { "" }
        );
    }
    format!(
        "<form class=\"capture\" id=\"capture-form\" method=\"post\" action=\"/capture\">\
         <label>agent URL <input name=\"url\" id=\"capture-url\" value=\"{}\" size=\"36\" required \
         placeholder=\"http://127.0.0.1:6060\"></label>\
         <label>kind <select name=\"kind\" id=\"capture-kind\">{kinds}</select></label>\
         <label>seconds <input name=\"seconds\" id=\"capture-seconds\" type=\"number\" min=\"0\" max=\"{MAX_SECONDS}\" \
         value=\"{seconds}\" size=\"4\"></label>\
         <label>label <input name=\"label\" id=\"capture-label\" value=\"{}\" size=\"12\" placeholder=\"optional\"></label>\
         <button type=\"submit\" id=\"capture-go\">Capture</button>\
         <p class=\"hint\">An agent's base URL (its <code>/debug/pprof/…</code> endpoint is added) \
         or a full endpoint URL. Seconds: the CPU capture's length; for the other kinds, \
         0 takes the profile as it is now, N the change over N seconds (Go's delta profiles).</p>\
         </form>\n",
        esc(url),
        esc(label)
    )
}

/// `GET /capture`: the form alone.
pub(crate) async fn form() -> Html<String> {
    html::page(
        "Capture",
        "",
        &format!(
            "<h1>Capture from an agent</h1>\n{}",
            form_html("", "cpu", 5, "")
        ),
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct CaptureForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    seconds: String,
    #[serde(default)]
    label: String,
}

/// Checks the form and builds the endpoint URL: a full `/debug/pprof/…`
/// URL is kept (with `seconds` added for a CPU profile that has none), a
/// base URL gets the kind's path. Only `http(s)://` is accepted.
pub(crate) fn endpoint(url: &str, kind: &str, seconds: &str) -> Result<(String, u64), PageError> {
    let url = url.trim();
    if !fetch::is_url(url) {
        return Err(PageError::BadRequest(format!(
            "{url:?} is not an http:// or https:// URL"
        )));
    }
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PageError::BadRequest(
            "the URL has spaces or control characters, or is too long".into(),
        ));
    }
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    if host.is_empty() || host.starts_with('/') {
        return Err(PageError::BadRequest(format!("{url:?} names no host")));
    }
    let seconds: u64 = match seconds.trim() {
        "" => 0,
        s => s.parse().map_err(|_| {
            PageError::BadRequest(format!("seconds must be a whole number, not {s:?}"))
        })?,
    };
    if seconds > MAX_SECONDS {
        return Err(PageError::BadRequest(format!(
            "seconds must be at most {MAX_SECONDS}"
        )));
    }
    let endpoint = capture_kinds()
        .find(|e| e.kind == Some(kind.trim()))
        .ok_or_else(|| {
            PageError::BadRequest(format!(
                "unknown kind {kind:?}; one of {}",
                capture_kinds()
                    .filter_map(|e| e.kind)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let (path, cpu) = (endpoint.name(), endpoint.kind == Some("cpu"));
    let full = if url.contains("/debug/pprof/") {
        url.to_string()
    } else {
        let base = url.split(['?', '#']).next().unwrap_or(url);
        format!("{}/debug/pprof/{path}", base.trim_end_matches('/'))
    };
    let is_cpu_endpoint = kind_from_url(&full) == Some("cpu") || cpu;
    let seconds = if is_cpu_endpoint && seconds == 0 {
        fetch::capture_seconds(&full).unwrap_or(5)
    } else {
        seconds
    };
    let full = if seconds > 0 && fetch::capture_seconds(&full).is_none() {
        let sep = if full.contains('?') { '&' } else { '?' };
        format!("{full}{sep}seconds={seconds}")
    } else {
        full
    };
    let seconds = fetch::capture_seconds(&full).unwrap_or(0);
    Ok((full, seconds))
}

/// `POST /capture`: starts a capture job and redirects to its progress page.
pub(crate) async fn start(
    State(st): State<AppState>,
    Form(f): Form<CaptureForm>,
) -> Result<Redirect, PageError> {
    let (url, seconds) = endpoint(&f.url, &f.kind, &f.seconds)?;
    let label = f.label.trim().to_string();
    if label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(PageError::BadRequest(
            "a label is at most 100 characters, without control characters".into(),
        ));
    }
    let kind = kind_from_url(&url).map_or_else(|| f.kind.trim().to_string(), String::from);
    let id = st.captures.next.fetch_add(1, Ordering::Relaxed) + 1;
    {
        let mut jobs = st
            .captures
            .jobs
            .lock()
            .map_err(|_| PageError::Internal("capture table poisoned".into()))?;
        jobs.retain(|_, j| j.finished.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
        let running = jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Running))
            .count();
        if running >= MAX_RUNNING {
            return Err(PageError::TooMany(format!(
                "{running} captures are running; wait for one to finish"
            )));
        }
        jobs.insert(
            id,
            Job {
                url: url.clone(),
                kind,
                seconds,
                started: Instant::now(),
                finished: None,
                state: JobState::Running,
            },
        );
    }
    let store = st.store.clone();
    let captures = st.captures.clone();
    let opts = FetchOptions::labeled((!label.is_empty()).then_some(label))
        .with_token(st.options.token.clone());
    tokio::task::spawn_blocking(move || {
        let state = match crate::app::capture(&store, &url, &opts) {
            Ok(s) => JobState::Done(s.meta.id),
            Err(e) => JobState::Failed(e.to_string()),
        };
        captures.finish(id, state);
    });
    Ok(Redirect::to(&format!("/capture/{id}")))
}

fn job_id(s: &str) -> Result<u64, PageError> {
    s.parse()
        .map_err(|_| PageError::BadRequest(format!("{s:?} is not a capture number")))
}

fn lookup(st: &AppState, id: &str) -> Result<(u64, Job), PageError> {
    let n = job_id(id)?;
    st.captures
        .get(n)
        .map(|j| (n, j))
        .ok_or_else(|| PageError::NotFound(format!("no capture {n}")))
}

/// `GET /capture/{job}`: the progress page; once the capture is saved, a
/// redirect to its snapshot page.
pub(crate) async fn progress(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let (n, job) = lookup(&st, &id)?;
    match &job.state {
        JobState::Done(snapshot) => {
            Ok(Redirect::to(&format!("/snapshot/{snapshot}")).into_response())
        }
        JobState::Failed(e) => Err(PageError::BadGateway(format!(
            "capturing {} failed: {e}",
            job.url
        ))),
        JobState::Running => {
            let elapsed = job.started.elapsed().as_secs_f64();
            let body = format!(
                "<h1>Capturing {} profile</h1>\n<p class=\"sub\">from <code>{}</code></p>\n\
                 <div class=\"progress\" id=\"capture-progress\" data-status=\"/capture/{n}/status\" \
                 data-seconds=\"{}\"><progress max=\"100\" value=\"{}\"></progress> \
                 <span class=\"progress-text\">{:.0} s{}</span></div>\n\
                 <p class=\"hint\">The page opens the snapshot when the capture is saved.</p>\n",
                esc(&job.kind),
                esc(&job.url),
                job.seconds,
                percent(elapsed, job.seconds),
                elapsed,
                if job.seconds > 0 {
                    format!(" of {} s", job.seconds)
                } else {
                    String::new()
                }
            );
            Ok(html::page(
                "Capturing",
                "<noscript><meta http-equiv=\"refresh\" content=\"1\"></noscript>\n",
                &body,
            )
            .into_response())
        }
    }
}

fn percent(elapsed: f64, seconds: u64) -> u32 {
    if seconds == 0 {
        return 0;
    }
    ((elapsed / seconds as f64) * 100.0).clamp(0.0, 99.0) as u32
}

/// `GET /capture/{job}/status`: `{"state": "running"|"done"|"failed",
/// "elapsed": s, "seconds": n, "url", "snapshot", "location", "error"}`.
pub(crate) async fn status(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let (_, job) = lookup(&st, &id)?;
    let elapsed = job
        .finished
        .unwrap_or_else(Instant::now)
        .duration_since(job.started)
        .as_secs_f64();
    let (state, snapshot, error) = match &job.state {
        JobState::Running => ("running", None, None),
        JobState::Done(s) => ("done", Some(s.clone()), None),
        JobState::Failed(e) => ("failed", None, Some(e.clone())),
    };
    let body = serde_json::json!({
        "state": state,
        "elapsed": (elapsed * 10.0).round() / 10.0,
        "seconds": job.seconds,
        "url": job.url,
        "kind": job.kind,
        "snapshot": snapshot,
        "location": snapshot.as_ref().map(|s| format!("/snapshot/{s}")),
        "error": error,
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |u: &str, k: &str, s: &str| endpoint(u, k, s).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:6060", "cpu", "3"),
            (
                "http://127.0.0.1:6060/debug/pprof/profile?seconds=3".into(),
                3
            )
        );
        assert_eq!(
            ok("http://h:1/", "heap", "0"),
            ("http://h:1/debug/pprof/heap".into(), 0)
        );
        assert_eq!(
            ok("http://h:1", "heap", "2"),
            ("http://h:1/debug/pprof/heap?seconds=2".into(), 2)
        );
        assert_eq!(
            ok("https://h/debug/pprof/profile", "heap", ""),
            ("https://h/debug/pprof/profile?seconds=5".into(), 5)
        );
        assert_eq!(
            ok("http://h/debug/pprof/profile?seconds=7", "cpu", "3"),
            ("http://h/debug/pprof/profile?seconds=7".into(), 7)
        );
        for (u, k, s) in [
            ("file:///etc/passwd", "cpu", "1"),
            ("javascript:alert(1)", "cpu", "1"),
            ("/etc/passwd", "heap", "0"),
            ("http://", "heap", "0"),
            ("http://h", "nope", "0"),
            ("http://h", "cpu", "-1"),
            ("http://h", "cpu", "100000"),
            ("http://h/a b", "cpu", "1"),
        ] {
            assert!(
                matches!(endpoint(u, k, s), Err(PageError::BadRequest(_))),
                "{u} {k} {s}"
            );
        }
    }
}
