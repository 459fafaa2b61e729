//! The agent's first CPU profiler start while every core allocates hard with
//! heap sampling on. pprof-rs builds its framehop unwinder lazily inside the
//! first SIGPROF handler, and that allocates: when a timer signal landed on
//! a thread inside jemalloc, the handler deadlocked on jemalloc's lock (seen
//! in this suite, once in several full runs). The warm-up now raises the
//! first signal on its own thread. The hazard is a race, so this test is a
//! guard rather than a reproducer (the old warm-up passed it 8 times of 8);
//! its watchdog turns a deadlock into a failure instead of a hang.

use profscope_test_support::AllocationStorm;
use std::time::Duration;

profscope_agent::jemalloc_profiling!(lg_prof_sample = 12);

#[test]
fn first_agent_build_while_every_core_allocates() {
    // Mostly large sizes: extent allocation and coalescing take jemalloc's
    // extent locks, where the deadlock was.
    let storm = AllocationStorm::start(4, 16, |x| {
        if x.is_multiple_of(4) {
            (x % 8192) as usize + 1
        } else {
            (1 << 19) + (x % (1 << 21)) as usize
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent = profscope_agent::Agent::builder().build().expect("agent");
        let rt = tokio::runtime::Runtime::new().unwrap();
        // And a few real captures at a high rate on top.
        let cpu = profscope_agent::cpu::CpuProfiler::new();
        for _ in 0..3 {
            rt.block_on(cpu.capture(Duration::from_millis(300), 997))
                .expect("capture");
        }
        let _ = done_tx.send(agent);
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(60));
    storm.stop();
    assert!(
        finished.is_ok(),
        "agent start-up or capture hung (SIGPROF handler deadlock?)"
    );
    assert!(profscope_agent::cpu::warm_up_duration().is_some());
}
