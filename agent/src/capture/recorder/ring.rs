//! The recorder's memory of the recent past: CPU in one-second buckets of
//! unsymbolized stacks, heap snapshots, and runtime metrics, bounded by
//! age and by bytes (oldest dropped first, counted).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap as HashMap;

use crate::capture::cpu::{CapturedStack, CpuCapture};
use crate::capture::heap::HeapSnapshot;

/// One stack of one second, as the sampler gave it.
#[derive(Debug, Clone)]
pub(crate) struct BucketStack {
    /// The interrupted instruction, then return addresses.
    pub(crate) frames: Box<[u64]>,
    pub(crate) thread: Arc<str>,
    pub(crate) labels: u32,
    pub(crate) samples: i64,
    pub(crate) cpu_ns: i64,
}

/// The CPU of (about) one second.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub(crate) start: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) stacks: Vec<BucketStack>,
}

impl Bucket {
    /// What it holds on the heap: the stack list as allocated (its spare
    /// capacity too) and each stack's frames.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Bucket>()
            + self.stacks.capacity() * std::mem::size_of::<BucketStack>()
            + self
                .stacks
                .iter()
                .map(|s| s.frames.len() * 8)
                .sum::<usize>()
    }

    fn end(&self) -> SystemTime {
        self.start + self.duration
    }
}

/// A heap snapshot the recorder took, with its figure.
#[derive(Debug, Clone)]
pub(crate) struct HeapEntry {
    pub(crate) time: SystemTime,
    pub(crate) snapshot: Arc<HeapSnapshot>,
    bytes: usize,
}

/// Runtime and task-group metrics at one time.
#[derive(Debug, Clone)]
pub(crate) struct MetricsEntry {
    pub(crate) time: SystemTime,
    pub(crate) metrics: Arc<serde_json::Value>,
    bytes: usize,
}

/// What the ring dropped to stay in bounds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Dropped {
    /// CPU seconds (buckets) dropped.
    pub cpu_buckets: u64,
    /// Heap snapshots dropped.
    pub heap_snapshots: u64,
    /// Metrics entries dropped.
    pub metrics: u64,
}

/// The bounded past.
#[derive(Debug)]
pub(crate) struct Ring {
    keep_for: Duration,
    max_bytes: usize,
    pub(crate) cpu: VecDeque<Bucket>,
    pub(crate) heap: VecDeque<HeapEntry>,
    pub(crate) metrics: VecDeque<MetricsEntry>,
    bytes: usize,
    pub(crate) dropped: Dropped,
}

impl Ring {
    pub(crate) fn new(keep_for: Duration, max_bytes: usize) -> Ring {
        Ring {
            keep_for,
            max_bytes,
            cpu: VecDeque::new(),
            heap: VecDeque::new(),
            metrics: VecDeque::new(),
            bytes: 0,
            dropped: Dropped::default(),
        }
    }

    /// Bytes held now (estimated: the stacks' frames and fixed parts).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn push_cpu(&mut self, mut bucket: Bucket) {
        bucket.stacks.shrink_to_fit();
        self.bytes += bucket.bytes();
        self.cpu.push_back(bucket);
        self.trim();
    }

    pub(crate) fn push_heap(&mut self, time: SystemTime, snapshot: HeapSnapshot) {
        let bytes = snapshot
            .stacks
            .keys()
            .map(|k| k.len() * 8 + 64)
            .sum::<usize>()
            + std::mem::size_of::<HeapSnapshot>();
        self.bytes += bytes;
        self.heap.push_back(HeapEntry {
            time,
            snapshot: Arc::new(snapshot),
            bytes,
        });
        self.trim();
    }

    pub(crate) fn push_metrics(&mut self, time: SystemTime, metrics: serde_json::Value) {
        let bytes = metrics.to_string().len() + 64;
        self.bytes += bytes;
        self.metrics.push_back(MetricsEntry {
            time,
            metrics: Arc::new(metrics),
            bytes,
        });
        self.trim();
    }

    /// Drops what is too old, then the oldest of anything until the bytes
    /// fit (CPU first: it is most of the ring; the newest heap snapshot
    /// always stays, as the base of every heap read).
    fn trim(&mut self) {
        let Some(horizon) = SystemTime::now().checked_sub(self.keep_for) else {
            return;
        };
        while self.cpu.front().is_some_and(|b| b.end() < horizon) {
            self.drop_cpu();
        }
        while self.heap.len() > 1 && self.heap.front().is_some_and(|h| h.time < horizon) {
            self.drop_heap();
        }
        while self.metrics.front().is_some_and(|m| m.time < horizon) {
            self.drop_metrics();
        }
        while self.bytes > self.max_bytes {
            if self.cpu.len() > 1 {
                self.drop_cpu();
            } else if self.heap.len() > 1 {
                self.drop_heap();
            } else if !self.metrics.is_empty() {
                self.drop_metrics();
            } else {
                break;
            }
        }
    }

    fn drop_cpu(&mut self) {
        if let Some(b) = self.cpu.pop_front() {
            self.bytes = self.bytes.saturating_sub(b.bytes());
            self.dropped.cpu_buckets += 1;
        }
    }

    fn drop_heap(&mut self) {
        if let Some(h) = self.heap.pop_front() {
            self.bytes = self.bytes.saturating_sub(h.bytes);
            self.dropped.heap_snapshots += 1;
        }
    }

    fn drop_metrics(&mut self) {
        if let Some(m) = self.metrics.pop_front() {
            self.bytes = self.bytes.saturating_sub(m.bytes);
            self.dropped.metrics += 1;
        }
    }

    /// The CPU buckets that end after `since` (and start before `until`).
    pub(crate) fn cpu_between(&self, since: SystemTime, until: SystemTime) -> Vec<Bucket> {
        self.cpu
            .iter()
            .filter(|b| b.end() > since && b.start < until)
            .cloned()
            .collect()
    }

    /// The heap snapshot taken nearest to `at`.
    pub(crate) fn heap_nearest(&self, at: SystemTime) -> Option<HeapEntry> {
        let distance = |t: SystemTime| {
            t.duration_since(at)
                .or_else(|_| at.duration_since(t))
                .unwrap_or_default()
        };
        self.heap.iter().min_by_key(|h| distance(h.time)).cloned()
    }

    /// The newest heap snapshot.
    pub(crate) fn heap_newest(&self) -> Option<HeapEntry> {
        self.heap.back().cloned()
    }
}

