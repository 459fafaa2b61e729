//! The period loop: every period, the CPU profile of the period (a
//! consumer of the shared sample stream), the heap with `alloc_*` as the
//! growth over the period, and the task profile when asked; each becomes a
//! delivery per backend. Incidents the flight recorder fired since are
//! pushed once each, labelled `incident=<id>` (the CPU before the trigger
//! and the heap at it, over the incident's before-window).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::sync::watch;

use super::config::PushConfig;
use super::queue::Queue;
use super::wire::{self, Period};
use super::{Counters, Sources};
use crate::capture::heap::{HeapProfiler, HeapSnapshot};

pub(crate) fn run(
    agent: Weak<dyn Sources>,
    config: &PushConfig,
    frequency: u32,
    queue: &Queue,
    counters: &Counters,
    stopped: watch::Receiver<bool>,
) {
    // A runtime of its own: the push never takes a worker of the service's.
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        counters.collect_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    rt.block_on(periods(agent, config, frequency, queue, counters, stopped));
}

async fn periods(
    agent: Weak<dyn Sources>,
    config: &PushConfig,
    frequency: u32,
    queue: &Queue,
    counters: &Counters,
    mut stopped: watch::Receiver<bool>,
) {
    let failed = || {
        counters.collect_errors.fetch_add(1, Ordering::Relaxed);
    };
    let heap_on = config.heap && HeapProfiler::is_available();
    // The first period's allocations are counted from here.
    let mut heap_base: Option<HeapSnapshot> = None;
    if heap_on {
        if let Some(a) = agent.upgrade() {
            heap_base = a.heap().snapshot().await.ok();
        }
    }
    let mut pushed: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let Some(a) = agent.upgrade() else {
            return;
        };
        push_incidents(&*a, config, frequency, queue, counters, &mut pushed);
        let from = SystemTime::now();
        let start = std::time::Instant::now();
        let cpu = if config.cpu && crate::capture::cpu::shares_stream() {
            tokio::select! {
                capture = a.cpu().capture(config.period, frequency) => Some(capture),
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        } else {
            tokio::select! {
                () = tokio::time::sleep(config.period) => None,
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        };
        let until = SystemTime::now();
        let span = until.duration_since(from).unwrap_or_default();
        let mut period = Period {
            from,
            until,
            frequency,
            profiles: Vec::new(),
        };
        match cpu {
            Some(Ok(capture)) => period
                .profiles
                .push(("cpu", capture.to_profile(a.symbolizer()))),
            Some(Err(_)) => failed(),
            None => {}
        }
        if heap_on {
            match a.heap().snapshot().await {
                Ok(now) => {
                    let grown = match &heap_base {
                        Some(base) => now.alloc_delta(base),
                        None => now.clone(),
                    };
                    heap_base = Some(now);
                    let mut p = a
                        .heap()
                        .profile(&grown, a.symbolizer(), "inuse_space", until);
                    p.time_nanos = nanos(from);
                    p.duration_nanos = i64::try_from(span.as_nanos()).unwrap_or(i64::MAX);
                    period.profiles.push(("heap", p));
                }
                Err(_) => failed(),
            }
        }
        if config.tasks {
            match a.runtime_handle() {
                Some(handle) => match crate::capture::tasks::dump(handle).await {
                    Ok(stacks) => period
                        .profiles
                        .push(("tasks", stacks.to_profile(a.symbolizer(), "tasks"))),
                    Err(_) => failed(),
                },
                None => failed(),
            }
        }
        drop(a);
        // A capture that failed at once must not turn this into a busy loop.
        if let Some(rest) = config.period.checked_sub(start.elapsed()) {
            if rest > config.period / 2 {
                tokio::select! {
                    () = tokio::time::sleep(rest) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
            }
        }
        if period.profiles.is_empty() {
            continue;
        }
        if let Some(endpoint) = &config.pyroscope {
            for (kind, profile) in &period.profiles {
                match wire::pyroscope(endpoint, config, &period, kind, profile) {
                    Ok(d) => queue.push(d),
                    Err(_) => failed(),
                }
            }
        }
        if let Some(endpoint) = &config.otlp {
            match wire::otlp(endpoint, config, &period) {
                Ok(d) => queue.push(d),
                Err(_) => failed(),
            }
        }
    }
}

/// Each incident not pushed yet whose heap at the trigger is taken: its
/// before-window's CPU and that heap, as one period labelled
/// `incident=<id>`.
fn push_incidents(
    a: &dyn Sources,
    config: &PushConfig,
    frequency: u32,
    queue: &Queue,
    counters: &Counters,
    pushed: &mut std::collections::HashSet<String>,
) {
    let Some(recorder) = a.recorder() else { return };
    for incident in recorder.incidents() {
        if pushed.contains(&incident.id) {
            continue;
        }
        let heap = match recorder.incident_heap(&incident.id, None) {
            Ok(Some(heap)) => Some(heap),
            // Still being taken: at the next period.
            Ok(None) => continue,
            // No heap profiles in this build: the CPU alone.
            Err(_) => None,
        };
        push_incident(
            a,
            config,
            frequency,
            queue,
            counters,
            &incident,
            heap.as_deref(),
        );
        pushed.insert(incident.id);
    }
}

fn push_incident(
    a: &dyn Sources,
    config: &PushConfig,
    frequency: u32,
    queue: &Queue,
    counters: &Counters,
    incident: &crate::capture::recorder::IncidentInfo,
    heap: Option<&HeapSnapshot>,
) {
    let Some(recorder) = a.recorder() else { return };
    let until =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(incident.time_unix_seconds);
    let from = until - std::time::Duration::from_secs_f64(incident.before_seconds);
    let mut period = Period {
        from,
        until,
        frequency,
        profiles: Vec::new(),
    };
    if config.cpu
        && let Ok(cpu) = recorder.incident_cpu(&incident.id, false)
    {
        period
            .profiles
            .push(("cpu", cpu.to_profile(a.symbolizer())));
    }
    if config.heap
        && let Some(heap) = heap
    {
        period.profiles.push((
            "heap",
            a.heap().profile(heap, a.symbolizer(), "inuse_space", until),
        ));
    }
    if period.profiles.is_empty() {
        return;
    }
    let mut labelled = config.clone();
    labelled
        .labels
        .push(("incident".to_string(), incident.id.clone()));
    if let Some(endpoint) = &labelled.pyroscope {
        for (kind, profile) in &period.profiles {
            match wire::pyroscope(endpoint, &labelled, &period, kind, profile) {
                Ok(d) => queue.push(d),
                Err(_) => {
                    counters.collect_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Some(endpoint) = &labelled.otlp {
        match wire::otlp(endpoint, &labelled, &period) {
            Ok(d) => queue.push(d),
            Err(_) => {
                counters.collect_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
