//! The interactive shell through standard input (and once through a
//! pseudo-terminal), and the one-shot views, on Go's fixtures.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn profscope(args: &[&str], stdin: &str) -> (String, String, bool) {
    let home = tempfile::tempdir().unwrap();
    let out = profscope_test_support::run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_profscope"))
            .args(args)
            .env("PROFSCOPE_HOME", home.path()),
        stdin,
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn top_at_the_prompt_equals_the_one_shot_top() {
    let cpu = fixture("go-cpu.pb.gz");
    let cpu = cpu.to_str().unwrap();
    let (shell, _, ok) = profscope(&[cpu], "top 5\nquit\n");
    assert!(ok);
    let (one_shot, _, _) = profscope(&["top", "-n", "5", cpu], "");
    assert_eq!(shell, one_shot);
    assert!(shell.contains("crypto/sha256.block"), "{shell}");
}

#[test]
fn settings_narrow_later_reports_and_bad_commands_do_not_end_the_session() {
    let cpu = fixture("go-cpu.pb.gz");
    let (out, err, ok) = profscope(
        &[cpu.to_str().unwrap()],
        "top 3\nbogus command\nfocus=main\\.work\ntop 3\npeek ^main\\.work$\nlist ^main\\.work$\ntraces\nquit\ntop\n",
    );
    assert!(ok, "{err}");
    // One line of help for the bad command, and the session went on.
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("unknown command") && errors[0].contains("commands: top"));
    let tops: Vec<&str> = out.split("File: goref").skip(1).collect();
    assert_eq!(tops.len(), 2, "two tables before quit:\n{out}");
    assert!(tops[1].contains("focus=main\\.work"), "{}", tops[1]);
    let total = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Showing nodes accounting for"))
            .unwrap()
            .to_string()
    };
    assert_ne!(total(tops[0]), total(tops[1]), "focus narrowed the table");
    // peek: main.work's caller and callee.
    assert!(out.contains("|   main.main.func1"), "{out}");
    assert!(out.contains("|   crypto/sha256.Sum256"), "{out}");
    // list: the source is not here, the hot lines are.
    assert!(
        out.contains("ROUTINE ======================== main.work"),
        "{out}"
    );
    assert!(out.contains("line numbers only"), "{out}");
    assert!(out.contains("-----------+"), "traces");
}

#[test]
fn tags_and_tag_filters_on_numeric_labels() {
    let heap = fixture("go-heap-after.pb.gz");
    let heap = heap.to_str().unwrap();
    let (tags, _, ok) = profscope(&["tags", heap, "--sample-index", "alloc_space"], "");
    assert!(ok);
    assert!(tags.contains("bytes: Total"), "{tags}");
    let (by, _, _) = profscope(&["top", heap, "--by", "bytes"], "");
    assert!(by.starts_with("By bytes, of "), "{by}");
    let (filtered, _, ok) = profscope(&["top", heap, "--tag", "bytes=1MB", "-n", "3"], "");
    assert!(ok);
    assert!(filtered.contains("main.main.func3"), "{filtered}");
}

#[test]
fn the_prompt_works_in_a_pseudo_terminal() {
    // `script` gives the shell a real terminal: line editing and the prompt.
    if !profscope_test_support::have_tool(Command::new("script").arg("--version"), "util-linux") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} {}",
        env!("CARGO_BIN_EXE_profscope"),
        fixture("go-heap-after.pb.gz").display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("PROFSCOPE_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // Type only once the prompt is up: input typed before the line editor
    // takes the terminal may be flushed with the mode switch.
    let wait_for = |what: &str, count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
            if text.matches(what).count() >= count {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what:?} in:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_for("(profscope) ", 1);
    stdin.write_all(b"top 2\r").unwrap();
    let text = wait_for("(profscope) ", 2);
    assert!(text.contains("main.main.func3"), "{text}");
    stdin.write_all(b"quit\r").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shell did not quit");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    let _ = reader.join();
    assert!(home.path().join("shell_history").exists(), "history saved");
}

#[test]
fn web_shows_the_current_view_in_the_web_ui() {
    use std::io::{BufRead, BufReader};
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_profscope"))
        .arg(fixture("go-cpu.pb.gz"))
        .env("PROFSCOPE_HOME", home.path())
        // No browser here: the opener's failure is one line on stderr.
        .env("PATH", "/nonexistent")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A watchdog: a shell that never answers must fail the test, not hang it.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        let _ = Command::new("kill").arg(&pid).status();
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"focus=main\\.work\nweb\n").unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("the current view: ").map(str::to_string))
        .expect("a URL");
    // The page is served while the prompt goes on.
    let page = ureq::get(&url).call().unwrap().into_string().unwrap();
    assert!(page.contains("main.work"), "{page}");
    stdin.write_all(b"quit\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// One figure, one unit: the profile's total reads the same in a one-shot
/// `top`, a shorter one, a `--tag`-filtered one's header and at the prompt
/// (each figure in the largest unit that keeps it at least 1, as Go's
/// automatic unit; a table-wide unit from the rows shown printed this
/// total as 13027.01KiB in one view and 12.72MiB in another).
#[test]
fn a_figure_reads_the_same_in_every_view() {
    let heap = fixture("go-heap-before.pb.gz");
    let heap = heap.to_str().unwrap();
    let total = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
            .and_then(|l| l.rsplit(" of ").next())
            .map(|t| t.trim_end_matches(" total").to_string())
            .unwrap_or_else(|| panic!("no total in {out}"))
    };
    let (all, _, _) = profscope(&["top", heap], "");
    let (one, _, _) = profscope(&["top", heap, "-n", "1"], "");
    let (shell, _, _) = profscope(&[heap], "top 1\ntop\nquit\n");
    let (tagged, _, _) = profscope(&["top", heap, "--tag", "bytes=1B:", "-n", "2"], "");
    let figure = total(&all);
    assert!(figure.ends_with("MiB"), "{figure}");
    assert_eq!(total(&one), figure);
    assert_eq!(total(&shell), figure);
    assert_eq!(total(&tagged), figure);
}
