//! `profscope demo`: the whole story in one command. A small shop service
//! with the agent merged in runs inside this process, load is driven at it,
//! CPU and heap snapshots are captured into the store, flamegraphs and a
//! heap diff are written, and the web UI is served at the end.
//!
//! The service has a CPU hot path (`price_cart` → `checksum_receipt`) and a
//! leak (`cache_session` keeps 256 KiB per call), so the captures show what
//! the tools are for: the hot leaf in the CPU top table, the leaking
//! function first in the heap diff.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;

use anyhow::{Context, Result};
use profscope::app::{self, Input};
use profscope::diff::DiffOptions;
use profscope::fetch::FetchOptions;
use profscope::render::{FlameOptions, TopOptions};
use profscope::store::{Snapshot, Store};

use super::progress::with_progress;

/// How the demo runs.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    /// Serve the web UI after the captures (until Ctrl-C).
    pub(crate) serve: bool,
    /// Address of the web UI.
    pub(crate) addr: SocketAddr,
}

/// Seconds of the demo's CPU capture.
const CPU_SECONDS: u64 = 5;

/// Runs the demo against the default store; see the module docs.
pub(crate) fn run(opts: &DemoOptions) -> Result<()> {
    let store = Store::open_default()?;
    capture(&store)?;
    if opts.serve {
        println!();
        // Prints the page's address and serves until Ctrl-C.
        super::serve::run(store, opts.addr, false, None)?;
    }
    Ok(())
}

/// Starts the service, drives load, captures and renders; prints as it goes.
fn capture(store: &Store) -> Result<()> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo-service")
        .enable_all()
        .build()
        .context("demo runtime")?;
    // Task dumps on: the demo builds the workspace's patched tokio.
    let agent = profscope_agent::Agent::builder().task_dumps(true).build()?;
    let app = Router::new()
        .route("/checkout", get(checkout))
        .route("/session", get(session))
        .merge(agent.router());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("demo service bind")?;
    let addr = listener.local_addr()?;
    rt.spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    println!("demo service with the profscope agent: {base}/debug/pprof/");

    let mut snapshots = Vec::new();
    let heap_url = format!("{base}/debug/pprof/heap");
    let heap_on = agent.heap_profiling_active();
    if heap_on {
        snapshots.push(save(store, &heap_url, "demo-heap-before")?);
    } else {
        println!("heap profiling is off in this build: skipping heap snapshots");
    }

    let load = Load::start(&base);
    println!("driving load on /checkout and /session for {CPU_SECONDS} s…");
    let cpu_url = format!("{base}/debug/pprof/profile?seconds={CPU_SECONDS}");
    let cpu = with_progress(Duration::from_secs(CPU_SECONDS), || {
        save(store, &cpu_url, "demo-cpu")
    });
    let requests = load.stop();
    let cpu = cpu?;
    snapshots.push(cpu.clone());
    println!("{requests} requests served");
    if heap_on {
        snapshots.push(save(store, &heap_url, "demo-heap-after")?);
    }

    let out_dir = absolute(store.dir()).join("demo");
    let mut files = Vec::new();
    let cpu_svg = out_dir.join("cpu.svg");
    let cpu_input = Input::new(cpu.meta.id.clone());
    app::flamegraph_to_file(
        &cpu_input,
        Some(store),
        &FlameOptions::new(Some("profscope demo: CPU".into()), false),
        &cpu_svg,
    )?;
    files.push(cpu_svg);
    println!("\nCPU, top functions (profscope top {}):", cpu.meta.id);
    print!(
        "{}",
        app::top(&cpu_input, Some(store), &TopOptions::new(12, false))?
    );

    if let [before, _, after] = snapshots.as_slice() {
        let heap_svg = out_dir.join("heap.svg");
        app::flamegraph_to_file(
            &Input::new(after.meta.id.clone()),
            Some(store),
            &FlameOptions::new(Some("profscope demo: heap in use".into()), false),
            &heap_svg,
        )?;
        files.push(heap_svg);
        let diff = app::diff(
            &Input::new(before.meta.id.clone()),
            &Input::new(after.meta.id.clone()),
            Some(store),
            &DiffOptions::new(None, false),
            &TopOptions::new(8, false),
            true,
        )?;
        let diff_svg = out_dir.join("heap-diff.svg");
        if let Some(svg) = &diff.svg {
            app::write_file(&diff_svg, svg)?;
            files.push(diff_svg);
        }
        println!(
            "\nHeap growth during the load (profscope diff {} {}):",
            before.meta.id, after.meta.id
        );
        print!("{}", diff.table);
    }

    println!("\nSnapshots (profscope list):");
    print!("{}", app::list(store)?);
    println!("\nFiles written:");
    for f in &files {
        println!("  {}", f.display());
    }
    println!("captures done in {:.1} s", started.elapsed().as_secs_f64());
    drop(rt);
    Ok(())
}

fn save(store: &Store, url: &str, label: &str) -> Result<Snapshot> {
    let snapshot = app::capture(store, url, &FetchOptions::labeled(Some(label.to_string())))?;
    println!(
        "saved snapshot {} ({}, label {label})",
        snapshot.meta.id, snapshot.meta.kind
    );
    Ok(snapshot)
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[derive(serde::Deserialize)]
struct CheckoutParams {
    items: Option<u32>,
}

async fn checkout(Query(p): Query<CheckoutParams>) -> String {
    let items = p.items.unwrap_or(2_000).min(100_000);
    let total = tokio::task::spawn_blocking(move || price_cart(items))
        .await
        .unwrap_or(0);
    format!("total {total}\n")
}

/// Prices a cart: sorts pseudo-random prices, then checksums the receipt.
#[inline(never)]
fn price_cart(items: u32) -> u64 {
    let mut x = 0x2545_f491_4f6c_dd1du64 ^ u64::from(items);
    let mut prices: Vec<u64> = (0..items)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 10_000
        })
        .collect();
    prices.sort_unstable();
    checksum_receipt(&prices)
}

/// The hot leaf: many rounds of mixing over the receipt lines.
#[inline(never)]
fn checksum_receipt(prices: &[u64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..64 {
        for &p in prices {
            h = (h ^ p).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

static SESSIONS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

async fn session() -> String {
    format!("{} sessions cached\n", cache_session())
}

/// The leak: a session cache that never evicts, 256 KiB per session.
#[inline(never)]
fn cache_session() -> usize {
    let state = vec![0x5au8; 256 << 10];
    let mut sessions = SESSIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    sessions.push(state);
    sessions.len()
}

/// Two client threads: mostly `/checkout`, every 8th request `/session`,
/// at most 192 sessions (48 MiB) so the demo stays small.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|_| {
                let (stop, served, base) = (stop.clone(), served.clone(), base.to_string());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build();
                    while !stop.load(Ordering::Relaxed) {
                        let n = served.fetch_add(1, Ordering::Relaxed);
                        let path = if n % 8 == 0 && n < 192 * 8 {
                            "/session"
                        } else {
                            "/checkout?items=2000"
                        };
                        let _ = agent.get(&format!("{base}{path}")).call();
                    }
                })
            })
            .collect();
        Load {
            stop,
            served,
            threads,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.served.load(Ordering::Relaxed)
    }
}
