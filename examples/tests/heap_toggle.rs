//! Heap sampling switched off and on at run time through the agent's API
//! (jemalloc's `prof.active`): allocations made while it is off are not in
//! the profile, those made after it is back on are. A test binary of its
//! own, since switching is process-wide.

mod common;

use common::{decode, get};
use profscope_agent::Agent;

profscope_agent::jemalloc_profiling!(lg_prof_sample = 14);

#[inline(never)]
fn retained_while_off(out: &mut Vec<Vec<u8>>) {
    for i in 0..32 {
        out.push(vec![i as u8 | 1; 1 << 20]);
    }
}

#[inline(never)]
fn retained_while_on(out: &mut Vec<Vec<u8>>) {
    for i in 0..32 {
        out.push(vec![i as u8 | 1; 1 << 20]);
    }
}

#[test]
fn heap_sampling_switches_off_and_on() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(async {
        Agent::builder()
            .addr("127.0.0.1:0".parse().unwrap())
            .build()
            .unwrap()
    });
    assert!(agent.heap_profiling_active());
    let running = rt.block_on(agent.clone().spawn()).unwrap();
    let url = format!("http://{}/debug/pprof/heap", running.local_addr());

    let mut held = Vec::new();
    agent.set_heap_profiling(false).unwrap();
    assert!(!agent.heap_profiling_active());
    retained_while_off(&mut held);
    agent.set_heap_profiling(true).unwrap();
    assert!(agent.heap_profiling_active());
    retained_while_on(&mut held);

    let reply = get(&url);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let profile = decode(&reply.body);
    let folded = profscope_profile::fold::fold(&profile, 3);
    let inuse = |name: &str| -> i64 {
        folded
            .iter()
            .filter(|(s, _)| {
                s.rsplit(';')
                    .next()
                    .is_some_and(|leaf| leaf.ends_with(name))
            })
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(inuse("retained_while_off"), 0, "sampled while off");
    let on = inuse("retained_while_on") as f64 / (32 << 20) as f64;
    assert!((0.9..=1.1).contains(&on), "retained_while_on: {on}");
    drop(held);
}
