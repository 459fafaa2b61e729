//! `profscope demo --no-serve` on a fresh store: a service with the agent in
//! this process, load, CPU and heap snapshots, flamegraphs, a heap diff that
//! names the leak.

use std::process::Command;

#[test]
fn demo_captures_snapshots_and_writes_flamegraphs() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_profscope"))
        .args(["demo", "--no-serve"])
        .env("PROFSCOPE_HOME", home.path())
        .current_dir(home.path())
        .output()
        .expect("run profscope demo");
    let stdout = profscope_test_support::stdout_of(&out, "profscope demo");

    // The CPU top table shows the service's hot path.
    assert!(stdout.contains("checksum_receipt"), "{stdout}");
    // The heap diff ranks the leak first.
    let diff = stdout
        .split("Heap growth during the load")
        .nth(1)
        .unwrap_or_else(|| panic!("no heap diff:\n{stdout}"));
    let first_row = diff
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .nth(1)
        .unwrap_or("");
    assert!(first_row.ends_with("cache_session"), "{diff}");
    assert!(first_row.trim_start().starts_with('+'), "{first_row}");

    // Three snapshots in the store, listed.
    let list = Command::new(env!("CARGO_BIN_EXE_profscope"))
        .arg("list")
        .env("PROFSCOPE_HOME", home.path())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for label in ["demo-heap-before", "demo-cpu", "demo-heap-after"] {
        assert!(list.contains(label), "{list}");
    }

    // The files it printed exist and are SVG.
    let files: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Files written"))
        .skip(1)
        .take_while(|l| l.starts_with("  /"))
        .map(str::trim)
        .collect();
    assert_eq!(files.len(), 3, "{stdout}");
    for f in files {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(svg.contains("<svg"), "{f}");
    }
}
