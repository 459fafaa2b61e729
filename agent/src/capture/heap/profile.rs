//! A heap snapshot as a pprof profile: allocator frames trimmed, addresses
//! symbolized once each, the agent's own allocations labelled.
//!
//! What a stack becomes (its frames as address ids, the allocator frames
//! trimmed off its leaf, whether it is the agent's) depends on the stack
//! alone, so a [`StackMemo`] keeps it between profiles: the sampling
//! allocator's stacks are shared between its snapshots ([`Stack`]), and a
//! stack met again costs one lookup by its address in memory instead of a
//! walk over its frames. That walk (hundreds of thousands of frames at 10k
//! stacks) was most of a `/debug/pprof/heap` request. While a profile meets
//! the same stacks as the last one, that one's location numbering serves
//! again too: a sample is then a copy of its packed location ids and its
//! values.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use profscope_profile::prune::{Class, trim_allocator_frames};
use profscope_profile::{Label, Profile, SampleEncoder};
use rustc_hash::FxHashMap as HashMap;

use super::{HeapSnapshot, SAMPLE_TYPES, Stack, Values};
use crate::shared::profile_builder::ProfileBuilder;
use crate::shared::symbols::{Frame, Symbolizer};

/// Addresses a memo holds at most before it starts over (a service that
/// loads and unloads code would otherwise grow it for ever).
const MAX_ADDRESSES: usize = 1 << 16;

/// Profiles a stack stays learned after the last one that met it: full
/// snapshots and deltas (a subset of the stacks) share the memo, and a
/// delta must not make the next full profile learn everything again.
const REMEMBERED_FOR: u64 = 8;

/// What [`HeapSnapshot::to_profile_with`] learned about the stacks it met,
/// for the next profile.
#[derive(Default)]
pub(crate) struct StackMemo {
    /// Learned stacks, each in a slot it keeps until the memo forgets
    /// stacks.
    stacks: Vec<Learned>,
    /// Slots in profile order: by hash, then addresses.
    order: Vec<u32>,
    /// The stacks' frames as address ids, each a range.
    ids: Vec<u32>,
    /// Slot by the stack's address in memory and whether it is labelled.
    /// The entry holds the stack, so the address cannot be reused for
    /// another while it is here.
    position: HashMap<(usize, bool), u32>,
    index: AddressIndex,
    /// Per address id: its frames' classes, innermost first.
    classes: Vec<Vec<Class>>,
    /// Per address id: whether it is the agent's code.
    owners: Vec<AgentFrame>,
    /// Profiles made so far (each stack notes the last that met it).
    generation: u64,
    /// The last profile's location numbering, for the next one over the
    /// same stacks (a heap's stacks change far less often than it is read).
    numbering: Numbering,
}

/// Which locations a profile over a set of stacks has, numbered in order
/// of first use, and its samples in profile order, each with its location
/// ids packed as a sample holds them: all a profile over the same stacks
/// reads, front to back.
#[derive(Default)]
struct Numbering {
    /// The stacks (by slot) it is for; empty when it is for none.
    present: Vec<bool>,
    /// Locations in id order: (lookup address, inlined frames dropped).
    locations: Vec<(u64, usize)>,
    rows: Vec<Row>,
    packed: Vec<u8>,
}

/// One sample of a numbering.
struct Row {
    slot: u32,
    /// Its packed location ids: `packed[start..end]`.
    start: u32,
    end: u32,
    labels: u32,
    agents: bool,
}

impl std::fmt::Debug for StackMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackMemo")
            .field("stacks", &self.stacks.len())
            .field("addresses", &self.index.addrs.len())
            .finish()
    }
}

/// One stack as a profile reads it.
struct Learned {
    /// Keeps the stack alive (and its address unique) while learned.
    stack: Stack,
    labelled: bool,
    /// Its hash: stacks go into a profile in a stable order, so equal
    /// snapshots encode equally.
    hash: u64,
    labels: u32,
    /// Its address ids in [`StackMemo::ids`], leaf first, allocator frames
    /// trimmed (none: nothing but allocator frames, no sample).
    start: u32,
    len: u32,
    /// Inlined allocator frames dropped from the leaf address.
    dropped: usize,
    /// The agent's own allocation (unlabelled snapshots only).
    agents: bool,
    /// The last profile (generation) that met it: stacks none of the last
    /// [`REMEMBERED_FOR`] met are forgotten.
    seen: u64,
}

