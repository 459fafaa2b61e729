//! `/debug/pprof/taskleak`: tasks parked at the same await point in every
//! dump are reported, grouped by stack; tasks that come and go are not.

#![cfg(all(tokio_unstable, target_os = "linux"))]

mod common;

use std::time::Duration;

use common::get;
use profscope_agent::Agent;

#[inline(never)]
async fn wait_for_orders(mut rx: tokio::sync::mpsc::Receiver<u32>) -> Option<u32> {
    rx.recv().await
}

#[test]
fn stuck_tasks_are_grouped_and_busy_ones_are_not() {
    // tokio 1.54's dump barrier can wedge a worker (tokio-rs/tokio#8370):
    // then the dump times out with a 500 that says so. That is tokio's bug,
    // not this one's: one fresh try, loudly.
    if !scenario() {
        eprintln!("\n!!!!! taskleak: a task dump timed out (tokio#8370); trying once more !!!!!\n");
        assert!(scenario(), "the dump timed out twice");
    }
}

/// Runs the scenario; false when the dump timed out (tokio's barrier bug).
fn scenario() -> bool {
    // The service's runtime, which the agent dumps…
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // …and the agent on a runtime of its own: tokio 1.54's dump barrier can
    // wedge a worker of the dumped runtime (tokio-rs/tokio#8370; see the
    // README), which must not take the agent's answers with it.
    let agent_rt = tokio::runtime::Runtime::new().unwrap();
    let running = agent_rt
        .block_on(async {
            Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .runtime(rt.handle().clone())
                .build()
                .unwrap()
                .spawn()
                .await
        })
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    // 10 tasks waiting forever: their senders are kept, never used.
    let mut senders = Vec::new();
    for _ in 0..10 {
        let (tx, rx) = tokio::sync::mpsc::channel::<u32>(1);
        senders.push(tx);
        rt.spawn(wait_for_orders(rx));
    }
    // Tasks that complete every 10 ms, about 100 alive at any time.
    rt.spawn(async {
        loop {
            for _ in 0..10 {
                tokio::spawn(tokio::time::sleep(Duration::from_millis(10)));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    std::thread::sleep(Duration::from_millis(100));

    // One request (three dumps): every dump risks tokio's barrier bug.
    let reply = get(&format!("{base}/debug/pprof/taskleak?seconds=2&debug=1"));
    if reply.status == 500 && reply.text().contains("task dump timed out") {
        rt.shutdown_timeout(Duration::from_secs(2));
        drop(running);
        agent_rt.shutdown_timeout(Duration::from_secs(2));
        return false;
    }
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    eprintln!("{text}");
    assert!(text.starts_with("tokio taskleak profile: "), "{text}");
    assert!(text.contains("\n10 @ task, stuck for at least"), "{text}");
    let group = text
        .split("\n\n")
        .find(|g| g.starts_with("10 @ task"))
        .unwrap();
    assert!(group.contains("wait_for_orders"), "{group}");
    // The ~100 short-lived tasks never make it: only single long-lived
    // tasks (the server's accept loop, the spawner parked in its sleep)
    // besides the ten.
    for g in text.split("\n\n").skip(1) {
        let count: i64 = g.split(' ').next().unwrap().parse().unwrap();
        assert!(count == 10 || count == 1, "unexpected group:\n{g}");
    }
    let stuck: i64 = text
        .split(" of ")
        .next()
        .and_then(|h| h.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(stuck < 20, "{stuck} tasks reported stuck:\n{text}");

    for bad in ["0", "-1", "abc", "99999"] {
        let reply = get(&format!("{base}/debug/pprof/taskleak?seconds={bad}"));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert!(reply.text().contains("`seconds`"), "{}", reply.text());
    }
    drop(senders);
    // Not a plain drop: a worker wedged by tokio's dump barrier would hold
    // it forever.
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(running);
    agent_rt.shutdown_timeout(Duration::from_secs(2));
    true
}
