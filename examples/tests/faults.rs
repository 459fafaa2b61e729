//! Faults the agent must survive while the service keeps serving: clients
//! that disconnect mid-capture, the heap dump directory removed or replaced
//! by a file, a flood on every agent path at once, hostile query strings
//! and headers, and slow-loris clients on the side port.
//!
//! One rig per test: a service (the `axum-service` routes with the agent
//! merged) on a 2-worker runtime, and the same agent on a side port of its
//! own runtime (the deployment SECURITY.md recommends), with small limits
//! so the tests reach them quickly. The tests take turns (`serial`): CPU
//! sampling is process-wide.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{get, get_with, serial, two_workers};
use profscope_agent::cpu::CpuProfiler;
use profscope_agent::{Agent, AgentBuilder, RunningAgent};

profscope_agent::jemalloc_profiling!(lg_prof_sample = 16);

/// Side-port limits small enough to reach in a test.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 8;

struct Rig {
    agent: Agent,
    /// `HOST:PORT` of the service (agent merged into its router).
    service: String,
    /// `HOST:PORT` of the agent's side port.
    side: String,
    dump_dir: tempfile::TempDir,
    running: Option<RunningAgent>,
    /// Runs the service; every runtime is shut down with a deadline.
    service_rt: Option<tokio::runtime::Runtime>,
    agent_rt: Option<tokio::runtime::Runtime>,
}

impl Rig {
    fn start(configure: impl FnOnce(AgentBuilder) -> AgentBuilder) -> Rig {
        let service_rt = two_workers();
        let agent_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Something parked for the task dumps to find.
        service_rt.spawn(std::future::pending::<()>());
        let dump_dir = tempfile::tempdir().unwrap();
        let builder = Agent::builder()
            .addr("127.0.0.1:0".parse().unwrap())
            // The agent watches (and dumps) the service's runtime, as it
            // would in the service.
            .runtime(service_rt.handle().clone())
            .heap_dump_dir(dump_dir.path())
            .task_dumps(true)
            .header_read_timeout(HEADER_TIMEOUT)
            .max_connections(MAX_CONNECTIONS);
        let agent = configure(builder).build().unwrap();
        let running = agent_rt.block_on(agent.clone().spawn()).unwrap();
        let side = running.local_addr().to_string();
        let app = profscope_examples::app(&agent);
        let listener = service_rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let service = listener.local_addr().unwrap().to_string();
        service_rt.spawn(async move { axum::serve(listener, app).await });
        Rig {
            agent,
            service,
            side,
            dump_dir,
            running: Some(running),
            service_rt: Some(service_rt),
            agent_rt: Some(agent_rt),
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}{path}")
    }

    /// The files the heap profiler left in its directory.
    fn dump_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dump_dir.path())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let (Some(agent_rt), Some(service_rt)) = (self.agent_rt.take(), self.service_rt.take())
        else {
            return;
        };
        if let Some(running) = self.running.take() {
            let _ = agent_rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), running.shutdown()).await
            });
        }
        // Not a plain drop: a failing test may leave a worker blocked.
        service_rt.shutdown_timeout(Duration::from_secs(2));
        agent_rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Sends `request` on a new connection and returns the status line's code
