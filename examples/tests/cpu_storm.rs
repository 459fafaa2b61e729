//! The sampler under the worst load for a signal handler: every core
//! allocating hard through jemalloc with heap sampling on (so signals land
//! inside the allocator, holding its locks), and 100 back-to-back 200 ms
//! captures at 997 Hz. No deadlock (a watchdog turns one into a failure),
//! no crash, and SIGPROF's disposition is as it was once sampling stops.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::time::{Duration, Instant};

use profscope_agent::cpu::CpuProfiler;
use profscope_test_support::AllocationStorm;

profscope_agent::jemalloc_profiling!(lg_prof_sample = 12);

fn disposition() -> (usize, i32) {
    // SAFETY: a zeroed sigaction to fill; reading changes nothing.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut action) };
    // glibc adds SA_RESTORER to every disposition it installs; a signal
    // never set reads without it.
    const SA_RESTORER: i32 = 0x0400_0000;
    (action.sa_sigaction, action.sa_flags & !SA_RESTORER)
}

#[test]
fn back_to_back_captures_while_every_core_allocates() {
    let before = disposition();
    // Mostly large sizes: extent allocation and coalescing take jemalloc's
    // extent locks; small ones its bin locks.
    let storm = AllocationStorm::start(4, 16, |x| {
        if x.is_multiple_of(4) {
            (x % 8192) as usize + 1
        } else {
            (1 << 19) + (x % (1 << 21)) as usize
        }
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let profiler = CpuProfiler::new();
        let mut samples = 0;
        for round in 0..100 {
            let capture = rt
                .block_on(profiler.capture(Duration::from_millis(200), 997))
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            samples += capture.sample_count();
        }
        let _ = done_tx.send(samples);
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(120));
    let allocations = storm.stop();
    let samples = finished.expect("captures hung (a deadlock in the SIGPROF handler?)");
    eprintln!("100 captures: {samples} samples; {allocations} allocations meanwhile");
    assert!(samples > 1000, "{samples} samples");
    assert!(allocations > 10_000, "{allocations} allocations");
    // The stream stops ~100 ms after its last consumer leaves.
    let deadline = Instant::now() + Duration::from_secs(5);
    while CpuProfiler::is_sampling() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !CpuProfiler::is_sampling(),
        "the sample stream did not stop"
    );
    assert_eq!(disposition(), before, "SIGPROF disposition not restored");
}
