//! The blocking watchdog, on a 2-worker runtime with tokio's poll hooks
//! stamped and the agent on a side port with a runtime of its own: a
//! sleeping, a spinning, a lock-waiting and a FIFO-reading handler are each
//! one stall with the culprit on the stack and the right state; both
//! workers wedged at once are named while they are wedged; stalls carry
//! the poll's route and task-group labels; `go tool pprof` reads the
//! profile and `-tagfocus route=` isolates a route.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(feature = "pprof-rs")))]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing;
use profscope_agent::watchdog::{Stall, WatchdogConfig};
use profscope_agent::{Agent, RunningAgent};

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(never)]
async fn sleep_in_handler() -> &'static str {
    std::thread::sleep(Duration::from_millis(300));
    "slept"
}

#[inline(never)]
fn spin_for(d: Duration) -> u64 {
    let until = Instant::now() + d;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while Instant::now() < until {
        // No iterator: debug builds would not inline its `next`.
        let mut i = 0;
        while i < 1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
    }
    x
}

#[inline(never)]
async fn spin_in_handler() -> String {
    spin_for(Duration::from_millis(300)).to_string()
}

static HELD: Mutex<()> = Mutex::new(());

#[inline(never)]
async fn lock_in_handler() -> &'static str {
    let _guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    "locked"
}

#[inline(never)]
async fn read_fifo_in_handler(
    axum::extract::State(fifo): axum::extract::State<Arc<std::path::PathBuf>>,
) -> String {
    use std::io::Read;
    // Opened for reading and writing, so the open never blocks: the read
    // does, until the test writes.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&*fifo)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact(&mut byte).unwrap();
    "read".into()
}

struct Rig {
    rt: tokio::runtime::Runtime,
    agent: Agent,
    side: Option<RunningAgent>,
    base: String,
    fifo: Arc<std::path::PathBuf>,
    _dir: TempDir,
}

impl Rig {
    fn side_addr(&self) -> std::net::SocketAddr {
        self.side.as_ref().unwrap().local_addr()
    }
}

impl Drop for Rig {
    /// Stops the side port, whose agent (and watchdog) would otherwise
    /// outlive the test and watch the next one's threads too.
    fn drop(&mut self) {
        if let Some(side) = self.side.take() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(side.shutdown());
        }
    }
}

/// A private directory under the temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "profscope-watchdog-test-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rig(config: WatchdogConfig) -> Rig {
    rig_with(config, None)
}

