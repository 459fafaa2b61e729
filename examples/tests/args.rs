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
        let help = profscope_test_support::stdout_of(&out, format_args!("{name} --help"));
        assert!(help.contains("--addr <HOST:PORT>"), "{help}");
    }
}

/// `--token` and `PROFSCOPE_TOKEN` both lock every agent path: 401 without
/// the token or with another, 200 with it; the service's own routes stay
/// open; `--help` names the variable and never shows its value.
#[test]
fn token_by_flag_or_environment_locks_the_agent() {
    use common::{Service, get_with};
    let secret = "tok-3f9a1c";
    for (name, by_env) in [
        ("axum-service", false),
        ("side-port", true),
        ("labels", false),
    ] {
        let mut cmd = Command::new(example_path(name));
        cmd.args(["--addr", "127.0.0.1:0"]);
        if by_env {
            cmd.env("PROFSCOPE_TOKEN", secret);
        } else {
            cmd.args(["--token", secret]);
        }
        let svc = Service::start(&mut cmd);
        for path in ["/debug/pprof/", "/debug/pprof/cmdline", "/metrics"] {
            let url = svc.url(path);
            let none = get_with(&url, &[]);
            assert_eq!(none.status, 401, "{name} {path} without a token");
            assert!(!none.text().contains(secret));
            let wrong = get_with(&url, &[("Authorization", "Bearer tok-3f9a1d")]);
            assert_eq!(wrong.status, 401, "{name} {path} with another token");
            let right = get_with(&url, &[("Authorization", &format!("Bearer {secret}"))]);
            assert_eq!(right.status, 200, "{name} {path}: {}", right.text());
        }
        if name == "axum-service" {
            assert_eq!(get_with(&svc.url("/hello"), &[]).status, 200);
        }
        let help = Command::new(example_path(name))
            .arg("--help")
            .env("PROFSCOPE_TOKEN", secret)
            .output()
            .expect("run example");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("--token <TOKEN>"), "{help}");
        assert!(help.contains("PROFSCOPE_TOKEN"), "{help}");
        assert!(!help.contains(secret), "--help shows the token: {help}");
    }
}
