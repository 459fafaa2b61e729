//! Profiles the unit tests share.

use crate::proto::{Function, Line, Location, Profile, Sample, ValueType};

/// main → work (two inlined frames in one location) and main alone.
pub(crate) fn sample_profile() -> Profile {
    let strings = ["", "samples", "count", "main", "work", "inner"];
    Profile {
        string_table: strings.iter().map(|s| s.to_string()).collect(),
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        function: (1..=3)
            .map(|id| Function {
                id,
                name: id as i64 + 2,
                ..Default::default()
            })
            .collect(),
        location: vec![
            Location {
                id: 1,
                line: vec![Line {
                    function_id: 1,
                    line: 1,
                }],
                ..Default::default()
            },
            Location {
                id: 2,
                // innermost first: inner was inlined into work
                line: vec![
                    Line {
                        function_id: 3,
                        line: 9,
                    },
                    Line {
                        function_id: 2,
                        line: 5,
                    },
                ],
                ..Default::default()
            },
        ],
        sample: vec![
            Sample {
                location_id: vec![2, 1],
                value: vec![3],
                label: vec![],
            },
            Sample {
                location_id: vec![2, 1],
                value: vec![2],
                label: vec![],
            },
            Sample {
                location_id: vec![1],
                value: vec![4],
                label: vec![],
            },
        ],
        ..Default::default()
    }
}
