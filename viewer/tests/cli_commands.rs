//! The commands end to end through the built binary, with PROFSCOPE_HOME in
//! a temporary directory: top/collapse/flamegraph on every fixture, empty
//! profiles, completions, a profile before or after its command, and fetch
//! → list → top @latest → diff --since against a tiny local HTTP server
//! standing in for an agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn run(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profscope"))
        .args(args)
        .env("PROFSCOPE_HOME", home)
        .output()
        .expect("run profscope")
}

fn ok(args: &[&str], home: &Path) -> String {
    profscope_test_support::stdout_of(&run(args, home), format_args!("{args:?}"))
}

const FIXTURES: [&str; 5] = [
    "go-cpu.pb.gz",
    "go-heap-before.pb.gz",
    "go-heap-after.pb.gz",
    "go-allocs.pb.gz",
    "go-goroutine.pb.gz",
];

#[test]
fn every_fixture_tops_collapses_and_draws() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let path = testdata(name);
        let p = path.to_str().unwrap();
        let top = ok(&["top", p], tmp.path());
        assert!(top.contains("flat  flat%"), "{name}: {top}");
        // Folded totals equal the profile's sample totals.
        let profile = profscope::load::load(p, None).unwrap();
        let st = profscope_profile::select_sample_type(&profile, None).unwrap();
        let folded = ok(&["collapse", p], tmp.path());
        let sum: i64 = folded
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
            .sum();
        assert_eq!(sum, profile.sample_total(st.index), "{name}");
        let svg = tmp.path().join(format!("{name}.svg"));
        ok(
            &["flamegraph", p, "-o", svg.to_str().unwrap(), "--icicle"],
            tmp.path(),
        );
        let svg = std::fs::read_to_string(svg).unwrap();
        assert!(
            svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
    }
}

#[test]
fn folded_input_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("in.folded");
    std::fs::write(&f, "main;work;sha 7\nmain;idle 3\n").unwrap();
    let f = f.to_str().unwrap();
    let top = ok(&["top", f, "--focus", "work"], tmp.path());
    assert!(
        top.contains("Active filters:") && !top.contains("idle"),
        "{top}"
    );
    let top = ok(&["top", f, "--ignore", "sha", "--cum"], tmp.path());
    assert!(
        !top.contains("  main;") && !top.contains("  sha\n") && top.contains("  idle\n"),
        "{top}"
    );
    assert_eq!(
        ok(&["collapse", f], tmp.path()),
        "main;idle 3\nmain;work;sha 7\n"
    );
}

#[test]
fn empty_profile_gives_empty_table_and_svg() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p =
        profscope::load::load(testdata("go-goroutine.pb.gz").to_str().unwrap(), None).unwrap();
    p.sample.clear();
    let path = tmp.path().join("empty.pb");
    std::fs::write(&path, p.encode_to_vec()).unwrap();
    let path = path.to_str().unwrap();
    let top = ok(&["top", path], tmp.path());
    assert!(
        top.contains("Showing nodes accounting for 0, 0% of 0 total"),
        "{top}"
    );
    assert_eq!(
        top.lines().last().unwrap().trim(),
        "flat  flat%   sum%        cum   cum%"
    );
    let svg = tmp.path().join("e.svg");
    ok(
        &["flamegraph", path, "-o", svg.to_str().unwrap()],
        tmp.path(),
    );
    assert!(std::fs::read_to_string(svg).unwrap().contains("No samples"));
    assert_eq!(ok(&["collapse", path], tmp.path()), "");
}

#[test]
fn help_and_completions() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in [
        "top",
        "flamegraph",
        "collapse",
        "diff",
        "fetch",
        "list",
        "completions",
    ] {
        assert!(ok(&[sub, "--help"], tmp.path()).contains("Usage"), "{sub}");
    }
    assert!(ok(&["diff", "--help"], tmp.path()).contains("--normalize"));
    assert!(ok(&["completions", "bash"], tmp.path()).contains("profscope"));
    assert_eq!(run(&["bogus"], tmp.path()).status.code(), Some(2));
}

