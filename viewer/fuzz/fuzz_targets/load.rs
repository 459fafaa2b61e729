//! Fuzzes the loader: arbitrary bytes must give a profile or an error,
//! never a panic, a hang or unbounded memory. Run from viewer/fuzz with
//! `cargo +nightly fuzz run load`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profscope_profile::{Limits, parse};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run's memory far below libFuzzer's cap.
    let limits = Limits::uniform(64 << 20);
    if let Ok(profile) = parse(data, &limits) {
        // A profile that loads must also survive the rest of the pipeline.
        if let Ok(st) = profscope_profile::select_sample_type(&profile, None) {
            let _ = profscope::render::top(&profile, &st, &Default::default()).render();
            let _ = profscope::render::collapse(&profile, &st);
        }
    }
    // The web UI's path: repeated stacks summed while decoding, its icicle.
    if let Ok(profile) = profscope_profile::parse_merged(data, &limits) {
        if let Ok(st) = profscope_profile::select_sample_type(&profile, None) {
            let opts = profscope::render::IcicleOptions::new("fuzz", "samples");
            let _ = profscope::render::icicle_svg(&profile, st.index, &opts);
        }
    }
});
