//! The `go tool pprof -top` table: flat, flat%, sum%, cum, cum% and name per
//! function, with Go's header lines, ordering, trimming and unit scaling, so
//! the rows agree with Go's on the same profile.

use std::fmt::Write as _;
use std::path::Path;

use profscope_profile::Profile;

use crate::graph::{self, Inline, Part};
use crate::units::{ValueFormat, percentage};
use profscope_profile::SampleType;

/// Go's default `-nodefraction`: nodes with |cum| under 0.5% of the total
/// are dropped (and the header says how many).
pub const NODE_FRACTION: f64 = 0.005;

/// How the table is built.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TopOptions {
    /// Rows to show; 0 shows all (Go's `-nodecount`).
    pub node_count: usize,
    /// Sort by cum instead of flat (Go's `-cum`).
    pub cum: bool,
    /// Drop nodes with |cum| under this fraction of the total (default 0.005).
    pub node_fraction: f64,
    /// Filter descriptions to show under "Active filters:".
    pub active_filters: Vec<String>,
    /// Longest function name shown, cut with an ellipsis (0: no limit).
    pub max_name: usize,
}

impl Default for TopOptions {
    fn default() -> Self {
        TopOptions {
            node_count: 0,
            cum: false,
            node_fraction: NODE_FRACTION,
            active_filters: Vec::new(),
            max_name: 0,
        }
    }
}

impl TopOptions {
    /// Options showing at most `node_count` rows (0 = all).
    pub fn new(node_count: usize, cum: bool) -> Self {
        TopOptions {
            node_count,
            cum,
            ..TopOptions::default()
        }
    }

    /// Cuts names longer than `chars` (0: no limit).
    pub fn max_name(mut self, chars: usize) -> Self {
        self.max_name = chars;
        self
    }

    /// Adds "Active filters:" header lines.
    pub fn filters(mut self, filters: Vec<String>) -> Self {
        self.active_filters = filters;
        self
    }
}

/// One row: a function and its values in raw sample units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// Function name as Go prints it.
    pub name: String,
    /// Inline mark.
    pub inline: Inline,
    /// Flat value.
    pub flat: i64,
    /// Cumulative value.
    pub cum: i64,
}

/// A computed top table; [`render`](TopReport::render) prints it.
#[derive(Debug, Clone)]
pub struct TopReport {
    /// Profile header lines (File, Type, Time, Duration).
    pub labels: Vec<String>,
    /// The sample type shown.
    pub sample_type: SampleType,
    /// The total percentages are relative to (Go's report total).
    pub total: i64,
    /// Rows, sorted.
    pub rows: Vec<TopRow>,
    /// Nodes dropped for low cum.
    pub dropped: usize,
    /// Nodes before `node_count` truncation.
    pub orig_count: usize,
    /// How values are formatted.
    pub format: ValueFormat,
    /// Options used.
    pub options: TopOptions,
    /// Prefix growth with `+` (diff tables).
    pub signed: bool,
}

/// Computes the top table of `profile` for `sample_type`.
pub fn top(profile: &Profile, sample_type: &SampleType, opts: &TopOptions) -> TopReport {
    let parts = [Part::new(profile, sample_type.index)];
    let total = parts[0]
        .profile
        .sample
        .iter()
        .map(|s| parts[0].value(&s.value).abs())
        .sum();
    let mut report = from_parts(&parts, total, sample_type, opts);
    report.labels = profile_labels(profile, sample_type, total, &report.format);
    report
}

