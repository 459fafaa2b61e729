//! The README's leak and regression stories end to end, with the real binaries: snapshot the
//! `axum-service` example's heap, leak, snapshot again, and `profscope diff`
//! names the leaking function and by how much; the CPU variant shows a route
//! made heavier between snapshots.

mod common;

use std::process::Command;

use common::{Load, example, get, profscope};

fn run(home: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(profscope())
        .args(args)
        .env("PROFSCOPE_HOME", home)
        .output()
        .expect("run profscope");
    profscope_test_support::stdout_of(&out, format_args!("profscope {args:?}"))
}

/// The first table row of a `top`/`diff` output.
fn first_row(table: &str) -> &str {
    table
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .nth(1)
        .unwrap_or("")
}

/// `+64MiB` / `+63.50MiB` → bytes.
fn signed_bytes(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let scale = match unit {
        "B" | "" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    num.parse::<f64>().unwrap() * scale
}

#[test]
fn heap_leak_found_by_diffing_two_snapshots() {
    let svc = example("axum-service");
    let home = tempfile::tempdir().unwrap();
    let heap = svc.url("/debug/pprof/heap");
    run(home.path(), &["fetch", &heap, "--label", "before"]);
    for _ in 0..64 {
        assert_eq!(get(&svc.url("/leak")).status, 200);
    }
    run(home.path(), &["fetch", &heap, "--label", "after"]);
    let svg = home.path().join("leak.svg");
    let table = run(
        home.path(),
        &[
            "diff",
            "before",
            "after",
            "--top",
            "5",
            "-o",
            svg.to_str().unwrap(),
        ],
    );
    let row = first_row(&table);
    assert!(
        row.ends_with("leak_one_mib"),
        "leak function first:\n{table}"
    );
    let grown = signed_bytes(row.split_whitespace().next().unwrap());
    let ratio = grown / (64.0 * 1024.0 * 1024.0);
    eprintln!(
        "diff: leak_one_mib grew {:.1} MiB (ratio {ratio:.3})",
        grown / 1048576.0
    );
    assert!((0.8..=1.2).contains(&ratio), "{table}");
    let svg = std::fs::read_to_string(svg).unwrap();
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(&svg, opts).expect("well-formed differential SVG");
    assert!(svg.contains("leak_one_mib"));
}

#[test]
fn cpu_regression_found_by_diffing_two_snapshots() {
    let svc = example("axum-service");
    let home = tempfile::tempdir().unwrap();
    let cpu = svc.url("/debug/pprof/profile?seconds=2");
    // Light load first, then the same route made 10× heavier.
    let light = Load::start(svc.url("/work?n=5"), 1);
    run(home.path(), &["fetch", &cpu, "--label", "light"]);
    drop(light);
    let heavy = Load::start(svc.url("/work?n=50"), 1);
    run(home.path(), &["fetch", &cpu, "--label", "heavy"]);
    drop(heavy);
    let table = run(
        home.path(),
        &[
            "diff",
            "light",
            "heavy",
            "--top",
            "0",
            "--focus",
            "hash_work",
        ],
    );
    let row = table
        .lines()
        .find(|l| l.ends_with("::hash_work"))
        .unwrap_or_else(|| panic!("no hash_work row:\n{table}"));
    // cum delta (4th column) is positive: the work function grew.
    let cum = row.split_whitespace().nth(3).unwrap();
    assert!(cum.starts_with('+'), "{row}\n{table}");
}

#[test]
fn memory_page_as_a_table_and_bars_over_time() {
    let svc = example("axum-service");
    let home = tempfile::tempdir().unwrap();
    let table = run(home.path(), &["memory", &svc.base]);
    for line in ["rss", "allocated", "thread stacks", "unexplained"] {
        assert!(table.contains(line), "{line}:\n{table}");
    }
    // Leak while it watches: the bars grow.
    let leak = std::thread::spawn({
        let url = svc.url("/leak");
        move || {
            for _ in 0..32 {
                get(&url);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    });
    let out = run(
        home.path(),
        &["memory", &svc.base, "--every", "300ms", "--count", "3"],
    );
    leak.join().unwrap();
    let last_bars: Vec<&str> = out.rsplit("\n\n").next().unwrap().lines().collect();
    assert_eq!(last_bars.len(), 4, "three bars and a legend:\n{out}");
    assert!(last_bars[3].contains("# heap (allocated)"), "{out}");
    let hashes = |l: &str| l.chars().filter(|&c| c == '#').count();
    assert!(
        hashes(last_bars[2]) > hashes(last_bars[0]),
        "the heap grew:\n{out}"
    );
    // Bad input: a clear error and a non-zero exit.
    let bad = Command::new(profscope())
        .args(["memory", "http://127.0.0.1:1"])
        .env("PROFSCOPE_HOME", home.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("profscope: "));
}
