//! The viewer's loader on arbitrary bytes (every format a PROFILE may be:
//! gzipped or raw pprof, folded stacks): a profile or an error, never a
//! panic, a hang or unbounded memory; a profile that loads also survives
//! `top` and `collapse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profscope_profile::Limits;

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run's memory far below libFuzzer's cap.
    let limits = Limits::uniform(64 << 20);
    if let Ok(profile) = profscope::load::parse(data, &limits) {
        if let Ok(st) = profscope_profile::select_sample_type(&profile, None) {
            let _ = profscope::render::top(&profile, &st, &Default::default()).render();
            let _ = profscope::render::collapse(&profile, &st);
        }
    }
});
