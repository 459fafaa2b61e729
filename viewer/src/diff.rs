//! Comparing two profiles: a ranked per-function delta table that agrees
//! with `go tool pprof -top -diff_base BASE NEW`, per-stack deltas, and a
//! differential flamegraph (inferno's differential mode).
//!
//! Semantics: values compare as absolute amounts, like Go's `-diff_base`:
//! BASE's samples are negated and merged with NEW's, and percentages are of
//! BASE's total. With `normalize`, BASE is first scaled to NEW's total, so
//! only the *shape* of the profile is compared — what to use for CPU
//! profiles of different lengths or loads. (Go's `-normalize` scales NEW to
//! BASE's total instead; the percentages and the ranking are the same, the
//! absolute deltas differ by the ratio of the totals.)

use std::collections::BTreeMap;

use profscope_profile::Profile;

use crate::error::{Error, Result};
use crate::graph::Part;
use crate::render::top::{TopOptions, TopReport, from_parts};
use profscope_profile::flamegraph::count_name;
use profscope_profile::kind::kind_of_profile;
use profscope_profile::{self as model, SampleType};

/// How two profiles are compared.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Sample type (name or index) both profiles must have; default: the
    /// default one, when both have the same types.
    pub sample_type: Option<String>,
    /// Scale BASE to NEW's total before comparing.
    pub normalize: bool,
}

impl DiffOptions {
    /// Options for a sample type and normalization.
    pub fn new(sample_type: Option<String>, normalize: bool) -> Self {
        DiffOptions {
            sample_type,
            normalize,
        }
    }
}

/// The sample types to compare, after checking the profiles are comparable.
#[derive(Debug, Clone)]
pub struct Pairing {
    /// BASE's sample type.
    pub base: SampleType,
    /// NEW's sample type (same name and unit).
    pub new: SampleType,
    /// Multiplier applied to BASE's values (1 unless normalizing).
    pub base_scale: f64,
}

fn describe_types(p: &Profile) -> String {
    let t: Vec<String> = model::sample_types(p)
        .iter()
        .map(|t| format!("{}/{}", t.name, t.unit))
        .collect();
    if t.is_empty() {
        "none".into()
    } else {
        t.join(", ")
    }
}

/// Checks that BASE and NEW can be compared and picks the sample type.
/// Different kinds or sample types are refused unless `sample_type` names
/// one both have.
pub fn pair(base: &Profile, new: &Profile, opts: &DiffOptions) -> Result<Pairing> {
    let (b, n) = match &opts.sample_type {
        Some(wanted) => {
            let n = model::select_sample_type(new, Some(wanted)).map_err(|e| Error::In {
                origin: "NEW".into(),
                inner: Box::new(e.into()),
            })?;
            // An index picks NEW's type; BASE must have the same by name.
            let b = model::select_sample_type(base, Some(&n.name)).map_err(|e| Error::In {
                origin: "BASE".into(),
                inner: Box::new(e.into()),
            })?;
            (b, n)
        }
        None => {
            let (kb, kn) = (kind_of_profile(base), kind_of_profile(new));
            if kb != kn {
                return Err(Error::Incompatible(format!(
                    "BASE is a {kb} profile but NEW is {kn}; \
                     pass --sample-index naming a type both have"
                )));
            }
            let same = model::sample_types(base)
                .iter()
                .map(|t| (&t.name, &t.unit))
                .eq(model::sample_types(new).iter().map(|t| (&t.name, &t.unit)));
            if !same {
                return Err(Error::Incompatible(format!(
                    "sample types differ (BASE: {}; NEW: {}); \
                     pass --sample-index naming a type both have",
                    describe_types(base),
                    describe_types(new)
                )));
            }
            let n = model::select_sample_type(new, None)?;
            let b = model::select_sample_type(base, Some(&n.name))?;
            (b, n)
        }
    };
    if b.unit != n.unit {
        return Err(Error::Incompatible(format!(
            "{} is in {} in BASE but in {} in NEW",
            n.name, b.unit, n.unit
        )));
    }
    let base_scale = if opts.normalize {
        let (tb, tn) = (base.sample_total(b.index), new.sample_total(n.index));
        if tb == 0 { 1.0 } else { tn as f64 / tb as f64 }
    } else {
        1.0
    };
    Ok(Pairing {
        base: b,
        new: n,
        base_scale,
    })
}

/// The ranked per-function delta table (Go's `-top -diff_base`): BASE's
/// values negated and merged with NEW's, percentages of BASE's total.
pub fn diff_top(base: &Profile, new: &Profile, pairing: &Pairing, opts: &TopOptions) -> TopReport {
    let parts = [
        Part::new(new, pairing.new.index),
        Part {
            profile: base,
            sample_index: pairing.base.index,
            scale: -pairing.base_scale,
        },
    ];
    let base_total: i64 = base
        .sample
        .iter()
        .map(|s| parts[1].value(&s.value).abs())
        .sum();
    // Go's computeTotal: the base's total, unless the base is empty.
    let total = if base_total > 0 {
        base_total
    } else {
        new.sample
            .iter()
            .map(|s| parts[0].value(&s.value).abs())
            .sum()
    };
    let mut report = from_parts(&parts, total, &pairing.new, opts);
    report.signed = true;
    report.labels = vec![
        format!("Type: {} (NEW - BASE)", pairing.new.name),
        format!(
            "BASE total {}, NEW total {}{}",
            report.format.format(base.sample_total(pairing.base.index)),
            report.format.format(new.sample_total(pairing.new.index)),
            if pairing.base_scale != 1.0 {
                format!(" (BASE scaled by {:.4} to NEW's total)", pairing.base_scale)
            } else {
                String::new()
            }
        ),
    ];
    report
}

