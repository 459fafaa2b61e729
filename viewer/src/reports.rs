//! The reports `go tool pprof` users type at its prompt, over one profile
//! and sample type: `peek` (callers and callees with their shares), `list`
//! (per-line cost, with the source when the file is on disk), `traces`
//! (every sample's stack), `tags` (label keys and values with their shares)
//! and a table broken down by one label's values. With `top`
//! ([`render::top`](crate::render::top)) these are the [`app::Report`](crate::app::Report)s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use profscope_profile::{Profile, SampleType};
use regex::Regex;

use crate::error::{Error, Result};
use crate::units::{ValueFormat, percentage};

/// Each location's frames, innermost first: (function name, file, line).
fn frames(p: &Profile) -> HashMap<u64, Vec<(String, String, i64)>> {
    let functions: HashMap<u64, (&str, &str)> = p
        .function
        .iter()
        .map(|f| (f.id, (p.string_at(f.name), p.string_at(f.filename))))
        .collect();
    let mappings = profscope_profile::fold::mapping_files(p);
    p.location
        .iter()
        .map(|l| {
            let lines = if l.line.is_empty() {
                let file = mappings.get(&l.mapping_id).copied().unwrap_or("");
                vec![(
                    profscope_profile::fold::unsymbolized_name(file),
                    String::new(),
                    0,
                )]
            } else {
                l.line
                    .iter()
                    .map(|line| {
                        let (name, file) = functions
                            .get(&line.function_id)
                            .copied()
                            .unwrap_or(("", ""));
                        (name.to_string(), file.to_string(), line.line)
                    })
                    .collect()
            };
            (l.id, lines)
        })
        .collect()
}

/// A sample's frames, leaf first.
fn stack<'a>(
    locations: &'a HashMap<u64, Vec<(String, String, i64)>>,
    ids: &[u64],
) -> Vec<&'a (String, String, i64)> {
    ids.iter()
        .filter_map(|id| locations.get(id))
        .flat_map(|lines| lines.iter())
        .collect()
}

/// Formats values of `unit` like `go tool pprof` (each value scaled on its own).
struct Format<'a>(&'a str);

impl<'a> Format<'a> {
    fn for_unit(unit: &'a str) -> Self {
        Format(unit)
    }

    fn format(&self, v: i64) -> String {
        ValueFormat::auto(self.0, v).format(v)
    }
}

fn compile(re: &str) -> Result<Regex> {
    Regex::new(re).map_err(|error| {
        profscope_profile::Error::Regex {
            flag: "regex",
            error,
        }
        .into()
    })
}

/// One function of a `peek`: its values and the value through each edge,
/// most first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeekEntry {
    /// Function name.
    pub name: String,
    /// Value with the function as the leaf.
    pub flat: i64,
    /// Value with the function anywhere on the stack (once per sample).
    pub cum: i64,
    /// Callers and the value through each.
    pub callers: Vec<(String, i64)>,
    /// Callees and the value through each.
    pub callees: Vec<(String, i64)>,
}

/// The functions matching `regex` with their callers and callees (what
/// [`peek`] prints), and the profile's total.
pub fn peek_entries(p: &Profile, st: &SampleType, regex: &str) -> Result<(i64, Vec<PeekEntry>)> {
    let re = compile(regex)?;
    let locations = frames(p);
    #[derive(Default)]
    struct Entry {
        flat: i64,
        cum: i64,
        callers: BTreeMap<String, i64>,
        callees: BTreeMap<String, i64>,
    }
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for s in &p.sample {
        let v = s.value.get(st.index).copied().unwrap_or(0);
        let frames = stack(&locations, &s.location_id);
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            if !re.is_match(&f.0) {
                continue;
            }
            let e = entries.entry(f.0.clone()).or_default();
            if i == 0 {
                e.flat += v;
            }
            if seen.insert(&f.0) {
                e.cum += v;
                // Edges counted once per sample, at the outermost frame of
                // the function (recursion).
            }
            if let Some(caller) = frames.get(i + 1) {
                *e.callers.entry(caller.0.clone()).or_default() += v;
            }
            if i > 0 {
                *e.callees.entry(frames[i - 1].0.clone()).or_default() += v;
            }
        }
    }
    if entries.is_empty() {
        return Err(Error::Incompatible(format!(
            "no function matches {regex:?}"
        )));
    }
    let ranked = |edges: BTreeMap<String, i64>| {
        let mut edges: Vec<(String, i64)> = edges.into_iter().collect();
        edges.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        edges
    };
    let entries = entries
        .into_iter()
        .map(|(name, e)| PeekEntry {
            name,
            flat: e.flat,
            cum: e.cum,
            callers: ranked(e.callers),
            callees: ranked(e.callees),
        })
        .collect();
    Ok((p.sample_total(st.index), entries))
}

