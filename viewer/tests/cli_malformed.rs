//! Malformed and hostile inputs: every one exits 1 with a single
//! `profscope: …` line on stderr, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profscope_profile::{Profile, Sample, ValueType};
use prost::Message;

fn run(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profscope"))
        .args(args)
        .env("PROFSCOPE_HOME", home)
        .output()
        .expect("run profscope")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn assert_one_line_failure(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.starts_with("profscope: "), "{what}: {stderr}");
    stderr
}

/// A deterministic stream, so failures reproduce.
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    profscope_test_support::XorShift::new(seed | 1).bytes(n)
}

fn dangling() -> Vec<u8> {
    Profile {
        string_table: vec!["".into(), "samples".into(), "count".into()],
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        sample: vec![Sample {
            location_id: vec![42],
            value: vec![1],
            label: vec![],
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn malformed_inputs_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cpu = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/go-cpu.pb.gz"
    ))
    .unwrap();
    let mut bad_string = Profile::decode(&flate2_gunzip(&cpu)[..]).unwrap();
    bad_string.sample_type[0].ty = 1 << 40;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random", random_bytes(7, 4096), ""),
        ("random-gz", gzip(&random_bytes(9, 4096)), ""),
        ("truncated", cpu[..cpu.len() / 2].to_vec(), "gzip"),
        ("empty", Vec::new(), "empty"),
        ("dangling", dangling(), "location 42"),
        ("dangling-gz", gzip(&dangling()), "location 42"),
        ("bad-string", bad_string.encode_to_vec(), "string"),
        // A field declaring a 2^62-byte length in a 6-byte file.
        ("huge-length", vec![0x12, 0xff, 0xff, 0xff, 0xff, 0x3f], ""),
        (
            "text",
            b"hello, world\nthis is not a profile\n".to_vec(),
            "",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = write(tmp.path(), name, &bytes);
        for cmd in ["top", "collapse"] {
            let out = run(&[cmd, path.to_str().unwrap()], &home);
            let err = assert_one_line_failure(&out, name);
            assert!(err.contains(expect), "{name}: {err}");
        }
    }
}

#[test]
fn random_inputs_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let lib_limits = profscope_profile::Limits::uniform(1 << 20);
    for seed in 0..2000u64 {
        let len = (seed as usize * 37) % 700;
        let mut bytes = random_bytes(seed, len);
        // Bias some inputs toward protobuf-looking prefixes.
        if seed % 3 == 0 && !bytes.is_empty() {
            bytes[0] = 0x12;
        }
        let _ = profscope_profile::parse(&bytes, &lib_limits);
        let _ = profscope_profile::parse(&gzip(&bytes), &lib_limits);
    }
    let _ = tmp;
}

#[test]
fn missing_file_and_bad_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["top", "/nonexistent/profile.pb.gz"], tmp.path());
    let err = assert_one_line_failure(&out, "missing");
    assert!(err.contains("no such file or snapshot"), "{err}");
    let out = run(&["top", "--no-such-flag", "x"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let cpu = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/go-cpu.pb.gz");
    let out = run(&["top", cpu, "--sample-index", "nope"], tmp.path());
    let err = assert_one_line_failure(&out, "sample index");
    assert!(err.contains("samples/count"), "{err}");
    let out = run(&["top", cpu, "--focus", "("], tmp.path());
    assert_one_line_failure(&out, "regex");
    // View options before the subcommand would be dropped: refused.
    let out = run(&["--focus", "x", "top", cpu], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("go after the subcommand"), "{err}");
}

fn flate2_gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}
