//! `profscope top` and `diff` agree with `go tool pprof -top` (and
//! `-diff_base`) on every Go-written fixture: same names, same order, same
//! inline marks, values equal up to Go's display rounding.
//!
//! Skips loudly when `go` is not installed, but fails when `CI=true`, where
//! `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use profscope::diff::{DiffOptions, diff_top, pair};
use profscope::load::Source;
use profscope::render::{TopOptions, TopReport, top};
use profscope_profile::Limits;
use profscope_profile::select_sample_type;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".pb.gz"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "fixtures missing: {v:?}");
    v
}

/// Runs `go tool pprof ARGS`; `None` (after a loud message) when go is absent.
fn go_pprof(args: &[&str]) -> Option<String> {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("GOTOOLCHAIN", "local")
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8(o.stdout).unwrap()),
        Ok(o) => panic!(
            "go tool pprof {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("`go` is required in CI for the agreement tests: {e}");
            }
            eprintln!("\n!!! SKIPPING go agreement test: cannot run `go` ({e}) !!!\n");
            None
        }
    }
}

#[derive(Debug)]
struct Row {
    name: String,
    flat: f64,
    cum: f64,
    flat_text: String,
}

/// Base units (bytes, nanoseconds, counts) of one displayed Go value.
fn parse_value(s: &str) -> (f64, f64) {
    let s = s.trim_start_matches('+');
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let factor = match unit {
        "" | "B" => 1.0,
        "kB" | "KiB" => 1024.0,
        "MB" | "MiB" => 1024.0 * 1024.0,
        "GB" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "hrs" => 3.6e12,
        other => panic!("unknown unit {other:?} in {s:?}"),
    };
    (num.parse::<f64>().unwrap() * factor, factor)
}

fn parse_table(text: &str) -> Vec<Row> {
    text.lines()
        .skip_while(|l| !l.contains("flat  flat%"))
        .skip(1)
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            Row {
                name: t[5..].join(" "),
                flat: parse_value(t[0]).0,
                cum: parse_value(t[3]).0,
                flat_text: t[0].to_string(),
            }
        })
        .collect()
}

fn assert_agrees(ours: &TopReport, go: &str, what: &str) {
    let go_rows = parse_table(go);
    let ours_text = ours.render();
    let our_rows = parse_table(&ours_text);
    let names = |rows: &[Row]| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&our_rows),
        names(&go_rows),
        "{what}: rows differ\n--- go\n{go}\n--- ours\n{ours_text}"
    );
    let per = ours.format.base_per_value;
    // Go prints every value in one unit; "0" carries none, so take the
    // largest factor seen.
    let factor = go_rows
        .iter()
        .map(|r| parse_value(&r.flat_text).1)
        .chain(go.lines().filter_map(|l| {
            l.strip_prefix("Showing nodes accounting for ")
                .and_then(|r| r.split(',').next())
                .map(|v| parse_value(v).1)
        }))
        .fold(1.0, f64::max);
    for (row, go_row) in ours.rows.iter().zip(&go_rows) {
        // Go prints two decimals in its chosen unit.
        let tol = 0.0051 * factor + 1e-9;
        for (ours, theirs, col) in [
            (row.flat as f64 * per, go_row.flat, "flat"),
            (row.cum as f64 * per, go_row.cum, "cum"),
        ] {
            assert!(
                (ours - theirs).abs() <= tol.max(theirs.abs() * 1e-4),
                "{what}: {} {col}: ours {ours} vs go {theirs}",
                row.name
            );
        }
    }
    // The header's accounting line agrees in percentages.
    let pct = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Showing nodes accounting for"))
            .and_then(|l| l.split(", ").nth(1))
            .map(|s| s.split(' ').next().unwrap_or("").to_string())
    };
    assert_eq!(pct(&ours_text), pct(go), "{what}: header");
}

fn load(path: &Path) -> profscope_profile::Profile {
    Source::Path(path.to_path_buf())
        .load(&Limits::default())
        .unwrap()
}

#[test]
fn top_agrees_with_go_on_every_fixture() {
    for path in fixtures() {
        let p = path.to_str().unwrap();
        for (args, sample, cum) in [
            (vec!["-top", p], None, false),
            (vec!["-top", "-cum", p], None, true),
            (
                vec!["-top", "-sample_index=alloc_objects", p],
                Some("alloc_objects"),
                false,
            ),
        ] {
            let profile = load(&path);
            let Ok(st) = select_sample_type(&profile, sample) else {
                continue; // not every fixture has alloc_objects
            };
            let Some(go) = go_pprof(&args) else { return };
            let ours = top(&profile, &st, &TopOptions::new(0, cum));
            assert_agrees(&ours, &go, &format!("{args:?}"));
        }
    }
}

/// The command line's defaults differ from Go's on purpose (short Rust
/// names, runtime frames hidden); with `--full-names --no-hide` its table
/// is the library's, which agrees with Go row for row above.
#[test]
fn the_command_line_with_full_names_and_no_hide_is_that_table() {
    for path in fixtures() {
        let p = path.to_str().unwrap();
        let profile = load(&path);
        let st = select_sample_type(&profile, None).unwrap();
        let library = top(&profile, &st, &TopOptions::new(0, true)).render();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_profscope"))
            .args(["top", "-n", "0", "--cum", "--full-names", "--no-hide", p])
            .env(
                "PROFSCOPE_HOME",
                std::env::temp_dir().join("profscope-agreement-home"),
            )
            .output()
            .unwrap();
        let stdout = profscope_test_support::stdout_of(&out, format_args!("profscope {p}"));
        assert_eq!(stdout, library, "{p}");
    }
}

#[test]
fn diff_agrees_with_go_diff_base() {
    let before = testdata().join("go-heap-before.pb.gz");
    let after = testdata().join("go-heap-after.pb.gz");
    let (b, n) = (load(&before), load(&after));
    for (sample, normalize) in [
        ("inuse_space", false),
        ("alloc_space", false),
        ("inuse_space", true),
    ] {
        let si = format!("-sample_index={sample}");
        let mut args = vec!["-top", si.as_str()];
        if normalize {
            args.push("-normalize");
        }
        args.extend([
            "-diff_base",
            before.to_str().unwrap(),
            after.to_str().unwrap(),
        ]);
        let Some(go) = go_pprof(&args) else { return };
        let pairing = pair(&b, &n, &DiffOptions::new(Some(sample.into()), normalize)).unwrap();
        let ours = diff_top(&b, &n, &pairing, &TopOptions::new(0, false));
        if normalize {
            // Go scales NEW to BASE, we scale BASE to NEW: same rows and
            // percentages, values differ by the ratio of the totals.
            let names = |t: &str| {
                parse_table(t)
                    .into_iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&ours.render()), names(&go));
            let pct = |t: &str| {
                t.lines()
                    .skip_while(|l| !l.contains("flat  flat%"))
                    .skip(1)
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(pct(&ours.render()), pct(&go), "normalized flat%");
        } else {
            assert_agrees(&ours, &go, &format!("{args:?}"));
        }
        if sample == "inuse_space" && !normalize {
            assert_eq!(ours.rows[0].name, "main.main.func3");
        }
    }
}
