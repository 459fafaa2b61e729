//! The function-granularity call graph `go tool pprof` builds for its text
//! reports (`internal/graph`), reimplemented so `top` and `diff` rows agree
//! with Go's:
//!
//! * a node is a function name; a location with several lines (inlining)
//!   contributes one node per line, and a line without a function is named
//!   by the mapping's file (`[binary]`) or `<unknown>`;
//! * a sample adds its value to the cum of each node on its stack once, even
//!   under recursion, and to the flat of its leaf node;
//! * an edge is inline when every sample that created it had the callee
//!   inlined into the caller's location; a node whose incoming edges are all
//!   inline is shown `(inline)`, some inline `(partial-inline)`;
//! * when some nodes are dropped (low cum), samples through them still count
//!   for the kept nodes' cum, but a dropped leaf's flat is not moved up.

// Fx hashing: the build pass looks up every frame of every sample.
use rustc_hash::FxHashMap as HashMap;

use profscope_profile::Profile;

/// One profile's contribution to a graph: which sample value to read and
/// how to scale it (`-1` for a diff base, a ratio when normalizing).
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The profile.
    pub profile: &'a Profile,
    /// Index of the sample value to use.
    pub sample_index: usize,
    /// Multiplier applied to each value, rounded like Go's `ScaleN`.
    pub scale: f64,
}

impl<'a> Part<'a> {
    /// The profile's values as they are.
    pub fn new(profile: &'a Profile, sample_index: usize) -> Self {
        Part {
            profile,
            sample_index,
            scale: 1.0,
        }
    }

    /// The value this part gives a sample, after scaling.
    pub fn value(&self, raw: &[i64]) -> i64 {
        let v = raw.get(self.sample_index).copied().unwrap_or(0);
        if self.scale == 1.0 {
            v
        } else {
            (v as f64 * self.scale).round() as i64
        }
    }
}

/// How a node's incoming calls were inlined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inline {
    /// Called normally (or a root).
    #[default]
    No,
    /// Inlined at every call site.
    Full,
    /// Inlined at some call sites.
    Partial,
}

impl Inline {
    /// The mark Go's text report prints after the name.
    pub fn label(self) -> &'static str {
        match self {
            Inline::No => "",
            Inline::Full => "(inline)",
            Inline::Partial => "(partial-inline)",
        }
    }
}

/// A graph node: a function and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Printable name, as Go prints it.
    pub name: String,
    /// Value of samples whose leaf is this function.
    pub flat: i64,
    /// Value of samples with this function anywhere on the stack.
    pub cum: i64,
    /// Inline mark.
    pub inline: Inline,
}

/// Interned node names and, per part, each location's nodes (in line order:
/// innermost first).
struct Frames {
    names: Vec<String>,
    per_part: Vec<HashMap<u64, Vec<u32>>>,
}

