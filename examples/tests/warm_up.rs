//! The agent's first CPU profiler start while every core allocates hard with
//! heap sampling on. pprof-rs builds its framehop unwinder lazily inside the
//! first SIGPROF handler, and that allocates: when a timer signal landed on
//! a thread inside jemalloc, the handler deadlocked on jemalloc's lock (seen
//! in this suite, once in several full runs). The warm-up now raises the
//! first signal on its own thread. The hazard is a race, so this test is a
//! guard rather than a reproducer (the old warm-up passed it 8 times of 8);
//! its watchdog turns a deadlock into a failure instead of a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

profscope_agent::jemalloc_profiling!(lg_prof_sample = 12);

#[test]
fn first_agent_build_while_every_core_allocates() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|seed| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held: Vec<Vec<u8>> = Vec::new();
                let mut x = 0x2545_f491u64 + seed;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly large sizes: extent allocation and coalescing
                    // take jemalloc's extent locks, where the deadlock was.
                    let size = if x.is_multiple_of(4) {
                        (x % 8192) as usize + 1
                    } else {
                        (1 << 19) + (x % (1 << 21)) as usize
                    };
                    held.push(vec![1u8; size]);
                    if held.len() > 16 {
                        held.swap_remove((x % 16) as usize);
                    }
                }
            })
        })
        .collect();
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
    stop.store(true, Ordering::Relaxed);
    assert!(
        finished.is_ok(),
        "agent start-up or capture hung (SIGPROF handler deadlock?)"
    );
    for w in workers {
        w.join().unwrap();
    }
    assert!(profscope_agent::cpu::warm_up_duration().is_some());
}
