//! `profscope serve` in a real headless Chromium: the list, a snapshot's
//! inline flamegraph, search highlighting, zoom/reset/icicle, the
//! sample-type switch, a diff of two snapshots, the capture form against a
//! live (stub) agent, relabel and delete; and on the CPU snapshot `profscope
//! demo` takes of its Rust service: the root and the widest application
//! frame on the first screen at 1280×800, the short-name, hide-list and
//! "my code" switches, the peek and source panes of a clicked function,
//! and a label filter and a label exclusion whose totals must equal
//! `go tool pprof -tagfocus`'s and `-tagignore`'s on the same profile; an
//! incident fetched from the (stub) agent listed and opened as its heap
//! diff. The browser is driven by
//! `tests/ui/ui.js` (playwright-core from npm, Debian's /usr/bin/chromium);
//! screenshots of every page land in `target/ui-screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `PROFSCOPE_CHROMIUM`) and
//! `tests/ui/node_modules` (`npm ci` in tests/ui; tried here once when
//! missing). Without them the test is skipped with a loud message, unless
//! `CI=true`, where it fails.
//!
//! `PROFSCOPE_UI_LARGE=N` (e.g. 100000) also opens a profile of N distinct
//! stacks and prints load, search, zoom and reset timings (BENCHMARKS.md).

mod serve_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use profscope::store::{NewSnapshot, Store};
use profscope_test_support::{go_raw_total, have_go};
use serve_common::{Server, large_folded, seed, stub_agent};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

fn chromium() -> PathBuf {
    std::env::var_os("PROFSCOPE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn screenshots() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("ui-screenshots")
}

/// What is missing to run the browser test, if anything.
fn missing() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed (apt-get install nodejs npm)".into());
    }
    if !chromium().exists() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    if !ui_dir().join("node_modules/playwright-core").exists() {
        eprintln!(
            "tests/ui/node_modules is missing: running `npm ci` in {}",
            ui_dir().display()
        );
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(ui_dir())
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !ui_dir().join("node_modules/playwright-core").exists() {
            return Some(format!(
                "playwright-core is not installed: run `npm ci` in {}",
                ui_dir().display()
            ));
        }
    }
    None
}

#[test]
fn browse_search_diff_and_capture_in_chromium() {
    if let Some(why) = missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("browser test cannot run on CI: {why}");
        }
        eprintln!("\n*** SKIPPED serve_browser: {why} ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The demo's snapshots first: a real Rust service's CPU profile.
    let demo = Command::new(env!("CARGO_BIN_EXE_profscope"))
        .args(["demo", "--no-serve"])
        .env("PROFSCOPE_HOME", dir.path())
        .current_dir(dir.path())
        .output()
        .expect("run profscope demo");
    profscope_test_support::stdout_of(&demo, "profscope demo");
    let demo_cpu = store
        .list()
        .unwrap()
        .into_iter()
        .find(|s| s.meta.label.as_deref() == Some("demo-cpu"))
        .expect("the demo's CPU snapshot");
    seed(&store);
    let large = std::env::var("PROFSCOPE_UI_LARGE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .map(|n| {
            let t = Instant::now();
            let folded = large_folded(n);
            let s = store
                .save(
                    folded.as_bytes(),
                    NewSnapshot::new(None, Some(format!("large-{n}"))).kind("cpu"),
                )
                .unwrap();
            eprintln!(
                "large profile: {n} stacks, {} bytes folded, {} bytes stored, in {:?}",
                folded.len(),
                s.meta.size,
                t.elapsed()
            );
            s.meta.id
        });
    let server = Server::start_with(store, dir);
    let agent = stub_agent(server.rt());
    // What `profscope incidents URL` stores: the stub agent's incident.
    let opts = profscope::fetch::FetchOptions::default();
    for incident in profscope::incidents::list(&agent, &opts).unwrap() {
        profscope::incidents::fetch_into(&server.store, &agent, &incident, &opts).unwrap();
    }
    let shots = screenshots();

    let mut cmd = Command::new("node");
    cmd.arg(ui_dir().join("ui.js"))
        .arg(server.base())
        .arg(&shots)
        .arg(&agent)
        .current_dir(ui_dir())
        .env("PROFSCOPE_CHROMIUM", chromium())
        .env("PROFSCOPE_UI_DEMO", "1")
        .env("PROFSCOPE_UI_INCIDENT", serve_common::STUB_INCIDENT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(id) = &large {
        cmd.arg(id);
    }
    let child = cmd.spawn().expect("start node");
    let pid = child.id();
    // A watchdog: a hung browser fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(300)).is_err() {
            eprintln!("ui.js ran for 300 s: killing it");
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().expect("wait for node");
    let _ = tx.send(());
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("RESULT "),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for step in [
        "list shows",
        "snapshot page: inline flamegraph",
        "search",
        "zoom, reset and icicle",
        "full detail of a zoomed frame",
        "sample-type switch",
        "diff page",
        "capture form",
        "relabel and delete",
        "404 and 400 pages",
        "first screen at 1280x800",
        "switches: short names",
        "peek and source panes",
        "label filter",
        "label left out",
        "incident listed and opened",
        "no off-site requests",
        "no script errors",
    ] {
        assert!(
            stdout.contains(&format!("ok: {step}")),
            "step {step:?} missing"
        );
    }
    for name in [
        "1-list",
        "2-snapshot",
        "3-search",
        "7-diff",
        "8-capture-progress",
        "9-captured",
        "16-incident",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
    // The label filters' totals on the page are Go's on the same profile
    // (with the page's hide-list, which moves no values).
    let checks: Vec<(&str, &str, &str, i64)> = stdout
        .lines()
        .filter_map(|l| {
            let (flag, rest) = if let Some(rest) = l.strip_prefix("label-check ") {
                ("tagfocus", rest)
            } else {
                ("tagignore", l.strip_prefix("label-ignore-check ")?)
            };
            let mut it = rest.split(' ');
            let key = it.next()?;
            let value = it.next()?;
            Some((flag, key, value, it.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(checks.len(), 2, "label-check lines:\n{stdout}");
    if have_go() {
        for (flag, key, value, total) in checks {
            let tag = format!("-{flag}={key}=^{}$", regex::escape(value));
            let hide = format!("-hide={}", profscope::names::HIDE);
            let want = go_raw_total(&demo_cpu.profile_path, &[&tag, &hide], "cpu");
            assert_eq!(total, want, "page total under {tag} vs go tool pprof");
            eprintln!("{flag} {key}={value}: page {total} = go tool pprof {want}");
        }
    }
    eprintln!("screenshots in {}", shots.display());
}
