//! The examples' flags: one parser for both; an unknown flag or a bad
//! address is a usage error (exit 2 with a usage line), never a panic.

mod common;

use std::process::Command;

use common::example_path;

#[test]
fn unknown_flags_and_bad_addresses_are_usage_errors() {
    for name in ["axum-service", "side-port"] {
        for (args, says) in [
            (&["--bogus"][..], "Usage:"),
            (&["extra"], "Usage:"),
            (
                &["--addr", "not-an-address"],
                "invalid value 'not-an-address' for '--addr",
            ),
        ] {
            let out = Command::new(example_path(name))
                .args(args)
                .output()
                .expect("run example");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
            assert!(stderr.contains(says), "{name} {args:?}: {stderr}");
        }
        let out = Command::new(example_path(name))
            .arg("--help")
            .output()
            .expect("run example");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--addr <HOST:PORT>"));
    }
}
