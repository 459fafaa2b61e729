//! The flight recorder in one process: a CPU burn fires the CPU trigger and
//! the burning function tops the incident's profile; a panic fires the
//! panic trigger while the service's own hook still runs; the recent past
//! agrees with an ad-hoc capture taken beside it (which the recorder never
//! refuses); and the ring stays within its bytes. Its own test binary: the
//! burn would skew any timing test beside it.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(feature = "pprof-rs")))]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use profscope_agent::Agent;
use profscope_agent::cpu::{CpuCapture, CpuProfiler};
use profscope_agent::recorder::{CpuBusy, RecorderConfig, TriggerKind};
use profscope_agent::symbols::Symbolizer;

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(never)]
fn burn_for_the_trigger(stop: &AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0u32;
        while i < 100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
    }
    x
}

/// Flat sample shares by leaf function name (last path segment).
fn flat_shares(capture: &CpuCapture) -> (HashMap<String, f64>, f64) {
    let profile = capture.to_profile(&Symbolizer::new());
    let mut flat: HashMap<String, f64> = HashMap::new();
    let mut total = 0.0;
    for s in &profile.sample {
        let cpu = s.value[1] as f64;
        total += cpu;
        let leaf = s
            .location_id
            .first()
            .and_then(|id| profile.location[*id as usize - 1].line.first())
            .map(|line| {
                let f = &profile.function[line.function_id as usize - 1];
                let name = profile.string_at(f.name);
                name.rsplit("::").next().unwrap_or(name).to_string()
            })
            .unwrap_or_default();
        *flat.entry(leaf).or_default() += cpu;
    }
    for v in flat.values_mut() {
        *v /= total.max(1.0);
    }
    (flat, total)
}

fn wait_for_incident(agent: &Agent, trigger: &str, within: Duration) -> String {
    let recorder = agent.recorder().expect("recorder on");
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = recorder
            .incidents()
            .into_iter()
            .find(|i| i.trigger == trigger)
        {
            return i.id;
        }
        assert!(
            Instant::now() < deadline,
            "no {trigger} incident within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cpu_burn_fires_the_cpu_trigger_and_tops_its_profile() {
    let _turn = turn();
    let mut config = RecorderConfig::default();
    // A quarter of the cores for 2 s: three burners reach it on a machine
    // others load too.
    config.triggers.cpu = Some(CpuBusy::above(25.0, Duration::from_secs(2)));
    config.before = Duration::from_secs(10);
    config.after = Duration::from_secs(1);
    let agent = Agent::builder().recorder(config).build().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || burn_for_the_trigger(&stop))
        })
        .collect();
    let id = wait_for_incident(&agent, "cpu", Duration::from_secs(20));
    eprintln!("cpu trigger fired {:?} into the burn", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    let capture = agent.recorder().unwrap().incident_cpu(&id, false).unwrap();
    let (flat, _) = flat_shares(&capture);
    let (top, share) = flat
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("samples");
    assert_eq!(top, "burn_for_the_trigger", "{flat:?}");
    assert!(*share > 0.5, "{flat:?}");
    // The incident is listed with the figures that fired it.
    let info = agent
        .recorder()
        .unwrap()
        .incidents()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap();
    assert!(info.figures["percent_of_cores"] >= 25.0, "{info:?}");
}

static USER_HOOK_RAN: AtomicBool = AtomicBool::new(false);

#[test]
fn a_panic_fires_the_panic_trigger_and_the_services_hook_still_runs() {
    let _turn = turn();
    std::panic::set_hook(Box::new(|_| USER_HOOK_RAN.store(true, Ordering::SeqCst)));
    let mut config = RecorderConfig::default();
    config.triggers.panic = true;
    config.after = Duration::from_secs(1);
    let agent = Agent::builder().recorder(config).build().unwrap();
    let panicked = std::thread::Builder::new()
        .name("request-handler".into())
        .spawn(|| panic!("a bug in the service"))
        .unwrap()
        .join();
    assert!(panicked.is_err());
    assert!(
        USER_HOOK_RAN.load(Ordering::SeqCst),
        "the service's hook ran"
    );
    let id = wait_for_incident(&agent, "panic", Duration::from_secs(5));
    let info = agent
        .recorder()
        .unwrap()
        .incidents()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap();
    assert_eq!(
        info.labels.get("thread").map(String::as_str),
        Some("request-handler")
    );
    assert!(info.labels["location"].contains("recorder.rs"), "{info:?}");
    // A manual incident goes through the same door, with its cooldown.
    let recorder = agent.recorder().unwrap();
    assert!(
        recorder
            .fire(TriggerKind::Manual, Default::default(), Default::default())
            .is_some()
    );
    assert!(
        recorder
            .fire(TriggerKind::Manual, Default::default(), Default::default())
            .is_none()
    );
    let _ = std::panic::take_hook();
}

