//! The web UI's flamegraph, drawn straight from a profile's samples: no
//! folded strings, no inferno. Stacks become sequences of name ids, sorted
//! so that siblings sit in name order; one sweep over them opens and closes
//! frames, and a frame is written only when it is at least `min_width_pct`
//! of the total wide (its subtree is narrower still, so nothing visible is
//! lost). A profile of 1M samples over 100k stacks draws in milliseconds
//! into a few thousand SVG elements.
//!
//! The SVG has the shape of inferno's (`svg#frames` of
//! `<g><title/><rect fg:x fg:w/><text/></g>`), which the page's script
//! drives; `<title>` carries the full name, `data-s` the short one shown.

use std::fmt::Write as _;

use profscope_profile::Profile;
use rustc_hash::FxHashMap as HashMap;

use crate::names::Shortener;
use crate::render::markup_escape as esc;

/// Width of the picture in SVG units; frames live in `FRAMES_WIDTH` of it.
const WIDTH: f64 = 1200.0;
const FRAMES_X: f64 = 10.0;
const FRAMES_WIDTH: f64 = 1180.0;
/// Height of a frame row, and of the title above the rows.
const ROW: f64 = 16.0;
const HEADER: f64 = 40.0;
/// Monospace font: 12 px at 0.59 of its size per character.
const CHAR: f64 = 12.0 * 0.59;

/// How the page's flamegraph is drawn.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IcicleOptions {
    /// Title above the frames.
    pub title: String,
    /// What values are called on hover (`samples`, `bytes`, …).
    pub count_name: String,
    /// Roots at the top (the default: deep async stacks start on screen).
    pub icicle: bool,
    /// Frames narrower than this percentage of the total are left out.
    pub min_width_pct: f64,
    /// Show short Rust names (full names stay in each frame's `<title>`).
    pub short_names: bool,
    /// Only the stacks through this frame path (`root;…;frame`, in the
    /// names shown), so its subtree is drawn in full detail.
    pub focus: Option<String>,
}

impl IcicleOptions {
    /// Icicle with short names, frames under 0.05 % left out.
    pub fn new(title: impl Into<String>, count_name: impl Into<String>) -> Self {
        IcicleOptions {
            title: title.into(),
            count_name: count_name.into(),
            icicle: true,
            min_width_pct: 0.05,
            short_names: true,
            focus: None,
        }
    }
}

/// What was drawn, besides the SVG.
#[derive(Debug, Clone, Default)]
pub struct Drawn {
    /// The SVG element (no XML prolog; for inlining into a page).
    pub svg: String,
    /// Frames written.
    pub frames: usize,
    /// The total the widths are shares of.
    pub total: i64,
}

/// One frame as the sweep closes it.
struct Frame {
    name: u32,
    depth: u32,
    x: i64,
    w: i64,
}

