//! Flamegraphs: folded stacks drawn as SVG by inferno, plain and
//! differential, with one labelling rule for agent and viewer.

use crate::error::{Error, Result};

/// What values are called on hover, for a sample type's unit: the one
/// labelling rule of agent and viewer (`count` and no unit read `samples`).
pub fn count_name(unit: &str) -> String {
    match unit {
        "" | "count" => "samples".to_string(),
        u => u.to_string(),
    }
}

/// How a flamegraph is drawn.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FlamegraphOptions {
    /// Title at the top of the picture.
    pub title: String,
    /// Unit of the values, shown on hover (e.g. `samples`, `bytes`).
    pub count_name: String,
    /// Draw an icicle graph (roots at the top) instead of a flame graph.
    pub icicle: bool,
    /// Leave out frames narrower than this percentage of the total
    /// (default: inferno's 0.01 %). Larger values keep huge profiles light.
    pub min_width_pct: Option<f64>,
    /// Embed inferno's own script (search, zoom) so the SVG works standalone
    /// (default). Off for SVGs inlined into a page whose script drives them;
    /// frames are then coloured by name hash, stable across redraws.
    pub standalone: bool,
}

impl Default for FlamegraphOptions {
    fn default() -> Self {
        FlamegraphOptions::new("Flame Graph", "samples")
    }
}

impl FlamegraphOptions {
    /// Options with the given title, values named after `unit` by
    /// [`count_name`].
    pub fn for_unit(title: impl Into<String>, unit: &str) -> Self {
        FlamegraphOptions::new(title, count_name(unit))
    }

    /// Options with the given title and count name.
    pub fn new(title: impl Into<String>, count_name: impl Into<String>) -> Self {
        FlamegraphOptions {
            title: title.into(),
            count_name: count_name.into(),
            icicle: false,
            min_width_pct: None,
            standalone: true,
        }
    }

    /// Draws an icicle graph instead.
    pub fn icicle(mut self, icicle: bool) -> Self {
        self.icicle = icicle;
        self
    }

    /// Leaves out frames narrower than `pct` % of the total.
    pub fn min_width_pct(mut self, pct: f64) -> Self {
        self.min_width_pct = Some(pct);
        self
    }

    /// Whether the SVG carries its own script (see the field).
    pub fn standalone(mut self, standalone: bool) -> Self {
        self.standalone = standalone;
        self
    }

    fn inferno(&self) -> inferno::flamegraph::Options<'static> {
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = self.title.clone();
        opts.count_name = self.count_name.clone();
        if self.icicle {
            opts.direction = inferno::flamegraph::Direction::Inverted;
        }
        if let Some(pct) = self.min_width_pct {
            opts.min_width = pct;
        }
        if !self.standalone {
            opts.no_javascript = true;
            opts.hash = true;
        }
        opts
    }
}

/// Renders folded stacks as an interactive SVG flamegraph (search, zoom).
///
/// Negative values (possible in a delta profile) cannot be drawn as widths
/// and are left out. With nothing to draw, the SVG says so instead of
/// failing, which is what inferno does on empty input.
pub fn flamegraph_svg(folded: &[(String, i64)], opts: &FlamegraphOptions) -> Result<Vec<u8>> {
    let lines: Vec<String> = folded
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(s, v)| format!("{s} {v}"))
        .collect();
    render(&lines, opts)
}

/// Renders a differential flamegraph from `(stack, base, new)` values, the
/// way inferno's differential mode does: widths from NEW, red where a stack
/// grew, blue where it shrank, both values on hover. Stacks absent from NEW
/// have no width to draw and are left out; negative values count as zero.
pub fn differential_svg(
    stacks: &[(String, i64, i64)],
    opts: &FlamegraphOptions,
) -> Result<Vec<u8>> {
    let lines: Vec<String> = stacks
        .iter()
        .filter(|(_, _, new)| *new > 0)
        .map(|(s, base, new)| format!("{s} {} {new}", (*base).max(0)))
        .collect();
    render(&lines, opts)
}

fn render(lines: &[String], opts: &FlamegraphOptions) -> Result<Vec<u8>> {
    if lines.is_empty() {
        return Ok(empty_svg(&opts.title));
    }
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(
        &mut opts.inferno(),
        lines.iter().map(String::as_str),
        &mut out,
    )
    .map_err(|e| Error::Write {
        what: "flamegraph",
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// A well-formed SVG that states the profile has no samples.
pub fn empty_svg(title: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"80\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"600\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">{}</text>\
         <text x=\"600\" y=\"60\" text-anchor=\"middle\" font-size=\"14\">No samples: the profile is empty.</text>\
         </svg>\n",
        xml_escape(title)
    )
    .into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold;
    use crate::testing::sample_profile;

    #[test]
    fn svg_of_empty_profile_says_so() {
        let svg = flamegraph_svg(&[], &FlamegraphOptions::default()).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("No samples"));
        assert!(svg.starts_with("<?xml"));
    }

    #[test]
    fn svg_has_frames() {
        let folded = fold(&sample_profile(), 0);
        let svg = flamegraph_svg(&folded, &FlamegraphOptions::new("t", "samples")).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("inner"), "{svg}");
    }

    #[test]
    fn differential_svg_colours_growth() {
        let stacks = vec![
            ("main;grew".to_string(), 1, 9),
            ("main;shrank".to_string(), 9, 1),
            ("main;gone".to_string(), 5, 0),
        ];
        let svg =
            String::from_utf8(differential_svg(&stacks, &FlamegraphOptions::default()).unwrap())
                .unwrap();
        assert!(svg.contains("grew") && svg.contains("shrank"));
        assert!(!svg.contains("gone"), "no width in NEW, nothing to draw");
        let empty = differential_svg(&stacks[2..], &FlamegraphOptions::default()).unwrap();
        assert!(String::from_utf8(empty).unwrap().contains("No samples"));
    }
}
