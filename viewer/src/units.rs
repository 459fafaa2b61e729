//! Unit-aware formatting of sample values, following the rules of Go's
//! `internal/measurement` so that numbers read like `go tool pprof`'s:
//! nanoseconds scale to µs/ms/s, bytes to KiB/MiB/GiB (1024-based, which Go
//! labels kB/MB/GB), anything else prints as a plain count.
//!
//! Every figure takes its own unit, Go's automatic choice: the largest unit
//! that keeps the value at least 1 (`4.88s`, `512KiB`). So a figure reads
//! the same wherever it is printed: in a one-shot `top`, the shell, a
//! `--tag`-filtered table and the web UI (a table-wide unit picked from the
//! rows shown, as `go tool pprof -top` does, printed one total as `4.88s`
//! in one view and `4878.79ms` in another).

/// The family a sample unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// Memory: bytes.
    Bytes,
    /// Time: nanoseconds.
    Time,
    /// Counts and unknown units: printed unscaled.
    Count,
}

/// A unit a value is displayed in: a label and how many base units it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    /// Suffix shown after the number (`ms`, `MiB`, or empty for counts).
    pub label: &'static str,
    /// Base units (bytes or nanoseconds) per displayed unit.
    pub factor: f64,
}

const BYTES: &[(&str, f64)] = &[
    ("B", 1.0),
    ("KiB", 1024.0),
    ("MiB", 1_048_576.0),
    ("GiB", 1_073_741_824.0),
    ("TiB", 1_099_511_627_776.0),
    ("PiB", 1_125_899_906_842_624.0),
];
const TIME: &[(&str, f64)] = &[
    ("ns", 1.0),
    ("us", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("hrs", 3.6e12),
];

impl UnitKind {
    /// Classifies a pprof unit string (`bytes`, `nanoseconds`, `count`, …),
    /// with the aliases Go accepts.
    pub fn of(unit: &str) -> (UnitKind, f64) {
        let mut u = unit.to_ascii_lowercase();
        if u.len() > 2 {
            if let Some(s) = u.strip_suffix('s') {
                u = s.to_string();
            }
        }
        let bytes = [
            (["b", "byte", "b"], 1.0),
            (["kb", "kbyte", "kilobyte"], 1024.0),
            (["mb", "mbyte", "megabyte"], 1_048_576.0),
            (["gb", "gbyte", "gigabyte"], 1_073_741_824.0),
        ];
        for (names, f) in bytes {
            if names.contains(&u.as_str()) {
                return (UnitKind::Bytes, f);
            }
        }
        let time = [
            (["ns", "nanosecond", "nanosecond"], 1.0),
            (["us", "microsecond", "μs"], 1e3),
            (["ms", "millisecond", "millisecond"], 1e6),
            (["s", "sec", "second"], 1e9),
            (["hour", "hr", "hr"], 3.6e12),
        ];
        for (names, f) in time {
            if names.contains(&u.as_str()) {
                return (UnitKind::Time, f);
            }
        }
        (UnitKind::Count, 1.0)
    }

    fn scales(self) -> &'static [(&'static str, f64)] {
        match self {
            UnitKind::Bytes => BYTES,
            UnitKind::Time => TIME,
            UnitKind::Count => &[("", 1.0)],
        }
    }

    /// The largest unit in which `value` (in base units) is at least 1 —
    /// Go's auto scaling.
    pub fn auto(self, value: f64) -> Scale {
        let value = value.abs();
        let mut best: Option<(&'static str, f64)> = None;
        for &(label, factor) in self.scales() {
            if value / factor >= 1.0 && best.is_none_or(|(_, f)| factor >= f) {
                best = Some((label, factor));
            }
        }
        let (label, factor) = best.unwrap_or(match self {
            UnitKind::Bytes => ("B", 1.0),
            UnitKind::Time => ("s", 1e9),
            UnitKind::Count => ("", 1.0),
        });
        Scale { label, factor }
    }
}

/// How values of one sample type are displayed in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueFormat {
    /// Base units per raw sample value (e.g. 1e3 for `microseconds`).
    pub base_per_value: f64,
    /// The unit of the value the format was made for (the total); each
    /// figure is still printed in its own unit.
    pub scale: Scale,
    kind: UnitKind,
}

