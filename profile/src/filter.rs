//! Sample filters with `go tool pprof`'s semantics: `focus`, `ignore` and
//! `hide` by frame regex (google/pprof `FilterSamplesByName`), `tagfocus`
//! and `tagignore` by label (`FilterSamplesByTag`, with Go's
//! `KEY=REGEX[,REGEX]` and numeric `KEY=1MB`, `1MB:`, `:1MB`, `1MB:2MB`).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use regex::Regex;

use crate::error::{Error, Result};
use crate::fold::mapping_files;
use crate::proto::{Location, Profile, Sample};

/// The filter expressions as given (flags, shell commands, query strings).
#[derive(Debug, Clone, Copy, Default)]
pub struct FilterOptions<'a> {
    /// Keep samples with a frame matching this regex.
    pub focus: Option<&'a str>,
    /// Drop samples with a frame matching this regex.
    pub ignore: Option<&'a str>,
    /// Remove frames matching this regex from stacks (values stay).
    pub hide: Option<&'a str>,
    /// Keep only frames matching this regex in stacks (values stay).
    pub show: Option<&'a str>,
    /// Keep only frames whose source file is under this directory (a path
    /// prefix, `DIR/target/` excluded: build output is not one's code).
    /// Unlike `show`, never matched against function names or mapping
    /// files: a binary built under DIR is not all "my code".
    pub my_code: Option<&'a str>,
    /// Keep samples whose labels match (`KEY=VALUE`, see the module docs).
    pub tagfocus: Option<&'a str>,
    /// Drop samples whose labels match.
    pub tagignore: Option<&'a str>,
}

/// Compiled filters; [`Filter::apply`] narrows a profile.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    focus: Option<Regex>,
    ignore: Option<Regex>,
    hide: Option<Regex>,
    show: Option<Regex>,
    /// `DIR/`, for `my_code`.
    my_dir: Option<String>,
    tagfocus: Option<TagFilter>,
    tagignore: Option<TagFilter>,
}

impl Filter {
    /// Compiles focus/ignore regexes alone.
    pub fn new(focus: Option<&str>, ignore: Option<&str>) -> Result<Filter> {
        Filter::with(&FilterOptions {
            focus,
            ignore,
            ..FilterOptions::default()
        })
    }

