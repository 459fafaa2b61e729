//! Profile → folded stacks: a profile's samples of one sample type as
//! `root;…;leaf count` lines (what inferno, flamegraph.pl and speedscope
//! read), and the names the stacks are made of.
//! [`read_folded`](crate::read_folded) is the way back.

use rustc_hash::FxHashMap as HashMap;

use crate::proto::Profile;

/// Each location's frames as one folded segment: names outermost (caller)
/// first, inlined frames expanded, joined by `;` and already sanitized; a
/// location without lines is named by its address.
fn location_segments(profile: &Profile) -> HashMap<u64, String> {
    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| (f.id, profile.string_at(f.name)))
        .collect();
    let mappings = mapping_files(profile);
    profile
        .location
        .iter()
        .map(|loc| {
            let mut segment = String::new();
            for line in loc.line.iter().rev() {
                let name = functions.get(&line.function_id).copied().unwrap_or("");
                if name.is_empty() {
                    continue;
                }
                if !segment.is_empty() {
                    segment.push(';');
                }
                push_sanitized(&mut segment, name);
            }
            if segment.is_empty() {
                let file = mappings.get(&loc.mapping_id).copied().unwrap_or("");
                push_sanitized(&mut segment, &unsymbolized_name(file));
            }
            (loc.id, segment)
        })
        .collect()
}

/// Each mapping's file name by mapping id.
pub fn mapping_files(profile: &Profile) -> HashMap<u64, &str> {
    profile
        .mapping
        .iter()
        .map(|m| (m.id, profile.string_at(m.filename)))
        .collect()
}

/// The name `go tool pprof` gives a location without symbols: the base name
/// of its mapping's file in brackets (`[libc.so.6]`), or `<unknown>`.
pub fn unsymbolized_name(mapping_file: &str) -> String {
    if mapping_file.is_empty() {
        return "<unknown>".to_string();
    }
    let base = mapping_file.rsplit('/').next().unwrap_or(mapping_file);
    format!("[{base}]")
}

/// `;` separates frames and a trailing space precedes the count: neither
/// may appear inside a frame name.
fn push_sanitized(out: &mut String, name: &str) {
    if !name.contains([';', '\n', '\r']) {
        out.push_str(name);
        return;
    }
    out.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

/// Folds the samples of `profile` for sample type `sample_index` into
/// `(stack, value)` pairs, stack frames root first joined by `;`, identical
/// stacks merged, zero values dropped, sorted by stack. The values add up to
/// the profile's total for that sample type.
pub fn fold(profile: &Profile, sample_index: usize) -> Vec<(String, i64)> {
    // Samples repeat stacks (labels, unaggregated producers): sum by
    // location ids first, and build each distinct stack's text once.
    let mut by_ids: HashMap<&[u64], i64> = HashMap::default();
    for sample in &profile.sample {
        let Some(&value) = sample.value.get(sample_index) else {
            continue;
        };
        if value != 0 {
            let v = by_ids.entry(sample.location_id.as_slice()).or_default();
            *v = v.saturating_add(value);
        }
    }
    let segments = location_segments(profile);
    let mut stacks: HashMap<String, i64> = HashMap::default();
    let mut stack = String::new();
    for (ids, value) in by_ids {
        stack.clear();
        for id in ids.iter().rev() {
            if !stack.is_empty() {
                stack.push(';');
            }
            match segments.get(id) {
                Some(segment) => stack.push_str(segment),
                None => {
                    use std::fmt::Write;
                    let _ = write!(stack, "location#{id}");
                }
            }
        }
        if stack.is_empty() {
            stack.push_str("[no stack]");
        }
        // Different locations can name the same frames: merge by text.
        match stacks.get_mut(stack.as_str()) {
            Some(v) => *v = v.saturating_add(value),
            None => {
                stacks.insert(stack.clone(), value);
            }
        }
    }
    let mut folded: Vec<(String, i64)> = stacks.into_iter().filter(|(_, v)| *v != 0).collect();
    folded.sort_unstable();
    folded
}

/// Folded stacks as text, one `stack count` line each.
pub fn folded_text(folded: &[(String, i64)]) -> String {
    let mut out = String::with_capacity(folded.iter().map(|(s, _)| s.len() + 12).sum());
    for (stack, value) in folded {
        out.push_str(stack);
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Location, Sample};
    use crate::testing::sample_profile;

    #[test]
    fn fold_merges_stacks_root_first_with_inlined_frames() {
        let folded = fold(&sample_profile(), 0);
        assert_eq!(
            folded,
            vec![("main".to_string(), 4), ("main;work;inner".to_string(), 5)]
        );
        assert_eq!(folded_text(&folded), "main 4\nmain;work;inner 5\n");
    }

    #[test]
    fn unsymbolized_locations_are_named_like_go() {
        let mut p = sample_profile();
        p.string_table.push("/usr/lib/libc.so.6".into());
        p.mapping.push(crate::proto::Mapping {
            id: 1,
            filename: p.string_table.len() as i64 - 1,
            ..Default::default()
        });
        p.location.push(Location {
            id: 3,
            mapping_id: 1,
            address: 0x10,
            ..Default::default()
        });
        p.location.push(Location {
            id: 4,
            address: 0x20,
            ..Default::default()
        });
        p.sample.push(Sample {
            location_id: vec![3, 1],
            value: vec![1],
            label: vec![],
        });
        p.sample.push(Sample {
            location_id: vec![4],
            value: vec![1],
            label: vec![],
        });
        let folded = fold(&p, 0);
        assert!(
            folded.contains(&("main;[libc.so.6]".to_string(), 1)),
            "{folded:?}"
        );
        assert!(folded.contains(&("<unknown>".to_string(), 1)), "{folded:?}");
    }
}
