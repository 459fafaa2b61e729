//! Helpers over the decoded pprof model: choosing a sample type (by name or
//! index), its unit, and focus/ignore filtering with `go tool pprof`'s
//! semantics.

use pprof::protos::Profile;
use regex::Regex;

use crate::error::{Error, Result};
use profscope_agent::encode::{self, default_sample_index, string};

/// A sample type's name and unit, e.g. `inuse_space` / `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleType {
    /// Index into each sample's values.
    pub index: usize,
    /// Its name (`cpu`, `inuse_space`, `samples`, …).
    pub name: String,
    /// Its unit (`nanoseconds`, `bytes`, `count`, …).
    pub unit: String,
}

/// All sample types of `p`, in order.
pub fn sample_types(p: &Profile) -> Vec<SampleType> {
    p.sample_type
        .iter()
        .enumerate()
        .map(|(index, t)| SampleType {
            index,
            name: string(p, t.ty).to_string(),
            unit: string(p, t.unit).to_string(),
        })
        .collect()
}

/// Picks a sample type: `wanted` as a name (exact) or an index; by default
/// the profile's `default_sample_type`, else the last one — Go's rule.
pub fn select_sample_type(p: &Profile, wanted: Option<&str>) -> Result<SampleType> {
    let types = sample_types(p);
    let available = || {
        if types.is_empty() {
            "none".to_string()
        } else {
            types
                .iter()
                .map(|t| format!("{}={}/{}", t.index, t.name, t.unit))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let found = match wanted {
        None => types.get(default_sample_index(p)).cloned(),
        Some(w) => types
            .iter()
            .find(|t| t.name == w)
            .or_else(|| w.parse::<usize>().ok().and_then(|i| types.get(i)))
            .cloned(),
    };
    match (found, wanted) {
        (Some(t), _) => Ok(t),
        // A profile without sample types has no samples either (validated);
        // treat it as an empty `samples/count` profile.
        (None, None) if types.is_empty() => Ok(SampleType {
            index: 0,
            name: "samples".into(),
            unit: "count".into(),
        }),
        (None, w) => Err(Error::SampleType {
            wanted: w.unwrap_or("default").to_string(),
            available: available(),
        }),
    }
}

/// Sum of the sample values of sample type `index`.
pub fn total(p: &Profile, index: usize) -> i64 {
    p.sample
        .iter()
        .filter_map(|s| s.value.get(index))
        .fold(0i64, |a, &v| a.saturating_add(v))
}

/// Focus/ignore filters on frame names (Go's `-focus` / `-ignore`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    focus: Option<Regex>,
    ignore: Option<Regex>,
}

impl Filter {
    /// Compiles the two optional regexes.
    pub fn new(focus: Option<&str>, ignore: Option<&str>) -> Result<Filter> {
        let compile = |flag: &'static str, re: Option<&str>| {
            re.map(|r| Regex::new(r).map_err(|error| Error::Regex { flag, error }))
                .transpose()
        };
        Ok(Filter {
            focus: compile("focus", focus)?,
            ignore: compile("ignore", ignore)?,
        })
    }

    /// True when the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        self.focus.is_none() && self.ignore.is_none()
    }

    /// Descriptions for a report header (`focus=RE`, `ignore=RE`).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.focus {
            out.push(format!("focus={}", f.as_str()));
        }
        if let Some(i) = &self.ignore {
            out.push(format!("ignore={}", i.as_str()));
        }
        out
    }

    /// Keeps the samples with a frame matching `focus` (if set) and none
    /// matching `ignore` (if set). A frame matches when the regex matches
    /// its function name or file name, or the location's mapping file —
    /// the fields Go matches.
    pub fn apply(&self, p: &mut Profile) {
        if self.is_empty() {
            return;
        }
        use std::collections::HashMap;
        let functions: HashMap<u64, (&str, &str)> = p
            .function
            .iter()
            .map(|f| (f.id, (string(p, f.name), string(p, f.filename))))
            .collect();
        let mappings = encode::mapping_files(p);
        let matches = |re: &Regex, loc: &pprof::protos::Location| {
            loc.line.iter().any(|l| {
                functions
                    .get(&l.function_id)
                    .is_some_and(|(name, file)| re.is_match(name) || re.is_match(file))
            }) || mappings
                .get(&loc.mapping_id)
                .is_some_and(|file| !file.is_empty() && re.is_match(file))
        };
        // Per location: Some(false) = ignored, Some(true) = focused.
        let verdicts: HashMap<u64, bool> = p
            .location
            .iter()
            .filter_map(|loc| {
                if self.ignore.as_ref().is_some_and(|re| matches(re, loc)) {
                    Some((loc.id, false))
                } else if self.focus.as_ref().is_some_and(|re| matches(re, loc)) {
                    Some((loc.id, true))
                } else {
                    None
                }
            })
            .collect();
        let need_focus = self.focus.is_some();
        p.sample.retain(|s| {
            let mut focused = !need_focus;
            for id in &s.location_id {
                match verdicts.get(id) {
                    Some(false) => return false,
                    Some(true) => focused = true,
                    None => {}
                }
            }
            focused
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::folded_to_profile;

    #[test]
    fn selects_by_name_index_and_default() {
        let p = folded_to_profile("a 1\n").unwrap();
        assert_eq!(select_sample_type(&p, None).unwrap().name, "samples");
        assert_eq!(select_sample_type(&p, Some("0")).unwrap().index, 0);
        let err = select_sample_type(&p, Some("cpu")).unwrap_err().to_string();
        assert!(err.contains("0=samples/count"), "{err}");
    }

    #[test]
    fn focus_and_ignore_follow_go() {
        let text = "main;work;sha 5\nmain;idle 3\nmain;work;gc 2\n";
        let mut p = folded_to_profile(text).unwrap();
        Filter::new(Some("^work$"), None).unwrap().apply(&mut p);
        assert_eq!(total(&p, 0), 7);
        Filter::new(None, Some("gc")).unwrap().apply(&mut p);
        assert_eq!(total(&p, 0), 5);
        assert!(Filter::new(Some("("), None).is_err());
    }
}
