//! One place that turns a profile into a response body: gzipped pprof
//! protobuf, folded stacks, or an SVG flamegraph rendered by inferno.
//!
//! The viewer uses the same functions, so a flamegraph drawn from a live
//! agent and one drawn from a saved snapshot come out of the same code.

use rustc_hash::FxHashMap as HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use pprof::protos::Profile;
use prost::Message;

use crate::Error;

/// The body formats every profile endpoint can answer with (`?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Gzipped pprof protobuf, what `go tool pprof`, Pyroscope and Parca read.
    #[default]
    Pprof,
    /// Folded stacks: one `root;…;leaf count` line per distinct stack.
    Folded,
    /// An interactive SVG flamegraph.
    Svg,
}

impl Format {
    /// The accepted spellings, for error messages.
    pub const ACCEPTED: &'static str = "pprof, folded or svg";

    /// Parses the `format` query parameter.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pprof" | "proto" => Some(Format::Pprof),
            "folded" | "collapsed" => Some(Format::Folded),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pprof => "application/octet-stream",
            Format::Folded => "text/plain; charset=utf-8",
            Format::Svg => "image/svg+xml",
        }
    }
}

/// Serializes `profile` as gzipped protobuf, the form Go serves.
pub fn pprof_gz(profile: &Profile) -> Result<Vec<u8>, Error> {
    let raw = profile.encode_to_vec();
    // Go's runtime/pprof writes with gzip.BestSpeed: profiles are served
    // often and read once.
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    gz.write_all(&raw)
        .and_then(|()| gz.finish())
        .map_err(|e| Error::Internal(format!("gzip: {e}")))
}

/// Resolves a string table index; out-of-range ids read as "".
pub fn string(profile: &Profile, id: i64) -> &str {
    usize::try_from(id)
        .ok()
        .and_then(|i| profile.string_table.get(i))
        .map_or("", String::as_str)
}

/// The index of the profile's default sample type: `default_sample_type` when
/// set and present, else the last type (the rule `go tool pprof` follows).
pub fn default_sample_index(profile: &Profile) -> usize {
    if profile.default_sample_type != 0 {
        let wanted = string(profile, profile.default_sample_type);
        if let Some(i) = profile
            .sample_type
            .iter()
            .position(|t| string(profile, t.ty) == wanted)
        {
            return i;
        }
    }
    profile.sample_type.len().saturating_sub(1)
}

/// Each location's frames as one folded segment: names outermost (caller)
/// first, inlined frames expanded, joined by `;` and already sanitized; a
/// location without lines is named by its address.
fn location_segments(profile: &Profile) -> HashMap<u64, String> {
    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| (f.id, string(profile, f.name)))
        .collect();
    let mappings = mapping_files(profile);
    profile
        .location
        .iter()
        .map(|loc| {
            let mut segment = String::new();
            for line in loc.line.iter().rev() {
                let name = functions.get(&line.function_id).copied().unwrap_or("");
                if name.is_empty() {
                    continue;
                }
                if !segment.is_empty() {
                    segment.push(';');
                }
                push_sanitized(&mut segment, name);
            }
            if segment.is_empty() {
                let file = mappings.get(&loc.mapping_id).copied().unwrap_or("");
                push_sanitized(&mut segment, &unsymbolized_name(file));
            }
            (loc.id, segment)
        })
        .collect()
}

/// Each mapping's file name by mapping id.
pub fn mapping_files(profile: &Profile) -> HashMap<u64, &str> {
    profile
        .mapping
        .iter()
        .map(|m| (m.id, string(profile, m.filename)))
        .collect()
}

/// The name `go tool pprof` gives a location without symbols: the base name
/// of its mapping's file in brackets (`[libc.so.6]`), or `<unknown>`.
pub fn unsymbolized_name(mapping_file: &str) -> String {
    if mapping_file.is_empty() {
        return "<unknown>".to_string();
    }
    let base = mapping_file.rsplit('/').next().unwrap_or(mapping_file);
    format!("[{base}]")
}

