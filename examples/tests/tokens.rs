//! The viewer against an agent that requires a token: `fetch`, the one-shot
//! views, the shell, `memory` and the web UI's captures send it when given
//! by `--token` or `PROFSCOPE_TOKEN`, say how to give it on a 401, and
//! never print it.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Service, example_path, profscope};
use profscope_test_support::stdout_of;

const SECRET: &str = "agent-tok-71c2e";

fn service() -> Service {
    Service::start(
        Command::new(example_path("axum-service"))
            .args(["--addr", "127.0.0.1:0"])
            .env("PROFSCOPE_TOKEN", SECRET),
    )
}

/// Runs `profscope args` with `env` (and no token unless given), stdin
/// `stdin`; asserts no output shows the secret.
fn run(home: &std::path::Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(profscope());
    cmd.args(args)
        .env("PROFSCOPE_HOME", home)
        .env_remove("PROFSCOPE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = profscope_test_support::run_with_stdin(&mut cmd, stdin);
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(SECRET) && !text.contains("wrong-tok-9"),
            "profscope {args:?} printed a token: {text}"
        );
    }
    out
}

#[test]
fn every_command_that_reads_an_agent_sends_the_token() {
    let svc = service();
    let home = tempfile::tempdir().unwrap();
    let heap = svc.url("/debug/pprof/heap");
    let by_env = [("PROFSCOPE_TOKEN", SECRET)];

    // No token: exit 1, the agent's reason and how to give one.
    let out = run(home.path(), &["fetch", &heap], &[], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(
        stderr.contains("--token") && stderr.contains("PROFSCOPE_TOKEN"),
        "{stderr}"
    );
    // Another token: refused, and neither token is echoed.
    let out = run(
        home.path(),
        &["fetch", &heap, "--token", "wrong-tok-9"],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was refused"));

    // The flag and the environment variable.
    let saved = stdout_of(
        &run(home.path(), &["fetch", &heap, "--token", SECRET], &[], ""),
        "fetch --token",
    );
    assert!(saved.starts_with("saved "), "{saved}");
    // Before the subcommand too: it is global.
    let saved = stdout_of(
        &run(home.path(), &["--token", SECRET, "fetch", &heap], &[], ""),
        "--token fetch",
    );
    assert!(saved.starts_with("saved "), "{saved}");
    let shell = stdout_of(
        &run(
            home.path(),
            &["--token", SECRET, &heap],
            &[],
            "top 3\nquit\n",
        ),
        "the shell with --token",
    );
    assert!(shell.contains("Type: inuse_space"), "{shell}");
    let top = stdout_of(&run(home.path(), &["top", &heap], &by_env, ""), "top");
    assert!(top.contains("Type: inuse_space"), "{top}");
    let shell = stdout_of(
        &run(home.path(), &[&heap], &by_env, "top 5\ntags\nquit\n"),
        "the shell",
    );
    assert!(shell.contains("Type: inuse_space"), "{shell}");
    let memory = stdout_of(
        &run(home.path(), &["memory", &svc.base], &by_env, ""),
        "memory",
    );
    assert!(memory.contains("MiB"), "{memory}");

    // --help names the variable and hides its value.
    let help = stdout_of(&run(home.path(), &["fetch", "--help"], &by_env, ""), "help");
    assert!(help.contains("--token <TOKEN>") && help.contains("PROFSCOPE_TOKEN"));
}

#[test]
fn the_web_ui_captures_with_the_token() {
    let svc = service();
    let home = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(profscope());
    cmd.args(["serve", "--addr", &addr])
        .env("PROFSCOPE_HOME", home.path())
        .env("PROFSCOPE_TOKEN", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start profscope serve");
    let _kill = KillOnDrop(&mut child);
    let base = format!("http://{addr}");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(&base).call().is_err() {
        assert!(Instant::now() < deadline, "profscope serve never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = agent
        .post(&format!("{base}/capture"))
        .send_form(&[("url", &svc.base), ("kind", "heap"), ("label", "tok")])
        .expect("POST /capture");
    assert_eq!(started.status(), 303, "{}", started.status_text());
    let progress = started.header("location").expect("a redirect").to_string();
    let status_url = format!("{base}{progress}/status");
    let status = loop {
        let text = agent
            .get(&status_url)
            .call()
            .expect("status")
            .into_string()
            .expect("status body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON status");
        if body["state"] != "running" {
            break body;
        }
        assert!(Instant::now() < deadline, "the capture never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "done", "{status}");
    let page = agent
        .get(&format!("{base}/capture"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(!page.contains(SECRET));
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