fn rig_with(
    config: WatchdogConfig,
    recorder: Option<profscope_agent::recorder::RecorderConfig>,
) -> Rig {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    profscope_agent::watchdog::install_poll_hooks(&mut builder);
    let rt = builder.build().unwrap();
    let agent = rt.block_on(async {
        let builder = Agent::builder()
            .addr("127.0.0.1:0".parse().unwrap())
            .watchdog(config);
        match recorder {
            Some(r) => builder.recorder(r),
            None => builder,
        }
        .build()
        .unwrap()
    });
    let side = agent.clone().spawn_on_own_runtime().unwrap();
    let dir = TempDir::new();
    let fifo = Arc::new(dir.0.join("fifo"));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let app = Router::new()
        .route("/sleep", routing::get(sleep_in_handler))
        .route("/spin", routing::get(spin_in_handler))
        .route("/lock", routing::get(lock_in_handler))
        .route("/fifo", routing::get(read_fifo_in_handler))
        .route("/hello", routing::get(|| async { "hello" }))
        .route_layer(agent.route_metrics_layer())
        .with_state(fifo.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    Rig {
        rt,
        agent,
        side: Some(side),
        base,
        fifo,
        _dir: dir,
    }
}

fn get(url: &str) -> (u16, Vec<u8>) {
    match ureq::get(url).timeout(Duration::from_secs(30)).call() {
        Ok(r) => {
            let status = r.status();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
            (status, body)
        }
        Err(ureq::Error::Status(code, r)) => {
            (code, r.into_string().unwrap_or_default().into_bytes())
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The stalls reported after `run`, waiting a little for the last one.
fn stalls_after(rig: &Rig, run: impl FnOnce()) -> Vec<Stall> {
    let before = rig.agent.watchdog().unwrap().recent_stalls().len();
    run();
    std::thread::sleep(Duration::from_millis(200));
    rig.agent.watchdog().unwrap().recent_stalls()[before..].to_vec()
}

/// A block profile sample: leaf-first function names, labels, delay ns.
type BlockSample = (Vec<String>, Vec<(String, String)>, i64);

/// The block profile's samples.
fn block_samples(rig: &Rig, query: &str) -> Vec<BlockSample> {
    let (status, body) = get(&format!(
        "http://{}/debug/pprof/block{query}",
        rig.side_addr()
    ));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let p = profscope_profile::parse(&body, &profscope_profile::Limits::default()).unwrap();
    p.sample
        .iter()
        .map(|s| {
            let names = s
                .location_id
                .iter()
                .flat_map(|id| p.location[*id as usize - 1].line.iter())
                .map(|l| {
                    p.string_at(p.function[l.function_id as usize - 1].name)
                        .to_string()
                })
                .collect();
            let labels = s
                .label
                .iter()
                .map(|l| {
                    (
                        p.string_at(l.key).to_string(),
                        p.string_at(l.str).to_string(),
                    )
                })
                .collect();
            (names, labels, s.value[1])
        })
        .collect()
}

fn state_share(stall: &Stall, state: &str) -> f64 {
    let total: Duration = stall.states.values().sum();
    stall
        .states
        .get(state)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        / total.as_secs_f64()
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_sleep_in_a_handler_is_one_blocked_stall_under_its_handler() {
    let _turn = turn();
    let rig = rig(WatchdogConfig::default());
    let stalls = stalls_after(&rig, || {
        assert_eq!(get(&format!("{}/sleep", rig.base)).0, 200)
    });
    eprintln!("{stalls:?}");
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    let ms = stalls[0].duration.as_secs_f64() * 1000.0;
    assert!((240.0..=400.0).contains(&ms), "{ms} ms");
    assert!(state_share(&stalls[0], "blocked") > 0.5, "{stalls:?}");
    let samples = block_samples(&rig, "");
    let total: i64 = samples.iter().map(|s| s.2).sum();
    let mut under = 0;
    for (names, labels, delay) in &samples {
        assert_eq!(label(labels, "route"), Some("/sleep"), "{labels:?}");
        let sleep = names
            .iter()
            .position(|n| n.starts_with("std::thread::") && n.ends_with("sleep"));
        let handler = names.iter().position(|n| {
            n.ends_with("sleep_in_handler::{{closure}}") || n.ends_with("sleep_in_handler")
        });
        if let (Some(s), Some(h)) = (sleep, handler)
            && h > s
        {
            under += delay;
        }
    }
    eprintln!("{under} of {total} ns under sleep_in_handler → std::thread::sleep");
    assert!(under * 10 >= total * 9, "{samples:?}");
    // The delay is the stall's wall time, give or take a sample.
    let ms = total as f64 / 1e6;
    assert!((200.0..=400.0).contains(&ms), "{ms} ms of delay");
}

#[test]
fn a_spin_in_a_handler_is_one_running_stall_with_the_spinner_on_top() {
    let _turn = turn();
    let rig = rig(WatchdogConfig::default());
    let stalls = stalls_after(&rig, || {
        assert_eq!(get(&format!("{}/spin", rig.base)).0, 200)
    });
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    // On CPU: running, or runnable when the machine is loaded; never blocked.
    assert!(state_share(&stalls[0], "blocked") < 0.3, "{stalls:?}");
    let samples = block_samples(&rig, "");
    let mut flat: std::collections::HashMap<&str, i64> = Default::default();
    for (names, _, delay) in &samples {
        *flat
            .entry(names.first().map_or("", String::as_str))
            .or_default() += delay;
    }
    let top = flat
        .iter()
        .max_by_key(|(_, d)| **d)
        .map(|(n, _)| *n)
        .unwrap_or("");
    assert!(top.ends_with("spin_for"), "{flat:?}");
}

#[test]
fn a_lock_wait_and_a_fifo_read_are_each_a_stall_with_their_culprit() {
    let _turn = turn();
    let rig = rig(WatchdogConfig::default());
    let stalls = stalls_after(&rig, || {
        let guard = HELD.lock().unwrap();
        let request = std::thread::spawn({
            let url = format!("{}/lock", rig.base);
            move || get(&url)
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(guard);
        assert_eq!(request.join().unwrap().0, 200);
        let request = std::thread::spawn({
            let url = format!("{}/fifo", rig.base);
            move || get(&url)
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&*rig.fifo)
            .unwrap();
        std::io::Write::write_all(&mut writer, b"x").unwrap();
        assert_eq!(request.join().unwrap().0, 200);
    });
    assert_eq!(stalls.len(), 2, "{stalls:?}");
    let samples = block_samples(&rig, "");
    let under = |route: &str, culprit: &dyn Fn(&str) -> bool| -> i64 {
        samples
            .iter()
            .filter(|(names, labels, _)| {
                label(labels, "route") == Some(route) && names.iter().take(6).any(|n| culprit(n))
            })
            .map(|s| s.2)
            .sum()
    };
    let lock = under("/lock", &|n| n.contains("lock"));
    let read = under("/fifo", &|n| n.contains("read"));
    eprintln!("lock {lock} ns, read {read} ns");
    assert!(lock > 100_000_000, "{samples:?}");
    assert!(read > 100_000_000, "{samples:?}");
}

#[test]
fn both_workers_wedged_are_named_while_they_are_wedged() {
    let _turn = turn();
    let mut config = WatchdogConfig::default();
    config.report_every = Duration::from_millis(200);
    let rig = rig(config);
    let requests: Vec<_> = ["/sleep", "/spin"]
        .iter()
        .map(|route| {
            let url = format!("{}{route}?wedge", rig.base);
            std::thread::spawn(move || {
                // Three in a row: each worker held about a second.
                for _ in 0..3 {
                    get(&url);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    // The service's workers are both held: the side port still answers.
    let started = Instant::now();
    let samples = block_samples(&rig, "?seconds=5");
    let answered = started.elapsed();
    let routes: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter_map(|(_, labels, _)| label(labels, "route"))
        .collect();
    eprintln!("answered in {answered:?} during the wedge: {routes:?}");
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    assert!(
        routes.contains("/sleep") && routes.contains("/spin"),
        "{routes:?}"
    );
    for r in requests {
        r.join().unwrap();
    }
}

#[test]
fn stalls_carry_the_task_group_and_go_tool_pprof_isolates_a_route() {
    let _turn = turn();
    let rig = rig(WatchdogConfig::default());
    let group = rig.agent.task_group("jobs");
    rig.rt
        .block_on(rig.rt.spawn(group.instrument(async {
            std::thread::sleep(Duration::from_millis(300));
        })))
        .unwrap();
    assert_eq!(get(&format!("{}/sleep", rig.base)).0, 200);
    std::thread::sleep(Duration::from_millis(200));
    let samples = block_samples(&rig, "");
    assert!(
        samples
            .iter()
            .any(|(_, labels, _)| label(labels, "task_group") == Some("jobs")),
        "{samples:?}"
    );
    if !profscope_test_support::have_go() {
        return;
    }
    let (_, body) = get(&format!("http://{}/debug/pprof/block", rig.side_addr()));
    let dir = TempDir::new();
    let file = dir.0.join("block.pb.gz");
    std::fs::write(&file, body).unwrap();
    let (top, _) = profscope_test_support::go_pprof(&["-top", "-tagfocus", "route=/sleep"], &file);
    assert!(top.contains("sleep_in_handler"), "{top}");
    assert!(
        !top.contains("task_group") && !top.contains("jobs"),
        "{top}"
    );
}

#[test]
fn a_stall_fires_a_blocked_poll_incident_naming_its_culprit() {
    let _turn = turn();
    let mut recorder = profscope_agent::recorder::RecorderConfig::default();
    recorder.after = Duration::from_secs(1);
    let rig = rig_with(WatchdogConfig::default(), Some(recorder));
    assert_eq!(get(&format!("{}/sleep", rig.base)).0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let incident = loop {
        let found = rig
            .agent
            .recorder()
            .unwrap()
            .incidents()
            .into_iter()
            .find(|i| i.trigger == "blocked_poll");
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no blocked_poll incident");
        std::thread::sleep(Duration::from_millis(50));
    };
    let culprit = &incident.labels["culprit"];
    eprintln!("blocked_poll incident: {incident:?}");
    assert!(culprit.contains("sleep"), "{culprit}");
    assert!(incident.figures["seconds"] >= 0.2, "{incident:?}");
}

/// Context switches of this process's watchdog threads (comm
/// `profscope-watch`: the monitor and its reporter, which waits on a
/// channel and wakes only to report).
fn watchdog_wakes() -> u64 {
    let mut wakes = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("profscope-watch") {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        wakes += status
            .lines()
            .filter(|l| l.contains("voluntary_ctxt_switches"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    wakes
}

#[test]
fn an_idle_monitor_dozes_and_the_next_stall_is_still_caught() {
    let _turn = turn();
    let rig = rig(WatchdogConfig::default());
    // No poll for 8 ticks (200 ms): the monitor dozes. The wait also lets
    // the monitors of earlier tests' agents notice they are gone.
    std::thread::sleep(Duration::from_millis(1500));
    let before = watchdog_wakes();
    std::thread::sleep(Duration::from_secs(2));
    let idle = watchdog_wakes() - before;
    eprintln!("watchdog threads woke {idle} times in 2 idle seconds (80 without dozing)");
    assert!(idle <= 8, "{idle} wake-ups while idle");
    // The first poll wakes it; the stall is caught as if it never dozed.
    let asked = Instant::now();
    let stalls = stalls_after(&rig, || {
        assert_eq!(get(&format!("{}/sleep", rig.base)).0, 200)
    });
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    let ms = stalls[0].duration.as_secs_f64() * 1000.0;
    assert!((240.0..=400.0).contains(&ms), "{ms} ms");
    let first = stalls[0].first_sample.expect("sampled while it blocked");
    let seen_after = first.duration_since(asked);
    eprintln!("first directed sample {seen_after:?} after the request");
    assert!(
        seen_after <= Duration::from_millis(100 + 25 + 80),
        "within threshold + threshold/4 (+ the request's way in and a loaded \
         machine's wake-up): {seen_after:?}"
    );
}
