//! Tokio runtime and task-group metrics on `/metrics` and `/debug/tokio`,
//! checked by Prometheus's own tools (`promtool`, a real scrape), and task
//! dumps on `/debug/pprof/tasks`.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    decode, dump_timed_out, dumped_runtime_and_agent, example, get, retry_once_if_a_dump_timed_out,
    shut_down,
};
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
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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

#[test]
fn task_dump_names_parked_tasks_with_their_count() {
    retry_once_if_a_dump_timed_out(dump_scenario);
}

/// False when a dump timed out (tokio's barrier bug).
fn dump_scenario() -> bool {
    let (rt, agent_rt, agent) = dumped_runtime_and_agent();
    let mut senders = Vec::new();
    for _ in 0..7 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        senders.push(tx);
        rt.spawn(wait_for_order(rx));
    }
    let base = format!("http://{}", agent.local_addr());
    let reply = get(&format!("{base}/debug/pprof/tasks?debug=1"));
    if dump_timed_out(&reply) {
        drop(agent);
        shut_down(rt, agent_rt);
        return false;
    }
    let text = reply.text();
    let block = text
        .split("\n\n")
        .find(|b| b.contains("wait_for_order"))
        .unwrap_or_else(|| panic!("no wait_for_order task:\n{text}"));
    assert!(block.starts_with("7 @ task"), "{block}");

    // The same as pprof, under both names.
    for (path, ty) in [("tasks", "tasks"), ("goroutine", "goroutine")] {
        let reply = get(&format!("{base}/debug/pprof/{path}"));
        if dump_timed_out(&reply) {
            drop(agent);
            shut_down(rt, agent_rt);
            return false;
        }
        assert_eq!(reply.status, 200, "{}", reply.text());
        let p = decode(&reply.body);
        assert_eq!(profscope_profile::string(&p, p.sample_type[0].ty), ty);
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
    true
}
