//! `profscope fetch`: the library fetch with a progress bar for captures
//! that take `seconds`.

use anyhow::Result;

use profscope::app::capture;
use profscope::fetch::{FetchOptions, Token, capture_duration};

use super::progress::with_progress;
use profscope::store::Store;

pub(super) fn run(
    store: &Store,
    url: &str,
    label: Option<String>,
    token: Option<Token>,
) -> Result<()> {
    let opts = FetchOptions::labeled(label).with_token(token);
    let snapshot = match capture_duration(url) {
        Some(d) if !d.is_zero() => with_progress(d, || capture(store, url, &opts))?,
        _ => capture(store, url, &opts)?,
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