#[test]
fn profile_before_or_after_the_command_prints_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu = testdata("go-cpu.pb.gz");
    let p = cpu.to_str().unwrap();
    // `profscope PROFILE COMMAND …`, as the usage line offers, against
    // `profscope COMMAND PROFILE …`; with the command's own options, and
    // with the global --token in front.
    for (command, rest) in [
        ("top", &["-n", "5", "--cum"][..]),
        ("peek", &["mallocgc$", "--focus", "runtime"][..]),
        ("collapse", &[][..]),
        ("tags", &[][..]),
    ] {
        let after: Vec<&str> = [command, p].iter().chain(rest).copied().collect();
        let before: Vec<&str> = [p, command].iter().chain(rest).copied().collect();
        let expected = ok(&after, tmp.path());
        assert!(!expected.is_empty(), "{after:?}");
        assert_eq!(ok(&before, tmp.path()), expected, "{before:?}");
        let token: Vec<&str> = ["--token", "t"].iter().chain(&before).copied().collect();
        assert_eq!(ok(&token, tmp.path()), expected, "{token:?}");
    }
    // `help top` stays the help of `top`, not `top` of a file named help.
    assert!(ok(&["help", "top"], tmp.path()).contains("Usage: profscope top"));
}

/// Serves `responses` in order, one per connection, as a stand-in agent.
fn serve(responses: Vec<(u16, Vec<u8>)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut paths = Vec::new();
        for (status, body) in responses {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            paths.push(line.split_whitespace().nth(1).unwrap_or("").to_string());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(&body).unwrap();
            let _ = conn.flush();
            let _ = reader.read(&mut [0u8; 1]);
        }
        paths
    });
    (addr, handle)
}

#[test]
fn fetch_list_top_latest_and_diff_since() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let read = |n: &str| std::fs::read(testdata(n)).unwrap();
    let (addr, server) = serve(vec![
        (200, read("go-heap-before.pb.gz")),
        (200, read("go-heap-after.pb.gz")),
        (
            400,
            b"bad parameter `seconds`: not a number; accepted: 1..=300\n".to_vec(),
        ),
        (200, b"<html>not a profile</html>".to_vec()),
    ]);
    let heap = format!("{addr}/debug/pprof/heap");
    assert!(ok(&["fetch", &heap, "--label", "before"], home).contains("saved"));
    assert!(ok(&["fetch", &heap, "--label", "after"], home).contains("label after"));
    let out = run(
        &["fetch", &format!("{addr}/debug/pprof/profile?seconds=x")],
        home,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("HTTP 400") && err.contains("bad parameter"),
        "{err}"
    );
    let out = run(&["fetch", &heap], home);
    assert_eq!(out.status.code(), Some(1), "html is refused");
    assert_eq!(server.join().unwrap().len(), 4);

    let list = ok(&["list"], home);
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(rows[0].contains("heap") && rows[0].contains("before") && rows[0].contains(&heap));

    let latest = ok(&["top", "@latest"], home);
    assert!(latest.contains("main.main.func3"), "{latest}");
    assert_eq!(ok(&["top", "after"], home), latest);
    assert!(ok(&["top", "@prev"], home).contains("12.72MiB"));

    let svg = home.join("diff.svg");
    let diff = ok(
        &[
            "diff",
            "before",
            "after",
            "--top",
            "5",
            "-o",
            svg.to_str().unwrap(),
        ],
        home,
    );
    let first = diff
        .lines()
        .skip_while(|l| !l.contains("flat  flat%"))
        .nth(1)
        .unwrap();
    assert!(
        first.contains("main.main.func3") && first.contains("+41.63MiB"),
        "{diff}"
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("main.main.func3") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(ok(&["diff", "--since", "before", "--top", "5"], home), diff);

    // References never leave the store.
    let out = run(&["top", "../../etc/passwd"], home);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["top", "@nope"], home);
    assert!(String::from_utf8_lossy(&out.stderr).contains("@latest"));
}

