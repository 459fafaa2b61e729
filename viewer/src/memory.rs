//! An agent's `/debug/memory` page, read over HTTP: the report as a table,
//! and readings over time as stacked bars (one per reading, all to one
//! scale), so growth and where it went show at a glance.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fetch;

/// One line of the page.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Line {
    /// Short name (`rss`, `thread stacks`, …).
    pub name: String,
    /// Bytes.
    pub bytes: i64,
    /// What it means and what to do.
    pub meaning: String,
}

/// The parts of the page the viewer shows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct MemoryPage {
    /// Resident set size.
    pub rss_bytes: u64,
    /// The report, line by line.
    pub lines: Vec<Line>,
    /// What the agent could not read.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// The `/debug/memory` URL for `url`: kept when it names the page, else the
/// page under the agent's base URL.
pub fn page_url(url: &str) -> String {
    if url.contains("/debug/memory") {
        return url.to_string();
    }
    let base = url.split(['?', '#']).next().unwrap_or(url);
    let base = base.split("/debug/").next().unwrap_or(base);
    format!("{}/debug/memory", base.trim_end_matches('/'))
}

/// GETs and parses the page, with `token` as the bearer token when set.
pub fn read(url: &str, token: Option<&fetch::Token>) -> Result<MemoryPage> {
    let url = page_url(url);
    let opts = fetch::FetchOptions {
        timeout: Some(Duration::from_secs(30)),
        token: token.cloned(),
        ..Default::default()
    };
    let body = fetch::get(&url, &opts)?;
    serde_json::from_slice(&body).map_err(|e| Error::Fetch {
        url,
        reason: format!("not a /debug/memory page: {e}"),
    })
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The page as a table: bytes, name, meaning.
pub fn table(page: &MemoryPage) -> String {
    let mut out = String::new();
    for l in &page.lines {
        let _ = writeln!(out, "{:>12}  {:<30} {}", mib(l.bytes), l.name, l.meaning);
    }
    for m in &page.missing {
        let _ = writeln!(out, "missing: {m}");
    }
    out
}

/// The bar's parts: what they sum over and the character drawn.
const PARTS: &[(&str, &[&str], char)] = &[
    ("heap (allocated)", &["allocated"], '#'),
    (
        "allocator overhead",
        &[
            "fragmentation",
            "freed, kept by the allocator",
            "allocator metadata",
        ],
        '=',
    ),
    ("thread stacks", &["thread stacks"], 's'),
    (
        "code and files",
        &["binary code", "binary data and debug info", "other files"],
        'f',
    ),
    ("unexplained", &["unexplained"], '?'),
];

/// Readings (label, page) as stacked bars of `width` columns at most, all
/// to the scale of the largest RSS, with a legend.
pub fn bars(readings: &[(String, MemoryPage)], width: usize) -> String {
    let max = readings
        .iter()
        .map(|(_, p)| p.rss_bytes)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = String::new();
    for (label, page) in readings {
        let mut bar = String::new();
        for (_, names, glyph) in PARTS {
            let bytes: i64 = page
                .lines
                .iter()
                .filter(|l| names.contains(&l.name.as_str()))
                .map(|l| l.bytes.max(0))
                .sum();
            let cols = (bytes as f64 / max as f64 * width as f64).round() as usize;
            bar.extend(std::iter::repeat_n(*glyph, cols));
        }
        bar.truncate(width);
        let _ = writeln!(
            out,
            "{label:>8} {:>10} |{bar:<width$}|",
            mib(page.rss_bytes as i64)
        );
    }
    let legend: Vec<String> = PARTS.iter().map(|(n, _, g)| format!("{g} {n}")).collect();
    let _ = writeln!(out, "{:>20} {}", "", legend.join("   "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(rss: u64, allocated: i64, unexplained: i64) -> MemoryPage {
        MemoryPage {
            rss_bytes: rss,
            lines: vec![
                Line {
                    name: "allocated".into(),
                    bytes: allocated,
                    meaning: "m".into(),
                },
                Line {
                    name: "unexplained".into(),
                    bytes: unexplained,
                    meaning: "u".into(),
                },
            ],
            missing: vec![],
        }
    }

    #[test]
    fn urls_name_the_page() {
        assert_eq!(page_url("http://h:1"), "http://h:1/debug/memory");
        assert_eq!(
            page_url("http://h:1/debug/pprof/heap"),
            "http://h:1/debug/memory"
        );
        assert_eq!(
            page_url("http://h:1/debug/memory?debug=1"),
            "http://h:1/debug/memory?debug=1"
        );
    }

    #[test]
    fn bars_share_one_scale() {
        let text = bars(
            &[
                ("0s".into(), page(100 << 20, 50 << 20, 10 << 20)),
                ("5s".into(), page(200 << 20, 150 << 20, 10 << 20)),
            ],
            40,
        );
        let rows: Vec<&str> = text.lines().collect();
        let hashes = |r: &str| r.chars().filter(|&c| c == '#').count();
        assert_eq!(hashes(rows[0]), 10);
        assert_eq!(hashes(rows[1]), 30);
        assert!(rows[2].contains("# heap (allocated)"));
    }
}