/// Builds the table over `parts` with the given report `total`; `diff` uses
/// it with a negated base.
pub(crate) fn from_parts(
    parts: &[Part<'_>],
    total: i64,
    sample_type: &SampleType,
    opts: &TopOptions,
) -> TopReport {
    let g = graph::graph(parts, opts.node_fraction);
    let mut nodes = g.nodes;
    graph::sort_nodes(&mut nodes, opts.cum);
    let orig_count = nodes.len();
    if opts.node_count > 0 {
        nodes.truncate(opts.node_count);
    }
    let min_nonzero = nodes
        .iter()
        .map(|n| {
            if n.flat != 0 {
                n.flat.abs()
            } else {
                n.cum.abs()
            }
        })
        .filter(|&v| v > 0)
        .min()
        .unwrap_or(0);
    let format = ValueFormat::for_values(&sample_type.unit, min_nonzero, total);
    TopReport {
        labels: Vec::new(),
        sample_type: sample_type.clone(),
        total,
        rows: nodes
            .into_iter()
            .map(|n| TopRow {
                name: n.name,
                inline: n.inline,
                flat: n.flat,
                cum: n.cum,
            })
            .collect(),
        dropped: g.dropped,
        orig_count,
        format,
        options: opts.clone(),
        signed: false,
    }
}

/// Go's `ProfileLabels`: File, Build ID, comments, Type, Time, Duration.
fn profile_labels(p: &Profile, st: &SampleType, total: i64, fmt: &ValueFormat) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = p.mapping.first() {
        let file = p.string_at(m.filename);
        if !file.is_empty() {
            let base = Path::new(file)
                .file_name()
                .map_or_else(|| file.to_string(), |b| b.to_string_lossy().into_owned());
            out.push(format!("File: {base}"));
        }
        let build_id = p.string_at(m.build_id);
        if !build_id.is_empty() {
            out.push(format!("Build ID: {build_id}"));
        }
    }
    for &c in &p.comment {
        let c = p.string_at(c);
        if !c.starts_with('#') {
            out.push(c.to_string());
        }
    }
    out.push(format!("Type: {}", st.name));
    if p.time_nanos != 0 {
        let secs = p.time_nanos.div_euclid(1_000_000_000);
        let t = crate::time::rfc3339(u64::try_from(secs).unwrap_or(0));
        out.push(format!(
            "Time: {} UTC",
            t.trim_end_matches('Z').replace('T', " ")
        ));
    }
    if p.duration_nanos != 0 {
        let d = ValueFormat::auto("nanoseconds", p.duration_nanos).format(p.duration_nanos);
        let (kind, per) = crate::units::UnitKind::of(&st.unit);
        let ratio = if kind == crate::units::UnitKind::Time && total != 0 {
            let nanos = (total as f64 * per) as i64;
            format!(" ({})", percentage(nanos, p.duration_nanos).trim())
        } else {
            String::new()
        };
        out.push(format!(
            "Duration: {d}, Total samples = {}{ratio}",
            fmt.format(total)
        ));
    }
    out
}

impl TopReport {
    /// Sum of the flat values of the rows shown.
    pub fn shown(&self) -> i64 {
        self.rows.iter().map(|r| r.flat).sum()
    }

    fn value(&self, v: i64) -> String {
        if self.signed {
            self.format.format_signed(v)
        } else {
            self.format.format(v)
        }
    }

    /// The header lines above the column titles.
    pub fn header(&self) -> Vec<String> {
        let mut out = self.labels.clone();
        if !self.options.active_filters.is_empty() {
            out.push("Active filters:".to_string());
            for f in &self.options.active_filters {
                out.push(format!("   {f}"));
            }
        }
        let shown = self.shown();
        out.push(format!(
            "Showing nodes accounting for {}, {} of {} total",
            self.value(shown),
            percentage(shown, self.total).trim(),
            self.format.format(self.total)
        ));
        if self.total != 0 {
            if self.dropped > 0 {
                let cutoff = ((self.total as f64 * self.options.node_fraction) as i64).abs();
                out.push(format!(
                    "Dropped {} node{} (cum <= {})",
                    self.dropped,
                    if self.dropped > 1 { "s" } else { "" },
                    self.format.format(cutoff)
                ));
            }
            if self.rows.len() < self.orig_count {
                out.push(format!(
                    "Showing top {} nodes out of {}",
                    self.rows.len(),
                    self.orig_count
                ));
            }
        }
        out.extend(unnamed_libraries_note(
            self.rows.iter().map(|r| r.name.as_str()),
        ));
        out
    }