fn key_of(stack: &Stack, labelled: bool) -> (usize, bool) {
    (Arc::as_ptr(stack) as *const u64 as usize, labelled)
}

impl HeapSnapshot {
    /// Builds the pprof profile: Go's four sample types with
    /// `default_type` (`inuse_space` or `alloc_space`) as default, stacks
    /// trimmed so the leaf is the first frame that is not allocator
    /// machinery.
    pub fn to_profile(
        &self,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Profile {
        self.to_profile_with(&mut StackMemo::default(), symbolizer, default_type, end)
    }

    /// [`to_profile`](Self::to_profile), with what `memo` learned of
    /// earlier snapshots' stacks.
    pub(crate) fn to_profile_with(
        &self,
        memo: &mut StackMemo,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Profile {
        let Built {
            mut builder,
            labels,
            rows,
        } = self.build_with(memo, symbolizer, default_type, end);
        for row in rows {
            builder.add_labelled_sample_at(
                SampleEncoder::unpack(row.packed),
                row.values.to_vec(),
                labels[row.labels as usize].clone(),
            );
        }
        builder.build()
    }

    /// [`to_profile_with`](Self::to_profile_with) as protobuf (what
    /// [`profscope_profile::encode`] writes of it), each sample encoded as
    /// it is made rather than built and encoded after.
    pub(crate) fn to_pprof_with(
        &self,
        memo: &mut StackMemo,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Vec<u8> {
        let Built {
            builder,
            labels,
            rows,
        } = self.build_with(memo, symbolizer, default_type, end);
        let samples = SampleEncoder::with_capacity(rows.len() * 64);
        push_rows(samples, &rows, &labels).finish(&builder.build())
    }

    /// [`to_pprof_with`](Self::to_pprof_with) gzipped, for an HTTP answer:
    /// the samples are encoded in two parts of about equal bytes, each
    /// encoded and deflated at once on a thread of its own
    /// ([`profscope_profile::gzip_made_in_two`]; the second thread runs
    /// `enter` first). The bytes, once inflated, are `to_pprof_with`'s.
    pub(crate) fn to_gzipped_pprof_with<G>(
        &self,
        memo: &mut StackMemo,
        symbolizer: &Symbolizer,
        default_type: &str,
        end: SystemTime,
        enter: impl Fn() -> G + Sync,
    ) -> profscope_profile::Result<Vec<u8>> {
        let Built {
            builder,
            labels,
            rows,
        } = self.build_with(memo, symbolizer, default_type, end);
        let (head, tail) = profscope_profile::encode_split(&builder.build());
        // A sample is its packed location ids, its four values and a label
        // id or two: split where the estimated bytes balance.
        let estimate = |row: &BuiltRow| row.packed.len() + 16;
        let total = head.len() + rows.iter().map(estimate).sum::<usize>() + tail.len();
        let mut at = 0;
        let mut first_bytes = head.len();
        while at < rows.len() && first_bytes < total / 2 {
            first_bytes += estimate(&rows[at]);
            at += 1;
        }
        let (first, second) = rows.split_at(at);
        let encode = |bytes: Vec<u8>, rows: &[BuiltRow]| {
            let samples = SampleEncoder::after(bytes, rows.len() * 64);
            push_rows(samples, rows, &labels).into_bytes()
        };
        profscope_profile::gzip_made_in_two(
            || encode(head, first),
            || {
                let mut bytes = encode(Vec::with_capacity(second.len() * 64), second);
                bytes.extend_from_slice(&tail);
                bytes
            },
            enter,
        )
    }

    /// The profile's tables in a builder and its samples in profile order
    /// (location ids packed as [`SampleEncoder::pack`] packs them, values,
    /// label set), not yet encoded.
    fn build_with<'m, 's, 'y>(
        &'s self,
        memo: &'m mut StackMemo,
        symbolizer: &'y Symbolizer,
        default_type: &str,
        end: SystemTime,
    ) -> Built<'m, 's, 'y> {
        let start = self.time.unwrap_or(end);
        let mut builder = ProfileBuilder::new(symbolizer, &SAMPLE_TYPES)
            .period("space", "bytes", self.sample_period as i64)
            .default_sample_type(default_type)
            .time(start, end.duration_since(start).unwrap_or(Duration::ZERO));
        let labelled = self.labelled;
        // Many more addresses than the last profile used: start over (a
        // profile that uses more than the cap is not reset every time).
        if memo.index.addrs.len() > MAX_ADDRESSES.max(8 * memo.numbering.locations.len()) {
            *memo = StackMemo {
                generation: memo.generation,
                ..StackMemo::default()
            };
        }
        memo.generation += 1;
        let generation = memo.generation;
        // Each learned stack's values in this snapshot, by slot.
        let mut present: Vec<Option<&Values>> = vec![None; memo.stacks.len()];
        let mut new: Vec<&Stack> = Vec::new();
        for (stack, values) in &self.stacks {
            match memo.position.get(&key_of(stack, labelled)) {
                Some(&slot) => {
                    memo.stacks[slot as usize].seen = generation;
                    present[slot as usize] = Some(values);
                }
                None => new.push(stack),
            }
        }
        if !new.is_empty() {
            let moved = memo.learn(&new, labelled, symbolizer, self.stacks.len());
            // New stacks take new slots; forgetting stacks moves them all.
            let find: Vec<(&Stack, &Values)> = if moved {
                present = vec![None; memo.stacks.len()];
                self.stacks.iter().collect()
            } else {
                present.resize(memo.stacks.len(), None);
                new.iter().map(|s| (*s, &self.stacks[*s])).collect()
            };
            for (stack, values) in find {
                if let Some(&slot) = memo.position.get(&key_of(stack, labelled)) {
                    present[slot as usize] = Some(values);
                }
            }
        }
        let present_now: Vec<bool> = present.iter().map(Option::is_some).collect();
        if memo.numbering.present != present_now {
            memo.renumber(present_now);
        }
        let numbering = &memo.numbering;
        // Locations first, in the numbering's order: their ids are its
        // numbers.
        for (number, &(addr, dropped)) in numbering.locations.iter().enumerate() {
            let id = builder.location_id(addr, dropped);
            debug_assert_eq!(
                id,
                number as u64 + 1,
                "locations are made in numbering order"
            );
        }
        // Label sets by index: each made once, however many stacks carry
        // it.
        let mut labels: Vec<Vec<Label>> = Vec::new();
        let mut agent_label: Option<u32> = None;
        let mut label_sets: HashMap<u32, u32> = HashMap::default();
        let mut rows = Vec::with_capacity(numbering.rows.len());
        for row in &numbering.rows {
            let Some(values) = present[row.slot as usize] else {
                continue;
            };
            let mut make = |pairs: &[(&str, &str)]| {
                labels.push(builder.labels(pairs));
                labels.len() as u32 - 1
            };
            let label = if row.agents {
                *agent_label.get_or_insert_with(|| make(&[crate::capture::labels::AGENT_PAIR]))
            } else {
                *label_sets.entry(row.labels).or_insert_with(|| {
                    let pairs = crate::capture::labels::pairs_of(row.labels);
                    let pairs: Vec<(&str, &str)> = pairs
                        .iter()
                        .flat_map(|p| p.iter())
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    make(&pairs)
                })
            };
            rows.push(BuiltRow {
                packed: &numbering.packed[row.start as usize..row.end as usize],
                values,
                labels: label,
            });
        }
        Built {
            builder,
            labels,
            rows,
        }
    }
}

/// What [`HeapSnapshot::build_with`] makes: the tables, and the samples
/// to encode.
struct Built<'m, 's, 'y> {
    builder: ProfileBuilder<'y>,
    /// Label sets, by the index a row holds.
    labels: Vec<Vec<Label>>,
    rows: Vec<BuiltRow<'m, 's>>,
}