/// `;` separates frames and a trailing space precedes the count: neither
/// may appear inside a frame name.
fn push_sanitized(out: &mut String, name: &str) {
    if !name.contains([';', '\n', '\r']) {
        out.push_str(name);
        return;
    }
    out.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

/// Folds the samples of `profile` for sample type `sample_index` into
/// `(stack, value)` pairs, stack frames root first joined by `;`, identical
/// stacks merged, zero values dropped, sorted by stack. The values add up to
/// the profile's total for that sample type.
pub fn fold(profile: &Profile, sample_index: usize) -> Vec<(String, i64)> {
    // Samples repeat stacks (labels, unaggregated producers): sum by
    // location ids first, and build each distinct stack's text once.
    let mut by_ids: HashMap<&[u64], i64> = HashMap::default();
    for sample in &profile.sample {
        let Some(&value) = sample.value.get(sample_index) else {
            continue;
        };
        if value != 0 {
            let v = by_ids.entry(sample.location_id.as_slice()).or_default();
            *v = v.saturating_add(value);
        }
    }
    let segments = location_segments(profile);
    let mut stacks: HashMap<String, i64> = HashMap::default();
    let mut stack = String::new();
    for (ids, value) in by_ids {
        stack.clear();
        for id in ids.iter().rev() {
            if !stack.is_empty() {
                stack.push(';');
            }
            match segments.get(id) {
                Some(segment) => stack.push_str(segment),
                None => {
                    use std::fmt::Write;
                    let _ = write!(stack, "location#{id}");
                }
            }
        }
        if stack.is_empty() {
            stack.push_str("[no stack]");
        }
        // Different locations can name the same frames: merge by text.
        match stacks.get_mut(stack.as_str()) {
            Some(v) => *v = v.saturating_add(value),
            None => {
                stacks.insert(stack.clone(), value);
            }
        }
    }
    let mut folded: Vec<(String, i64)> = stacks.into_iter().filter(|(_, v)| *v != 0).collect();
    folded.sort_unstable();
    folded
}

/// Folded stacks as text, one `stack count` line each.
pub fn folded_text(folded: &[(String, i64)]) -> String {
    let mut out = String::with_capacity(folded.iter().map(|(s, _)| s.len() + 12).sum());
    for (stack, value) in folded {
        out.push_str(stack);
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
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
pub fn flamegraph_svg(
    folded: &[(String, i64)],
    opts: &FlamegraphOptions,
) -> Result<Vec<u8>, Error> {
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
) -> Result<Vec<u8>, Error> {
    let lines: Vec<String> = stacks
        .iter()
        .filter(|(_, _, new)| *new > 0)
        .map(|(s, base, new)| format!("{s} {} {new}", (*base).max(0)))
        .collect();
    render(&lines, opts)
}

fn render(lines: &[String], opts: &FlamegraphOptions) -> Result<Vec<u8>, Error> {
    if lines.is_empty() {
        return Ok(empty_svg(&opts.title));
    }
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(
        &mut opts.inferno(),
        lines.iter().map(String::as_str),
        &mut out,
    )
    .map_err(|e| Error::Internal(format!("flamegraph: {e}")))?;
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
    use pprof::protos::{Function, Line, Location, Sample, ValueType};

    /// main → work (two inlined frames in one location) and main alone.
    fn sample_profile() -> Profile {
        let strings = ["", "samples", "count", "main", "work", "inner"];
        Profile {
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            sample_type: vec![ValueType { ty: 1, unit: 2 }],
            function: (1..=3)
                .map(|id| Function {
                    id,
                    name: id as i64 + 2,
                    ..Default::default()
                })
                .collect(),
            location: vec![
                Location {
                    id: 1,
                    line: vec![Line {
                        function_id: 1,
                        line: 1,
                    }],
                    ..Default::default()
                },
                Location {
                    id: 2,
                    // innermost first: inner was inlined into work
                    line: vec![
                        Line {
                            function_id: 3,
                            line: 9,
                        },
                        Line {
                            function_id: 2,
                            line: 5,
                        },
                    ],
                    ..Default::default()
                },
            ],
            sample: vec![
                Sample {
                    location_id: vec![2, 1],
                    value: vec![3],
                    label: vec![],
                },
                Sample {
                    location_id: vec![2, 1],
                    value: vec![2],
                    label: vec![],
                },
                Sample {
                    location_id: vec![1],
                    value: vec![4],
                    label: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn fold_merges_stacks_root_first_with_inlined_frames() {
        let folded = fold(&sample_profile(), 0);
        assert_eq!(
            folded,
            vec![("main".to_string(), 4), ("main;work;inner".to_string(), 5)]
        );
        assert_eq!(folded_text(&folded), "main 4\nmain;work;inner 5\n");
    }

    #[test]
    fn unsymbolized_locations_are_named_like_go() {
        let mut p = sample_profile();
        p.string_table.push("/usr/lib/libc.so.6".into());
        p.mapping.push(pprof::protos::Mapping {
            id: 1,
            filename: p.string_table.len() as i64 - 1,
            ..Default::default()
        });
        p.location.push(Location {
            id: 3,
            mapping_id: 1,
            address: 0x10,
            ..Default::default()
        });
        p.location.push(Location {
            id: 4,
            address: 0x20,
            ..Default::default()
        });
        p.sample.push(Sample {
            location_id: vec![3, 1],
            value: vec![1],
            label: vec![],
        });
        p.sample.push(Sample {
            location_id: vec![4],
            value: vec![1],
            label: vec![],
        });
        let folded = fold(&p, 0);
        assert!(
            folded.contains(&("main;[libc.so.6]".to_string(), 1)),
            "{folded:?}"
        );
        assert!(folded.contains(&("<unknown>".to_string(), 1)), "{folded:?}");
    }

    #[test]
    fn default_sample_index_is_last_unless_named() {
        let mut p = sample_profile();
        p.sample_type.push(ValueType { ty: 4, unit: 2 });
        assert_eq!(default_sample_index(&p), 1);
        p.default_sample_type = 1;
        assert_eq!(default_sample_index(&p), 0);
    }

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

    #[test]
    fn gz_round_trips() {
        use std::io::Read;
        let gz = pprof_gz(&sample_profile()).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(Profile::decode(&raw[..]).unwrap(), sample_profile());
    }
}
