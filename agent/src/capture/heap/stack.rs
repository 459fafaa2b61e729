//! A dumped stack, and maps keyed by one.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// A dumped stack: return addresses, leaf first (after a label-set id in
/// [`HeapSnapshot::labelled`](super::HeapSnapshot::labelled) snapshots).
/// Shared, not copied, between the snapshots that hold it (the wrapper's,
/// the recorder's, deltas).
pub type Stack = Arc<[u64]>;

/// A map keyed by stacks, hashed by [`StackHasher`].
pub type StackMap<V> = std::collections::HashMap<Stack, V, BuildStackHasher>;

/// Builds [`StackHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildStackHasher;

impl BuildHasher for BuildStackHasher {
    type Hasher = StackHasher;

    fn build_hasher(&self) -> StackHasher {
        StackHasher {
            lanes: [
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ],
        }
    }
}

/// Hashes a stack's words four at a time in four independent lanes: a
/// stack is 20–50 words, and a one-lane hash (Fx) waits on a multiply per
/// word; snapshots hash every stack (10k at a time) into their maps. Not
/// for keys an adversary chooses.
#[derive(Debug, Clone)]
pub struct StackHasher {
    lanes: [u64; 4],
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn mix(lane: u64, word: u64) -> u64 {
    (lane ^ word).wrapping_mul(K).rotate_left(29)
}

impl Hasher for StackHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(32);
        for chunk in &mut chunks {
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                let word = u64::from_le_bytes(chunk[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                *lane = mix(*lane, word);
            }
        }
        let rest = chunks.remainder();
        let mut words = rest.chunks_exact(8);
        for (i, word) in (&mut words).enumerate() {
            self.lanes[i] = mix(
                self.lanes[i],
                u64::from_le_bytes(word.try_into().unwrap_or([0; 8])),
            );
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut last = [0u8; 8];
            last[..tail.len()].copy_from_slice(tail);
            self.lanes[3] = mix(self.lanes[3], u64::from_le_bytes(last) ^ tail.len() as u64);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.lanes[0] = mix(self.lanes[0], n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let [a, b, c, d] = self.lanes;
        let mut h = a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47);
        // murmur3's finalizer: every input bit reaches every output bit.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(words: &[u64]) -> u64 {
        BuildStackHasher.hash_one(words)
    }

    #[test]
    fn stacks_that_differ_anywhere_hash_apart() {
        let base: Vec<u64> = (0..45).map(|i| 0x5555_0000_1000 + i * 0x40).collect();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(hash(&base)));
        // One word changed, in every position, by one bit or by a lot; and
        // every prefix (a different length).
        for at in 0..base.len() {
            for delta in [1u64, 0x40, 1 << 40] {
                let mut other = base.clone();
                other[at] ^= delta;
                assert!(seen.insert(hash(&other)), "word {at} ^ {delta:#x}");
            }
            assert!(seen.insert(hash(&base[..at])), "prefix of {at}");
        }
        // Buckets come from the low bits and hashbrown's tags from the top
        // seven: both spread.
        let low: std::collections::HashSet<u64> = seen.iter().map(|h| h & 0xff).collect();
        let top: std::collections::HashSet<u64> = seen.iter().map(|h| h >> 57).collect();
        assert!(
            low.len() > 100 && top.len() > 100,
            "{} low, {} top",
            low.len(),
            top.len()
        );
    }

    #[test]
    fn a_stack_hashes_as_its_words() {
        let words = [1u64, 2, 3, 4, 5, 6, 7];
        let stack: Stack = Arc::from(&words[..]);
        assert_eq!(BuildStackHasher.hash_one(&stack), hash(&words));
        assert_eq!(BuildStackHasher.hash_one(words.to_vec()), hash(&words));
    }
}