/// An OTLP profiles request reads like the pprof it came from, by its bytes
/// (any name) and by an `.otlp` name; a broken one is a one-line error.
#[test]
fn otlp_requests_read_like_their_pprof() {
    use profscope_profile::otlp::{ResourceInfo, encode_request};
    let tmp = tempfile::tempdir().unwrap();
    let heap =
        profscope::load::load(testdata("go-heap-after.pb.gz").to_str().unwrap(), None).unwrap();
    let bytes = encode_request(&[&heap], &ResourceInfo::service("go-svc"));
    for name in ["request.bin", "heap.otlp"] {
        let path = tmp.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let p = path.to_str().unwrap();
        let from_otlp = ok(&["top", "--nodecount", "5", p], tmp.path());
        let from_pprof = ok(
            &[
                "top",
                "--nodecount",
                "5",
                testdata("go-heap-after.pb.gz").to_str().unwrap(),
            ],
            tmp.path(),
        );
        let body = |s: &str| {
            s.lines()
                .skip_while(|l| !l.contains("flat  flat%"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(body(&from_otlp), body(&from_pprof), "{name}");
    }
    let broken = tmp.path().join("broken.otlp");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&["top", broken.to_str().unwrap()], tmp.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.otlp") && err.contains("OTLP"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `--my-code` run from a crate root: the crate's binary lies under it
/// (`target/release/app`), and so does build output; only frames whose
/// source file is the crate's own stay.
#[test]
fn my_code_keeps_only_the_crates_own_source_frames() {
    use profscope_profile::proto::{Function, Line, Location, Mapping, Profile, Sample, ValueType};
    let root = tempfile::tempdir().unwrap();
    let root_path = std::fs::canonicalize(root.path()).unwrap();
    let dir = root_path.to_str().unwrap();
    let mut strings = vec![String::new()];
    let mut s = |v: &str| {
        strings.push(v.to_string());
        strings.len() as i64 - 1
    };
    let funcs = [
        ("app::handler", format!("{dir}/src/main.rs")),
        ("app::store::save", format!("{dir}/src/store.rs")),
        (
            "serde_json::ser::to_vec",
            "/root/.cargo/registry/src/index/serde_json-1.0.0/src/ser.rs".to_string(),
        ),
        (
            "core::slice::copy",
            "/rustc/abc/library/core/src/slice/mod.rs".to_string(),
        ),
        (
            "app::generated",
            format!("{dir}/target/release/build/app-1/out/gen.rs"),
        ),
    ];
    let function: Vec<Function> = funcs
        .iter()
        .enumerate()
        .map(|(i, (name, file))| Function {
            id: i as u64 + 1,
            name: s(name),
            filename: s(file),
            ..Default::default()
        })
        .collect();
    let mapping = vec![Mapping {
        id: 1,
        memory_start: 0x1000,
        memory_limit: 0x9000,
        filename: s(&format!("{dir}/target/release/app")),
        has_functions: true,
        ..Default::default()
    }];
    let location: Vec<Location> = (1..=5)
        .map(|i| Location {
            id: i,
            mapping_id: 1,
            address: 0x1000 + i * 16,
            line: vec![Line {
                function_id: i,
                line: 1,
            }],
            ..Default::default()
        })
        .collect();
    let sample_type = vec![ValueType {
        ty: s("samples"),
        unit: s("count"),
    }];
    let sample = vec![
        Sample {
            location_id: vec![4, 3, 1],
            value: vec![10],
            ..Default::default()
        },
        Sample {
            location_id: vec![5, 2, 1],
            value: vec![5],
            ..Default::default()
        },
    ];
    let profile = Profile {
        sample_type,
        sample,
        mapping,
        location,
        function,
        string_table: strings,
        ..Default::default()
    };
    let file = root_path.join("cpu.pb.gz");
    std::fs::write(&file, profscope_profile::write_gz(&profile).unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = file.to_str().unwrap();
    let top = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_profscope"))
            .args(args)
            .current_dir(&root_path)
            .env("PROFSCOPE_HOME", home.path())
            .output()
            .unwrap();
        profscope_test_support::stdout_of(&out, format_args!("{args:?}"))
    };
    for args in [
        &["top", p, "--my-code", "--full-names"][..],
        &["top", "--my-code", p, "--full-names"][..],
        &["top", p, &format!("--my-code={dir}"), "--full-names"][..],
    ] {
        let out = top(args);
        let table = out.split("flat  flat%").nth(1).unwrap_or("");
        assert!(
            table.contains("app::handler") && table.contains("app::store::save"),
            "{args:?}: {out}"
        );
        for other in ["serde_json", "core::slice::copy", "app::generated"] {
            assert!(!table.contains(other), "{args:?} keeps {other}: {out}");
        }
    }
}
