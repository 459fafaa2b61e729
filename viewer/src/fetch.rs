//! Capturing from a live agent (or any Go-style pprof endpoint) into the
//! snapshot store. The command line draws a progress bar around this for
//! the capture's `seconds`; the demo and the web UI call it directly.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::load::{self, Limits};
use crate::store::{NewSnapshot, Snapshot, Store};

/// How a fetch is made.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Label to store with the snapshot.
    pub label: Option<String>,
    /// Whole-request timeout; default: the URL's `seconds` plus a minute.
    pub timeout: Option<Duration>,
    /// Size limits on the response.
    pub limits: Limits,
}

impl FetchOptions {
    /// Options with a label and default timeout and limits.
    pub fn labeled(label: Option<String>) -> Self {
        FetchOptions {
            label,
            ..FetchOptions::default()
        }
    }
}

/// GETs `url`, checks that the body is a profile, and saves it in `store`
/// with the URL as its source and the kind its path names.
pub fn fetch(store: &Store, url: &str, opts: &FetchOptions) -> Result<Snapshot> {
    if !load::is_url(url) {
        return Err(Error::Fetch {
            url: url.to_string(),
            reason: "not an http:// or https:// URL".to_string(),
        });
    }
    let bytes = load::fetch_url(url, &opts.limits, opts.timeout)?;
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

/// How long the capture behind `url` takes, from its `seconds` parameter
/// (CPU profiles, delta heap profiles).
pub fn capture_duration(url: &str) -> Option<Duration> {
    load::capture_seconds(url).map(Duration::from_secs)
}

/// Runs `f` on this thread while another advances a progress bar over
/// `capture`; indicatif draws nothing when stderr is not a terminal.
#[cfg(feature = "cli")]
pub fn with_progress<T>(capture: Duration, f: impl FnOnce() -> T) -> T {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let bar = ProgressBar::new(capture.as_secs());
    if let Ok(style) = ProgressStyle::with_template("capturing {bar:30} {pos}/{len}s {msg}") {
        bar.set_style(style);
    }
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(start.elapsed().as_secs().min(capture.as_secs()));
                if start.elapsed() >= capture {
                    bar.set_message("waiting for the agent");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let result = f();
        done.store(true, Ordering::Relaxed);
        bar.finish_and_clear();
        result
    })
}

/// Without the `cli` feature there is no progress bar: runs `f`.
#[cfg(not(feature = "cli"))]
pub fn with_progress<T>(_capture: Duration, f: impl FnOnce() -> T) -> T {
    f()
}
