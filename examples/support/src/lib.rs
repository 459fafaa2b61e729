//! What the tests and benchmarks of profscope share, in one place (a
//! dev-dependency only):
//! * [`XorShift`]: a seeded generator, so every "random" input reproduces;
//! * [`Service`]: a service in a child process that announces its address;
//!   [`run_with_stdin`] and [`stdout_of`] for the binaries tests run;
//! * [`AllocationStorm`]: threads that allocate and free as hard as they can;
//! * [`large_profile`] and [`large_folded`]: large deterministic profiles;
//! * [`have_go`], [`go_pprof`]: `go tool pprof`, the reference, with a loud skip;
//! * [`flat_by_function`]: a profile's flat figures by function.

#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod alloc;
mod go;
mod large;
mod rng;
mod service;

/// Values of sample type `index` summed by leaf function name (the
/// innermost line of each sample's first location): a profile's flat
/// figures, as `go tool pprof -top` shows them.
pub fn flat_by_function(
    p: &profscope_profile::Profile,
    index: usize,
) -> std::collections::HashMap<String, i64> {
    let mut flat = std::collections::HashMap::new();
    for s in &p.sample {
        let leaf = s
            .location_id
            .first()
            .and_then(|id| p.location.iter().find(|l| l.id == *id))
            .and_then(|l| l.line.first())
            .and_then(|line| p.function.iter().find(|f| f.id == line.function_id))
            .map(|f| p.string_at(f.name).to_string())
            .unwrap_or_default();
        *flat.entry(leaf).or_insert(0) += s.value[index];
    }
    flat
}

/// This process's CPU time (user + system), from `getrusage`: microsecond
/// resolution, unlike `/proc/self/stat`'s ticks.
pub fn process_cpu_time() -> std::time::Duration {
    // SAFETY: a zeroed rusage is a valid out-parameter for getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a pointer to our own struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

pub use alloc::AllocationStorm;
pub use go::{
    assert_filters_agree_with_go, go_pprof, go_raw_total, have_go, have_libc_debug_files, have_tool,
};
pub use large::{call_tree_profile, large_folded, large_profile};
pub use rng::XorShift;
pub use service::{Service, run_with_stdin, stdout_of};