    /// Compiles every expression of `opts`; the error names the bad one.
    pub fn with(opts: &FilterOptions<'_>) -> Result<Filter> {
        let compile = |flag: &'static str, re: Option<&str>| {
            re.filter(|r| !r.is_empty())
                .map(|r| Regex::new(r).map_err(|error| Error::Regex { flag, error }))
                .transpose()
        };
        Ok(Filter {
            focus: compile("focus", opts.focus)?,
            ignore: compile("ignore", opts.ignore)?,
            hide: compile("hide", opts.hide)?,
            show: compile("show", opts.show)?,
            my_dir: opts
                .my_code
                .filter(|d| !d.is_empty())
                .map(|d| format!("{}/", d.trim_end_matches('/'))),
            tagfocus: opts
                .tagfocus
                .filter(|e| !e.is_empty())
                .map(|e| TagFilter::parse("tagfocus", e))
                .transpose()?,
            tagignore: opts
                .tagignore
                .filter(|e| !e.is_empty())
                .map(|e| TagFilter::parse("tagignore", e))
                .transpose()?,
        })
    }

    /// True when the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        self.focus.is_none()
            && self.ignore.is_none()
            && self.hide.is_none()
            && self.show.is_none()
            && self.my_dir.is_none()
            && self.tagfocus.is_none()
            && self.tagignore.is_none()
    }

    /// Descriptions for a report header (`focus=RE`, `tagfocus=K=V`, …).
    pub fn describe(&self) -> Vec<String> {
        let regexes = [
            ("focus", &self.focus),
            ("ignore", &self.ignore),
            ("hide", &self.hide),
            ("show", &self.show),
        ];
        let tags = [("tagfocus", &self.tagfocus), ("tagignore", &self.tagignore)];
        regexes
            .iter()
            .filter_map(|(name, re)| re.as_ref().map(|re| format!("{name}={}", re.as_str())))
            .chain(self.my_dir.iter().map(|d| format!("my_code={d}")))
            .chain(
                tags.iter()
                    .filter_map(|(name, t)| t.as_ref().map(|t| format!("{name}={}", t.expr))),
            )
            .collect()
    }

    /// Narrows `p` as `go tool pprof` does with the same flags: by name
    /// first (a frame matches when the regex matches its function name or
    /// file, or its location's mapping file), then by label.
    pub fn apply(&self, p: &mut Profile) {
        if self.focus.is_some()
            || self.ignore.is_some()
            || self.hide.is_some()
            || self.show.is_some()
            || self.my_dir.is_some()
        {
            self.apply_names(p);
        }
        if self.tagfocus.is_some() || self.tagignore.is_some() {
            let labels = Labels::new(p);
            let keep: Vec<bool> = p
                .sample
                .iter()
                .map(|s| {
                    let focused = self.tagfocus.as_ref().is_none_or(|t| t.matches(&labels, s));
                    let ignored = self
                        .tagignore
                        .as_ref()
                        .is_some_and(|t| t.matches(&labels, s));
                    focused && !ignored
                })
                .collect();
            let mut keep = keep.into_iter();
            p.sample.retain(|_| keep.next().unwrap_or(false));
        }
    }

    fn apply_names(&self, p: &mut Profile) {
        let functions: HashMap<u64, (String, String)> = p
            .function
            .iter()
            .map(|f| {
                let name = p.string_at(f.name).to_string();
                (f.id, (name, p.string_at(f.filename).to_string()))
            })
            .collect();
        let mappings: HashMap<u64, String> = mapping_files(p)
            .into_iter()
            .map(|(id, f)| (id, f.to_string()))
            .collect();
        let mapping_matches = |re: &Regex, loc: &Location| {
            mappings
                .get(&loc.mapping_id)
                .is_some_and(|file| !file.is_empty() && re.is_match(file))
        };
        let line_matches = |re: &Regex, function_id: u64| {
            functions
                .get(&function_id)
                .is_some_and(|(name, file)| re.is_match(name) || re.is_match(file))
        };
        let matches = |re: &Regex, loc: &Location| {
            loc.line.iter().any(|l| line_matches(re, l.function_id)) || mapping_matches(re, loc)
        };
        // Per location: Some(false) = ignored, Some(true) = focused.
        let mut verdicts: HashMap<u64, bool> = HashMap::default();
        let mut hidden: HashSet<u64> = HashSet::default();
        for loc in &mut p.location {
            if self.ignore.as_ref().is_some_and(|re| matches(re, loc)) {
                verdicts.insert(loc.id, false);
            } else if self.focus.as_ref().is_none_or(|re| matches(re, loc)) {
                verdicts.insert(loc.id, true);
            }
            if let Some(re) = &self.hide
                && matches(re, loc)
            {
                if mapping_matches(re, loc) {
                    loc.line.clear();
                } else {
                    loc.line.retain(|l| !line_matches(re, l.function_id));
                }
                if loc.line.is_empty() {
                    hidden.insert(loc.id);
                }
            }
            if let Some(dir) = &self.my_dir {
                let build = format!("{dir}target/");
                loc.line.retain(|l| {
                    functions.get(&l.function_id).is_some_and(|(_, file)| {
                        file.starts_with(dir.as_str()) && !file.starts_with(&build)
                    })
                });
                if loc.line.is_empty() {
                    hidden.insert(loc.id);
                }
            }
            if let Some(re) = &self.show {
                if !mapping_matches(re, loc) {
                    loc.line.retain(|l| line_matches(re, l.function_id));
                }
                if loc.line.is_empty() {
                    hidden.insert(loc.id);
                }
            }
        }
        p.sample.retain_mut(|s| {
            let mut focused = false;
            for id in &s.location_id {
                match verdicts.get(id) {
                    Some(false) => return false,
                    Some(true) => focused = true,
                    None => {}
                }
            }
            if !focused {
                return false;
            }
            if !hidden.is_empty() {
                s.location_id.retain(|id| !hidden.contains(id));
            }
            !s.location_id.is_empty()
        });
    }
}

