//! Shared by the `serve_*` tests: a store seeded with the Go fixtures, the
//! web UI started in-process, a stub agent, and a raw HTTP/1.1 client (raw,
//! so paths such as `/snapshot/../x` reach the server unnormalized).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use profscope::store::{NewSnapshot, Snapshot, Store};

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(testdata().join(name)).unwrap()
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// Saves the Go fixtures: a CPU profile, two heap profiles of one source
/// (`before`, `after`) and an allocs profile.
pub fn seed(store: &Store) -> Vec<Snapshot> {
    let heap_src = "http://127.0.0.1:6060/debug/pprof/heap";
    let items = [
        (
            "go-cpu.pb.gz",
            Some("http://127.0.0.1:6060/debug/pprof/profile?seconds=5"),
            "go-cpu",
            "cpu",
        ),
        ("go-heap-before.pb.gz", Some(heap_src), "before", "heap"),
        ("go-heap-after.pb.gz", Some(heap_src), "after", "heap"),
        ("go-allocs.pb.gz", None, "allocs", "allocs"),
    ];
    items
        .iter()
        .map(|(file, src, label, kind)| {
            let s = store
                .save(
                    &fixture(file),
                    NewSnapshot::new(src.map(str::to_string), Some(label.to_string())).kind(*kind),
                )
                .unwrap();
            // Distinct times, so "newest first" is well defined.
            std::thread::sleep(Duration::from_millis(5));
            s
        })
        .collect()
}

/// The web UI running on its own runtime until dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Store,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Server::start_with(store, dir)
    }

    pub fn start_with(store: Store, dir: tempfile::TempDir) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = store.clone();
        rt.spawn(async move {
            profscope::serve::serve_until(s, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            addr,
            store,
            _dir: dir,
            stop: Some(tx),
            rt: Some(rt),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], "")
    }

    pub fn post(&self, path: &str, form: &str) -> Response {
        request(
            self.addr,
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request with `Connection: close`; the path is sent as is.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Response {
        status,
        head: head.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[derive(serde::Deserialize)]
struct Secs {
    seconds: Option<u64>,
}

/// The one incident [`stub_agent`] lists (still recording its after-window).
pub const STUB_INCIDENT: &str = "1795566060-heap_growth-1";

/// A stand-in agent on `rt`: `/debug/pprof/heap` serves the Go heap
/// fixture and `/debug/pprof/profile` the CPU one, each after sleeping the
/// request's `seconds` (as a real capture would); `/debug/pprof/incidents`
/// lists [`STUB_INCIDENT`], whose heap is the `after` fixture, its heap
/// before the window the `before` one and its CPU the CPU one. Returns its
/// base URL.
pub fn stub_agent(rt: &tokio::runtime::Runtime) -> String {
    async fn incident(
        axum::extract::Path((id, part)): axum::extract::Path<(String, String)>,
        q: Query<std::collections::HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let file = match (part.as_str(), q.get("window").map(String::as_str)) {
            ("heap", Some("before")) => "go-heap-before.pb.gz",
            ("heap", None) => "go-heap-after.pb.gz",
            ("cpu", None) => "go-cpu.pb.gz",
            _ => return (axum::http::StatusCode::NOT_FOUND, "no such window\n").into_response(),
        };
        if id != STUB_INCIDENT {
            return (axum::http::StatusCode::NOT_FOUND, "no such incident\n").into_response();
        }
        fixture(file).into_response()
    }
    async fn serve(file: &'static str, q: Query<Secs>) -> Vec<u8> {
        if let Some(s) = q.seconds {
            tokio::time::sleep(Duration::from_secs(s.min(10))).await;
        }
        fixture(file)
    }
    let app = Router::new()
        .route(
            "/debug/pprof/heap",
            get(|q: Query<Secs>| serve("go-heap-after.pb.gz", q)),
        )
        .route(
            "/debug/pprof/profile",
            get(|q: Query<Secs>| serve("go-cpu.pb.gz", q)),
        )
        .route(
            "/debug/pprof/incidents",
            get(|| async {
                axum::Json(serde_json::json!([{
                    "id": STUB_INCIDENT,
                    "trigger": "heap_growth",
                    "state": "recording",
                    "time_unix_seconds": 1795566060.5,
                    "time": "2026-11-25T00:21:00Z",
                    "figures": {"growth_bytes": 33554432.0, "window_seconds": 60.0},
                    "labels": {},
                    "before_seconds": 60.0,
                    "after_seconds": 30.0,
                    "agent_version": "0.1.0",
                    "files": []
                }]))
            }),
        )
        .route("/debug/pprof/incidents/{id}/{part}", get(incident));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[allow(unused_imports)] // not every test file that shares this module uses it
pub use profscope_test_support::large_folded;