/// `rows` encoded into `samples`, in order.
fn push_rows(
    mut samples: SampleEncoder,
    rows: &[BuiltRow],
    labels: &[Vec<Label>],
) -> SampleEncoder {
    for row in rows {
        samples.push_packed(row.packed, row.values, &labels[row.labels as usize]);
    }
    samples
}

/// One sample of a profile, before encoding.
struct BuiltRow<'m, 's> {
    /// Its location ids, packed.
    packed: &'m [u8],
    values: &'s Values,
    /// Its label set: an index into [`Built::labels`].
    labels: u32,
}

impl StackMemo {
    /// Numbers the locations of the stacks in `present` (by slot), in
    /// profile order, by first use, and packs each one's location ids.
    fn renumber(&mut self, present: Vec<bool>) {
        let addrs = &self.index.addrs;
        // Per address id: its location number (0: none yet).
        let mut numbers: Vec<u32> = vec![0; addrs.len()];
        // Leaves with inlined allocator frames dropped are locations of
        // their own.
        let mut trimmed: HashMap<(u32, usize), u32> = HashMap::default();
        let mut locations: Vec<(u64, usize)> = Vec::new();
        let mut rows = Vec::with_capacity(self.order.len());
        let mut packed = Vec::with_capacity(self.ids.len() * 2);
        let mut number = |id: u32, dropped: usize| -> u64 {
            let slot = if dropped == 0 {
                &mut numbers[id as usize]
            } else {
                trimmed.entry((id, dropped)).or_default()
            };
            if *slot == 0 {
                locations.push((addrs[id as usize], dropped));
                *slot = locations.len() as u32;
            }
            u64::from(*slot)
        };
        for &slot in &self.order {
            if !present.get(slot as usize).copied().unwrap_or(false) {
                continue;
            }
            let learned = &self.stacks[slot as usize];
            let frames = &self.ids[learned.start as usize..][..learned.len as usize];
            let Some((&leaf, callers)) = frames.split_first() else {
                continue;
            };
            let start = packed.len() as u32;
            let leaf = number(leaf, learned.dropped);
            let ids = std::iter::once(leaf).chain(callers.iter().map(|&id| number(id, 0)));
            SampleEncoder::pack(ids, &mut packed);
            rows.push(Row {
                slot,
                start,
                end: packed.len() as u32,
                labels: learned.labels,
                agents: learned.agents,
            });
        }
        self.numbering = Numbering {
            present,
            locations,
            rows,
            packed,
        };
    }