/// A stack's identity across buckets: frames, thread, label set.
type StackKey = (Box<[u64]>, Arc<str>, u32);

/// Buckets merged into one CPU capture over their span: what the recent
/// and incident CPU profiles are built from.
pub(crate) fn merge(buckets: &[Bucket], frequency: u32, period: Duration) -> CpuCapture {
    let mut by_stack: HashMap<StackKey, (i64, i64)> = HashMap::default();
    for b in buckets {
        for s in &b.stacks {
            let e = by_stack
                .entry((s.frames.clone(), s.thread.clone(), s.labels))
                .or_default();
            e.0 += s.samples;
            e.1 += s.cpu_ns;
        }
    }
    let start = buckets
        .iter()
        .map(|b| b.start)
        .min()
        .unwrap_or_else(SystemTime::now);
    let end = buckets.iter().map(Bucket::end).max().unwrap_or(start);
    CpuCapture {
        stacks: by_stack
            .into_iter()
            .map(
                |((frames, thread, labels), (count, cpu_ns))| CapturedStack {
                    // The leaf as interrupted; callers' return addresses minus
                    // one, so each points inside its call.
                    addresses: frames
                        .iter()
                        .enumerate()
                        .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
                        .collect(),
                    thread: thread.to_string(),
                    count,
                    cpu_ns,
                    labels,
                },
            )
            .collect(),
        frequency,
        period,
        start,
        duration: end.duration_since(start).unwrap_or_default(),
        dropped: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start: SystemTime, stacks: usize, depth: usize) -> Bucket {
        Bucket {
            start,
            duration: Duration::from_secs(1),
            stacks: (0..stacks)
                .map(|i| BucketStack {
                    frames: (0..depth as u64).map(|f| f * 1000 + i as u64).collect(),
                    thread: "t".into(),
                    labels: 0,
                    samples: 1,
                    cpu_ns: 52_631_578,
                })
                .collect(),
        }
    }

    #[test]
    fn the_ring_drops_the_oldest_to_stay_under_its_bytes_and_age() {
        let now = SystemTime::now();
        let mut ring = Ring::new(Duration::from_secs(600), 200_000);
        for i in 0..100 {
            ring.push_cpu(bucket(now - Duration::from_secs(100 - i), 50, 20));
            assert!(ring.bytes() <= 200_000, "{}", ring.bytes());
        }
        assert!(ring.dropped.cpu_buckets > 0);
        // What is kept is the newest.
        assert!(ring.cpu.back().unwrap().start > now - Duration::from_secs(2));
        // Age: a bucket older than keep_for goes at the next push.
        let mut ring = Ring::new(Duration::from_secs(10), usize::MAX);
        ring.push_cpu(bucket(now - Duration::from_secs(60), 1, 1));
        ring.push_cpu(bucket(now, 1, 1));
        assert_eq!(ring.cpu.len(), 1);
        assert_eq!(ring.dropped.cpu_buckets, 1);
    }

    #[test]
    fn merged_buckets_sum_by_stack_and_span_their_window() {
        let now = SystemTime::now();
        let b = [
            bucket(now, 3, 4),
            bucket(now + Duration::from_secs(1), 3, 4),
        ];
        let c = merge(&b, 19, Duration::from_millis(52));
        assert_eq!(c.stacks.len(), 3);
        assert!(c.stacks.iter().all(|s| s.count == 2));
        assert_eq!(c.duration, Duration::from_secs(2));
        // Callers point inside their call.
        let s = &c.stacks[0];
        assert_eq!(s.addresses.len(), 4);
    }
}
