//! CPU profiles over HTTP from the `axum-service` example: formats, what
//! `go tool pprof` makes of them, bad input, one capture at a time, and
//! client disconnects.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::{
    Load, assert_names_whole, decode, example, get, go_pprof, have_go, process_cpu, serial,
};

fn function_names(p: &profscope_profile::Profile) -> Vec<String> {
    p.function
        .iter()
        .map(|f| p.string_at(f.name).to_string())
        .collect()
}

#[test]
fn cpu_profile_in_every_format() {
    let _serial = serial();
    let svc = example("axum-service");
    let load = Load::start(svc.url("/work?n=50"), 2);

    // pprof: gzipped protobuf Go's tools read without warnings.
    let reply = get(&svc.url("/debug/pprof/profile?seconds=2"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        reply.content_disposition.as_deref(),
        Some("attachment; filename=\"profile.pb.gz\"")
    );
    let profile = decode(&reply.body);
    assert_eq!(profile.string_table[0], "");
    assert!(profile.period > 0 && profile.duration_nanos > 0 && profile.time_nanos > 0);
    assert!(!profile.mapping.is_empty(), "mappings are filled");
    let names = function_names(&profile);
    assert!(
        names.iter().any(|n| n.contains("hash_work")),
        "demangled work function among {names:?}"
    );
    assert!(profile.location.iter().all(|l| l.address != 0));
    let with_lines = profile
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| line.line > 0))
        .count();
    assert!(
        with_lines * 2 > profile.location.len(),
        "most locations carry lines"
    );
    // Folded stacks of the same profile add up to its sample count.
    let samples: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    let folded = profscope_profile::fold::fold(&profile, 0);
    assert_eq!(folded.iter().map(|(_, v)| v).sum::<i64>(), samples);

    if have_go() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpu.pb.gz");
        std::fs::write(&file, &reply.body).unwrap();
        let (raw, stderr) = go_pprof(&["-raw"], &file);
        assert!(raw.contains("PeriodType: cpu nanoseconds"), "{raw}");
        assert!(
            !stderr.contains("Main binary filename not available"),
            "{stderr}"
        );
        // Debug builds have deep, evenly shared runtime frames above it, so
        // "top" means: in the table by cum with a large share of the time.
        let (top, _) = go_pprof(&["-top", "-cum"], &file);
        assert_names_whole(&top, true);
        let row = top
            .lines()
            .find(|r| r.ends_with("hash_work"))
            .unwrap_or_else(|| panic!("no hash_work row:\n{top}"));
        let cum_pct: f64 = row
            .split_whitespace()
            .nth(4)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        assert!(cum_pct >= 30.0, "hash_work cum {cum_pct}%:\n{top}");
        // The model's filters keep what Go keeps, string `thread` labels
        // included.
        profscope_test_support::assert_filters_agree_with_go(
            &file,
            "cpu",
            &[
                ("focus", "hash_work"),
                ("ignore", "hash_work"),
                ("hide", "tokio::"),
                ("tagfocus", "thread=tokio-runtime-worker"),
                ("tagfocus", "thread=no-such-thread"),
                ("tagignore", "thread=tokio"),
            ],
        );
    }

    // folded: `frame;frame count` lines, root first.
    let reply = get(&svc.url("/debug/pprof/profile?seconds=1&format=folded"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let mut total = 0i64;
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("stack count");
        assert!(!stack.is_empty());
        total += count.parse::<i64>().expect("count");
    }
    // At most 2 cores × 1 s × 99 Hz, with slack for timer skew.
    assert!(total > 0 && total <= 2 * 99 + 20, "total {total}");
    assert!(text.contains("hash_work"), "{text}");

    // svg: a well-formed flamegraph.
    let reply = get(&svc.url("/debug/pprof/profile?seconds=1&format=svg"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.content_type.as_deref(), Some("image/svg+xml"));
    let svg = reply.text();
    // inferno writes a DOCTYPE line; allow it.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, opts).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(svg.contains("hash_work"));
    drop(load);
}

#[test]
fn bad_parameters_get_400_naming_the_parameter() {
    let svc = example("axum-service");
    for (query, name, range) in [
        ("seconds=abc", "seconds", "1..=300"),
        ("seconds=0", "seconds", "1..=300"),
        ("seconds=100000", "seconds", "1..=300"),
        ("seconds=-5", "seconds", "1..=300"),
        ("frequency=0", "frequency", "1..=1000"),
        ("frequency=5000", "frequency", "1..=1000"),
        ("format=jpeg", "format", "pprof, folded or svg"),
        ("seconds=%FF%FE", "seconds", "1..=300"),
    ] {
        let reply = get(&svc.url(&format!("/debug/pprof/profile?{query}")));
        let body = reply.text();
        assert_eq!(reply.status, 400, "{query}: {body}");
        assert!(
            body.contains(&format!("`{name}`")) && body.contains(range),
            "{query}: {body}"
        );
        assert_eq!(body.trim_end().lines().count(), 1, "one line: {body:?}");
    }
    // The service is still there.
    assert_eq!(get(&svc.url("/hello")).status, 200);
}

/// Whether process `pid` handles SIGPROF now (`SigCgt` in its status).
fn catches_sigprof(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (libc::SIGPROF - 1)) != 0
}

