//! Large deterministic profiles for the viewer's benchmarks and tests.

use std::collections::HashSet;

use profscope_profile::{Function, Line, Location, Profile, Sample, ValueType};

use crate::rng::XorShift;

/// Functions (and one location each) in the large profiles.
const FUNCTIONS: u64 = 2_000;

/// A CPU profile over 2,000 functions: `stacks` distinct paths 8–47 frames
/// deep (shared roots, then frames drawn at random from ever more
/// functions: deep frames barely repeat, the worst case for compression),
/// `samples` samples spread over them, each worth `weight`.
pub fn large_profile(stacks: usize, samples: usize, weight: i64) -> Profile {
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let paths: Vec<Vec<u64>> = (0..stacks.max(1))
        .map(|_| {
            let depth = 8 + rng.below(40) as usize;
            (0..depth)
                .map(|level| {
                    let spread = 4u64.pow(level.min(6) as u32).min(FUNCTIONS);
                    1 + (rng.below(spread) + level as u64 * 50) % FUNCTIONS
                })
                .rev()
                .collect()
        })
        .collect();
    profile_of(&paths, samples, weight)
}

/// Like [`large_profile`], but every stack is a path in one call tree, as
/// a real service's are: a caller has a few callees (a runtime's dozen
/// frames first, with one callee each), and a frame's function follows
/// from its caller and its place among the callees, so stacks share their
/// prefixes.
pub fn call_tree_profile(stacks: usize, samples: usize, weight: i64) -> Profile {
    let mut rng = XorShift::new(0x2545_f491_4f6c_dd1d);
    let mut seen = HashSet::new();
    let mut paths = Vec::with_capacity(stacks);
    while paths.len() < stacks.max(1) {
        let depth = 8 + rng.below(40) as usize;
        let mut function = 1u64;
        let mut path = vec![function];
        for level in 1..depth as u64 {
            let callees = if level < 12 { 1 } else { 3 };
            let callee = rng.below(callees);
            function = 1
                + (function
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .wrapping_add(callee * 0x632b_e59b_d9b4_e019 + level)
                    >> 17)
                    % FUNCTIONS;
            path.push(function);
        }
        path.reverse();
        if seen.insert(path.clone()) {
            paths.push(path);
        }
    }
    profile_of(&paths, samples, weight)
}

/// A CPU profile whose samples go round `paths` (leaf first), over the
/// 2,000 functions `service::moduleN::function_ID`.
fn profile_of(paths: &[Vec<u64>], samples: usize, weight: i64) -> Profile {
    let mut strings = vec![
        String::new(),
        "samples".into(),
        "count".into(),
        "cpu".into(),
        "nanoseconds".into(),
    ];
    let function: Vec<Function> = (1..=FUNCTIONS)
        .map(|id| {
            strings.push(format!("service::module{}::function_{id}", id % 37));
            Function {
                id,
                name: strings.len() as i64 - 1,
                system_name: 0,
                filename: 0,
                start_line: 0,
            }
        })
        .collect();
    let location: Vec<Location> = (1..=FUNCTIONS)
        .map(|id| Location {
            id,
            mapping_id: 0,
            address: 0x1000 + id * 16,
            line: vec![Line {
                function_id: id,
                line: id as i64,
            }],
            is_folded: false,
        })
        .collect();
    let sample = (0..samples)
        .map(|i| Sample {
            location_id: paths[i % paths.len()].clone(),
            value: vec![weight, weight * 10_101_010],
            label: vec![],
        })
        .collect();
    Profile {
        sample_type: vec![ValueType { ty: 1, unit: 2 }, ValueType { ty: 3, unit: 4 }],
        sample,
        function,
        location,
        string_table: strings,
        period_type: Some(ValueType { ty: 3, unit: 4 }),
        period: 10_101_010,
        ..Default::default()
    }
}

/// Folded stacks of a large synthetic profile: `stacks` distinct stacks,
/// 8 to 47 frames deep, drawn from a call tree that branches more the
/// deeper it goes, values 1..=19 (about 10 × `stacks` samples in all).
pub fn large_folded(stacks: usize) -> String {
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut seen = HashSet::new();
    let mut out = String::new();
    while seen.len() < stacks {
        let depth = 8 + rng.below(40) as usize;
        let mut stack = String::from("main");
        for d in 1..depth {
            let branching = 2 + d as u64 / 2;
            stack.push_str(&format!(";mod_{}::fn_{}", d % 7, rng.below(branching)));
        }
        if seen.insert(stack.clone()) {
            out.push_str(&format!("{stack} {}\n", 1 + rng.below(19)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let p = large_profile(100, 1000, 1);
        assert_eq!(p.sample.len(), 1000);
        assert!(profscope_profile::validate(&p).is_ok());
        let tree = call_tree_profile(500, 1000, 1);
        assert!(profscope_profile::validate(&tree).is_ok());
        let distinct: HashSet<&Vec<u64>> = tree.sample.iter().map(|s| &s.location_id).collect();
        assert_eq!(distinct.len(), 500);
        // One call tree: every stack starts at the same root.
        assert!(tree.sample.iter().all(|s| s.location_id.last() == Some(&1)));
        assert_eq!(large_folded(50).lines().count(), 50);
        assert_eq!(large_folded(50), large_folded(50), "deterministic");
    }
}
