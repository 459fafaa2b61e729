//! Test support: start an example service on an ephemeral loopback port,
//! talk HTTP to it, and run `go tool pprof` when it is installed.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Tests of one binary run on parallel threads; CPU-sensitive ones (CPU time
/// accounting, capture races) hold this so they do not share two cores
/// with another test's load.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use profscope_test_support::Service;

/// Starts the example `name` on an ephemeral loopback port
/// (`--addr 127.0.0.1:0`) and waits for its "listening on" line.
pub fn example(name: &str) -> Service {
    Service::start(Command::new(example_path(name)).args(["--addr", "127.0.0.1:0"]))
}

/// [`example`] with jemalloc sampling every 2^`lg` bytes on average
/// (`lg_prof_sample`; the examples' default is 19, 512 KiB): for a test
/// that reads a sampled heap figure against a tight bound. At 512 KiB, 64
/// leaked 1 MiB objects are ~55 samples (σ ≈ 5 %); at 128 KiB (17) nearly
/// every one is sampled.
pub fn example_sampling_every(name: &str, lg: u32) -> Service {
    Service::start(
        Command::new(example_path(name))
            .args(["--addr", "127.0.0.1:0"])
            .env("_RJEM_MALLOC_CONF", format!("lg_prof_sample:{lg}")),
    )
}

/// Examples are built next to the test binaries (`target/<profile>/examples`).
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds examples; run `cargo test --workspace`",
        path.display()
    );
    path
}

/// `target/<profile>/profscope`, built by `cargo test --workspace`.
pub fn profscope() -> PathBuf {
    let examples = example_path("axum-service");
    let bin = examples
        .parent()
        .and_then(|e| e.parent())
        .expect("target/<profile>")
        .join("profscope");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A response: status, headers we care about, body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn get(url: &str) -> Reply {
    get_with(url, &[])
}

/// GET with extra request headers (`Authorization`, …).
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    request(&agent, url, headers)
}

/// GET through `agent` (its connection pool, its timeouts).
pub fn get_from(agent: &ureq::Agent, url: &str) -> Reply {
    request(agent, url, &[])
}

fn request(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    let header = |n: &str| response.header(n).map(str::to_string);
    let retry_after = header("retry-after");
    let content_type = header("content-type");
    let content_disposition = header("content-disposition");
    let mut body = Vec::new();
    response
        .into_reader()
        .take(256 << 20)
        .read_to_end(&mut body)
        .unwrap_or_else(|e| panic!("read the body of {url} ({status}): {e}"));
    Reply {
        status,
        retry_after,
        content_type,
        content_disposition,
        body,
    }
}

/// Keeps `/work?n=50` busy from `threads` client threads until dropped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Load {
    pub fn start(url: String, threads: usize) -> Load {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let url = url.clone();
                std::thread::spawn(move || {
                    let agent = ureq::agent();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if agent.get(&url).call().is_ok() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the load and returns the number of requests served.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads.drain(..).map(|t| t.join().unwrap_or(0)).sum()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

#[allow(unused_imports)] // not every test binary sharing this module uses them
pub use profscope_test_support::{go_pprof, have_go};

/// The function names of a `go tool pprof -top` table, one per row, with
/// Go's `(inline)`-style suffixes taken off.
pub fn go_top_names(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.contains("flat%"))
        .skip(1)
        .filter_map(|row| {
            // Five numeric columns, then the name (which may hold spaces).
            let mut rest = row.trim_start();
            for _ in 0..5 {
                let end = rest.find(char::is_whitespace)?;
                rest = rest[end..].trim_start();
            }
            let name = rest
                .strip_suffix(" (inline)")
                .or_else(|| rest.strip_suffix(" (partial-inline)"))
                .unwrap_or(rest);
            Some(name.to_string())
        })
        .collect()
}

/// Asserts that Go's symbolizer rewrote no name (none starts with `::`,
/// i.e. lost its `<…>` self type) and, with `trait_method`, that a trait
/// method frame kept its `<T as Trait>` prefix whole.
pub fn assert_names_whole(top: &str, trait_method: bool) {
    let names = go_top_names(top);
    assert!(
        !names.is_empty(),
        "no rows:
{top}"
    );
    let cut: Vec<&String> = names.iter().filter(|n| n.starts_with("::")).collect();
    assert!(
        cut.is_empty(),
        "names cut down by Go's rules: {cut:?}
{top}"
    );
    assert!(
        !trait_method
            || names
                .iter()
                .any(|n| n.starts_with('<') && n.contains(" as ") && n.contains(">::")),
        "no whole trait-method name (`<T as Trait>::f`):
{top}"
    );
}

/// The function names of sample `s`'s stack, leaf first, inlined frames
/// included.
pub fn stack_names(p: &profscope_profile::Profile, s: &profscope_profile::Sample) -> Vec<String> {
    s.location_id
        .iter()
        .filter_map(|id| p.location.iter().find(|l| l.id == *id))
        .flat_map(|l| &l.line)
        .filter_map(|line| p.function.iter().find(|f| f.id == line.function_id))
        .map(|f| p.string_at(f.name).to_string())
        .collect()
}

/// Gunzips and decodes a pprof body.
pub fn decode(body: &[u8]) -> profscope_profile::Profile {
    use prost::Message;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .expect("gzip body");
    profscope_profile::Profile::decode(&raw[..]).expect("pprof protobuf")
}

/// utime + stime of process `pid`, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

/// An agent serving on an ephemeral loopback port from this process, with
/// the runtime it runs on.
pub fn in_process_agent() -> (tokio::runtime::Runtime, profscope_agent::RunningAgent) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt
        .block_on(
            profscope_agent::Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap()
                .spawn(),
        )
        .unwrap();
    (rt, running)
}

/// A multi-thread runtime of two workers, as the tests' services run on.
pub fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A 2-worker runtime to dump, and an agent on a runtime of its own
/// watching it (a test that blocks the dumped runtime's workers still gets
/// the agent's answers). Shut both down with [`shut_down`].
pub fn dumped_runtime_and_agent() -> (
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
    profscope_agent::RunningAgent,
) {
    let rt = two_workers();
    let agent_rt = tokio::runtime::Runtime::new().unwrap();
    let running = agent_rt
        .block_on(async {
            profscope_agent::Agent::builder()
                .addr("127.0.0.1:0".parse().unwrap())
                .runtime(rt.handle().clone())
                .task_dumps(true)
                .build()
                .unwrap()
                .spawn()
                .await
        })
        .unwrap();
    (rt, agent_rt, running)
}

/// Not a plain drop: a worker a failing test left blocked would hold it
/// forever.
pub fn shut_down(rt: tokio::runtime::Runtime, agent_rt: tokio::runtime::Runtime) {
    rt.shutdown_timeout(Duration::from_secs(2));
    agent_rt.shutdown_timeout(Duration::from_secs(2));
}

/// A 503 from a task dump waiting for a runtime worker that has not
/// reached tokio's dump barrier (timed out, or behind an earlier dump that
/// did).
pub fn dump_waits_for_a_worker(reply: &Reply) -> bool {
    reply.status == 503 && reply.text().contains("tokio's dump barrier")
}