/// Draws sample type `sample_index` of `profile` (see the module docs).
pub fn icicle_svg(profile: &Profile, sample_index: usize, opts: &IcicleOptions) -> Drawn {
    // Distinct stacks by location ids first: unaggregated profiles repeat
    // them, and everything after works per distinct stack.
    let mut by_ids: HashMap<&[u64], i64> = HashMap::default();
    for s in &profile.sample {
        let Some(&v) = s.value.get(sample_index) else {
            continue;
        };
        if v > 0 {
            let e = by_ids.entry(s.location_id.as_slice()).or_default();
            *e = e.saturating_add(v);
        }
    }

    // Names: one id per distinct text (frames of different locations with
    // one name merge, as folding merges them), ranked alphabetically so a
    // sort of id sequences puts siblings in name order.
    let mut names = Names::default();
    let function_names: HashMap<u64, u32> = profile
        .function
        .iter()
        .map(|f| (f.id, names.id(profile.string_at(f.name))))
        .collect();
    let mapping_files = profscope_profile::fold::mapping_files(profile);
    let mut segments: HashMap<u64, Vec<u32>> = HashMap::default();
    for loc in &profile.location {
        let mut seg: Vec<u32> = loc
            .line
            .iter()
            .rev()
            .filter_map(|l| function_names.get(&l.function_id).copied())
            .filter(|&n| !names.text[n as usize].is_empty())
            .collect();
        if seg.is_empty() {
            let file = mapping_files.get(&loc.mapping_id).copied().unwrap_or("");
            seg.push(names.id(&profscope_profile::fold::unsymbolized_name(file)));
        }
        segments.insert(loc.id, seg);
    }
    let mut flat: Vec<u32> = Vec::new();
    let mut stacks: Vec<(u32, u32, i64)> = Vec::with_capacity(by_ids.len());
    for (ids, v) in by_ids {
        let start = flat.len() as u32;
        for id in ids.iter().rev() {
            match segments.get(id) {
                Some(seg) => flat.extend_from_slice(seg),
                None => flat.push(names.id(&format!("location#{id}"))),
            }
        }
        if flat.len() as u32 == start {
            flat.push(names.id("[no stack]"));
        }
        stacks.push((start, flat.len() as u32, v));
    }
    let rank = names.ranks();
    for n in &mut flat {
        *n = rank[*n as usize];
    }
    let text = names.sorted();

    let shortener = opts
        .short_names
        .then(|| Shortener::new(text.iter().map(String::as_str)));
    let shown = |n: u32| -> &str {
        let full = text[n as usize].as_str();
        shortener.as_ref().map_or(full, |s| s.get(full))
    };

    // Focus: keep the stacks whose frames start with the path.
    let focus: Option<Vec<&str>> = opts.focus.as_deref().map(|f| f.split(';').collect());
    if let Some(path) = &focus {
        stacks.retain(|&(a, b, _)| {
            let s = &flat[a as usize..b as usize];
            s.len() >= path.len() && s.iter().zip(path).all(|(&n, p)| shown(n) == *p)
        });
    }
    stacks.sort_unstable_by(|a, b| {
        flat[a.0 as usize..a.1 as usize].cmp(&flat[b.0 as usize..b.1 as usize])
    });
    let total: i64 = stacks.iter().fold(0i64, |t, s| t.saturating_add(s.2));
    let min_w = (total as f64 * opts.min_width_pct / 100.0).max(0.0);

    // The sweep: `open` holds the frames of the current path (name, x);
    // a frame closes when the next stack leaves it.
    let mut out: Vec<Frame> = Vec::new();
    let mut open: Vec<(u32, i64)> = Vec::new();
    let mut x = 0i64;
    let close = |open: &mut Vec<(u32, i64)>, keep: usize, x: i64, out: &mut Vec<Frame>| {
        while open.len() > keep {
            let (name, start) = open.pop().expect("open frame");
            let w = x - start;
            if w as f64 >= min_w {
                out.push(Frame {
                    name,
                    depth: open.len() as u32 + 1,
                    x: start,
                    w,
                });
            }
        }
    };
    for &(a, b, v) in &stacks {
        let s = &flat[a as usize..b as usize];
        let common = open.iter().zip(s).take_while(|((n, _), m)| n == *m).count();
        close(&mut open, common, x, &mut out);
        for &n in &s[common..] {
            open.push((n, x));
        }
        x = x.saturating_add(v);
    }
    close(&mut open, 0, x, &mut out);

    let max_depth = out.iter().map(|f| f.depth).max().unwrap_or(0);
    let drawn = out.len() + 1;
    let svg = write_svg(&out, total, max_depth, opts, &text, &shown);
    Drawn {
        svg,
        frames: drawn,
        total,
    }
}