    /// Learns `new` stacks (their addresses numbered, each distinct address
    /// symbolized and classified once, allocator frames trimmed), each in
    /// a new slot, and puts them in profile order. Stacks none of the last
    /// [`REMEMBERED_FOR`] profiles met go when there are many more than
    /// this profile (of `met` stacks) met; then every slot moves, and this
    /// returns true.
    fn learn(
        &mut self,
        new: &[&Stack],
        labelled: bool,
        symbolizer: &Symbolizer,
        met: usize,
    ) -> bool {
        let generation = self.generation;
        let oldest = generation.saturating_sub(REMEMBERED_FOR - 1);
        let forget = self.stacks.len() + new.len() > 2 * met + 1024
            && self.stacks.iter().any(|l| l.seen < oldest);
        if forget {
            self.forget_unseen_since(oldest);
        }
        let known = self.classes.len();
        let first_new = self.stacks.len() as u32;
        for stack in new {
            let (labels, addresses) = match stack.split_first() {
                Some((first, rest)) if labelled => (*first as u32, rest),
                _ => (0, &stack[..]),
            };
            let start = self.ids.len();
            // Dumped addresses are return addresses: look up the call.
            self.ids.extend(
                addresses
                    .iter()
                    .map(|&a| self.index.id(a.saturating_sub(1))),
            );
            use std::hash::BuildHasher;
            self.stacks.push(Learned {
                stack: Arc::clone(stack),
                labelled,
                hash: super::BuildStackHasher.hash_one(stack),
                labels,
                start: start as u32,
                len: (self.ids.len() - start) as u32,
                dropped: 0,
                agents: false,
                seen: generation,
            });
        }
        let fresh = &self.index.addrs[known..];
        symbolizer.resolve_all(fresh.iter().copied());
        for &addr in fresh {
            let frames = symbolizer.resolve(addr);
            self.classes.push(classify(&frames));
            self.owners.push(AgentFrame::of(&frames));
        }
        // Now every address is classified: trim the new stacks.
        for slot in first_new..self.stacks.len() as u32 {
            let learned = &mut self.stacks[slot as usize];
            let ids = &self.ids[learned.start as usize..][..learned.len as usize];
            let per_address = ids.iter().map(|&id| self.classes[id as usize].as_slice());
            let (skip, dropped) = trim_allocator_frames(per_address, ids.len());
            let skip = skip.min(ids.len());
            // jemalloc's dumps carry no labels: the agent's own
            // allocations are told by their stacks instead (see
            // `AgentFrame`).
            learned.agents = !labelled
                && ids[skip..]
                    .iter()
                    .map(|&id| self.owners[id as usize])
                    .find(|o| *o != AgentFrame::None)
                    == Some(AgentFrame::Own);
            learned.start += skip as u32;
            learned.len -= skip as u32;
            learned.dropped = dropped;
            self.position.insert(key_of(&learned.stack, labelled), slot);
        }
        // Into profile order: a few new stacks each where it goes, many by
        // sorting all.
        let stacks = &self.stacks;
        let before = |a: u32, b: u32| {
            let (a, b) = (&stacks[a as usize], &stacks[b as usize]);
            a.hash.cmp(&b.hash).then_with(|| a.stack.cmp(&b.stack))
        };
        let added = self.stacks.len() as u32 - first_new;
        if (added as usize) * 16 < self.order.len() {
            for slot in first_new..first_new + added {
                let at = self
                    .order
                    .partition_point(|&other| before(other, slot).is_lt());
                self.order.insert(at, slot);
            }
        } else {
            self.order.extend(first_new..first_new + added);
            self.order.sort_unstable_by(|&a, &b| before(a, b));
        }
        // The order changed: no numbering is for these stacks.
        self.numbering = Numbering::default();
        forget
    }