/// (None when the server closed without answering) and the body text.
fn raw(host: &str, request: &[u8]) -> (Option<u16>, String) {
    let mut conn = TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // A server may answer and close before reading all of a huge request.
    let _ = conn.write_all(request);
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn request(path: &str, host: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

/// Waits until `done` holds, up to `limit`; returns how long it took.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_client_that_disconnects_mid_capture_releases_what_it_held() {
    let _serial = serial();
    let rig = Rig::start(|b| b.max_concurrent_captures(2).max_concurrent_requests(2));
    for host in [rig.service.clone(), rig.side.clone()] {
        // Both capture permits and both request permits taken by clients
        // that then go away: two long CPU captures, two heap deltas.
        let conns: Vec<TcpStream> = [
            "/debug/pprof/profile?seconds=120",
            "/debug/pprof/profile?seconds=120",
            "/debug/pprof/heap?seconds=120",
            "/debug/pprof/allocs?seconds=120",
        ]
        .iter()
        .map(|path| {
            let mut c = TcpStream::connect(&host).unwrap();
            c.write_all(&request(path, &host, "")).unwrap();
            c
        })
        .collect();
        assert!(
            wait_for(Duration::from_secs(10), CpuProfiler::is_sampling).is_some(),
            "{host}: the captures never started"
        );
        // Once the four requests reach their handlers, both kinds of
        // permit are held: a third of each is refused.
        for path in ["/debug/pprof/profile?seconds=1", "/debug/pprof/heap"] {
            let url = rig.url(&host, path);
            assert!(
                wait_for(Duration::from_secs(20), || get(&url).status == 429).is_some(),
                "{url} was never refused"
            );
        }
        drop(conns);
        let stopped = wait_for(Duration::from_secs(10), || !CpuProfiler::is_sampling());
        assert!(
            stopped.is_some(),
            "{host}: sampling went on after the clients left"
        );
        eprintln!("{host}: sampling stopped {stopped:?} after the disconnect");
        // Every permit is back: two captures and two heap profiles at once.
        let replies: Vec<_> = std::thread::scope(|s| {
            let paths = [
                "/debug/pprof/profile?seconds=1",
                "/debug/pprof/profile?seconds=1",
                "/debug/pprof/heap",
                "/debug/pprof/allocs",
            ];
            let handles: Vec<_> = paths
                .iter()
                .map(|p| {
                    let url = rig.url(&host, p);
                    s.spawn(move || (url.clone(), get(&url)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (url, reply) in replies {
            assert_eq!(reply.status, 200, "{url}: {}", reply.text());
            common::decode(&reply.body);
        }
    }
    // A heap profile whose client leaves while the dump is being written.
    for _ in 0..5 {
        let mut c = TcpStream::connect(&rig.service).unwrap();
        c.write_all(&request("/debug/pprof/heap", &rig.service, ""))
            .unwrap();
        drop(c);
    }
    // Their permits come back once the server sees them gone: until then a
    // request may still be refused (429), never failed.
    let url = rig.url(&rig.service, "/debug/pprof/heap");
    let mut next = None;
    wait_for(Duration::from_secs(10), || {
        let reply = get(&url);
        let refused = reply.status == 429;
        next = Some(reply);
        !refused
    });
    let next = next.expect("asked at least once");
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(
        wait_for(Duration::from_secs(10), || rig.dump_files().is_empty()).is_some(),
        "dump files left behind: {:?}",
        rig.dump_files()
    );
}

#[test]
fn the_heap_dump_directory_removed_or_replaced_while_running() {
    let _serial = serial();
    let rig = Rig::start(|b| b);
    let heap = rig.url(&rig.side, "/debug/pprof/heap");
    let hello = rig.url(&rig.service, "/hello");
    assert_eq!(get(&heap).status, 200);
    let dir = rig.dump_dir.path().to_path_buf();

    // Removed: made again (0700) before the next dump.
    std::fs::remove_dir_all(&dir).unwrap();
    let reply = get(&heap);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(dir.is_dir());

    // Replaced by a file: a 500 that names the directory; the service
    // answers meanwhile; the next request after the fix is fine.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    for _ in 0..3 {
        let reply = get(&heap);
        assert_eq!(reply.status, 500, "{}", reply.text());
        let text = reply.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("not a directory") && text.contains(&dir.display().to_string()),
            "{text}"
        );
        assert_eq!(get(&hello).status, 200);
    }
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(get(&heap).status, 200);

    // Pulled away again and again while heap profiles are taken: every
    // answer is a profile or a one-line 500, the service never notices.
    let stop = Arc::new(AtomicBool::new(false));
    let vandal = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(&dir);
                if i.is_multiple_of(2) {
                    let _ = std::fs::write(&dir, b"x");
                    std::thread::sleep(Duration::from_millis(3));
                    let _ = std::fs::remove_file(&dir);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..40 {
        let reply = get(&heap);
        match reply.status {
            200 => ok += 1,
            500 => {
                assert_eq!(reply.text().lines().count(), 1, "{}", reply.text());
                failed += 1;
            }
            other => panic!("{other}: {}", reply.text()),
        }
        assert_eq!(get(&hello).status, 200);
    }
    stop.store(true, Ordering::Relaxed);
    vandal.join().unwrap();
    eprintln!("with the directory pulled away: {ok} profiles, {failed} one-line 500s");
    let _ = std::fs::remove_file(&dir);
    assert_eq!(get(&heap).status, 200, "recovers once left alone");
    assert!(rig.dump_files().is_empty(), "{:?}", rig.dump_files());
}

/// Every agent path, with the statuses it may answer under a flood.
const FLOOD: &[(&str, &[u16])] = &[
    ("/debug/pprof/profile?seconds=1", &[200, 429]),
    ("/debug/pprof/heap", &[200, 429]),
    ("/debug/pprof/allocs", &[200, 429]),
    ("/debug/pprof/heap?seconds=1", &[200, 429]),
    ("/debug/pprof/delta_heap", &[200, 429]),
    // 503: one task dump at a time (tokio's barrier), said with Retry-After.
    ("/debug/pprof/goroutine", &[200, 429, 503]),
    ("/debug/pprof/tasks?debug=1", &[200, 429, 503]),
    ("/debug/pprof/taskleak?seconds=1", &[200, 429, 503]),
    ("/debug/pprof/block", &[501]),
    ("/debug/pprof/mutex", &[501]),
    ("/debug/pprof/cmdline", &[200]),
    ("/debug/pprof/", &[200]),
    ("/debug/tokio", &[200]),
    ("/debug/memory", &[200]),
    ("/metrics", &[200]),
];

/// The flood on the side port (the agent on a runtime of its own) and on
/// the service's own port (the agent's router merged into the service's).
#[test]
fn a_flood_on_every_agent_path_is_bounded_and_the_service_keeps_answering() {
    let _serial = serial();
    // Room for every flooding client: the cap has a test of its own.
    let rig = Rig::start(|b| b.max_connections(64));
    flood(&rig, &rig.side, "side port");
    flood(&rig, &rig.service, "merged router");
}

fn flood(rig: &Rig, host: &str, deployment: &str) {
    let hello = rig.url(&rig.service, "/work?n=20");
    let service_latency = |during: Duration| -> Vec<Duration> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let start = Instant::now();
        let mut times = Vec::new();
        while start.elapsed() < during {
            let t = Instant::now();
            let r = agent.get(&hello).call();
            assert!(
                matches!(&r, Ok(r) if r.status() == 200),
                "the service's own route failed: {r:?}"
            );
            times.push(t.elapsed());
        }
        times
    };
    let quiet = service_latency(Duration::from_secs(2));

    let stop = Arc::new(AtomicBool::new(false));
    let pid = std::process::id();
    let flooders: Vec<_> = (0..3)
        .flat_map(|round| FLOOD.iter().map(move |f| (round, f)))
        .map(|(_, &(path, allowed))| {
            let stop = stop.clone();
            let url = rig.url(host, path);
            std::thread::spawn(move || {
                // One client a thread, keeping its connection, as scrapers do.
                let client = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(120))
                    .build();
                let mut seen = std::collections::BTreeMap::<u16, u32>::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = common::get_from(&client, &url);
                    assert!(
                        allowed.contains(&reply.status),
                        "{path}: {} {}",
                        reply.status,
                        reply.text()
                    );
                    *seen.entry(reply.status).or_default() += 1;
                }
                (path, seen)
            })
        })
        .collect();
    let threads_watch = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak_threads = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                peak_threads = peak_threads.max(n);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak_threads
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let flooded = service_latency(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut totals = std::collections::BTreeMap::<u16, u32>::new();
    for f in flooders {
        let (path, seen) = f.join().expect("a flood thread failed");
        eprintln!("{path}: {seen:?}");
        for (status, n) in seen {
            *totals.entry(status).or_default() += n;
        }
    }
    let peak = threads_watch.join().unwrap();
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let p99 = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() * 99 / 100]
    };
    eprintln!(
        "flood on the {deployment}: {} clients, answers {totals:?}; peak threads {peak}; service /work?n=20 \
         median {:?} → {:?} (×{:.2}), p99 {:?} → {:?}, {} → {} requests",
        FLOOD.len() * 3,
        median(&quiet),
        median(&flooded),
        median(&flooded).as_secs_f64() / median(&quiet).as_secs_f64(),
        p99(&quiet),
        p99(&flooded),
        quiet.len(),
        flooded.len()
    );
    assert!(
        totals.get(&429).copied().unwrap_or(0) > 0,
        "the limits never engaged: {totals:?}"
    );
    // Bounded work: besides this test's own client threads, the process
    // runs the runtimes' workers and what the agent's limits allow (8
    // captures, 4 requests, their encoders), not a thread per client.
    let clients = FLOOD.len() * 3 + 3;
    let others = peak.saturating_sub(clients);
    eprintln!("{others} threads besides the {clients} client threads at the peak");
    assert!(others < 48, "{others} threads under the flood");
    assert!(rig.dump_files().is_empty(), "{:?}", rig.dump_files());
}

#[test]
fn malformed_oversized_and_repeated_queries_and_headers() {
    let _serial = serial();
    let rig = Rig::start(|b| b.bearer_token("tok-55"));
    let auth = "Authorization: Bearer tok-55\r\n";
    for host in [rig.service.clone(), rig.side.clone()] {
        let bad = [
            ("/debug/pprof/profile?seconds=abc", "`seconds`"),
            ("/debug/pprof/profile?seconds=-1", "`seconds`"),
            (
                "/debug/pprof/profile?seconds=99999999999999999999999",
                "`seconds`",
            ),
            ("/debug/pprof/profile?seconds=%FF%FE", "`seconds`"),
            ("/debug/pprof/profile?seconds=%00", "`seconds`"),
            ("/debug/pprof/profile?frequency=0", "`frequency`"),
            ("/debug/pprof/heap?format=xml", "`format`"),
            ("/debug/pprof/heap?seconds=%", "`seconds`"),
            ("/debug/pprof/tasks?debug=%ZZ", "`debug`"),
        ];
        for (path, names) in bad {
            let (status, body) = raw(&host, &request(path, &host, auth));
            assert_eq!(status, Some(400), "{host}{path}: {body}");
            assert!(body.contains(names), "{host}{path}: {body}");
            assert_eq!(body.trim_end().lines().count(), 1, "{body}");
        }
        // Repeated parameters: the first counts, as Go's FormValue.
        let repeated = format!("/debug/pprof/heap?{}", "format=folded&".repeat(3000));
        let (status, body) = raw(&host, &request(&repeated, &host, auth));
        assert_eq!(status, Some(200), "{host} repeated format: {body}");
        // Repeated headers: the first Authorization counts.
        let two = format!("Authorization: Bearer wrong\r\n{auth}");
        let (status, _) = raw(&host, &request("/debug/pprof/cmdline", &host, &two));
        assert_eq!(status, Some(401));
        let many = "X-Junk: 1\r\n".repeat(2000);
        let (status, _) = raw(
            &host,
            &request("/debug/pprof/cmdline", &host, &format!("{many}{auth}")),
        );
        assert!(
            matches!(status, Some(200 | 431) | None),
            "{host} 2000 headers: {status:?}"
        );
        // Not ASCII in the token: no token at all.
        let mut latin1 = request("/debug/pprof/cmdline", &host, "");
        latin1.truncate(latin1.len() - 2);
        latin1.extend_from_slice(b"Authorization: Bearer tok-\xe9\r\n\r\n");
        assert_eq!(raw(&host, &latin1).0, Some(401));
        // 1 MiB query strings and headers: refused (431, or closed) long
        // before anything is parsed; the server goes on.
        let huge = "a".repeat(1 << 20);
        let (status, _) = raw(
            &host,
            &request(&format!("/debug/pprof/heap?seconds={huge}"), &host, auth),
        );
        assert!(
            matches!(status, Some(400 | 414 | 431) | None),
            "{host}: {status:?}"
        );
        let (status, _) = raw(
            &host,
            &request(
                "/debug/pprof/heap",
                &host,
                &format!("X-Huge: {huge}\r\n{auth}"),
            ),
        );
        assert!(matches!(status, Some(431) | None), "{host}: {status:?}");
        let reply = get_with(
            &rig.url(&host, "/debug/pprof/cmdline"),
            &[("Authorization", "Bearer tok-55")],
        );
        assert_eq!(reply.status, 200, "{host} after the hostile requests");
    }
    assert_eq!(get(&rig.url(&rig.service, "/hello")).status, 200);
    drop(rig.agent.clone());
}

#[test]
fn slow_loris_and_idle_connections_are_closed_on_the_side_port() {
    let _serial = serial();
    let rig = Rig::start(|b| b);
    let side = rig.side.clone();

    // A client that trickles its request head, a byte every 100 ms.
    let loris = {
        let side = side.clone();
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(&side).unwrap();
            let head = format!("GET /debug/pprof/cmdline HTTP/1.1\r\nHost: {side}\r\n");
            let start = Instant::now();
            for b in head
                .bytes()
                .chain(b"X-Slow: ".iter().copied())
                .chain(std::iter::repeat(b'a'))
            {
                if c.write_all(&[b]).is_err() || start.elapsed() > Duration::from_secs(30) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut rest = Vec::new();
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read_to_end(&mut rest);
            (start.elapsed(), String::from_utf8_lossy(&rest).into_owned())
        })
    };
    // Idle connections, up to the cap: each closed after the timeout.
    let idle_start = Instant::now();
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS - 1)
        .map(|_| TcpStream::connect(&side).unwrap())
        .collect();
    // Past the cap: a 503 at once (once the agent has accepted them all).
    let mut answer = (None, String::new());
    wait_for(Duration::from_secs(1), || {
        answer = raw(&side, &request("/debug/pprof/cmdline", &side, ""));
        answer.0 == Some(503)
    });
    let (status, body) = answer;
    assert_eq!(status, Some(503), "{body}");
    assert!(body.contains("too many connections"), "{body}");
    // The service, on its own port, is not affected.
    assert_eq!(get(&rig.url(&rig.service, "/hello")).status, 200);
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        // EOF (or a reset) when the agent closes it.
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "an idle connection got {:?}", &buf[..n]);
    }
    let idle_closed = idle_start.elapsed();
    let (loris_closed, loris_reply) = loris.join().unwrap();
    eprintln!(
        "header-read timeout {HEADER_TIMEOUT:?}: {} idle connections closed after {idle_closed:?}, \
         the slow-loris client after {loris_closed:?} ({loris_reply:?})",
        MAX_CONNECTIONS - 1
    );
    assert!(idle_closed >= HEADER_TIMEOUT - Duration::from_millis(100));
    assert!(idle_closed < Duration::from_secs(20), "{idle_closed:?}");
    assert!(loris_closed < Duration::from_secs(20), "{loris_closed:?}");
    assert!(!loris_reply.contains("HTTP/1.1 200"), "{loris_reply}");
    // Slots are free again.
    let (status, _) = raw(&side, &request("/debug/pprof/cmdline", &side, ""));
    assert_eq!(status, Some(200));
}
