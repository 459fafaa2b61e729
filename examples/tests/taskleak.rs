//! `/debug/pprof/taskleak`: tasks parked at the same await point in every
//! dump are reported, grouped by stack; tasks that come and go are not.

#![cfg(all(tokio_unstable, target_os = "linux"))]

mod common;

use std::time::Duration;

use common::{dumped_runtime_and_agent, get, shut_down};

#[inline(never)]
async fn wait_for_orders(mut rx: tokio::sync::mpsc::Receiver<u32>) -> Option<u32> {
    rx.recv().await
}

#[test]
fn stuck_tasks_are_grouped_and_busy_ones_are_not() {
    // The service's runtime, which the agent dumps, and the agent beside it.
    let (rt, agent_rt, running) = dumped_runtime_and_agent();
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

    // One request, three dumps.
    let reply = get(&format!("{base}/debug/pprof/taskleak?seconds=2&debug=1"));
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
    drop(running);
    shut_down(rt, agent_rt);
}