    /// Forgets every stack no profile since `oldest` met: the rest move to
    /// the first slots, in profile order.
    fn forget_unseen_since(&mut self, oldest: u64) {
        let mut stacks = Vec::new();
        let mut ids = Vec::new();
        self.position.clear();
        for &slot in &self.order {
            let learned = &self.stacks[slot as usize];
            if learned.seen < oldest {
                continue;
            }
            let start = ids.len() as u32;
            ids.extend_from_slice(&self.ids[learned.start as usize..][..learned.len as usize]);
            self.position.insert(
                key_of(&learned.stack, learned.labelled),
                stacks.len() as u32,
            );
            stacks.push(Learned {
                stack: learned.stack.clone(),
                start,
                ..*learned
            });
        }
        self.order = (0..stacks.len() as u32).collect();
        self.stacks = stacks;
        self.ids = ids;
    }
}

/// Distinct addresses numbered in order of first sight. A dump's frames
/// are hundreds of thousands over a few hundred to a few thousand
/// addresses, so a direct-mapped table in front of the map (16 KiB, it
/// stays in L1) answers nearly every lookup with one compare.
struct AddressIndex {
    /// `(address, id)` by the address's hash; `u64::MAX` is empty (never a
    /// lookup address: those are a return address minus one).
    recent: Box<[(u64, u32); 1024]>,
    ids: HashMap<u64, u32>,
    /// Per id, its address.
    addrs: Vec<u64>,
}

impl Default for AddressIndex {
    fn default() -> Self {
        AddressIndex {
            recent: Box::new([(u64::MAX, 0); 1024]),
            ids: HashMap::default(),
            addrs: Vec::new(),
        }
    }
}

impl AddressIndex {
    #[inline]
    fn id(&mut self, addr: u64) -> u32 {
        let slot = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize;
        let recent = &mut self.recent[slot];
        if recent.0 == addr {
            return recent.1;
        }
        let id = *self.ids.entry(addr).or_insert_with(|| {
            self.addrs.push(addr);
            self.addrs.len() as u32 - 1
        });
        *recent = (addr, id);
        id
    }
}

/// Whose code a frame is, for telling the agent's own allocations on
/// jemalloc's path (whose dumps carry no labels): the agent frame nearest
/// the allocation decides. The agent's wrappers of the service's code (a
/// labelled future or closure, the route-metrics service, a task group's
/// instrument) leave it to the service; any other agent frame makes it the
/// agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentFrame {
    /// Not the agent's code.
    None,
    /// The agent wrapping the service's code.
    Wrapper,
    /// The agent's own work.
    Own,
}

impl AgentFrame {
    /// The innermost agent frame of an address's symbolization decides.
    fn of(frames: &[Frame]) -> AgentFrame {
        for f in frames {
            let name = f.function.trim_start_matches('<');
            if !name.starts_with("profscope_agent::") {
                continue;
            }
            const WRAPPERS: [&str; 4] = [
                "::Scoped<",
                "::RouteMetrics<",
                "::TaskGroup::instrument",
                "::labels::with",
            ];
            let wrapper = WRAPPERS.iter().any(|w| name.contains(w));
            return if wrapper {
                AgentFrame::Wrapper
            } else {
                AgentFrame::Own
            };
        }
        AgentFrame::None
    }
}

