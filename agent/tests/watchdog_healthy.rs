//! A healthy service under load for 10 s: the watchdog reports no stall at
//! state `running` or `blocked` (a `runnable` one only says the machine was
//! overloaded). Its own test binary, so nothing else loads the machine.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(feature = "pprof-rs")))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use profscope_agent::Agent;
use profscope_agent::watchdog::WatchdogConfig;

#[test]
fn healthy_load_reports_no_running_or_blocked_stall() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    profscope_agent::watchdog::install_poll_hooks(&mut builder);
    let rt = builder.build().unwrap();
    let agent = rt.block_on(async {
        Agent::builder()
            .watchdog(WatchdogConfig::default())
            .build()
            .unwrap()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    // Many short polls: a little work, a yield, a short timer, a channel.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (stop, polls) = (stop.clone(), polls.clone());
            rt.spawn(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(8);
                let mut x = i as u64 + 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..200 {
                        x ^= x << 13;
                        x ^= x >> 7;
                    }
                    let _ = tx.try_send(x);
                    let _ = rx.try_recv();
                    if x % 3 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    polls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let stalls = agent.watchdog().unwrap().recent_stalls();
    eprintln!(
        "{} polls in 10 s; stalls: {stalls:?}",
        polls.load(Ordering::Relaxed)
    );
    let bad: Vec<_> = stalls
        .iter()
        .filter(|s| {
            let (state, _) = s.states.iter().max_by_key(|(_, d)| **d).unwrap();
            *state != "runnable"
        })
        .collect();
    assert!(bad.is_empty(), "stalls at running or blocked: {bad:?}");
    assert!(polls.load(Ordering::Relaxed) > 10_000);
}