/// POSIX timers of process `pid` (the sampler keeps one per thread).
fn timers(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/timers"))
        .map(|t| t.lines().filter(|l| l.starts_with("ID:")).count())
        .unwrap_or(0)
}

#[test]
fn overlapping_captures_both_succeed_and_a_disconnect_stops_sampling() {
    let _serial = serial();
    let svc = example("axum-service");
    let addr = svc.host().to_string();
    let load = Load::start(svc.url("/work?n=50"), 2);

    // A long capture from a raw connection we can drop…
    let mut conn = TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(catches_sigprof(svc.pid()) && timers(svc.pid()) > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(catches_sigprof(svc.pid()), "sampling started");
    // …and a short one inside it: both are served (one sample stream).
    let reply = get(&svc.url("/debug/pprof/profile?seconds=1&frequency=19"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let profile = decode(&reply.body);
    assert_eq!(
        profile.period,
        1_000_000_000 / 99,
        "the stream's real period"
    );
    assert!(profile.sample.iter().map(|s| s.value[0]).sum::<i64>() > 50);

    // The client goes away: the capture stops, and with no consumer left
    // the timers and the handler go at once, long before the 60 s.
    drop(conn);
    let dropped = Instant::now();
    while (catches_sigprof(svc.pid()) || timers(svc.pid()) > 0)
        && dropped.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !catches_sigprof(svc.pid()),
        "SIGPROF handler still installed"
    );
    assert_eq!(timers(svc.pid()), 0, "timers left behind");
    eprintln!(
        "sampling stopped {:?} after the disconnect",
        dropped.elapsed()
    );
    drop(load);
}

/// Records the process's CPU time every few milliseconds, so the CPU used
/// inside exactly the profile's window can be read off afterwards.
struct CpuTrace {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(SystemTime, Duration)>>,
}

impl CpuTrace {
    fn start(pid: u32) -> CpuTrace {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut points = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                points.push((SystemTime::now(), process_cpu(pid)));
                std::thread::sleep(Duration::from_millis(5));
            }
            points
        });
        CpuTrace { stop, thread }
    }

    /// CPU time used between `from` and `to`, interpolated between readings.
    fn used_between(self, from: SystemTime, to: SystemTime) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let points = self.thread.join().unwrap();
        let at = |t: SystemTime| -> f64 {
            let i = points
                .partition_point(|(pt, _)| *pt <= t)
                .clamp(1, points.len() - 1);
            let (t0, c0) = points[i - 1];
            let (t1, c1) = points[i];
            let span = t1
                .duration_since(t0)
                .unwrap_or_default()
                .as_secs_f64()
                .max(1e-9);
            let frac =
                (t.duration_since(t0).unwrap_or_default().as_secs_f64() / span).clamp(0.0, 1.0);
            c0.as_secs_f64() + (c1.as_secs_f64() - c0.as_secs_f64()) * frac
        };
        Duration::from_secs_f64((at(to) - at(from)).max(0.0))
    }
}