fn write_svg<'a>(
    frames: &[Frame],
    total: i64,
    max_depth: u32,
    opts: &IcicleOptions,
    text: &[String],
    shown: &dyn Fn(u32) -> &'a str,
) -> String {
    let height = HEADER + f64::from(max_depth + 1) * ROW + 10.0;
    let y_of = |depth: u32| {
        if opts.icicle {
            HEADER + f64::from(depth) * ROW
        } else {
            HEADER + f64::from(max_depth - depth) * ROW
        }
    };
    let mut s = String::with_capacity(256 + frames.len() * 320);
    let _ = writeln!(
        s,
        "<svg version=\"1.1\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\" class=\"fg-svg\">\
         <text id=\"title\" x=\"50%\" y=\"24\" text-anchor=\"middle\">{}</text>",
        esc(&opts.title)
    );
    if total <= 0 {
        s.push_str(
            "<text x=\"50%\" y=\"60\" text-anchor=\"middle\">No samples: the profile is empty.</text></svg>",
        );
        return s;
    }
    let _ = writeln!(
        s,
        "<svg id=\"frames\" x=\"{FRAMES_X}\" width=\"{FRAMES_WIDTH}\" total_samples=\"{total}\" data-icicle=\"{}\">",
        u8::from(opts.icicle)
    );
    let mut frame = |name: &str, full: &str, depth: u32, x: i64, w: i64, fill: String| {
        let px = x as f64 * 100.0 / total as f64;
        let pw = w as f64 * 100.0 / total as f64;
        let y = y_of(depth);
        let _ = writeln!(
            s,
            "<g{}><title>{} ({} {}, {:.2}%)</title><rect x=\"{px:.4}%\" y=\"{y}\" width=\"{pw:.4}%\" \
             height=\"15\" fill=\"{fill}\" fg:x=\"{x}\" fg:w=\"{w}\"/><text x=\"{:.4}%\" y=\"{}\">{}</text></g>",
            if name == full {
                String::new()
            } else {
                format!(" data-s=\"{}\"", esc(name))
            },
            esc(full),
            thousands(w),
            esc(&opts.count_name),
            pw,
            px + 100.0 * 3.0 / WIDTH,
            y + 10.5,
            esc(&fit(name, pw)),
        );
    };
    frame("all", "all", 0, 0, total, "rgb(250,250,250)".into());
    for f in frames {
        let full = text[f.name as usize].as_str();
        frame(shown(f.name), full, f.depth, f.x, f.w, colour(full));
    }
    s.push_str("</svg>\n</svg>");
    s
}

/// The name cut to what fits in a frame `pct` % wide (as the page's
/// script fits it after a zoom).
fn fit(name: &str, pct: f64) -> String {
    let chars = (pct / 100.0 * FRAMES_WIDTH / CHAR).floor() as usize;
    if chars < 3 {
        return String::new();
    }
    if name.chars().count() < chars {
        return name.to_string();
    }
    let mut s: String = name.chars().take(chars - 2).collect();
    s.push_str("..");
    s
}

/// A warm colour from the name's hash (inferno's "hot" palette), stable
/// across redraws; the runtime's and std's frames a paler orange.
fn colour(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let v = |shift: u32| ((h >> shift) & 0xff) as f64 / 255.0;
    let (r, g, b) = (205.0 + 50.0 * v(0), 230.0 * v(8), 55.0 * v(16));
    format!("rgb({},{},{})", r as u8, g as u8, b as u8)
}