impl Frames {
    fn new(parts: &[Part<'_>]) -> Frames {
        let mut names = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::default();
        let mut intern = |name: String| -> u32 {
            if let Some(&i) = index.get(&name) {
                return i;
            }
            let i = names.len() as u32;
            names.push(name.clone());
            index.insert(name, i);
            i
        };
        let mut per_part = Vec::with_capacity(parts.len());
        for part in parts {
            let p = part.profile;
            let functions: HashMap<u64, &str> = p
                .function
                .iter()
                .map(|f| (f.id, p.string_at(f.name)))
                .collect();
            let mappings = profscope_profile::fold::mapping_files(p);
            let objfile = |mapping_id: u64| -> String {
                profscope_profile::fold::unsymbolized_name(
                    mappings.get(&mapping_id).copied().unwrap_or(""),
                )
            };
            let mut locs = HashMap::with_capacity_and_hasher(p.location.len(), Default::default());
            for loc in &p.location {
                let nodes: Vec<u32> = if loc.line.is_empty() {
                    vec![intern(objfile(loc.mapping_id))]
                } else {
                    loc.line
                        .iter()
                        .map(|l| match functions.get(&l.function_id) {
                            Some(name) if !name.is_empty() => intern(name.to_string()),
                            _ => intern(objfile(loc.mapping_id)),
                        })
                        .collect()
                };
                locs.insert(loc.id, nodes);
            }
            per_part.push(locs);
        }
        Frames { names, per_part }
    }
}

#[derive(Default, Clone, Copy)]
struct Acc {
    flat: i64,
    cum: i64,
    touched: bool,
}

/// Builds nodes from the samples of `parts`; with `kept`, only nodes whose
/// index is marked are created (the others count as residual gaps).
fn build(parts: &[Part<'_>], frames: &Frames, kept: Option<&[bool]>) -> Vec<(u32, Acc, Inline)> {
    let n = frames.names.len();
    let mut acc = vec![Acc::default(); n];
    let mut seen_stamp = vec![u32::MAX; n];
    // Per edge: inline at every sample through it so far, and the last
    // sample (stamp) that counted it; an edge counts once per sample.
    let mut edges: HashMap<(u32, u32), (bool, u32)> = HashMap::default();
    let mut stamp: u32 = 0;
    let is_kept = |i: u32| kept.is_none_or(|k| k.get(i as usize).copied().unwrap_or(false));
    for (pi, part) in parts.iter().enumerate() {
        let locs = &frames.per_part[pi];
        for sample in &part.profile.sample {
            let w = part.value(&sample.value);
            if w == 0 {
                continue;
            }
            stamp = stamp.wrapping_add(1);
            let mut parent: Option<u32> = None;
            let mut residual = false;
            for id in sample.location_id.iter().rev() {
                let Some(nodes) = locs.get(id) else { continue };
                for (ni, &node) in nodes.iter().enumerate().rev() {
                    if !is_kept(node) {
                        residual = true;
                        continue;
                    }
                    let a = &mut acc[node as usize];
                    a.touched = true;
                    if seen_stamp[node as usize] != stamp {
                        seen_stamp[node as usize] = stamp;
                        a.cum += w;
                    }
                    if let Some(par) = parent {
                        if par != node {
                            let inline = ni != nodes.len() - 1;
                            let e = edges.entry((par, node)).or_insert((inline, stamp));
                            if e.1 != stamp {
                                *e = (e.0 && inline, stamp);
                            }
                        }
                    }
                    parent = Some(node);
                    residual = false;
                }
            }
            if let (Some(leaf), false) = (parent, residual) {
                acc[leaf as usize].flat += w;
            }
        }
    }
    let mut marks = vec![(false, false); n];
    for (&(_, to), &(inline, _)) in &edges {
        let m = &mut marks[to as usize];
        if inline {
            m.0 = true;
        } else {
            m.1 = true;
        }
    }
    acc.iter()
        .enumerate()
        .filter(|(_, a)| a.touched && (a.flat != 0 || a.cum != 0))
        .map(|(i, a)| {
            let inline = match marks[i] {
                (true, true) => Inline::Partial,
                (true, false) => Inline::Full,
                _ => Inline::No,
            };
            (i as u32, *a, inline)
        })
        .collect()
}

/// A graph after Go's node trimming.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Nodes kept, unsorted.
    pub nodes: Vec<Node>,
    /// How many nodes were dropped for low cum.
    pub dropped: usize,
}

/// Builds the graph of `parts` and drops nodes whose |cum| is under
/// `node_fraction` of the graph's total flat (Go's `-nodefraction`).
pub fn graph(parts: &[Part<'_>], node_fraction: f64) -> Graph {
    let frames = Frames::new(parts);
    let mut built = build(parts, &frames, None);
    let total_flat: i64 = built.iter().map(|(_, a, _)| a.flat).sum();
    let cutoff = ((total_flat as f64 * node_fraction) as i64).abs();
    let mut dropped = 0;
    if cutoff > 0 {
        let mut kept = vec![false; frames.names.len()];
        let mut n_kept = 0;
        for (i, a, _) in &built {
            if a.cum.abs() >= cutoff {
                kept[*i as usize] = true;
                n_kept += 1;
            }
        }
        if n_kept != built.len() {
            dropped = built.len() - n_kept;
            built = build(parts, &frames, Some(&kept));
        }
    }
    let nodes = built
        .into_iter()
        .map(|(i, a, inline)| Node {
            name: frames.names[i as usize].clone(),
            flat: a.flat,
            cum: a.cum,
            inline,
        })
        .collect();
    Graph { nodes, dropped }
}

/// Sorts like Go: by |flat| desc, name asc, |cum| desc; or with `cum`, by
/// |cum| desc, name asc, |flat| desc.
pub fn sort_nodes(nodes: &mut [Node], cum: bool) {
    nodes.sort_by(|l, r| {
        if cum {
            r.cum
                .abs()
                .cmp(&l.cum.abs())
                .then_with(|| l.name.cmp(&r.name))
                .then_with(|| r.flat.abs().cmp(&l.flat.abs()))
        } else {
            r.flat
                .abs()
                .cmp(&l.flat.abs())
                .then_with(|| l.name.cmp(&r.name))
                .then_with(|| r.cum.abs().cmp(&l.cum.abs()))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use profscope_profile::read_folded::folded_to_profile;

    #[test]
    fn recursion_counts_cum_once() {
        let p = folded_to_profile("main;f;f;f 4\nmain;g 1\n").unwrap();
        let mut g = graph(&[Part::new(&p, 0)], 0.0).nodes;
        sort_nodes(&mut g, false);
        let f = g.iter().find(|n| n.name == "f").unwrap();
        assert_eq!((f.flat, f.cum), (4, 4));
        let main = g.iter().find(|n| n.name == "main").unwrap();
        assert_eq!((main.flat, main.cum), (0, 5));
        assert_eq!(g[0].name, "f");
    }

    #[test]
    fn low_cum_nodes_are_dropped_and_their_flat_is_not_moved() {
        let p = folded_to_profile("main;big 1000\nmain;tiny 1\n").unwrap();
        let g = graph(&[Part::new(&p, 0)], 0.005);
        assert_eq!(g.dropped, 1);
        let main = g.nodes.iter().find(|n| n.name == "main").unwrap();
        assert_eq!((main.flat, main.cum), (0, 1001));
    }
}
