//! Merging samples that differ only in their values: what google/pprof's
//! `Compact`/`Merge` do to repeated stacks. A producer that writes one
//! record per sample (1M records over 100k stacks) shrinks to one record
//! per distinct stack and label set, with the values summed, so every
//! later pass (filters, folding, drawing) works per distinct stack.

use rustc_hash::FxHashMap as HashMap;

use crate::error::{Error, Result};
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

/// Decodes a `Profile` field by field, summing samples with equal
/// locations and labels as they arrive: each sample is decoded into one
/// reused buffer and looked up by hash; only distinct ones are kept. Every
/// other field is decoded by prost from a copy of its bytes at the end.
/// Memory is bounded as `parse` bounds it: the running estimate of the
/// decoded size may not pass `max_decoded`.
#[derive(Debug)]
pub(crate) struct MergedDecoder {
    rest: Vec<u8>,
    samples: Vec<Sample>,
    /// Hash → first sample with it; `next` chains samples of equal hashes.
    heads: HashMap<u64, u32>,
    next: Vec<u32>,
    scratch: Sample,
    estimate: u64,
    max_decoded: u64,
}

impl MergedDecoder {
    pub(crate) fn new(max_decoded: u64) -> Self {
        MergedDecoder {
            rest: Vec::new(),
            samples: Vec::new(),
            heads: HashMap::default(),
            next: Vec::new(),
            scratch: Sample::default(),
            estimate: 0,
            max_decoded,
        }
    }

    /// Decodes the complete fields at the start of `buf`; returns how many
    /// bytes they took (a field cut at the end waits for more bytes).
    pub(crate) fn feed(&mut self, buf: &[u8]) -> Result<usize> {
        use crate::limits::decoded_field_size;
        use crate::varint::read_varint;
        let framing = || Error::Format("malformed protobuf framing".to_string());
        let mut pos = 0;
        while pos < buf.len() {
            let mut b = &buf[pos..];
            // A varint cut short needs more bytes; one of 10 that does not
            // end is broken.
            let short = |b: &[u8]| b.len() < 10;
            let Some(key) = read_varint(&mut b) else {
                if short(&buf[pos..]) {
                    break;
                }
                return Err(framing());
            };
            let (field, wire) = (key >> 3, key & 7);
            let payload = match wire {
                0 => {
                    let before = b;
                    if read_varint(&mut b).is_none() {
                        if short(before) {
                            break;
                        }
                        return Err(framing());
                    }
                    self.estimate = self.estimate.saturating_add(8);
                    None
                }
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    if b.len() < n {
                        break;
                    }
                    b = &b[n..];
                    None
                }
                2 => {
                    let before = b;
                    let Some(len) = read_varint(&mut b) else {
                        if short(before) {
                            break;
                        }
                        return Err(framing());
                    };
                    let len = usize::try_from(len).map_err(|_| framing())?;
                    if b.len() < len {
                        break;
                    }
                    let (payload, after) = b.split_at(len);
                    b = after;
                    self.estimate = self.estimate.saturating_add(decoded_field_size(field, len));
                    Some(payload)
                }
                _ => return Err(framing()),
            };
            if self.estimate > self.max_decoded {
                return Err(Error::TooLarge {
                    what: "decoded profile (estimated)",
                    limit: self.max_decoded,
                });
            }
            let end = buf.len() - b.len();
            match payload {
                Some(sample) if field == 2 => self.sample(sample)?,
                _ => self.rest.extend_from_slice(&buf[pos..end]),
            }
            pos = end;
        }
        Ok(pos)
    }

    fn sample(&mut self, body: &[u8]) -> Result<()> {
        use std::hash::{Hash, Hasher};
        const END: u32 = u32::MAX;
        let s = &mut self.scratch;
        prost::Message::clear(s);
        prost::Message::merge(s, body).map_err(bad)?;
        let mut h = rustc_hash::FxHasher::default();
        s.location_id.hash(&mut h);
        s.label.hash(&mut h);
        let h = h.finish();
        let mut at = self.heads.get(&h).copied().unwrap_or(END);
        while at != END {
            let kept = &self.samples[at as usize];
            if kept.location_id == s.location_id && kept.label == s.label {
                break;
            }
            at = self.next[at as usize];
        }
        if at == END {
            let index = u32::try_from(self.samples.len())
                .map_err(|_| Error::Format("more than 4G distinct samples".into()))?;
            self.next.push(self.heads.insert(h, index).unwrap_or(END));
            self.samples.push(s.clone());
        } else {
            let values = &mut self.samples[at as usize].value;
            if values.len() < s.value.len() {
                values.resize(s.value.len(), 0);
            }
            for (v, add) in values.iter_mut().zip(&s.value) {
                *v = v.saturating_add(*add);
            }
        }
        Ok(())
    }

    /// The profile, once every byte was fed; `unfed` bytes left over are a
    /// field cut short.
    pub(crate) fn finish(self, unfed: usize) -> Result<Profile> {
        if unfed > 0 {
            return Err(Error::Format(format!(
                "protobuf: truncated field ({unfed} bytes at the end)"
            )));
        }
        let mut profile = <Profile as prost::Message>::decode(&self.rest[..]).map_err(bad)?;
        profile.sample = self.samples;
        Ok(profile)
    }
}

fn bad(e: prost::DecodeError) -> Error {
    Error::Format(format!(
        "protobuf: {}",
        crate::error::one_line(&e.to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_profile;

    #[test]
    fn repeated_stacks_sum_and_labels_stay_apart() {
        let mut p = sample_profile();
        let before = p.sample_total(0);
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
        assert_eq!(p.sample_total(0), expected);
        let doubled: Vec<(String, i64)> = stacks.iter().map(|(s, v)| (s.clone(), 2 * v)).collect();
        let mut without_labelled = p.clone();
        without_labelled.sample.pop();
        assert_eq!(crate::fold::fold(&without_labelled, 0), doubled);
        assert_eq!(merge_samples(&mut p), 0);
    }
}
