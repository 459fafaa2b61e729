//! Folded text → a profile: `root;…;leaf count` lines (as written by
//! inferno, flamegraph.pl and `profscope collapse`) turned into a pprof
//! profile, so readers only ever see one model. [`fold`](crate::fold::fold)
//! is the way back.

use std::collections::HashMap;

use crate::proto::{Function, Line, Location, Profile, Sample, ValueType};

use crate::error::{Error, Result};

/// Splits a folded line into its stack and count; `None` if it is not one.
fn split_line(line: &str) -> Option<(&str, i64)> {
    let (stack, count) = line.trim_end().rsplit_once(' ')?;
    let stack = stack.trim_end();
    if stack.is_empty() {
        return None;
    }
    // inferno writes fractional counts as `12.0`; keep the integer part.
    let count = count.split_once('.').map_or(count, |(int, frac)| {
        if frac.bytes().all(|b| b.is_ascii_digit()) {
            int
        } else {
            "x"
        }
    });
    Some((stack, count.parse().ok()?))
}

/// True when every non-empty line is `stack count` and there is at least one.
pub fn looks_folded(text: &str) -> bool {
    let mut any = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if split_line(line).is_none() {
            return false;
        }
        any = true;
    }
    any
}

/// Builds a profile with one `samples/count` value per folded line: one
/// function and one location per distinct frame name.
pub fn folded_to_profile(text: &str) -> Result<Profile> {
    let mut p = Profile {
        string_table: vec![String::new(), "samples".into(), "count".into()],
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        period_type: Some(ValueType { ty: 1, unit: 2 }),
        period: 1,
        ..Default::default()
    };
    let mut ids: HashMap<&str, u64> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (stack, count) = split_line(line)
            .ok_or_else(|| Error::Format(format!("line {}: not `stack count`", n + 1)))?;
        let mut location_id = Vec::new();
        for frame in stack.split(';') {
            let id = match ids.get(frame) {
                Some(&id) => id,
                None => {
                    let id = ids.len() as u64 + 1;
                    p.string_table.push(frame.to_string());
                    p.function.push(Function {
                        id,
                        name: p.string_table.len() as i64 - 1,
                        ..Default::default()
                    });
                    p.location.push(Location {
                        id,
                        line: vec![Line {
                            function_id: id,
                            line: 0,
                        }],
                        ..Default::default()
                    });
                    ids.insert(frame, id);
                    id
                }
            };
            location_id.push(id);
        }
        // pprof lists the leaf first.
        location_id.reverse();
        p.sample.push(Sample {
            location_id,
            value: vec![count],
            label: vec![],
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_folded_and_rejects_other_text() {
        assert!(looks_folded("a;b 1\n\na 2.0\n"));
        assert!(!looks_folded("hello world\n"));
        assert!(!looks_folded(""));
        assert!(!looks_folded(" 3\n"));
    }

    #[test]
    fn frames_are_shared_between_stacks() {
        let p = folded_to_profile("a;b 1\na;c 2\n").unwrap();
        assert_eq!(p.function.len(), 3);
        assert_eq!(p.sample[0].location_id, vec![2, 1]);
        assert_eq!(p.sample[1].value, vec![2]);
    }
}
