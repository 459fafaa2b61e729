//! The label-set table is capped: unbounded values (trace ids) make at most
//! `MAX_SETS` sets; the rest become `labels=other`, counted on `/metrics`.
//! Its own test binary, so the process-wide table starts empty.

use std::collections::HashSet;

use profscope_agent::labels::{LabelSet, MAX_SETS};

#[test]
fn ten_thousand_values_stay_within_the_cap() {
    let mut distinct = HashSet::new();
    let mut other = 0;
    for i in 0..10_000 {
        let set = LabelSet::new([("trace_id", format!("{i:032x}"))]);
        if set.get("labels") == Some("other") {
            other += 1;
        }
        distinct.insert(set.pairs().to_vec());
    }
    assert!(distinct.len() <= MAX_SETS, "{} sets", distinct.len());
    assert!(other >= 10_000 - MAX_SETS, "{other} overflowed");
    // Asking again for an interned set still finds it.
    assert_eq!(
        LabelSet::new([("trace_id", format!("{:032x}", 5))]).get("trace_id"),
        Some(format!("{:032x}", 5).as_str())
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(async { profscope_agent::Agent::builder().build().unwrap() });
    let metrics = agent.metrics_text().unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("profscope_label_sets"), MAX_SETS as f64);
    assert_eq!(value("profscope_label_sets_overflow_total"), other as f64);
}