fn thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Frame names interned, then ranked alphabetically.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    text: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.text.len() as u32;
        self.ids.insert(name.to_string(), id);
        self.text.push(name.to_string());
        id
    }

    /// `rank[id]`: the id's place in name order.
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.text.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.text[a as usize].cmp(&self.text[b as usize]));
        let mut rank = vec![0u32; order.len()];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
    }

    /// The names in rank order.
    fn sorted(self) -> Vec<String> {
        let mut text = self.text;
        text.sort_unstable();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_profile::read_folded::folded_to_profile;

    fn frames(svg: &str) -> Vec<(String, String)> {
        // (title name, x;w) of every frame.
        svg.split("<g")
            .skip(1)
            .filter_map(|g| {
                let title = g.split("<title>").nth(1)?.split(" (").next()?.to_string();
                let x = g.split("fg:x=\"").nth(1)?.split('"').next()?;
                let w = g.split("fg:w=\"").nth(1)?.split('"').next()?;
                Some((title, format!("{x};{w}")))
            })
            .collect()
    }

    #[test]
    fn frames_merge_by_name_and_sit_in_name_order() {
        let p = folded_to_profile("main;b;leaf 3\nmain;a 2\nmain;b 1\nother 4\n").unwrap();
        let d = icicle_svg(&p, 0, &IcicleOptions::new("t", "samples"));
        assert_eq!(d.total, 10);
        let got = frames(&d.svg);
        for want in [
            ("all", "0;10"),
            ("main", "0;6"),
            ("a", "0;2"),
            ("b", "2;4"),
            ("leaf", "3;3"),
            ("other", "6;4"),
        ] {
            assert!(
                got.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} in {got:?}"
            );
        }
        assert_eq!(got.len(), 6, "{got:?}");
        // Icicle: the root row is the top one.
        assert!(d.svg.contains("y=\"40\" width=\"100.0000%\""), "{}", d.svg);
    }

    #[test]
    fn narrow_frames_are_left_out_and_focus_narrows() {
        let mut folded = String::from("main;wide 10000\n");
        for i in 0..50 {
            folded.push_str(&format!("main;narrow{i} 1\n"));
        }
        let p = folded_to_profile(&folded).unwrap();
        let d = icicle_svg(&p, 0, &IcicleOptions::new("t", "samples"));
        assert!(!d.svg.contains("narrow"), "{}", d.svg);
        assert_eq!(d.frames, 3);
        let mut opts = IcicleOptions::new("t", "samples");
        opts.focus = Some("main;narrow7".into());
        let d = icicle_svg(&p, 0, &opts);
        assert_eq!(d.total, 1);
        let got = frames(&d.svg);
        assert!(got.contains(&("narrow7".into(), "0;1".into())), "{got:?}");
    }

    #[test]
    fn odd_profiles_draw_without_panicking() {
        let mut p = folded_to_profile("a;b 3\nc 2\n").unwrap();
        // A sample on a location the profile does not have, one with no
        // frames, huge and negative values.
        p.sample.push(profscope_profile::Sample {
            location_id: vec![999],
            value: vec![i64::MAX / 4],
            label: vec![],
        });
        p.sample.push(profscope_profile::Sample {
            location_id: vec![],
            value: vec![i64::MAX / 4],
            label: vec![],
        });
        p.sample.push(profscope_profile::Sample {
            location_id: vec![1],
            value: vec![-5],
            label: vec![],
        });
        let d = icicle_svg(&p, 0, &IcicleOptions::new("t", "samples"));
        assert_eq!(d.total, i64::MAX / 4 * 2 + 5);
        assert!(
            d.svg.contains("location#999") && d.svg.contains("[no stack]"),
            "{}",
            d.svg
        );
        // Totals past i64 saturate instead of overflowing.
        p.sample[0].value = vec![i64::MAX];
        assert_eq!(
            icicle_svg(&p, 0, &IcicleOptions::new("t", "samples")).total,
            i64::MAX
        );
        // A sample index past the values draws nothing.
        assert!(
            icicle_svg(&p, 7, &IcicleOptions::new("t", "samples"))
                .svg
                .contains("No samples")
        );
    }

    #[test]
    fn short_names_shown_full_names_in_titles() {
        let p = folded_to_profile(
            "std::rt::lang_start;app::server::handle<T>;<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop 5\n",
        )
        .unwrap();
        let d = icicle_svg(&p, 0, &IcicleOptions::new("t", "samples"));
        assert!(
            d.svg.contains("data-s=\"&lt;Vec as Drop&gt;::drop\""),
            "{}",
            d.svg
        );
        assert!(
            d.svg.contains(
                "<title>&lt;alloc::vec::Vec&lt;T&gt; as core::ops::drop::Drop&gt;::drop (5 samples"
            ),
            "{}",
            d.svg
        );
        let mut flame = IcicleOptions::new("t", "samples");
        flame.icicle = false;
        flame.short_names = false;
        let d = icicle_svg(&p, 0, &flame);
        assert!(!d.svg.contains("data-s="));
        // Flame: the root row is the bottom one (depth 3 → 3 rows above).
        assert!(d.svg.contains("y=\"88\" width=\"100.0000%\""), "{}", d.svg);
        let mut empty = p.clone();
        empty.sample.clear();
        assert!(icicle_svg(&empty, 0, &flame).svg.contains("No samples"));
    }
}
