//! The diff page's flamegraph for inlining: inferno's differential SVG
//! (layout, colours, `fg:x`/`fg:w` sample offsets on every frame) without
//! its own script, XML prolog or `onload` hook. The page's `serve.js` does
//! search, zoom and the icicle flip on this DOM, as on the snapshot page's
//! own icicle ([`crate::render::icicle`]).

use profscope_profile::Profile;

use crate::diff::{self, Pairing};
use crate::error::{Error, Result};
use profscope_profile::flamegraph::count_name;

/// Frames narrower than this percentage of the total are left out of the
/// pages (inferno's `min_width`; its default is 0.01). At the page's 1180
/// SVG units of width this is about a pixel, so nothing visible is lost at
/// full view, and a 100k-stack profile stays at a few thousand elements.
pub(crate) const MIN_WIDTH_PCT: f64 = 0.05;

fn options(title: &str, count_name: String) -> profscope_profile::flamegraph::FlamegraphOptions {
    profscope_profile::flamegraph::FlamegraphOptions::new(title, count_name)
        .min_width_pct(MIN_WIDTH_PCT)
        .standalone(false)
}

/// The differential flamegraph of BASE → NEW: widths from NEW, red grew,
/// blue shrank (what `profscope diff -o` draws).
pub(crate) fn diff_svg(base: &Profile, new: &Profile, pairing: &Pairing) -> Result<String> {
    let title = format!("{}: NEW vs BASE (red grew, blue shrank)", pairing.new.name);
    let stacks: Vec<(String, i64, i64)> = diff::stack_deltas(base, new, pairing)
        .into_iter()
        .map(|d| (d.stack, d.base, d.new))
        .collect();
    let opts = options(&title, count_name(&pairing.new.unit));
    inline_svg(profscope_profile::flamegraph::differential_svg(
        &stacks, &opts,
    )?)
}

fn inline_svg(svg: Vec<u8>) -> Result<String> {
    let svg = String::from_utf8(svg).map_err(|e| Error::Render(format!("flamegraph: {e}")))?;
    Ok(inline(&svg))
}

/// Turns a standalone SVG document into an element for an HTML page: drops
/// the XML declaration, doctype, comments, `<script>` and `onload`.
pub(crate) fn inline(svg: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    let mut s = svg[start..].replacen(" onload=\"init(evt)\"", "", 1);
    if let (Some(a), Some(b)) = (s.find("<script"), s.find("</script>")) {
        if a < b {
            s.replace_range(a..b + "</script>".len(), "");
        }
    }
    while let Some(a) = s.find("<!--") {
        let Some(len) = s[a..].find("-->") else {
            break;
        };
        s.replace_range(a..a + len + 3, "");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::DiffOptions;
    use profscope_profile::read_folded::folded_to_profile;

    #[test]
    fn inline_svg_has_no_script() {
        let base = folded_to_profile("main;work 5\nmain;idle 3\n").unwrap();
        let new = folded_to_profile("main;work 9\nmain;idle 1\n").unwrap();
        let pairing = diff::pair(&base, &new, &DiffOptions::new(None, false)).unwrap();
        let svg = diff_svg(&base, &new, &pairing).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(!svg.contains("<script") && !svg.contains("onload") && !svg.contains("<!--"));
        assert!(svg.contains("id=\"frames\"") && svg.contains("fg:w="));
        assert!(svg.contains("<title>work ("));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