/// Per frame of an address's symbolization, innermost first.
fn classify(frames: &[Frame]) -> Vec<Class> {
    if frames.is_empty() {
        return vec![Class::UNKNOWN];
    }
    frames
        .iter()
        .map(|f| Class::of(&f.function, f.file.as_deref().unwrap_or("")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn leaf_a() -> u64 {
        std::hint::black_box(1)
    }

    #[inline(never)]
    fn leaf_b() -> u64 {
        std::hint::black_box(2)
    }

    #[inline(never)]
    fn caller_c() -> u64 {
        std::hint::black_box(3)
    }

    #[inline(never)]
    fn caller_d() -> u64 {
        std::hint::black_box(4)
    }

    /// Return addresses (call address + 1) of a few functions of this
    /// binary, Rust's allocation glue first (trimmed off a leaf).
    fn addresses() -> Vec<u64> {
        let glue = std::alloc::alloc as unsafe fn(std::alloc::Layout) -> *mut u8;
        [
            glue as *const () as usize as u64,
            leaf_a as *const () as usize as u64,
            leaf_b as *const () as usize as u64,
            caller_c as *const () as usize as u64,
            caller_d as *const () as usize as u64,
        ]
        .iter()
        .map(|a| a + 1)
        .collect()
    }

    /// Stack `i`: an optional allocator leaf, then a path through the
    /// functions that spells `i` (distinct for each `i`).
    fn stack(i: usize, labelled: bool) -> Stack {
        let a = addresses();
        let mut frames = Vec::new();
        if labelled {
            frames.push(0);
        }
        if i % 2 == 0 {
            frames.push(a[0]);
        }
        let mut n = i + 1;
        while n > 0 {
            frames.push(a[1 + n % 4]);
            n /= 4;
        }
        Stack::from(frames)
    }

    fn snapshot(stacks: &[Stack], round: i64, labelled: bool) -> HeapSnapshot {
        HeapSnapshot {
            sample_period: 512 << 10,
            time: Some(SystemTime::UNIX_EPOCH),
            stacks: stacks
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), [i as i64 + round, 100, 1, round * 10]))
                .collect(),
            labelled,
        }
    }

    #[test]
    fn a_memo_gives_the_profile_a_fresh_build_gives() {
        let symbolizer = Symbolizer::new();
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        for labelled in [true, false] {
            let all: Vec<Stack> = (0..300).map(|i| stack(i, labelled)).collect();
            let (mut memo, mut streamed) = (StackMemo::default(), StackMemo::default());
            // Stacks come, stay and go between snapshots, as a heap's do.
            for (round, window) in [0..100, 50..150, 50..150, 140..300, 0..10]
                .into_iter()
                .enumerate()
            {
                let snap = snapshot(&all[window.clone()], round as i64, labelled);
                let with = snap.to_profile_with(&mut memo, &symbolizer, "inuse_space", end);
                let fresh = snap.to_profile(&symbolizer, "inuse_space", end);
                assert_eq!(with.sample.len(), window.len(), "one sample per stack");
                let glue = addresses()[0] - 1;
                assert!(
                    with.sample
                        .iter()
                        .all(|s| { with.location[s.location_id[0] as usize - 1].address != glue }),
                    "the allocator's frame is trimmed off the leaf"
                );
                assert_eq!(
                    profscope_profile::encode(&with),
                    profscope_profile::encode(&fresh),
                    "round {round}, labelled {labelled}"
                );
                // Samples encoded as they are made: the same bytes.
                assert_eq!(
                    snap.to_pprof_with(&mut streamed, &symbolizer, "inuse_space", end),
                    profscope_profile::encode(&fresh),
                    "round {round}, labelled {labelled}, streamed"
                );
            }
        }
    }

    #[test]
    fn a_profile_gzipped_in_two_parts_is_the_profile_encoded_whole() {
        use std::io::Read;
        let symbolizer = Symbolizer::new();
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        let sets = [
            crate::capture::labels::LabelSet::new([("route", "/a")]).id(),
            crate::capture::labels::LabelSet::new([("route", "/b"), ("tenant", "t1")]).id(),
            crate::capture::labels::agent_set(),
        ];
        // Label sets on some stacks; 0, 1 and 3,000 stacks (the last in
        // two parts of a few thousand samples each).
        for count in [0, 1, 3000] {
            let stacks: Vec<Stack> = (0..count)
                .map(|i| {
                    let mut frames = stack(i, true).to_vec();
                    frames[0] = if i % 3 == 0 {
                        0
                    } else {
                        u64::from(sets[i % 3])
                    };
                    Stack::from(frames)
                })
                .collect();
            let snap = snapshot(&stacks, 1, true);
            let (mut whole, mut parts) = (StackMemo::default(), StackMemo::default());
            for round in 0..2 {
                let raw = snap.to_pprof_with(&mut whole, &symbolizer, "inuse_space", end);
                let gz = snap
                    .to_gzipped_pprof_with(&mut parts, &symbolizer, "inuse_space", end, || ())
                    .unwrap();
                let mut inflated = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut inflated)
                    .unwrap();
                assert_eq!(inflated, raw, "{count} stacks, round {round}");
                let profile = profscope_profile::parse(&gz, &Default::default()).unwrap();
                assert_eq!(profile.sample.len(), count);
                let labelled = profile
                    .sample
                    .iter()
                    .filter(|s| !s.label.is_empty())
                    .count();
                assert_eq!(labelled, count - count.div_ceil(3), "{count} stacks");
            }
        }
    }

    #[test]
    fn a_memo_forgets_the_stacks_profiles_no_longer_meet() {
        let symbolizer = Symbolizer::new();
        let end = SystemTime::UNIX_EPOCH;
        let all: Vec<Stack> = (0..2000).map(|i| stack(i, true)).collect();
        let mut memo = StackMemo::default();
        let profile = |memo: &mut StackMemo, stacks: &[Stack], round: i64| {
            let snap = snapshot(stacks, round, true);
            let with = snap.to_profile_with(memo, &symbolizer, "inuse_space", end);
            let fresh = snap.to_profile(&symbolizer, "inuse_space", end);
            assert_eq!(
                profscope_profile::encode(&with),
                profscope_profile::encode(&fresh),
                "round {round}"
            );
        };
        profile(&mut memo, &all[..1500], 0);
        assert_eq!(memo.stacks.len(), 1500);
        // A few stacks (a delta's), two of them new: the rest are kept for
        // the next profiles.
        for round in 1..=REMEMBERED_FOR as i64 {
            profile(&mut memo, &all[1492..1502], round);
            assert_eq!(memo.stacks.len(), 1502, "round {round}");
        }
        // Another new stack once no recent profile met the 1,490: they go.
        profile(&mut memo, &all[1492..1503], 9);
        assert_eq!(memo.stacks.len(), 11);
        assert_eq!(memo.position.len(), 11);
        assert_eq!(memo.order.len(), 11);
        // The stacks it forgot are no longer kept alive by it.
        assert_eq!(Arc::strong_count(&all[0]), 1);
        // And what it kept still gives the fresh build's bytes.
        profile(&mut memo, &all[1495..1503], 10);
        profile(&mut memo, &all[1490..1503], 11);
    }

    #[test]
    fn the_innermost_agent_frame_tells_the_agents_work_from_its_wrappers() {
        let frames = |names: &[&str]| -> Vec<crate::shared::symbols::Frame> {
            names
                .iter()
                .map(|n| crate::shared::symbols::Frame {
                    function: (*n).into(),
                    linkage: None,
                    file: None,
                    line: 0,
                })
                .collect()
        };
        let of = |names: &[&str]| AgentFrame::of(&frames(names));
        assert_eq!(
            of(&[
                "gimli::read::unit::parse",
                "profscope_agent::shared::symbols::dwarf::walk"
            ]),
            AgentFrame::Own
        );
        assert_eq!(
            of(&[
                "checkout::price",
                "<profscope_agent::capture::labels::Scoped<F> as core::future::future::Future>::poll",
                "profscope_agent::delivery::http::serve",
            ]),
            AgentFrame::Wrapper,
            "the agent frame nearest the allocation decides: the service's code under a wrapper"
        );
        assert_eq!(
            of(&[
                "<profscope_agent::capture::labels::Scoped<F> as core::future::future::Future>::poll"
            ]),
            AgentFrame::Wrapper
        );
        assert_eq!(
            of(&[
                "<profscope_agent::capture::runtime::RouteMetrics<S> as tower_service::Service<R>>::call"
            ]),
            AgentFrame::Wrapper
        );
        assert_eq!(
            of(&["profscope_agent::capture::labels::with"]),
            AgentFrame::Wrapper
        );
        assert_eq!(of(&["tokio::runtime::task::raw::poll"]), AgentFrame::None);
    }
}