    /// The table as `go tool pprof -top` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in self.header() {
            out.push_str(&line);
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{:>10} {:>5}% {:>5}% {:>10} {:>5}%",
            "flat", "flat", "sum", "cum", "cum"
        );
        let mut sum = 0i64;
        for row in &self.rows {
            sum += row.flat;
            let mark = row.inline.label();
            let _ = writeln!(
                out,
                "{:>10} {} {} {:>10} {}  {}{}{}",
                self.value(row.flat),
                percentage(row.flat, self.total),
                percentage(sum, self.total),
                self.value(row.cum),
                percentage(row.cum, self.total),
                if self.options.max_name > 0 {
                    crate::names::clip(&row.name, self.options.max_name)
                } else {
                    row.name.clone()
                },
                if mark.is_empty() { "" } else { " " },
                mark
            );
        }
        out
    }
}

/// One line, once per report, when rows are shared libraries without
/// function names (`[libc.so.6]`: distributions strip them): how to get
/// the names where the profile was taken.
fn unnamed_libraries_note<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut unnamed: Vec<&str> = names
        .filter(|n| {
            n.strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|lib| lib.contains(".so"))
        })
        .collect();
    unnamed.sort_unstable();
    unnamed.dedup();
    if unnamed.is_empty() {
        return None;
    }
    let glibc = unnamed.iter().any(|n| {
        ["[libc.so", "[libm.so", "[libpthread.so", "[ld-linux"]
            .iter()
            .any(|p| n.starts_with(p))
    });
    let how = if glibc {
        "apt-get install libc6-dbg (Debian/Ubuntu) or dnf debuginfo-install glibc"
    } else {
        "the distribution's -dbg / debuginfo package of each"
    };
    Some(format!(
        "No function names in {}: install their debug symbols where the profile was taken ({how}); the agent reads them from /usr/lib/debug",
        unnamed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_profile::read_folded::folded_to_profile;
    use profscope_profile::select_sample_type;

    #[test]
    fn table_rows_and_header() {
        let p = folded_to_profile("main;work;sha 7\nmain;idle 3\n").unwrap();
        let st = select_sample_type(&p, None).unwrap();
        let r = top(&p, &st, &TopOptions::default());
        let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["sha", "idle", "main", "work"]);
        let text = r.render();
        assert!(
            text.contains("Showing nodes accounting for 10, 100% of 10 total"),
            "{text}"
        );
        assert!(
            text.contains("         7 70.00% 70.00%          7 70.00%  sha\n"),
            "{text}"
        );
    }

    #[test]
    fn unnamed_system_libraries_get_one_note() {
        let p =
            folded_to_profile("main;[libc.so.6] 5\nmain;[libc.so.6];[libc.so.6] 2\nmain;work 3\n")
                .unwrap();
        let st = select_sample_type(&p, None).unwrap();
        let text = top(&p, &st, &TopOptions::default()).render();
        assert_eq!(
            text.matches("No function names in [libc.so.6]").count(),
            1,
            "{text}"
        );
        assert!(text.contains("apt-get install libc6-dbg"), "{text}");
        let named = folded_to_profile("main;__memcpy_avx_unaligned_erms 5\n").unwrap();
        let text = top(&named, &st, &TopOptions::default()).render();
        assert!(!text.contains("No function names"), "{text}");
    }

    #[test]
    fn empty_profile_prints_an_empty_table() {
        let mut p = folded_to_profile("a 1\n").unwrap();
        p.sample.clear();
        let st = select_sample_type(&p, None).unwrap();
        let r = top(&p, &st, &TopOptions::default());
        assert!(r.rows.is_empty());
        assert!(r.render().contains("flat  flat%"));
    }
}
