//! The profile loader on arbitrary bytes (every format a PROFILE may be:
//! gzipped or raw pprof, OTLP profiles requests, folded stacks; the
//! viewer's `load::parse` is this call, and `parse_merged`, what the web UI
//! loads through): a profile or an error, never a panic, a hang or
//! unbounded memory; a profile that loads also survives sample-type
//! selection, filtering and folding, what every view starts with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profscope_profile::{
    Filter, FilterOptions, Limits, fold, parse, parse_merged, select_sample_type,
};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run's memory far below libFuzzer's cap.
    let limits = Limits::uniform(64 << 20);
    if let Ok(profile) = parse_merged(data, &limits) {
        if let Ok(st) = select_sample_type(&profile, None) {
            let _ = profile.sample_total(st.index);
        }
    }
    if let Ok(mut profile) = parse(data, &limits) {
        if let Ok(st) = select_sample_type(&profile, None) {
            let _ = fold::folded_text(&fold::fold(&profile, st.index));
            if let Ok(filter) = Filter::with(&FilterOptions {
                hide: Some("^std::"),
                ..Default::default()
            }) {
                filter.apply(&mut profile);
                let _ = fold::fold(&profile, st.index);
            }
        }
    }
});