#[test]
fn profile_accounts_for_the_process_cpu_time() {
    let _serial = serial();
    let svc = example("axum-service");
    // The window is the profile's own (`time_nanos`, `duration_nanos`),
    // which starts when sampling does: before it, pprof-rs resolves a
    // backtrace and may parse debug info (unsampled CPU).
    let load = Load::start(svc.url("/work?n=50"), 2);
    let trace = CpuTrace::start(svc.pid());
    let reply = get(&svc.url("/debug/pprof/profile?seconds=3&format=pprof"));
    drop(load);
    assert_eq!(reply.status, 200);
    let profile = decode(&reply.body);
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(profile.time_nanos as u64);
    let end = start + Duration::from_nanos(profile.duration_nanos as u64);
    let used = trace.used_between(start, end);
    let profiled: i64 = profile.sample.iter().map(|s| s.value[1]).sum();
    let profiled = Duration::from_nanos(profiled as u64);
    let ratio = profiled.as_secs_f64() / used.as_secs_f64();
    eprintln!(
        "profiled {profiled:?} of {used:?} CPU used ({:.1}%)",
        ratio * 100.0
    );
    // Observed 97-101 %; what is missed is systematic (threads found at
    // the next scan, time in the handler), so the floor has room for a
    // loaded machine.
    assert!(
        (0.92..=1.05).contains(&ratio),
        "profile holds {profiled:?}, process used {used:?} in the same window"
    );
}

#[test]
fn index_and_cmdline() {
    let svc = example("axum-service");
    let reply = get(&svc.url("/debug/pprof/"));
    assert_eq!(reply.status, 200);
    let html = reply.text();
    assert!(
        html.contains("href=\"/debug/pprof/profile?seconds=30\""),
        "{html}"
    );
    // Every page under /debug/pprof/ in the model's endpoint table is
    // listed with its example query, and none of Go's the agent lacks
    // (paths with a parameter are reached from the incidents list).
    let listed = profscope_profile::kind::ENDPOINTS.iter().filter(|e| {
        e.path.starts_with("/debug/pprof/") && e.name() != "pprof" && !e.path.contains('{')
    });
    for e in listed {
        let link = format!("href=\"{}{}\"", e.path, e.example_query);
        assert_eq!(html.contains(&link), e.agent, "{link}: {html}");
    }
    assert!(html.contains("href=\"/metrics\""), "{html}");
    let reply = get(&svc.url("/debug/pprof/cmdline"));
    assert_eq!(reply.status, 200);
    let args: Vec<String> = reply.text().split('\0').map(str::to_string).collect();
    assert!(args[0].ends_with("axum-service"), "{args:?}");
    assert_eq!(&args[1..], ["--addr", "127.0.0.1:0"]);
}

