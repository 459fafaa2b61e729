//! `profscope incidents URL` (list an agent's flight-recorder incidents and
//! store their profiles) and `profscope incident [URL|LABEL] [ID]` (one
//! incident against its baseline: heap growth and CPU diff, flamegraphs
//! written).

use std::path::{Path, PathBuf};

use anyhow::Result;

use profscope::app::{self, Input};
use profscope::fetch::{FetchOptions, Token, is_url};
use profscope::incidents::{self, Fetched};
use profscope::store::Store;

/// `profscope incidents URL`: the table, after fetching what is new.
pub(super) fn list(store: &Store, url: &str, fetch: bool, token: Option<Token>) -> Result<()> {
    let base = incidents::base_url(url)?;
    let opts = FetchOptions::default().with_token(token);
    let list = incidents::list(&base, &opts)?;
    let mut new = 0;
    if fetch {
        for incident in &list {
            new += incidents::fetch_into(store, &base, incident, &opts)?
                .iter()
                .filter(|f| f.new)
                .count();
        }
    }
    let stored = incidents::stored(store)?;
    super::out(incidents::table(&list, &stored).as_bytes())?;
    if fetch && !list.is_empty() {
        eprintln!(
            "stored {new} new profile{} in {} (labels incident-<id>-heap, -heap-before, -cpu, …; \
             `profscope incident` shows the newest)",
            if new == 1 { "" } else { "s" },
            store.dir().display()
        );
    }
    Ok(())
}

/// What `profscope incident` reads and how it shows it.
pub(super) struct Show<'a> {
    pub(super) target: Option<&'a str>,
    pub(super) id: Option<&'a str>,
    pub(super) view: Input,
    pub(super) rows: usize,
    pub(super) svg_dir: Option<PathBuf>,
}

/// `profscope incident`: fetch (from a URL) or find (in the store) one
/// incident and print it against its baseline.
pub(super) fn show(store: &Store, show: Show<'_>, token: Option<Token>) -> Result<()> {
    let incident = match show.target {
        Some(url) if is_url(url) => {
            let base = incidents::base_url(url)?;
            let opts = FetchOptions::default().with_token(token);
            let list = incidents::list(&base, &opts)?;
            let incident = incidents::find(&list, show.id, &base)?;
            let fetched = incidents::fetch_into(store, &base, incident, &opts)?;
            note_missing(&fetched);
            incidents::stored_from(incident, &fetched)
        }
        reference => {
            if show.id.is_some() {
                anyhow::bail!(
                    "an ID goes after the agent's URL (profscope incident URL ID); \
                     a stored incident is named by its id or label alone"
                );
            }
            incidents::resolve_stored(store, reference)?
        }
    };
    let report = incidents::report(store, &incident, &show.view, show.rows)?;
    super::out(report.text.as_bytes())?;
    let dir = show
        .svg_dir
        .unwrap_or_else(|| store.dir().join("incidents"));
    let mut wrote = String::new();
    for (svg, name, what) in [
        (&report.heap_svg, "heap-diff", "heap growth"),
        (&report.cpu_svg, "cpu-diff", "CPU before → after"),
    ] {
        if let Some(svg) = svg {
            let path = svg_path(&dir, &incident.id, name);
            app::write_file(&path, svg)?;
            wrote.push_str(&format!(
                "wrote {} ({what}: differential flamegraph, red grew)\n",
                path.display()
            ));
        }
    }
    if !wrote.is_empty() {
        super::out(format!("\n{wrote}").as_bytes())?;
    }
    Ok(())
}

fn svg_path(dir: &Path, id: &str, name: &str) -> PathBuf {
    dir.join(format!("{id}-{name}.svg"))
}

fn note_missing(fetched: &[Fetched]) {
    for f in fetched {
        if let Some(why) = &f.missing {
            eprintln!("note: no {} profile: {why}", f.part.suffix());
        }
    }
}