/// `peek REGEX`: for each function matching, its callers and callees, each
/// with the value that passed through the edge and its share.
pub fn peek(p: &Profile, st: &SampleType, regex: &str) -> Result<String> {
    let fmt = Format::for_unit(&st.unit);
    let (all, entries) = peek_entries(p, st, regex)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Showing nodes matching {regex:?}, of {} total",
        fmt.format(all)
    );
    let _ = writeln!(
        out,
        "{:>12} {:>8} {:>12} {:>8}   calls | function",
        "flat", "flat%", "cum", "cum%"
    );
    for e in &entries {
        let _ = writeln!(out, "{}", "-".repeat(60));
        // Callers above the function, callees below, most first.
        let edges = |out: &mut String, edges: &[(String, i64)]| {
            for (other, v) in edges {
                let _ = writeln!(
                    out,
                    "{:>44}   {:>10} {:>7} |   {other}",
                    "",
                    fmt.format(*v),
                    percentage(*v, e.cum)
                );
            }
        };
        edges(&mut out, &e.callers);
        let _ = writeln!(
            out,
            "{:>12} {:>8} {:>12} {:>8}   {:>18} | {}",
            fmt.format(e.flat),
            percentage(e.flat, all),
            fmt.format(e.cum),
            percentage(e.cum, all),
            "",
            e.name
        );
        edges(&mut out, &e.callees);
    }
    Ok(out)
}

/// Formats `v` of `unit` as `go tool pprof` does, and `v` as a share of
/// `total` (what the web UI's panes show beside a name; trimmed, since the
/// page aligns its cells itself).
pub fn value_and_share(unit: &str, v: i64, total: i64) -> (String, String) {
    (
        Format::for_unit(unit).format(v),
        percentage(v, total).trim().to_string(),
    )
}

/// `list REGEX`: for each function matching, per source line, the flat and
/// cum values, with the line's text when the file is readable, else the
/// line numbers alone.
pub fn source(p: &Profile, st: &SampleType, regex: &str) -> Result<String> {
    let re = compile(regex)?;
    let fmt = Format::for_unit(&st.unit);
    let locations = frames(p);
    // (function, file) → line → (flat, cum)
    let mut by_fn: BTreeMap<(String, String), BTreeMap<i64, (i64, i64)>> = BTreeMap::new();
    for s in &p.sample {
        let v = s.value.get(st.index).copied().unwrap_or(0);
        let mut seen: HashSet<(&str, i64)> = HashSet::new();
        for (i, f) in stack(&locations, &s.location_id).into_iter().enumerate() {
            if !re.is_match(&f.0) || f.2 <= 0 {
                continue;
            }
            let lines = by_fn.entry((f.0.clone(), f.1.clone())).or_default();
            let slot = lines.entry(f.2).or_default();
            if i == 0 {
                slot.0 += v;
            }
            if seen.insert((&f.0, f.2)) {
                slot.1 += v;
            }
        }
    }
    if by_fn.is_empty() {
        return Err(Error::Incompatible(format!(
            "no function with line numbers matches {regex:?}"
        )));
    }
    let mut out = String::new();
    for ((name, file), lines) in &by_fn {
        let flat: i64 = lines.values().map(|v| v.0).sum();
        let cum = lines.values().map(|v| v.1).max().unwrap_or(0);
        let _ = writeln!(out, "ROUTINE ======================== {name} in {file}");
        let _ = writeln!(
            out,
            "{:>10} {:>10} (flat, cum) of the routine's lines",
            fmt.format(flat),
            fmt.format(cum)
        );
        let text = std::fs::read_to_string(file).ok();
        let source: Vec<&str> = text
            .as_deref()
            .map(|t| t.lines().collect())
            .unwrap_or_default();
        let (first, last) = (
            *lines.keys().next().unwrap_or(&1),
            *lines.keys().next_back().unwrap_or(&1),
        );
        let range: Vec<i64> = if source.is_empty() {
            lines.keys().copied().collect()
        } else {
            ((first - 2).max(1)..=(last + 2).min(source.len() as i64)).collect()
        };
        for n in range {
            let (f, c) = lines.get(&n).copied().unwrap_or((0, 0));
            let show = |v: i64| {
                if v == 0 {
                    ".".to_string()
                } else {
                    fmt.format(v)
                }
            };
            let code = source.get(n as usize - 1).copied().unwrap_or("");
            let _ = writeln!(out, "{:>10} {:>10} {n:>6}: {code}", show(f), show(c));
        }
        if source.is_empty() {
            let _ = writeln!(out, "({file} is not readable here: line numbers only)");
        }
    }
    Ok(out)
}

/// The string labels of a sample as `key:value` pairs.
fn labels(p: &Profile, s: &profscope_profile::Sample) -> Vec<(String, String)> {
    s.label
        .iter()
        .map(|l| {
            let value = if l.str != 0 {
                p.string_at(l.str).to_string()
            } else {
                l.num.to_string()
            };
            (p.string_at(l.key).to_string(), value)
        })
        .collect()
}

