//! The viewer against a live example service: the shell on an agent URL,
//! the hide-list on a real async CPU profile, and label filters that agree
//! with `go tool pprof -tagfocus`.

mod common;

use std::process::Command;

use common::{Load, example, get, go_pprof, have_go, profscope, serial};

fn run(home: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let out = profscope_test_support::run_with_stdin(
        Command::new(profscope())
            .args(args)
            .env("PROFSCOPE_HOME", home),
        stdin,
    );
    profscope_test_support::stdout_of(&out, format_args!("profscope {args:?}"))
}

#[test]
fn the_shell_on_a_live_heap_url() {
    let svc = example("axum-service");
    for _ in 0..8 {
        get(&svc.url("/leak"));
    }
    let home = tempfile::tempdir().unwrap();
    let out = run(
        home.path(),
        &[&svc.url("/debug/pprof/heap")],
        "top 5\nquit\n",
    );
    assert!(out.contains("Type: inuse_space"), "{out}");
    assert!(out.contains("leak_one_mib"), "{out}");
}

#[test]
fn cpu_profile_views_hide_plumbing_and_filter_by_thread() {
    let _serial = serial();
    let svc = example("axum-service");
    let load = Load::start(svc.url("/work?n=50"), 2);
    let reply = get(&svc.url("/debug/pprof/profile?seconds=2"));
    drop(load);
    assert_eq!(reply.status, 200);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("cpu.pb.gz");
    std::fs::write(&file, &reply.body).unwrap();
    let path = file.to_str().unwrap();

    // The default view: no runtime or framework frame remains, and under
    // the thread's entry the application comes first.
    // (Whole names, to tell whose frames they are; the hide-list is on.)
    let folded = run(home.path(), &["collapse", path, "--full-names"], "");
    let mut app_stacks = 0;
    for line in folded.lines() {
        let stack = line.rsplit_once(' ').unwrap().0;
        assert!(
            !stack.contains(";tokio::runtime::") && !stack.contains(";hyper::proto::"),
            "plumbing left: {stack}"
        );
        if stack.contains("hash_work") {
            app_stacks += 1;
            let first = stack
                .split(';')
                .find(|f| !f.starts_with('[') && *f != "start_thread" && !f.starts_with("clone"))
                .unwrap();
            assert!(
                first.contains("profscope_examples") || first.contains("profscope_agent"),
                "first frame under the entry: {first}\n{stack}"
            );
        }
    }
    assert!(app_stacks > 0, "{folded}");
    // --no-hide keeps them (and --full-names the whole names).
    let raw = run(
        home.path(),
        &["collapse", path, "--no-hide", "--full-names"],
        "",
    );
    assert!(raw.contains("tokio::runtime::"), "{raw}");

    // tags lists the thread label; --tag agrees with -tagfocus.
    let tags = run(
        home.path(),
        &["tags", path, "--sample-index", "samples"],
        "",
    );
    assert!(tags.contains("thread: Total"), "{tags}");
    let thread = tags
        .lines()
        .find_map(|l| l.split_once("): ").map(|(_, v)| v.to_string()))
        .expect("a thread value");
    let top = run(
        home.path(),
        &[
            "top",
            path,
            "--tag",
            &format!("thread={thread}"),
            "--sample-index",
            "samples",
            "--no-hide",
            "--full-names",
        ],
        "",
    );
    let ours: i64 = top
        .lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .and_then(|l| l.split(" of ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{top}"));
    if have_go() {
        let go = profscope_test_support::go_raw_total(
            &file,
            &[&format!("-tagfocus=thread={thread}")],
            "samples",
        );
        assert_eq!(ours, go, "--tag thread={thread} vs -tagfocus");
        let (_, _) = go_pprof(&["-tags"], &file);
    }
}