/// One stack's values in both profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDelta {
    /// Folded stack, root first.
    pub stack: String,
    /// Value in BASE (after scaling).
    pub base: i64,
    /// Value in NEW.
    pub new: i64,
}

impl StackDelta {
    /// NEW − BASE.
    pub fn delta(&self) -> i64 {
        self.new - self.base
    }
}

/// Per-stack values of both profiles, stacks present in either, sorted by
/// stack.
pub fn stack_deltas(base: &Profile, new: &Profile, pairing: &Pairing) -> Vec<StackDelta> {
    let mut map: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (stack, v) in profscope_profile::fold::fold(base, pairing.base.index) {
        map.entry(stack).or_default().0 += (v as f64 * pairing.base_scale).round() as i64;
    }
    for (stack, v) in profscope_profile::fold::fold(new, pairing.new.index) {
        map.entry(stack).or_default().1 += v;
    }
    map.into_iter()
        .map(|(stack, (base, new))| StackDelta { stack, base, new })
        .collect()
}

/// A differential flamegraph: widths from NEW, red where a frame grew and
/// blue where it shrank (inferno's differential mode). Stacks only in BASE
/// have no width in NEW and so do not show; the table lists them.
pub fn diff_flamegraph(
    base: &Profile,
    new: &Profile,
    pairing: &Pairing,
    title: Option<&str>,
) -> Result<Vec<u8>> {
    let title = title.map_or_else(
        || format!("{}: NEW vs BASE (red grew, blue shrank)", pairing.new.name),
        str::to_string,
    );
    let stacks: Vec<(String, i64, i64)> = stack_deltas(base, new, pairing)
        .into_iter()
        .map(|d| (d.stack, d.base, d.new))
        .collect();
    let opts =
        profscope_profile::flamegraph::FlamegraphOptions::new(title, count_name(&pairing.new.unit));
    Ok(profscope_profile::flamegraph::differential_svg(
        &stacks, &opts,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_profile::read_folded::folded_to_profile;

    fn p(text: &str) -> Profile {
        folded_to_profile(text).unwrap()
    }

    #[test]
    fn deltas_include_stacks_only_in_one_side() {
        let base = p("main;a 10\nmain;gone 5\n");
        let new = p("main;a 12\nmain;fresh 7\n");
        let pairing = pair(&base, &new, &DiffOptions::default()).unwrap();
        let d = stack_deltas(&base, &new, &pairing);
        let get = |s: &str| d.iter().find(|x| x.stack == s).unwrap().delta();
        assert_eq!(get("main;a"), 2);
        assert_eq!(get("main;gone"), -5);
        assert_eq!(get("main;fresh"), 7);

        let top = diff_top(&base, &new, &pairing, &TopOptions::default());
        let rows: Vec<(&str, i64, i64)> = top
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.flat, r.cum))
            .collect();
        // Ranked by |flat delta|: the +7 growth and the -5 shrink first.
        assert_eq!(
            rows,
            [
                ("fresh", 7, 7),
                ("gone", -5, -5),
                ("a", 2, 2),
                ("main", 0, 4)
            ]
        );
        assert_eq!(top.total, 15);
        let text = top.render();
        assert!(text.contains("+7"), "{text}");
    }

    #[test]
    fn normalize_scales_base_to_new_total() {
        let base = p("main;a 10\nmain;b 10\n");
        let new = p("main;a 40\nmain;b 40\n");
        let pairing = pair(&base, &new, &DiffOptions::new(None, true)).unwrap();
        assert_eq!(pairing.base_scale, 4.0);
        let top = diff_top(&base, &new, &pairing, &TopOptions::default());
        assert!(
            top.rows.iter().all(|r| r.flat == 0 && r.cum == 0),
            "{:?}",
            top.rows
        );
    }

    #[test]
    fn different_sample_types_are_refused() {
        let base = p("a 1\n");
        let mut new = p("a 1\n");
        new.string_table[1] = "cpu".into();
        let err = pair(&base, &new, &DiffOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--sample-index"), "{err}");
    }

    #[test]
    fn differential_svg_is_drawn() {
        let base = p("main;a 10\nmain;gone 5\n");
        let new = p("main;a 12\nmain;fresh 7\n");
        let pairing = pair(&base, &new, &DiffOptions::default()).unwrap();
        let svg = String::from_utf8(diff_flamegraph(&base, &new, &pairing, None).unwrap()).unwrap();
        assert!(
            svg.contains("fresh") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        let empty = p("a 1\n");
        let mut none = p("a 1\n");
        none.sample.clear();
        let pairing = pair(&empty, &none, &DiffOptions::default()).unwrap();
        let svg = diff_flamegraph(&empty, &none, &pairing, None).unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("No samples"));
    }
}