/// A route that copies large buffers spends its time in glibc's memcpy.
/// With `libc6-dbg`'s debug files (read by build id from the agent's debug
/// directory) `go tool pprof -top` names the implementation and the thread
/// entry; an agent whose debug directory points away keeps the object's
/// name for the same frames.
#[test]
fn system_library_frames_are_named_from_debug_files() {
    if !profscope_test_support::have_libc_debug_files() {
        return;
    }
    let _serial = serial();
    let rt = common::two_workers();
    let away = tempfile::tempdir().unwrap();
    let (named, bare) = rt.block_on(async {
        let named = profscope_agent::Agent::builder()
            .debug_dir(Some("/usr/lib/debug".into()))
            .build()
            .unwrap();
        let bare = profscope_agent::Agent::builder()
            .addr("127.0.0.1:0".parse().unwrap())
            .debug_dir(Some(away.path().to_path_buf()))
            .build()
            .unwrap()
            .spawn()
            .await
            .unwrap();
        (named, bare)
    });
    let app = axum::Router::new()
        .route(
            "/copy",
            axum::routing::get(|| async {
                let src = vec![7u8; 32 << 20];
                let mut dst = vec![0u8; 32 << 20];
                for _ in 0..8 {
                    dst.copy_from_slice(std::hint::black_box(&src));
                }
                dst[12345].to_string()
            }),
        )
        .merge(named.router());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    let load = Load::start(format!("{base}/copy"), 1);
    let bare_url = format!("http://{}/debug/pprof/profile?seconds=2", bare.local_addr());
    let other = std::thread::spawn(move || get(&bare_url));
    let reply = get(&format!("{base}/debug/pprof/profile?seconds=2"));
    let bare_reply = other.join().unwrap();
    load.stop();
    assert_eq!((reply.status, bare_reply.status), (200, 200));
    let dir = tempfile::tempdir().unwrap();
    let (named_file, bare_file) = (
        dir.path().join("named.pb.gz"),
        dir.path().join("bare.pb.gz"),
    );
    std::fs::write(&named_file, &reply.body).unwrap();
    std::fs::write(&bare_file, &bare_reply.body).unwrap();
    // glibc's memcpy implementations (`__memcpy_avx_unaligned_erms`, or
    // the memmove they alias), named only by the debug file.
    let memcpy =
        |name: &str| name.starts_with("__mem") && (name.contains("cpy_") || name.contains("move_"));
    let names = function_names(&decode(&reply.body));
    assert!(
        names.iter().any(|n| memcpy(n)),
        "no memcpy implementation in {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "start_thread" || n == "clone3"),
        "no thread entry in {names:?}"
    );
    let bare_names = function_names(&decode(&bare_reply.body));
    assert!(
        !bare_names.iter().any(|n| memcpy(n) || n == "start_thread"),
        "{bare_names:?}"
    );
    // The viewer says once how to get the names.
    let out = std::process::Command::new(common::profscope())
        .args(["top", "--no-hide"])
        .arg(&bare_file)
        .env("PROFSCOPE_HOME", dir.path())
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    assert_eq!(top.matches("No function names in [").count(), 1, "{top}");
    assert!(
        top.contains("[libc.so.6]") && top.contains("libc6-dbg"),
        "{top}"
    );
    if have_go() {
        let (top, _) = go_pprof(&["-top", "-nodecount=1000"], &named_file);
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or("");
        assert!(
            first.split_whitespace().last().is_some_and(memcpy),
            "the top row is memcpy's implementation:\n{top}"
        );
        assert!(
            top.contains(" start_thread\n") || top.contains(" clone3\n"),
            "{top}"
        );
        let (top, _) = go_pprof(&["-top", "-nodecount=1000"], &bare_file);
        assert!(
            top.contains("[libc.so.6]"),
            "the object's name stays:\n{top}"
        );
        assert!(!top.contains(" start_thread\n"), "{top}");
    }
}

/// HTTP answers of 256 KiB and more are gzipped as two deflate streams back
/// to back in one member (two threads): Go's reader takes them whole.
#[test]
fn a_large_profile_gzipped_in_halves_reads_whole_in_go() {
    if !have_go() {
        return;
    }
    let profile = profscope_test_support::large_profile(20_000, 100_000, 1);
    let raw = profscope_profile::encode(&profile);
    assert!(
        raw.len() > 512 << 10,
        "{} bytes: not past the split",
        raw.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("large.pb.gz");
    std::fs::write(
        &file,
        profscope_profile::gzip_two_threads(&raw, || ()).unwrap(),
    )
    .unwrap();
    let sample_type = profile.string_at(profile.sample_type[0].ty).to_string();
    let ours: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    let go = profscope_test_support::go_raw_total(&file, &[], &sample_type);
    assert_eq!(go, ours, "go tool pprof -raw reads every sample");
}