/// `traces`: every sample's value, labels and stack, leaf first.
pub fn traces(p: &Profile, st: &SampleType) -> String {
    let fmt = Format::for_unit(&st.unit);
    let locations = frames(p);
    let mut out = String::new();
    for s in &p.sample {
        let v = s.value.get(st.index).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "-----------+-------------------------------------------------------"
        );
        for (k, val) in labels(p, s) {
            let _ = writeln!(out, "{:>10} | {k}:[{val}]", "");
        }
        for (i, f) in stack(&locations, &s.location_id).into_iter().enumerate() {
            let head = if i == 0 { fmt.format(v) } else { String::new() };
            let _ = writeln!(out, "{head:>10} | {}", f.0);
        }
    }
    out
}

/// Each label key's values with their totals, most first (ties by value).
pub fn label_values(p: &Profile, st: &SampleType) -> BTreeMap<String, Vec<(String, i64)>> {
    values_by_key(p, st, true)
}

/// As [`label_values`], string labels only: those a `KEY=REGEX` filter
/// selects (numeric labels take ranges).
pub fn string_label_values(p: &Profile, st: &SampleType) -> BTreeMap<String, Vec<(String, i64)>> {
    values_by_key(p, st, false)
}

fn values_by_key(
    p: &Profile,
    st: &SampleType,
    numeric: bool,
) -> BTreeMap<String, Vec<(String, i64)>> {
    let mut by_key: BTreeMap<String, HashMap<String, i64>> = BTreeMap::new();
    for s in &p.sample {
        let v = s.value.get(st.index).copied().unwrap_or(0);
        for l in &s.label {
            if l.str == 0 && !numeric {
                continue;
            }
            let val = if l.str != 0 {
                p.string_at(l.str).to_string()
            } else {
                l.num.to_string()
            };
            *by_key
                .entry(p.string_at(l.key).to_string())
                .or_default()
                .entry(val)
                .or_default() += v;
        }
    }
    by_key
        .into_iter()
        .map(|(key, values)| {
            let mut values: Vec<(String, i64)> = values.into_iter().collect();
            values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            (key, values)
        })
        .collect()
}

/// `tags`: each label key with its values, their totals and shares, most
/// first (as `go tool pprof -tags`).
pub fn tags(p: &Profile, st: &SampleType) -> String {
    let fmt = Format::for_unit(&st.unit);
    let by_key = label_values(p, st);
    let mut out = String::new();
    if by_key.is_empty() {
        out.push_str("No tags found\n");
    }
    for (key, values) in by_key {
        let key_total: i64 = values.iter().map(|v| v.1).sum();
        let _ = writeln!(out, "{key:>10}: Total {}", fmt.format(key_total));
        for (value, v) in values {
            let _ = writeln!(
                out,
                "{:>10}  {:>10} ({:>7}): {value}",
                "",
                fmt.format(v),
                percentage(v, key_total)
            );
        }
        out.push('\n');
    }
    out
}

/// The profile's values by label `key`: one row per value (samples without
/// the key as `(none)`), most first.
pub fn by_label_rows(p: &Profile, st: &SampleType, key: &str) -> Vec<(String, i64)> {
    let mut values: HashMap<String, i64> = HashMap::new();
    for s in &p.sample {
        let v = s.value.get(st.index).copied().unwrap_or(0);
        let value = labels(p, s)
            .into_iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| "(none)".to_string(), |(_, v)| v);
        *values.entry(value).or_default() += v;
    }
    let mut rows: Vec<(String, i64)> = values.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    rows
}

/// The profile's values broken down by label `key` (see [`by_label_rows`]).
pub fn by_label(p: &Profile, st: &SampleType, key: &str) -> String {
    let fmt = Format::for_unit(&st.unit);
    let all = p.sample_total(st.index);
    let mut out = format!(
        "By {key}, of {} total\n{:>12} {:>8}  {key}\n",
        fmt.format(all),
        "value",
        "share"
    );
    for (value, v) in by_label_rows(p, st, key) {
        let _ = writeln!(
            out,
            "{:>12} {:>8}  {value}",
            fmt.format(v),
            percentage(v, all)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_profile::read_folded::folded_to_profile;
    use profscope_profile::select_sample_type;

    #[test]
    fn peek_shows_callers_and_callees() {
        let p = folded_to_profile("main;handle;parse 3\nmain;batch;parse 1\nmain;handle;write 2\n")
            .unwrap();
        let st = select_sample_type(&p, None).unwrap();
        let out = peek(&p, &st, "^parse$").unwrap();
        assert!(out.contains("|   handle"), "{out}");
        assert!(out.contains("|   batch"), "{out}");
        let out = peek(&p, &st, "^handle$").unwrap();
        assert!(
            out.contains("|   parse") && out.contains("|   write"),
            "{out}"
        );
        assert!(peek(&p, &st, "^nothing$").is_err());
    }

    #[test]
    fn tags_and_by_label_need_labels() {
        let p = folded_to_profile("a 1\n").unwrap();
        let st = select_sample_type(&p, None).unwrap();
        assert_eq!(tags(&p, &st), "No tags found\n");
        assert!(by_label(&p, &st, "thread").contains("(none)"));
        assert!(traces(&p, &st).contains("| a"));
    }
}
