//! Tokio runtime and task-group metrics on `/metrics` and `/debug/tokio`,
//! checked by Prometheus's own tools (`promtool`, a real scrape), and task
//! dumps on `/debug/pprof/tasks`.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{decode, dump_waits_for_a_worker, dumped_runtime_and_agent, example, get, shut_down};
use profscope_agent::TASK_GROUP_METRICS;

/// Whether `tool` (from Debian's `prometheus`) is installed: a loud skip
/// locally, a failure under CI=true.
fn have(tool: &str) -> bool {
    profscope_test_support::have_tool(Command::new(tool).arg("--version"), "prometheus")
}

fn sample_value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_page_has_runtime_task_group_jemalloc_and_process_metrics() {
    let svc = example("axum-service");
    let before = get(&svc.url("/metrics")).text();
    for _ in 0..20 {
        assert_eq!(get(&svc.url("/work?n=20")).status, 200);
    }
    let reply = get(&svc.url("/metrics"));
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type
            .as_deref()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    let page = reply.text();

    // Stable, unstable (the examples build with tokio_unstable), jemalloc, process.
    for name in [
        "tokio_workers",
        "tokio_alive_tasks",
        "tokio_global_queue_depth",
        "tokio_busy_ratio",
        "tokio_worker_busy_seconds_total",
        "tokio_worker_parks_total",
        "tokio_worker_park_unparks_total",
        "tokio_worker_polls_total",
        "tokio_worker_steals_total",
        "tokio_worker_local_queue_depth",
        "tokio_worker_mean_poll_seconds",
        "tokio_worker_overflows_total",
        "tokio_budget_forced_yields_total",
        "tokio_blocking_threads",
        "jemalloc_allocated_bytes",
        "jemalloc_active_bytes",
        "jemalloc_resident_bytes",
        "jemalloc_mapped_bytes",
        "jemalloc_retained_bytes",
        "jemalloc_metadata_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{page}"
        );
    }
    // Every task-group metric, for the route group, with a HELP line.
    for (name, _, _) in TASK_GROUP_METRICS {
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            page.contains(&format!("{name}{{group=\"/work\"}}")),
            "{name} lacks group /work"
        );
    }
    assert_eq!(
        sample_value(&page, "tokio_task_instrumented_total{group=\"/work\"}"),
        Some(20.0)
    );
    // Poll counters grow under load.
    let polls = |p: &str| -> f64 {
        p.lines()
            .filter(|l| l.starts_with("tokio_worker_polls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(polls(&page) > polls(&before), "polls did not grow");

    if have("promtool") {
        let out = profscope_test_support::run_with_stdin(
            Command::new("promtool").args(["check", "metrics"]),
            &page,
        );
        profscope_test_support::stdout_of(&out, "promtool check metrics");
    }

    // The same figures as JSON.
    let json: serde_json::Value =
        serde_json::from_slice(&get(&svc.url("/debug/tokio")).body).unwrap();
    assert_eq!(
        json["runtime"]["workers"],
        serde_json::json!(page_workers(&page))
    );
    assert!(json["runtime"]["per_worker"][0]["polls"].is_u64());
    assert!(
        json["task_groups"]["/work"]["instrumented"]
            .as_u64()
            .unwrap()
            >= 20
    );
}

fn page_workers(page: &str) -> u64 {
    sample_value(page, "tokio_workers").unwrap() as u64
}

#[test]
fn a_real_prometheus_scrapes_the_service() {
    if !have("prometheus") {
        return;
    }
    let svc = example("axum-service");
    let target = svc.base.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: profscope\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(prom);
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=tokio_worker_busy_seconds_total%7Bjob%3D%22profscope%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = ureq::get(&query).call() {
            let body: serde_json::Value = serde_json::from_reader(r.into_reader()).unwrap();
            let results = body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !results.is_empty() {
                assert_eq!(results[0]["metric"]["instance"], serde_json::json!(target));
                assert!(results[0]["metric"]["worker"].is_string());
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned tokio_worker_busy_seconds_total"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Parks forever on a channel: the known async function of the dump test.
async fn wait_for_order(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Spawns `n` tasks parked in `wait_for_order` on `rt`; they end when the
/// senders returned are dropped.
fn spawn_waiting(rt: &tokio::runtime::Handle, n: usize) -> Vec<tokio::sync::oneshot::Sender<()>> {
    (0..n)
        .map(|_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            rt.spawn(wait_for_order(rx));
            tx
        })
        .collect()
}

/// The text dump of `reply` (asserted 200), with its `wait_for_order`
/// group asserted to hold `n` tasks.
fn assert_waiting_in_text_dump(reply: &common::Reply, n: usize) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let block = text
        .split("\n\n")
        .find(|b| b.contains("wait_for_order"))
        .unwrap_or_else(|| panic!("no wait_for_order task:\n{text}"));
    assert!(block.starts_with(&format!("{n} @ task")), "{block}");
    text
}

#[test]
fn task_dump_names_parked_tasks_with_their_count() {
    let (rt, agent_rt, agent) = dumped_runtime_and_agent();
    let senders = spawn_waiting(rt.handle(), 7);
    let base = format!("http://{}", agent.local_addr());
    assert_waiting_in_text_dump(&get(&format!("{base}/debug/pprof/tasks?debug=1")), 7);

    // The same as pprof, under both names.
    for (path, ty) in [("tasks", "tasks"), ("goroutine", "goroutine")] {
        let reply = get(&format!("{base}/debug/pprof/{path}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let p = decode(&reply.body);
        assert_eq!(p.string_at(p.sample_type[0].ty), ty);
        let folded = profscope_profile::fold::fold(&p, 0);
        let waiting: i64 = folded
            .iter()
            .filter(|(s, _)| s.contains("wait_for_order"))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(waiting, 7, "{folded:?}");
    }
    drop(senders);
    drop(agent);
    shut_down(rt, agent_rt);
}

/// True when `workers` tasks spawned on `rt` all run at the same time
/// (each blocks until every one has started, for at most `within`): every
/// worker of the runtime is free to run tasks.
fn workers_run_together(rt: &tokio::runtime::Runtime, workers: usize, within: Duration) -> bool {
    use std::sync::{Arc, Condvar, Mutex};
    let met = Arc::new((Mutex::new(0usize), Condvar::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..workers {
        let (met, tx) = (met.clone(), tx.clone());
        rt.spawn(async move {
            let (started, cvar) = &*met;
            let mut n = started.lock().unwrap();
            *n += 1;
            cvar.notify_all();
            let (n, wait) = cvar
                .wait_timeout_while(n, within, |n| *n < workers)
                .unwrap();
            drop(n);
            let _ = tx.send(!wait.timed_out());
        });
    }
    drop(tx);
    // A task no worker picks up never answers: give up with the rest.
    let deadline = Instant::now() + within + Duration::from_secs(1);
    (0..workers).all(|_| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(false)
    })
}

/// A dump requested while a worker sits in a poll longer than tokio's
/// 250 ms barrier wait must leave every worker running. With tokio 1.54.1
/// as released, the worker that gave up at the barrier was still counted
/// (tokio-rs/tokio#8370): the next arrival became leader alone and waited
/// at the barrier's end forever, one worker lost to the service for good.
/// The workspace builds tokio with that fix (`vendor/tokio`).
#[test]
fn a_dump_during_a_long_poll_leaves_every_worker_running() {
    let (rt, agent_rt, agent) = dumped_runtime_and_agent();
    assert!(workers_run_together(&rt, 2, Duration::from_secs(5)));
    let base = format!("http://{}", agent.local_addr());
    let mut lost = None;
    for round in 0..3 {
        // One worker in 400 ms polls for about 2 s, the other idle.
        let long_polls = rt.spawn(async {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(400));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let reply = get(&format!("{base}/debug/pprof/tasks?debug=1"));
        // The dump may wait the long polls out or give up saying why;
        // never anything else.
        assert!(
            reply.status == 200 || dump_waits_for_a_worker(&reply),
            "round {round}: {} {}",
            reply.status,
            reply.text()
        );
        while !long_polls.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !workers_run_together(&rt, 2, Duration::from_secs(5)) {
            lost = Some(round);
            break;
        }
    }
    // Shut down first: a wedged worker would hang a plain drop.
    drop(agent);
    shut_down(rt, agent_rt);
    assert_eq!(
        lost, None,
        "a worker no longer runs tasks after a dump during a long poll (in that round)"
    );
}

/// A worker blocked in a poll holds tokio's dump: the request gives up
/// after 5 s with a 503 saying why; while tokio still waits, a second
/// request is refused at once instead of queueing behind it (tokio's queued
/// dump would spin, waking every worker in a loop); once the worker is
/// free, the waiting dump ends and dumps answer again, though the runtime
/// is idle (the second change in `vendor/tokio`: the idle worker that gave
/// up at the barrier must not sleep through the release).
#[test]
fn a_blocked_worker_makes_dumps_wait_one_at_a_time() {
    let (rt, agent_rt, agent) = dumped_runtime_and_agent();
    let url = format!("http://{}/debug/pprof/tasks?debug=1", agent.local_addr());
    let (started, running) = std::sync::mpsc::channel();
    let blocked = rt.spawn(async move {
        let _ = started.send(());
        std::thread::sleep(Duration::from_secs(7));
    });
    running.recv().unwrap();

    let first = get(&url);
    assert!(
        dump_waits_for_a_worker(&first),
        "{} {}",
        first.status,
        first.text()
    );
    assert!(
        first.text().starts_with("task dump timed out after 5s"),
        "{}",
        first.text()
    );
    assert_eq!(first.retry_after.as_deref(), Some("5"));
    let asked = Instant::now();
    let second = get(&url);
    let waited = asked.elapsed();
    assert!(
        dump_waits_for_a_worker(&second),
        "{} {}",
        second.status,
        second.text()
    );
    assert!(
        second
            .text()
            .starts_with("an earlier task dump has waited "),
        "{}",
        second.text()
    );
    // Refused, not queued: well under the 5 s a queued dump would wait.
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    while !blocked.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let freed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let reply = get(&url);
        if reply.status == 200 || Instant::now() > deadline {
            break reply;
        }
        assert!(
            dump_waits_for_a_worker(&reply),
            "{} {}",
            reply.status,
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "dumps answer again {:?} after the worker was freed",
        freed.elapsed()
    );
    drop(agent);
    shut_down(rt, agent_rt);
    assert_eq!(answered.status, 200, "{}", answered.text());
}

/// tokio dumps a current-thread runtime only from inside it; the agent,
/// on a runtime of its own, must still see the service's tasks.
#[test]
fn a_current_thread_runtime_is_dumped_from_another_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        rt.block_on(async {
            let _ = stopped.await;
        });
        rt.shutdown_timeout(Duration::from_secs(2));
    });
    let senders = spawn_waiting(&handle, 3);
    let agent_rt = tokio::runtime::Runtime::new().unwrap();
    let agent = agent_rt
        .block_on(
            profscope_agent::Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .runtime(handle.clone())
                .task_dumps(true)
                .build()
                .unwrap()
                .spawn(),
        )
        .unwrap();
    let reply = get(&format!(
        "http://{}/debug/pprof/tasks?debug=1",
        agent.local_addr()
    ));
    drop(senders);
    drop(agent);
    let _ = stop.send(());
    driver.join().unwrap();
    agent_rt.shutdown_timeout(Duration::from_secs(2));
    let text = assert_waiting_in_text_dump(&reply, 3);
    // The task that takes the dump is not in it.
    assert!(text.starts_with("tokio task profile: total 3\n"), "{text}");
}

/// The service's runtime (two workers) serving the example app with the
/// agent merged into its router, task dumps on: the agent's answers ride
/// on the very workers a dump stops. Returns the runtime and the base URL.
fn merged_service() -> (tokio::runtime::Runtime, String) {
    let rt = common::two_workers();
    let agent = {
        let _in_rt = rt.enter();
        profscope_agent::Agent::builder()
            .task_dumps(true)
            .build()
            .unwrap()
    };
    let app = profscope_examples::app(&agent);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    (rt, base)
}

/// How long a task spawned on `rt` now waits to start, and how late a
/// 10 ms timer it then sets fires.
fn spawn_and_timer_lateness(rt: &tokio::runtime::Runtime) -> (Duration, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let asked = Instant::now();
    rt.spawn(async move {
        let started = asked.elapsed();
        let set = Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let late = set.elapsed().saturating_sub(Duration::from_millis(10));
        let _ = tx.send((started, late));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a spawned task with a 10 ms timer never finished")
}

/// (median, max) of `figures`.
fn median_max(figures: &mut [Duration]) -> (Duration, Duration) {
    figures.sort();
    (figures[figures.len() / 2], figures[figures.len() - 1])
}

/// A tokio dump of `handle`'s runtime taken as the agent takes it: on a
/// thread of its own, from a current-thread runtime; 10 s at most.
#[cfg(tokio_unstable)]
fn dump_from_a_thread(handle: &tokio::runtime::Handle) -> tokio::runtime::Dump {
    let handle = handle.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), handle.dump()).await })
    })
    .join()
    .unwrap()
    .expect("a dump of an idle runtime took 10 s")
}

/// After each of 50 dumps of an idle runtime serving the agent merged into
/// its router: both workers run tasks together at once (no worker waits
/// out tokio's 250 ms barrier for a request already answered), and a new
/// task and a 10 ms timer run on time. Every fifth dump is a request to the
/// merged router; the others are taken as the agent takes them, without
/// its symbolization (half a second a dump in a test binary).
#[cfg(tokio_unstable)]
#[test]
fn after_each_dump_every_worker_runs_tasks_and_timers_at_once() {
    let _serial = common::serial();
    let (rt, base) = merged_service();
    let url = format!("{base}/debug/pprof/tasks?debug=1");
    let (mut together, mut spawned, mut timers) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..50 {
        if i % 5 == 0 {
            let reply = get(&url);
            assert_eq!(reply.status, 200, "dump {i}: {}", reply.text());
        } else {
            dump_from_a_thread(rt.handle());
        }
        let answered = Instant::now();
        assert!(
            workers_run_together(&rt, 2, Duration::from_secs(2)),
            "dump {i}: a worker ran no task for 2 s after it"
        );
        together.push(answered.elapsed());
        let (spawn, timer) = spawn_and_timer_lateness(&rt);
        spawned.push(spawn);
        timers.push(timer);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    let (together, spawned, timers) = (
        median_max(&mut together),
        median_max(&mut spawned),
        median_max(&mut timers),
    );
    eprintln!(
        "after 50 dumps (median, max): both workers run {together:?}, \
         a new task starts {spawned:?}, a 10 ms timer is late {timers:?}"
    );
    for (what, (median, max)) in [
        ("both workers running", together),
        ("a new task", spawned),
        ("a timer", timers),
    ] {
        assert!(
            median < Duration::from_millis(20) && max < Duration::from_millis(200),
            "{what} after a dump: median {median:?}, max {max:?}"
        );
    }
}

/// While a dump waits for a worker blocked in a 2 s poll, the other
/// worker keeps serving: loopback requests to the service and timers
/// complete within 200 ms (an idle worker parks briefly between its visits
/// to the dump's barrier instead of waiting there without serving I/O).
#[test]
fn a_dump_waiting_for_a_blocked_worker_leaves_the_other_serving() {
    let _serial = common::serial();
    let (rt, base) = merged_service();
    let client = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let hello = format!("{base}/hello");
    assert_eq!(common::get_from(&client, &hello).status, 200);
    let (started, running) = std::sync::mpsc::channel();
    let blocked = rt.spawn(async move {
        let _ = started.send(());
        std::thread::sleep(Duration::from_secs(2));
    });
    running.recv().unwrap();
    let blocked_at = Instant::now();
    let url = format!("{base}/debug/pprof/tasks?debug=1");
    let dump = std::thread::spawn(move || get(&url));
    std::thread::sleep(Duration::from_millis(200));
    let (mut worst, mut checks) = (Duration::ZERO, 0);
    while blocked_at.elapsed() < Duration::from_millis(1700) {
        let asked = Instant::now();
        let reply = common::get_from(&client, &hello);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let request = asked.elapsed();
        let (_, timer) = spawn_and_timer_lateness(&rt);
        worst = worst.max(request).max(timer);
        checks += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // The dump was waiting all along (the worker is still blocked).
    let waiting = !blocked.is_finished() && !dump.is_finished();
    let reply = dump.join().unwrap();
    let answered = blocked_at.elapsed();
    rt.shutdown_timeout(Duration::from_secs(2));
    eprintln!(
        "during a dump waiting {answered:?} for a blocked worker: {checks} requests and \
         timers, the slowest {worst:?}"
    );
    assert!(waiting, "the dump did not wait for the blocked worker");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(checks >= 5, "only {checks} checks in 1.5 s");
    assert!(
        worst < Duration::from_millis(200),
        "a request or timer took {worst:?} while the dump waited"
    );
}

/// Parks until its sender is dropped: the marker of the stale-dump test.
#[inline(never)]
async fn spawned_between_dumps(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// A task spawned between two dumps is in the second: tokio never hands a
/// dump a trace taken before it was asked for (an unrequested trace left
/// by the workers after the previous dump). 50 pairs, with two threads
/// spinning meanwhile, as on a loaded machine: the dumping thread then
/// wakes late, and with the earlier patch both workers went back to the
/// barrier before it withdrew the request (8-10 stale dumps in 50).
#[cfg(tokio_unstable)]
#[test]
fn a_dump_never_answers_with_a_trace_older_than_the_request() {
    let rt = common::two_workers();
    let dump = || dump_from_a_thread(rt.handle());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(30);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut senders = Vec::new();
    let mut stale = None;
    for i in 0..50 {
        dump();
        let (tx, rx) = tokio::sync::oneshot::channel();
        senders.push(tx);
        let id = rt.spawn(spawned_between_dumps(rx)).id();
        let second = dump();
        if !second.tasks().iter().any(|t| t.id() == id) {
            stale = Some(i);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    drop(senders);
    rt.shutdown_timeout(Duration::from_secs(2));
    assert_eq!(
        stale, None,
        "the second dump of that pair lacks the task spawned before it was asked for (stale)"
    );
}

/// Without `AgentBuilder::task_dumps(true)`, every dump path answers 501
/// saying how to enable them, and a push of task profiles is refused.
#[test]
fn task_dumps_are_off_unless_the_builder_enables_them() {
    let rt = common::two_workers();
    let agent_rt = tokio::runtime::Runtime::new().unwrap();
    let running = agent_rt
        .block_on(
            profscope_agent::Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .runtime(rt.handle().clone())
                .build()
                .unwrap()
                .spawn(),
        )
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    for path in [
        "tasks",
        "tasks?debug=1",
        "goroutine",
        "taskleak?seconds=1",
        "taskleak?seconds=1&debug=1",
    ] {
        let reply = get(&format!("{base}/debug/pprof/{path}"));
        assert_eq!(reply.status, 501, "{path}: {}", reply.text());
        let text = reply.text();
        assert_eq!(
            text.trim_end(),
            profscope_agent::tasks::TASK_DUMPS_OFF,
            "{path}"
        );
        assert!(
            text.contains("task_dumps(true)") && text.contains("#8370"),
            "{text}"
        );
    }
    // Everything else still answers.
    assert_eq!(get(&format!("{base}/debug/tokio")).status, 200);
    drop(running);
    let push = profscope_agent::Agent::builder()
        .runtime(rt.handle().clone())
        .push(
            profscope_agent::push::PushConfig::new("svc")
                .otlp("http://127.0.0.1:9")
                .profiles(false, false, true),
        )
        .build();
    let err = push.map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("task_dumps(true)"), "{err}");
    shut_down(rt, agent_rt);
}

#[inline(never)]
async fn first_order(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

#[inline(never)]
async fn second_order(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

#[inline(never)]
async fn third_order(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Waits on two futures at once.
#[inline(never)]
async fn waits_in_select(
    a: tokio::sync::oneshot::Receiver<()>,
    b: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::select! {
        () = first_order(a) => {}
        () = second_order(b) => {}
    }
}

/// Waits on three futures at once.
#[inline(never)]
async fn waits_in_join(
    a: tokio::sync::oneshot::Receiver<()>,
    b: tokio::sync::oneshot::Receiver<()>,
    c: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::join!(first_order(a), second_order(b), third_order(c));
}

/// A task waiting on several futures (`select!`, `join!`) is a stack per
/// leaf, each from that leaf to the task's root, none through another
/// leaf; `tasks/count` counts the task once, `leaves/count` every stack.
#[test]
fn a_task_waiting_on_several_futures_is_a_stack_per_leaf() {
    let (rt, agent_rt, agent) = dumped_runtime_and_agent();
    let mut senders = Vec::new();
    let mut rx = || {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        senders.push(tx);
        rx
    };
    rt.spawn(waits_in_select(rx(), rx()));
    rt.spawn(waits_in_join(rx(), rx(), rx()));
    let base = format!("http://{}", agent.local_addr());
    let text = get(&format!("{base}/debug/pprof/tasks?debug=1")).text();
    let leaves = ["first_order", "second_order", "third_order"];
    for (root, n) in [("waits_in_select", 2), ("waits_in_join", 3)] {
        let blocks: Vec<&str> = text.split("\n\n").filter(|b| b.contains(root)).collect();
        assert_eq!(blocks.len(), n, "{root}: {n} stacks expected in\n{text}");
        for (i, block) in blocks.iter().enumerate() {
            assert!(
                block.starts_with(&format!("1 @ task (await point {} of {n})\n", i + 1)),
                "{block}"
            );
            let frames: Vec<&str> = block.lines().skip(1).collect();
            // Ends at the task's root future, which it reaches once.
            let task_root = format!("#\truntime_metrics::{root}::{{{{closure}}}}");
            assert_eq!(frames.last(), Some(&task_root.as_str()), "{block}");
            assert_eq!(
                frames.iter().filter(|f| **f == task_root).count(),
                1,
                "{block}"
            );
            // Exactly one leaf: never one stack through another's leaf.
            let here: Vec<_> = leaves.iter().filter(|l| block.contains(*l)).collect();
            assert_eq!(here.len(), 1, "{block}");
        }
    }
    // pprof: each stack from the root to one leaf; the task counted once.
    let p = decode(&get(&format!("{base}/debug/pprof/goroutine")).body);
    assert_eq!(p.string_at(p.sample_type[0].ty), "goroutine");
    assert_eq!(p.string_at(p.sample_type[1].ty), "leaves");
    for (root, n) in [("waits_in_select", 2), ("waits_in_join", 3)] {
        let stacks: Vec<(String, i64)> = profscope_profile::fold::fold(&p, 1)
            .into_iter()
            .filter(|(s, _)| s.contains(root))
            .collect();
        assert_eq!(stacks.len(), n, "{stacks:?}");
        for (stack, count) in &stacks {
            assert_eq!(*count, 1, "{stack}");
            assert!(
                stack
                    .split(';')
                    .next_back()
                    .is_some_and(|leaf| !leaf.contains(root)),
                "{stack}"
            );
            let here = leaves.iter().filter(|l| stack.contains(*l)).count();
            assert_eq!(here, 1, "{stack}");
        }
        let tasks: i64 = profscope_profile::fold::fold(&p, 0)
            .into_iter()
            .filter(|(s, _)| s.contains(root))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(tasks, 1, "{root} counted once in goroutine/count");
    }
    drop(senders);
    drop(agent);
    shut_down(rt, agent_rt);
}
