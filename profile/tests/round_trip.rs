//! The wire format round-trips: every Go-written fixture parses, writes and
//! parses again to an equal profile; folded stacks → profile → folded
//! stacks is the identity.

use std::path::Path;

use profscope_profile::fold::{fold, folded_text};
use profscope_profile::read_folded::folded_to_profile;
use profscope_profile::{Limits, parse, write_gz};
use profscope_test_support::{XorShift, large_folded};

#[test]
fn every_fixture_round_trips() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let mut seen = 0;
    for entry in std::fs::read_dir(testdata).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".pb.gz") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let first = parse(&bytes, &Limits::default()).unwrap();
        let written = write_gz(&first).unwrap();
        let second = parse(&written, &Limits::default()).unwrap();
        assert_eq!(first, second, "{}", path.display());
        assert!(!first.sample.is_empty(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 5, "fixtures missing");
}

#[test]
fn folded_round_trips_on_a_seeded_set() {
    // Folded text sorted by stack, as `fold` writes it.
    let sorted = |text: &str| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n") + "\n"
    };
    for seed in 1..=20u64 {
        let mut rng = XorShift::new(seed);
        let stacks = 1 + rng.below(500) as usize;
        let text = large_folded(stacks);
        let profile = folded_to_profile(&text).unwrap();
        assert_eq!(
            folded_text(&fold(&profile, 0)),
            sorted(&text),
            "seed {seed}"
        );
        // And through the wire format.
        let again = parse(&write_gz(&profile).unwrap(), &Limits::default()).unwrap();
        assert_eq!(again, profile, "seed {seed}");
    }
}
