//! `go tool pprof`, the reference every compatibility test compares with:
//! skipped loudly when `go` is missing, a failure under `CI=true` (where
//! `.ci/run` installs it).

use std::path::Path;
use std::process::Command;

/// Whether the tool `probe` runs is installed (`probe` must succeed).
/// Absent locally: a loud skip. Absent under `CI=true`: a failure, since
/// `.ci/run` installs every tool the tests use (Debian `package`).
pub fn have_tool(probe: &mut Command, package: &str) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        let tool = probe.get_program().to_string_lossy().into_owned();
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{tool}` is not installed but CI=true: .ci/run must install {package}"
        );
        eprintln!(
            "\n!!!!! SKIPPING {tool} checks: not installed (apt-get install {package}) !!!!!\n"
        );
    }
    ok
}

/// Whether `go` is installed (see [`have_tool`]).
pub fn have_go() -> bool {
    have_tool(
        Command::new("go")
            .arg("version")
            .env("GOTOOLCHAIN", "local"),
        "golang-go",
    )
}

/// Runs `go tool pprof ARGS FILE`, asserting success; returns (stdout, stderr).
pub fn go_pprof(args: &[&str], file: &Path) -> (String, String) {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{stderr}\n{stdout}"
    );
    (stdout, stderr)
}

/// The total of sample type `sample_type` over the samples `go tool pprof
/// -raw FLAGS FILE` keeps (Go applies focus, ignore, hide and the tag
/// filters before any report).
pub fn go_raw_total(file: &Path, flags: &[&str], sample_type: &str) -> i64 {
    let mut args = vec!["-raw"];
    args.extend_from_slice(flags);
    let (raw, _) = go_pprof(&args, file);
    let mut lines = raw.lines().skip_while(|l| *l != "Samples:").skip(1);
    let header = lines.next().unwrap_or("");
    let index = header
        .split_whitespace()
        .position(|t| t.split('/').next() == Some(sample_type))
        .unwrap_or_else(|| panic!("no sample type {sample_type} in {header:?}"));
    lines
        .take_while(|l| !l.starts_with("Locations"))
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(values, _)| {
            let values: Vec<i64> = values
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            values.get(index).copied()
        })
        .sum()
}

/// Asserts that each `(flag, value)` filter keeps the same total of
/// `sample_type` in the model as in `go tool pprof` (skipped without go).
pub fn assert_filters_agree_with_go(file: &Path, sample_type: &str, cases: &[(&str, &str)]) {
    if !have_go() {
        return;
    }
    let bytes = std::fs::read(file).expect("read profile");
    let profile = profscope_profile::parse(&bytes, &profscope_profile::Limits::default())
        .expect("parse profile");
    let st =
        profscope_profile::select_sample_type(&profile, Some(sample_type)).expect("sample type");
    let unfiltered = profile.sample_total(st.index);
    let mut narrowed = 0;
    for &(flag, value) in cases {
        let mut opts = profscope_profile::FilterOptions::default();
        match flag {
            "focus" => opts.focus = Some(value),
            "ignore" => opts.ignore = Some(value),
            "hide" => opts.hide = Some(value),
            "tagfocus" => opts.tagfocus = Some(value),
            "tagignore" => opts.tagignore = Some(value),
            other => panic!("no filter {other}"),
        }
        let mut ours = profile.clone();
        profscope_profile::Filter::with(&opts)
            .expect("filter")
            .apply(&mut ours);
        let got = ours.sample_total(st.index);
        let want = go_raw_total(file, &[&format!("-{flag}={value}")], sample_type);
        assert_eq!(
            got,
            want,
            "{}: -{flag}={value} on {sample_type}",
            file.display()
        );
        narrowed += usize::from(got != unfiltered);
    }
    // Cases that keep everything would prove nothing about the filters.
    assert!(
        narrowed * 2 >= cases.len(),
        "{}: only {narrowed} of {} filters narrowed {sample_type}",
        file.display(),
        cases.len()
    );
}

/// Whether Debian's `libc6-dbg` (glibc's separate debug files under
/// `/usr/lib/debug`) is installed: absent locally, a loud skip; absent
/// under `CI=true`, a failure (`.ci/run` installs it).
pub fn have_libc_debug_files() -> bool {
    let ok = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "libc6-dbg"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libc6-dbg is not installed but CI=true: .ci/run must install it"
        );
        eprintln!(
            "\n!!!!! SKIPPING libc debug-file checks: not installed (apt-get install libc6-dbg) !!!!!\n"
        );
    }
    ok
}