impl ValueFormat {
    /// The format of a table of `unit` values whose smallest non-zero one
    /// is `min_nonzero` and whose total is `total`. Kept for the callers
    /// that pass the rows shown: figures no longer depend on them.
    pub fn for_values(unit: &str, min_nonzero: i64, total: i64) -> Self {
        let _ = min_nonzero;
        ValueFormat::auto(unit, total)
    }

    /// The format of `unit` values, its reference unit chosen for `value`.
    pub fn auto(unit: &str, value: i64) -> Self {
        let (kind, base_per_value) = UnitKind::of(unit);
        ValueFormat {
            base_per_value,
            scale: kind.auto(value as f64 * base_per_value),
            kind,
        }
    }

    /// Formats like Go: the largest unit keeping the value at least 1, two
    /// decimals, `.00` trimmed, zero as `0`.
    pub fn format(&self, value: i64) -> String {
        let base = value as f64 * self.base_per_value;
        let scale = self.kind.auto(base);
        let v = base / scale.factor;
        let s = format!("{v:.2}");
        let s = s.strip_suffix(".00").unwrap_or(&s);
        if s == "0" || s == "-0" {
            return "0".to_string();
        }
        format!("{s}{}", scale.label)
    }

    /// Like [`format`](Self::format) with an explicit `+` on growth (diffs).
    pub fn format_signed(&self, value: i64) -> String {
        let s = self.format(value);
        if value > 0 && s != "0" {
            format!("+{s}")
        } else {
            s
        }
    }
}

/// `value` as a percentage of `total`, formatted like Go's
/// `measurement.Percentage` (`%5.2f%%`, `%5.2g%%` under 1%, `100%`): the
/// viewer's one percentage format, so `top`, `peek`, `tags`, `--by` and the
/// web UI print a share alike.
pub fn percentage(value: i64, total: i64) -> String {
    let ratio = if total != 0 {
        (value as f64 / total as f64).abs() * 100.0
    } else {
        0.0
    };
    if (99.95..=100.05).contains(&ratio) {
        return "  100%".to_string();
    }
    if ratio >= 1.0 {
        return format!("{ratio:5.2}%");
    }
    format!("{:>5}%", format_g2(ratio))
}

/// Go's `%.2g` for 0 <= x < 1: two significant digits, trailing zeros
/// dropped, exponent form below 1e-4.
fn format_g2(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{x:.1e}"); // e.g. "5.4e-2"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..2).contains(&exp) {
        let m = mantissa.trim_end_matches('0').trim_end_matches('.');
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let decimals = (1 - exp).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_match_go() {
        assert_eq!(percentage(1657, 1867), "88.75%");
        assert_eq!(percentage(1, 1867), "0.054%");
        assert_eq!(percentage(15, 1867), "  0.8%");
        assert_eq!(percentage(3, 3), "  100%");
        assert_eq!(percentage(0, 3), "    0%");
        assert_eq!(percentage(1, 10_000_000), "1e-05%");
    }

    #[test]
    fn values_scale_like_go() {
        // Each figure in the largest unit that keeps it at least 1, so one
        // figure reads alike whatever else a table shows.
        let f = ValueFormat::for_values("nanoseconds", 10_000_000, 18_670_000_000);
        assert_eq!(f.format(16_570_000_000), "16.57s");
        assert_eq!(f.format(10_000_000), "10ms");
        assert_eq!(f.format(1_000_000_000), "1s");
        let g = ValueFormat::for_values("nanoseconds", 1_000_000, 4_878_790_000);
        assert_eq!(g.format(4_878_790_000), "4.88s");
        assert_eq!(f.format(4_878_790_000), "4.88s");
        assert_eq!(f.format(999_000), "999us");
        let f = ValueFormat::for_values("bytes", 524_339, 14_913_106);
        assert_eq!(f.format(13_339_658), "12.72MiB");
        assert_eq!(f.format(524_288), "512KiB");
        assert_eq!(ValueFormat::for_values("count", 1, 3).format(2), "2");
        assert_eq!(
            ValueFormat::auto("nanoseconds", 11_000_000_000).format(11_000_000_000),
            "11s"
        );
        assert_eq!(f.format_signed(-1024), "-1KiB");
    }
}
