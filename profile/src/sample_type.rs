//! Sample types: which value of a sample means what, the default one by
//! Go's rule, and the two reads of a profile everything else uses: its
//! string table ([`Profile::string_at`]) and a sample type's total
//! ([`Profile::sample_total`]).

use crate::error::{Error, Result};
use crate::proto::Profile;

impl Profile {
    /// The string table's entry `id` (what every `*_strindex`-like field of
    /// the proto refers to); out-of-range ids read as "".
    pub fn string_at(&self, id: i64) -> &str {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.string_table.get(i))
            .map_or("", String::as_str)
    }

    /// Sum of every sample's value of sample type `index` (saturating).
    pub fn sample_total(&self, index: usize) -> i64 {
        self.sample
            .iter()
            .filter_map(|s| s.value.get(index))
            .fold(0i64, |a, &v| a.saturating_add(v))
    }
}

/// The index of the profile's default sample type: `default_sample_type` when
/// set and present, else the last type (the rule `go tool pprof` follows).
pub fn default_sample_index(profile: &Profile) -> usize {
    if profile.default_sample_type != 0 {
        let wanted = profile.string_at(profile.default_sample_type);
        if let Some(i) = profile
            .sample_type
            .iter()
            .position(|t| profile.string_at(t.ty) == wanted)
        {
            return i;
        }
    }
    profile.sample_type.len().saturating_sub(1)
}

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
            name: p.string_at(t.ty).to_string(),
            unit: p.string_at(t.unit).to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ValueType;
    use crate::read_folded::folded_to_profile;
    use crate::testing::sample_profile;

    #[test]
    fn selects_by_name_index_and_default() {
        let p = folded_to_profile("a 1\n").unwrap();
        assert_eq!(select_sample_type(&p, None).unwrap().name, "samples");
        assert_eq!(select_sample_type(&p, Some("0")).unwrap().index, 0);
        let err = select_sample_type(&p, Some("cpu")).unwrap_err().to_string();
        assert!(err.contains("0=samples/count"), "{err}");
    }

    #[test]
    fn default_sample_index_is_last_unless_named() {
        let mut p = sample_profile();
        p.sample_type.push(ValueType { ty: 4, unit: 2 });
        assert_eq!(default_sample_index(&p), 1);
        p.default_sample_type = 1;
        assert_eq!(default_sample_index(&p), 0);
    }
}