/// A sample's labels resolved once per profile: string label keys and
/// values, numeric label keys with their units (Go's `NumLabelUnits`).
struct Labels<'p> {
    profile: &'p Profile,
    /// Unit of each numeric label key: the first unit seen, else `bytes`
    /// for `alignment`/`request`, else the key itself.
    units: HashMap<&'p str, &'p str>,
}

impl<'p> Labels<'p> {
    fn new(profile: &'p Profile) -> Self {
        let mut units: HashMap<&str, &str> = HashMap::default();
        for s in &profile.sample {
            for l in s.label.iter().filter(|l| l.str == 0) {
                let key = profile.string_at(l.key);
                let unit = profile.string_at(l.num_unit);
                let slot = units.entry(key).or_insert("");
                if slot.is_empty() {
                    *slot = unit;
                }
            }
        }
        for (key, unit) in units.iter_mut() {
            if unit.is_empty() {
                *unit = match *key {
                    "alignment" | "request" => "bytes",
                    key => key,
                };
            }
        }
        Labels { profile, units }
    }

    /// String labels of `s` as (key, value).
    fn strings<'s>(&'s self, s: &'s Sample) -> impl Iterator<Item = (&'p str, &'p str)> + 's {
        s.label
            .iter()
            .filter(|l| l.str != 0)
            .map(|l| (self.profile.string_at(l.key), self.profile.string_at(l.str)))
    }

    /// Numeric labels of `s` as (key, value, unit).
    fn numbers<'s>(&'s self, s: &'s Sample) -> impl Iterator<Item = (&'p str, i64, &'p str)> + 's {
        s.label
            .iter()
            .filter(|l| l.str == 0 && (l.num != 0 || l.num_unit != 0))
            .map(|l| {
                let key = self.profile.string_at(l.key);
                (key, l.num, self.units.get(key).copied().unwrap_or(key))
            })
    }
}

/// One `tagfocus`/`tagignore` expression.
#[derive(Debug, Clone)]
struct TagFilter {
    /// As given, for `describe`.
    expr: String,
    /// `KEY` of `KEY=VALUE`; `None` matches any key.
    key: Option<String>,
    test: TagTest,
}

#[derive(Debug, Clone)]
enum TagTest {
    /// Comma-separated regexes over string label values.
    Regexes(Vec<Regex>),
    /// A numeric range, in `unit` after scaling.
    Range {
        low: Option<f64>,
        high: Option<f64>,
        unit: String,
    },
}