/// With `panic_writes_at_once` (the default under `panic = "abort"`) the
/// before-window is on disk when the hooks return: a child process whose
/// own hook aborts (what `panic = "abort"` does right after the hooks)
/// leaves its incident behind, CPU and manifest.
#[test]
fn a_panic_that_ends_the_process_leaves_its_incident_on_disk() {
    const CHILD: &str = "PROFSCOPE_TEST_PANIC_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        let mut config = RecorderConfig::default();
        config.triggers.panic = true;
        config.triggers.panic_writes_at_once = true;
        config.incident_dir = Some(dir.into());
        // The service's hook ends the process, as `panic = "abort"` does.
        std::panic::set_hook(Box::new(|_| std::process::abort()));
        let _agent = Agent::builder().recorder(config).build().unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| burn_for_the_trigger(&stop));
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
        });
        panic!("the last bug");
    }
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_that_ends_the_process_leaves_its_incident_on_disk",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(6),
        "the child aborted (SIGABRT): {status:?}"
    );
    let incident = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("an incident directory with its manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(incident.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["trigger"], "panic", "{manifest}");
    let cpu = std::fs::read(incident.join("cpu-before.pb.gz")).expect("the CPU before the panic");
    let profile = profscope_profile::parse(&cpu, &profscope_profile::Limits::default())
        .expect("a pprof profile");
    let names: Vec<&str> = profile
        .function
        .iter()
        .map(|f| profile.string_at(f.name))
        .collect();
    assert!(
        names.iter().any(|n| n.contains("burn_for_the_trigger")),
        "the burn before the panic is in the before-window: {names:?}"
    );
}

#[inline(never)]
fn a_quarter(stop: &AtomicBool) {
    burn_for_the_trigger(stop);
}

#[inline(never)]
fn three_quarters(stop: &AtomicBool) {
    burn_for_the_trigger(stop);
}

#[test]
fn the_recent_past_agrees_with_an_ad_hoc_capture_beside_it() {
    let _turn = turn();
    let agent = Agent::builder()
        .recorder(RecorderConfig::default())
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One thread in a_quarter, three in three_quarters: 1:3 by CPU.
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                if i == 0 {
                    a_quarter(&stop)
                } else {
                    three_quarters(&stop)
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Never refused because of the recorder: one stream, many consumers.
    let ad_hoc = rt
        .block_on(CpuProfiler::new().capture(Duration::from_secs(10), 99))
        .expect("an ad-hoc capture beside the recorder");
    let recent = agent
        .recorder()
        .unwrap()
        .recent_cpu(Duration::from_secs(10))
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let (ours, our_total) = flat_shares(&recent);
    let (theirs, their_total) = flat_shares(&ad_hoc);
    eprintln!(
        "recorder: {ours:?} of {:.2} s; ad hoc: {theirs:?} of {:.2} s",
        our_total / 1e9,
        their_total / 1e9
    );
    let f = "burn_for_the_trigger";
    let (a, b) = (
        ours.get(f).copied().unwrap_or(0.0),
        theirs.get(f).copied().unwrap_or(0.0),
    );
    assert!((a - b).abs() <= 0.10, "{f}: {a:.3} vs {b:.3}");
    assert!(
        (our_total / their_total - 1.0).abs() <= 0.2,
        "total CPU {our_total} vs {their_total}"
    );
    // Both profiles split the burn 1:3 between its two callers.
    let callers = |c: &CpuCapture| {
        let p = c.to_profile(&Symbolizer::new());
        let (mut quarter, mut rest) = (0.0, 0.0);
        for s in &p.sample {
            let names: Vec<String> = s
                .location_id
                .iter()
                .flat_map(|id| p.location[*id as usize - 1].line.iter())
                .map(|l| {
                    p.string_at(p.function[l.function_id as usize - 1].name)
                        .to_string()
                })
                .collect();
            if names.iter().any(|n| n.ends_with("::a_quarter")) {
                quarter += s.value[1] as f64;
            } else if names.iter().any(|n| n.ends_with("::three_quarters")) {
                rest += s.value[1] as f64;
            }
        }
        quarter / (quarter + rest).max(1.0)
    };
    let (a, b) = (callers(&recent), callers(&ad_hoc));
    eprintln!("a_quarter's share: recorder {a:.3}, ad hoc {b:.3}");
    assert!((a - b).abs() <= 0.10, "{a:.3} vs {b:.3}");
}

#[inline(never)]
fn deep(n: u32, stop: &AtomicBool) -> u64 {
    if n == 0 {
        return burn_for_the_trigger(stop);
    }
    deep(n - 1, stop).wrapping_add(1)
}

#[test]
fn the_ring_stays_within_its_bytes() {
    let _turn = turn();
    let mut config = RecorderConfig::default();
    // Fast and small, so the bound is reached within seconds.
    config.cpu_hz = 997;
    config.max_bytes = 64 << 10;
    let agent = Agent::builder().recorder(config).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Many distinct stacks: recursion to depths 1..=40 on four threads.
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut depth = i;
                let deadline = Instant::now() + Duration::from_secs(6);
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let quick = AtomicBool::new(true);
                    deep(depth % 40 + 1, &quick);
                    depth += 1;
                    let mut x = 0u64;
                    for j in 0..200_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(j);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let mut peak = 0;
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(500));
        let status = agent.recorder().unwrap().status();
        peak = peak.max(status.ring_bytes);
        assert!(status.ring_bytes <= 64 << 10, "{status:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let status = agent.recorder().unwrap().status();
    eprintln!("ring peak {peak} bytes; {status:?}");
    assert!(
        status.dropped.cpu_buckets > 0,
        "old seconds dropped: {status:?}"
    );
    assert_eq!(status.state, "recording");
}
