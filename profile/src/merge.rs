//! Merging samples that differ only in their values: what google/pprof's
//! `Compact`/`Merge` do to repeated stacks. A producer that writes one
//! record per sample (1M records over 100k stacks) shrinks to one record
//! per distinct stack and label set, with the values summed, so every
//! later pass (filters, folding, drawing) works per distinct stack.

use rustc_hash::FxHashMap as HashMap;

use crate::proto::{Label, Profile, Sample};

/// Sums samples with the same locations and labels into one (values added
/// per sample type, saturating); keeps the first one's place in the list.
/// Totals, stacks and labels are unchanged. Returns the records removed.
pub fn merge_samples(p: &mut Profile) -> usize {
    let before = p.sample.len();
    let mut first: HashMap<(&[u64], &[Label]), usize> = HashMap::default();
    first.reserve(before.min(1 << 20));
    // Where each sample goes: its own index when first, else the first's.
    let mut into: Vec<usize> = Vec::with_capacity(before);
    for (i, s) in p.sample.iter().enumerate() {
        let at = *first
            .entry((s.location_id.as_slice(), s.label.as_slice()))
            .or_insert(i);
        into.push(at);
    }
    drop(first);
    if into.iter().enumerate().all(|(i, &at)| i == at) {
        return 0;
    }
    let mut samples: Vec<Sample> = std::mem::take(&mut p.sample);
    for i in 0..samples.len() {
        let at = into[i];
        if at != i {
            let values = std::mem::take(&mut samples[i].value);
            let target = &mut samples[at].value;
            if target.len() < values.len() {
                target.resize(values.len(), 0);
            }
            for (t, v) in target.iter_mut().zip(values) {
                *t = t.saturating_add(v);
            }
        }
    }
    let mut keep = into.iter().enumerate().map(|(i, &at)| i == at);
    samples.retain(|_| keep.next().unwrap_or(false));
    p.sample = samples;
    before - p.sample.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_profile;

    #[test]
    fn repeated_stacks_sum_and_labels_stay_apart() {
        let mut p = sample_profile();
        let before = crate::total(&p, 0);
        let stacks = crate::fold::fold(&p, 0);
        let extra: Vec<Sample> = p.sample.clone();
        p.sample.extend(extra);
        let mut labelled = p.sample[0].clone();
        labelled.label.push(Label {
            key: 1,
            str: 1,
            ..Default::default()
        });
        p.sample.push(labelled);
        let records = p.sample.len();
        let removed = merge_samples(&mut p);
        assert_eq!(p.sample.len(), records - removed);
        // [2,1] and [1] unlabelled, [2,1] labelled.
        assert_eq!(p.sample.len(), 3);
        let expected = 2 * before + p.sample.last().unwrap().value[0];
        assert_eq!(crate::total(&p, 0), expected);
        let doubled: Vec<(String, i64)> = stacks.iter().map(|(s, v)| (s.clone(), 2 * v)).collect();
        let mut without_labelled = p.clone();
        without_labelled.sample.pop();
        assert_eq!(crate::fold::fold(&without_labelled, 0), doubled);
        assert_eq!(merge_samples(&mut p), 0);
    }
}
