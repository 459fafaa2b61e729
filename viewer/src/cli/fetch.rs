//! `profscope fetch`: the library fetch with a progress bar for captures
//! that take `seconds`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use profscope::fetch::{FetchOptions, capture_duration, fetch};
use profscope::store::Store;

pub(super) fn run(store: &Store, url: &str, label: Option<String>) -> Result<()> {
    let opts = FetchOptions::labeled(label);
    let snapshot = match capture_duration(url) {
        Some(d) if !d.is_zero() => with_progress(d, || fetch(store, url, &opts))?,
        _ => fetch(store, url, &opts)?,
    };
    let m = &snapshot.meta;
    super::out(
        format!(
            "saved {} ({}, {} bytes{}) to {}\n",
            m.id,
            m.kind,
            m.size,
            m.label
                .as_deref()
                .map(|l| format!(", label {l}"))
                .unwrap_or_default(),
            snapshot.profile_path.display()
        )
        .as_bytes(),
    )
}

/// Runs `f` on this thread while another advances a bar over `capture`;
/// indicatif draws nothing when stderr is not a terminal.
fn with_progress<T>(capture: Duration, f: impl FnOnce() -> T) -> T {
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
