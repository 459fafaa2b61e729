//! A progress bar over a capture that takes known seconds.

use std::time::Duration;

/// Runs `f` on this thread while another advances a progress bar over
/// `capture`; indicatif draws nothing when stderr is not a terminal.
pub(crate) fn with_progress<T>(capture: Duration, f: impl FnOnce() -> T) -> T {
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
