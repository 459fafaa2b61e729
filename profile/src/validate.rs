//! Consistency checks on a decoded profile, in the spirit of Go's
//! `profile.CheckValid`: every id a sample, location or line refers to
//! exists, ids are unique and non-zero, string indices are in range, and each
//! sample has one value per sample type. Everything after loading indexes by
//! these ids, so checking once here is what lets it never panic.

use std::collections::HashSet;

use crate::proto::Profile;

use crate::error::{Error, Result};

/// Checks `p`; the error names the first inconsistency found.
pub fn validate(p: &Profile) -> Result<()> {
    let bad = |msg: String| Err(Error::Invalid(msg));
    let strings = p.string_table.len();
    if p.string_table.first().is_some_and(|s| !s.is_empty()) {
        return bad("string_table[0] is not the empty string".into());
    }
    let check_str = |what: &str, i: i64| -> Result<()> {
        // Index 0 is "" even when the table is empty.
        if i == 0 || usize::try_from(i).is_ok_and(|i| i < strings) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{what} refers to string {i}, but the string table has {strings} entries"
            )))
        }
    };

    for t in &p.sample_type {
        check_str("sample_type", t.ty)?;
        check_str("sample_type unit", t.unit)?;
    }
    if let Some(t) = &p.period_type {
        check_str("period_type", t.ty)?;
        check_str("period_type unit", t.unit)?;
    }
    for &c in &p.comment {
        check_str("comment", c)?;
    }
    check_str("drop_frames", p.drop_frames)?;
    check_str("keep_frames", p.keep_frames)?;
    check_str("default_sample_type", p.default_sample_type)?;

    let mut mappings = HashSet::with_capacity(p.mapping.len());
    for m in &p.mapping {
        if m.id == 0 || !mappings.insert(m.id) {
            return bad(format!("mapping id {} is zero or repeated", m.id));
        }
        check_str("mapping filename", m.filename)?;
        check_str("mapping build_id", m.build_id)?;
    }
    let mut functions = HashSet::with_capacity(p.function.len());
    for f in &p.function {
        if f.id == 0 || !functions.insert(f.id) {
            return bad(format!("function id {} is zero or repeated", f.id));
        }
        check_str("function name", f.name)?;
        check_str("function system_name", f.system_name)?;
        check_str("function filename", f.filename)?;
    }
    let mut locations = IdSet::for_ids(p.location.iter().map(|l| l.id));
    for l in &p.location {
        if l.id == 0 || !locations.insert(l.id) {
            return bad(format!("location id {} is zero or repeated", l.id));
        }
        if l.mapping_id != 0 && !mappings.contains(&l.mapping_id) {
            return bad(format!(
                "location {} refers to mapping {}, which does not exist",
                l.id, l.mapping_id
            ));
        }
        for line in &l.line {
            if line.function_id != 0 && !functions.contains(&line.function_id) {
                return bad(format!(
                    "location {} refers to function {}, which does not exist",
                    l.id, line.function_id
                ));
            }
        }
    }
    let types = p.sample_type.len();
    for (i, s) in p.sample.iter().enumerate() {
        if s.value.len() != types {
            return bad(format!(
                "sample {i} has {} values but the profile has {types} sample types",
                s.value.len()
            ));
        }
        for id in &s.location_id {
            if !locations.contains(id) {
                return bad(format!(
                    "sample {i} refers to location {id}, which does not exist"
                ));
            }
        }
        for label in &s.label {
            check_str("label key", label.key)?;
            check_str("label value", label.str)?;
            check_str("label unit", label.num_unit)?;
        }
    }
    Ok(())
}

/// Location ids, checked once per frame of every sample (tens of millions
/// in a large profile): a bitmap when the ids are dense, as producers number
/// them 1..=N, a hash set otherwise.
enum IdSet {
    Dense(Vec<bool>),
    Sparse(rustc_hash::FxHashSet<u64>),
}

impl IdSet {
    fn for_ids(ids: impl Iterator<Item = u64> + Clone) -> Self {
        let count = ids.clone().count();
        let max = ids.max().unwrap_or(0);
        match usize::try_from(max) {
            Ok(max) if max <= count.saturating_mul(4).saturating_add(1024) => {
                IdSet::Dense(vec![false; max + 1])
            }
            _ => IdSet::Sparse(rustc_hash::FxHashSet::default()),
        }
    }

    /// Adds `id`; false if it was there already.
    fn insert(&mut self, id: u64) -> bool {
        match self {
            IdSet::Dense(v) => match v.get_mut(id as usize) {
                Some(slot) if !*slot => {
                    *slot = true;
                    true
                }
                _ => false,
            },
            IdSet::Sparse(set) => set.insert(id),
        }
    }

    fn contains(&self, id: &u64) -> bool {
        match self {
            IdSet::Dense(v) => usize::try_from(*id)
                .ok()
                .and_then(|i| v.get(i))
                .copied()
                .unwrap_or(false),
            IdSet::Sparse(set) => set.contains(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Sample, ValueType};

    fn base() -> Profile {
        Profile {
            string_table: vec!["".into(), "samples".into(), "count".into()],
            sample_type: vec![ValueType { ty: 1, unit: 2 }],
            ..Default::default()
        }
    }

    #[test]
    fn id_sets_dense_and_sparse() {
        let mut dense = IdSet::for_ids([1u64, 2, 3].into_iter());
        assert!(matches!(dense, IdSet::Dense(_)));
        assert!(dense.insert(1) && !dense.insert(1) && dense.insert(3));
        assert!(dense.contains(&3) && !dense.contains(&2) && !dense.contains(&u64::MAX));
        let mut sparse = IdSet::for_ids([1u64, u64::MAX].into_iter());
        assert!(matches!(sparse, IdSet::Sparse(_)));
        assert!(sparse.insert(u64::MAX) && !sparse.insert(u64::MAX));
        assert!(sparse.contains(&u64::MAX) && !sparse.contains(&2));
    }

    #[test]
    fn dangling_location_is_reported() {
        let mut p = base();
        p.sample.push(Sample {
            location_id: vec![7],
            value: vec![1],
            label: vec![],
        });
        let err = validate(&p).unwrap_err().to_string();
        assert!(err.contains("location 7"), "{err}");
    }

    #[test]
    fn value_count_mismatch_and_bad_strings_are_reported() {
        let mut p = base();
        p.sample.push(Sample {
            location_id: vec![],
            value: vec![1, 2],
            label: vec![],
        });
        assert!(validate(&p).is_err());
        let mut p = base();
        p.sample_type[0].ty = 99;
        assert!(validate(&p).unwrap_err().to_string().contains("string 99"));
        assert!(validate(&base()).is_ok());
    }
}