impl TagFilter {
    fn parse(flag: &'static str, expr: &str) -> Result<TagFilter> {
        let (key, value) = match expr.split_once('=') {
            Some((k, v)) => (Some(k.to_string()), v),
            None => (None, expr),
        };
        let test = match parse_range(value) {
            Some(range) => range,
            None => TagTest::Regexes(
                value
                    .split(',')
                    .map(|r| Regex::new(r).map_err(|error| Error::Regex { flag, error }))
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(TagFilter {
            expr: expr.to_string(),
            key,
            test,
        })
    }

    fn matches(&self, labels: &Labels<'_>, s: &Sample) -> bool {
        match (&self.test, &self.key) {
            (TagTest::Regexes(res), Some(key)) => labels
                .strings(s)
                .filter(|(k, _)| k == key)
                .any(|(_, v)| res.iter().any(|re| re.is_match(v))),
            // Without a key, every regex must match some `key:value`.
            (TagTest::Regexes(res), None) => res.iter().all(|re| {
                labels
                    .strings(s)
                    .any(|(k, v)| re.is_match(&format!("{k}:{v}")))
            }),
            (TagTest::Range { low, high, unit }, key) => labels
                .numbers(s)
                .filter(|(k, _, _)| key.as_deref().is_none_or(|want| want == *k))
                .any(|(_, v, from)| {
                    let (scaled, su) = scale(v, from, unit);
                    su == *unit
                        && low.is_none_or(|lo| scaled >= lo)
                        && high.is_none_or(|hi| scaled <= hi)
                }),
        }
    }
}

/// Go's `parseTagFilterRange`: `N[unit]`, `N[unit]:`, `:N[unit]` or
/// `N[unit]:M[unit]`; anything else is a regex.
fn parse_range(filter: &str) -> Option<TagTest> {
    let number = |s: &str| -> Option<(i64, String, usize)> {
        // ([+-]?[[:digit:]]+)([[:alpha:]]+)? at the start of s
        let b = s.as_bytes();
        let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
        let digits = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == digits {
            return None;
        }
        let v: i64 = s[..i].parse().ok()?;
        let u = i;
        while b.get(i).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
        }
        Some((v, s[u..i].to_string(), i))
    };
    let whole = |s: &str| number(s).filter(|(_, _, len)| *len == s.len());
    let (low, high) = if let Some(rest) = filter.strip_prefix(':') {
        (None, Some(whole(rest)?))
    } else if let Some(rest) = filter.strip_suffix(':') {
        (Some(whole(rest)?), None)
    } else if let Some((a, b)) = filter.split_once(':') {
        (Some(whole(a)?), Some(whole(b)?))
    } else {
        let n = whole(filter)?;
        (Some(n.clone()), Some(n))
    };
    let unit_of = |n: &(i64, String, usize)| scale(n.0, &n.1, &n.1);
    let first = low.as_ref().or(high.as_ref())?;
    let (_, unit) = unit_of(first);
    let low = low.map(|n| scale(n.0, &n.1, &unit));
    let high = high.map(|n| scale(n.0, &n.1, &unit));
    if low.iter().chain(high.iter()).any(|(_, u)| *u != unit) {
        return None;
    }
    Some(TagTest::Range {
        low: low.map(|(v, _)| v),
        high: high.map(|(v, _)| v),
        unit,
    })
}

/// Go's `measurement.Scale` for bytes and time: `value` in `from` as a
/// number of `to`, with `to`'s canonical name ("" for uninteresting units).
fn scale(value: i64, from: &str, to: &str) -> (f64, String) {
    const UNITS: [&[(&str, &[&str], f64)]; 2] = [
        &[
            ("B", &["b", "byte"], 1.0),
            ("kB", &["kb", "kbyte", "kilobyte"], 1024.0),
            ("MB", &["mb", "mbyte", "megabyte"], 1048576.0),
            ("GB", &["gb", "gbyte", "gigabyte"], 1073741824.0),
            ("TB", &["tb", "tbyte", "terabyte"], 1099511627776.0),
            ("PB", &["pb", "pbyte", "petabyte"], 1125899906842624.0),
        ],
        &[
            ("ns", &["ns", "nanosecond"], 1.0),
            ("us", &["μs", "us", "microsecond"], 1e3),
            ("ms", &["ms", "millisecond"], 1e6),
            ("s", &["s", "sec", "second"], 1e9),
            ("hrs", &["hour", "hr"], 3.6e12),
        ],
    ];
    const DEFAULTS: [(&str, f64); 2] = [("B", 1.0), ("s", 1e9)];
    let sniff = |table: &[(&'static str, &[&str], f64)], unit: &str| {
        let mut unit = unit.to_lowercase();
        if unit.len() > 2
            && let Some(u) = unit.strip_suffix('s')
        {
            unit = u.to_string();
        }
        table
            .iter()
            .find(|(_, aliases, _)| aliases.contains(&unit.as_str()))
            .map(|&(name, _, factor)| (name, factor))
    };
    for (table, (default_name, default_factor)) in UNITS.iter().zip(DEFAULTS) {
        let Some((_, from_factor)) = sniff(table, from) else {
            continue;
        };
        let v = value as f64 * from_factor;
        return match sniff(table, to) {
            Some((name, factor)) => (v / factor, name.to_string()),
            None => (v / default_factor, default_name.to_string()),
        };
    }
    match to {
        "count" | "sample" | "unit" | "minimum" | "auto" => (value as f64, String::new()),
        to => (value as f64, to.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Label;
    use crate::read_folded::folded_to_profile;

    #[test]
    fn focus_and_ignore_follow_go() {
        let text = "main;work;sha 5\nmain;idle 3\nmain;work;gc 2\n";
        let mut p = folded_to_profile(text).unwrap();
        Filter::new(Some("^work$"), None).unwrap().apply(&mut p);
        assert_eq!(p.sample_total(0), 7);
        Filter::new(None, Some("gc")).unwrap().apply(&mut p);
        assert_eq!(p.sample_total(0), 5);
        assert!(Filter::new(Some("("), None).is_err());
    }

    #[test]
    fn hide_removes_frames_and_keeps_values() {
        let mut p = folded_to_profile("main;tokio;work 5\ntokio 2\n").unwrap();
        let f = Filter::with(&FilterOptions {
            hide: Some("^tokio$"),
            ..Default::default()
        })
        .unwrap();
        f.apply(&mut p);
        // A sample left with no frames goes, as in Go.
        assert_eq!(p.sample_total(0), 5);
        assert_eq!(crate::fold::fold(&p, 0), vec![("main;work".to_string(), 5)]);
    }

    fn labelled() -> Profile {
        let mut p = folded_to_profile("a 1\nb 2\nc 4\nd 8\n").unwrap();
        for s in ["thread", "worker-1", "worker-2", "bytes"] {
            p.string_table.push(s.to_string());
        }
        let id = |p: &Profile, s: &str| p.string_table.iter().position(|x| x == s).unwrap() as i64;
        let (thread, w1, w2, bytes) = (
            id(&p, "thread"),
            id(&p, "worker-1"),
            id(&p, "worker-2"),
            id(&p, "bytes"),
        );
        let str_label = |v| Label {
            key: thread,
            str: v,
            ..Default::default()
        };
        let num_label = |n| Label {
            key: bytes,
            num: n,
            ..Default::default()
        };
        p.sample[0].label = vec![str_label(w1), num_label(512)];
        p.sample[1].label = vec![str_label(w2), num_label(1 << 20)];
        p.sample[2].label = vec![str_label(w1), num_label(3 << 20)];
        p
    }

    fn kept(opts: FilterOptions<'_>) -> i64 {
        let mut p = labelled();
        Filter::with(&opts).unwrap().apply(&mut p);
        p.sample_total(0)
    }

    #[test]
    fn tag_filters_follow_go() {
        let focus = |e| FilterOptions {
            tagfocus: Some(e),
            ..Default::default()
        };
        assert_eq!(kept(focus("thread=worker-1")), 5);
        assert_eq!(kept(focus("thread=worker-1,worker-2")), 7);
        assert_eq!(kept(focus("thread:worker-2")), 2, "keyless: key:value");
        assert_eq!(kept(focus("bytes=1MB")), 2);
        assert_eq!(kept(focus("bytes=1MB:")), 6);
        assert_eq!(kept(focus("bytes=:1MB")), 3);
        assert_eq!(kept(focus("bytes=1kB:2MB")), 2);
        let ignore = FilterOptions {
            tagignore: Some("thread=worker-1"),
            ..Default::default()
        };
        assert_eq!(kept(ignore), 10, "unlabelled samples stay");
        assert!(Filter::with(&focus("thread=(")).is_err());
    }

    #[test]
    fn ranges_parse_like_go() {
        assert!(parse_range("1MB").is_some());
        assert!(parse_range("1MB:2GB").is_some());
        assert!(parse_range(":12").is_some());
        assert!(parse_range("worker-1").is_none());
        assert!(parse_range("1MB:2ms").is_none(), "mixed units are a regex");
        assert_eq!(scale(1 << 20, "bytes", "MB"), (1.0, "MB".to_string()));
        assert_eq!(scale(5, "count", "count"), (5.0, String::new()));
    }
}
