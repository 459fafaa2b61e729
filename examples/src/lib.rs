//! Shared pieces of the example services: the workloads they run and the
//! flags they take ([`ExampleArgs`]).

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use profscope_agent::{Agent, AgentBuilder};
use sha2::{Digest, Sha256};

/// The `axum-service` example's routes with the agent merged in: `/hello`,
/// `/work?n=N` (N SHA-256 rounds over 1 KiB, in [`hash_work`]), `/leak`
/// (1 MiB retained per call, in [`leak_one_mib`]) and `/drip?kib=N` (N KiB
/// retained per call, default 64, in [`drip_leak`]: a slow leak under
/// load, for the flight recorder's heap trigger), `/retain?objects=mib|kib`
/// (64 MiB retained as 1 MiB or as 1 KiB objects, in [`retain_mib_blocks`]
/// / [`retain_kib_blocks`]: heap accuracy across allocators), and two bugs
/// for the blocking watchdog: `/block?ms=N` (`std::thread::sleep` inside
/// the async handler, in [`block_in_async`]) and `/spin?ms=N` (a CPU loop
/// inside it, in [`spin_in_async`]). Each route is a task group on
/// `/metrics` (`group="/work"`, …).
pub fn app(agent: &Agent) -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route("/work", get(work))
        .route("/leak", get(leak))
        .route("/drip", get(drip))
        .route("/block", get(block_in_async))
        .route("/spin", get(spin_in_async))
        .route("/retain", get(retain))
        .route_layer(agent.route_metrics_layer())
        .merge(agent.router())
}

#[derive(serde::Deserialize)]
struct WorkParams {
    n: Option<u32>,
}

async fn work(Query(params): Query<WorkParams>) -> String {
    let n = params.n.unwrap_or(1).min(1_000_000);
    let digest = hash_work(n);
    format!(
        "{:02x}{:02x}{:02x}{:02x}\n",
        digest[0], digest[1], digest[2], digest[3]
    )
}

#[derive(serde::Deserialize)]
struct RetainParams {
    objects: Option<String>,
}

static RETAINED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

async fn retain(Query(params): Query<RetainParams>) -> String {
    let mut kept = Vec::with_capacity(65_536);
    match params.objects.as_deref() {
        Some("kib") => retain_kib_blocks(&mut kept),
        _ => retain_mib_blocks(&mut kept),
    }
    let mut all = RETAINED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    all.extend(kept);
    format!("retained {} objects\n", all.len())
}

async fn leak() -> String {
    format!("retained {} MiB\n", leak_one_mib())
}

/// `?ms=N` of the stall routes.
#[derive(serde::Deserialize)]
pub struct StallParams {
    /// How long the handler holds its worker, ms (default 300).
    pub ms: Option<u64>,
}

/// The bug the watchdog exists for: a blocking call inside an async
/// handler, holding the runtime worker for `ms` (default 300).
#[inline(never)]
pub async fn block_in_async(Query(params): Query<StallParams>) -> String {
    let ms = params.ms.unwrap_or(300).min(10_000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    format!("blocked {ms} ms\n")
}

/// A CPU loop inside an async handler, holding the worker for `ms`.
#[inline(never)]
pub async fn spin_in_async(Query(params): Query<StallParams>) -> String {
    let ms = params.ms.unwrap_or(300).min(10_000);
    format!(
        "spun {} rounds\n",
        spin_for(std::time::Duration::from_millis(ms))
    )
}

/// Burns CPU for `d` of wall time.
#[inline(never)]
pub fn spin_for(d: std::time::Duration) -> u64 {
    let until = std::time::Instant::now() + d;
    let mut rounds = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while std::time::Instant::now() < until {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        rounds += 1;
    }
    std::hint::black_box(x);
    rounds
}

#[derive(serde::Deserialize)]
struct DripParams {
    kib: Option<usize>,
}

async fn drip(Query(params): Query<DripParams>) -> String {
    let kib = params.kib.unwrap_or(64).clamp(1, 1024);
    format!("retained {} bytes\n", drip_leak(kib))
}

static DRIPPED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Retains `kib` KiB for the life of the process: the slow leak of
/// `/drip`. Returns the bytes retained so far.
#[inline(never)]
pub fn drip_leak(kib: usize) -> usize {
    let block = vec![0x5au8; kib << 10];
    let mut dripped = DRIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    dripped.push(block);
    dripped.iter().map(Vec::len).sum()
}

/// Hashes a 1 KiB buffer with SHA-256 `n` times: the CPU work of `/work`.
/// Not inlined, so profiles show it by name.
#[inline(never)]
pub fn hash_work(n: u32) -> [u8; 32] {
    let mut buf = [0x5au8; 1024];
    let mut digest = [0u8; 32];
    for _ in 0..n {
        digest = Sha256::digest(buf).into();
        buf[..32].copy_from_slice(&digest);
    }
    digest
}

static LEAKED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Retains 1 MiB for the life of the process: the leak of `/leak`. Returns
/// how many MiB are retained so far.
#[inline(never)]
pub fn leak_one_mib() -> usize {
    // Written to, so the pages are resident, not just reserved.
    let block = vec![0xa5u8; 1 << 20];
    let mut leaked = LEAKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    leaked.push(block);
    leaked.len()
}

/// Retains 64 MiB as 64 objects of 1 MiB, in a function of its own: heap
/// accuracy tests and benchmarks find it by name as the leaf.
#[inline(never)]
pub fn retain_mib_blocks(out: &mut Vec<Vec<u8>>) {
    for i in 0..64 {
        out.push(vec![i as u8 | 1; 1 << 20]);
    }
}

/// Retains 64 MiB as 65,536 objects of 1 KiB (see [`retain_mib_blocks`]).
#[inline(never)]
pub fn retain_kib_blocks(out: &mut Vec<Vec<u8>>) {
    for i in 0..65_536 {
        out.push(vec![i as u8 | 1; 1024]);
    }
}

/// The flags every example takes, parsed by clap: `--addr HOST:PORT`,
/// `--token TOKEN` (or `PROFSCOPE_TOKEN`), `--push-pyroscope URL`,
/// `--push-otlp URL`, `--push-period-s N`; later flags are added here. Unknown flags print a usage line and exit with code 2;
/// `--help` prints the rest.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "A service with the profscope agent")]
pub struct ExampleArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on every agent request (401
    /// without it). Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PROFSCOPE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Token>,
    /// Push profiles to Grafana Pyroscope at this base URL (`/ingest` is appended).
    #[arg(long, value_name = "URL")]
    pub push_pyroscope: Option<String>,
    /// Push OTLP profiles to this base URL (`/v1development/profiles` is appended).
    #[arg(long, value_name = "URL")]
    pub push_otlp: Option<String>,
    /// Seconds each pushed profile covers.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub push_period_s: u64,
    /// Run the flight recorder (the last 10 minutes of CPU, heap and
    /// metrics at /debug/pprof/recent/*, incidents at /debug/pprof/incidents).
    #[arg(long)]
    pub recorder: bool,
    /// With --recorder: fire a heap_growth incident when the heap grows by
    /// N MiB within 60 s.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub heap_trigger_mib: Option<u64>,
    /// With --recorder: seconds between the recorder's heap snapshots.
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub recorder_heap_every_s: u64,
    /// With --recorder: the windows an incident keeps before and records
    /// after its trigger, seconds.
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub incident_before_s: u64,
    /// See --incident-before-s.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub incident_after_s: u64,
    /// Run the blocking watchdog: a poll holding a worker past N ms is
    /// sampled while it blocks (/debug/pprof/block).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(4..=60_000))]
    pub watchdog_ms: Option<u64>,
    /// With the sampling allocator (`axum-service-system`,
    /// `axum-service-mimalloc`): mean bytes between heap samples (default
    /// 524288, like Go).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=(1u64 << 40)))]
    pub heap_sample_period: Option<u64>,
}

/// Runs an example service named `name` until Ctrl-C: parses the flags,
/// applies `--heap-sample-period` before any runtime thread exists (so
/// every thread's first draw uses it), builds the agent and serves
/// [`app`].
pub fn run_service(name: &str) {
    let args = ExampleArgs::from_env();
    if let Some(period) = args.heap_sample_period {
        profscope_agent::heap::set_sample_period(period);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(serve(name, args));
}

async fn serve(name: &str, args: ExampleArgs) {
    let addr = args.addr_or(([127, 0, 0, 1], 3000).into());
    let mut builder = args.agent_builder();
    if let Some(push) = args.push_config(name) {
        builder = builder.push(push);
    }
    let agent = match builder.build() {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    };
    let service = app(&agent);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    println!("listening on http://{local}");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(stop)
        .await
    {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
    if let Some(stats) = agent.shutdown_push(std::time::Duration::from_secs(2)) {
        println!(
            "push: {} sent, {} failed attempts",
            stats.sent, stats.errors
        );
    }
}

/// A bearer token from the command line or the environment: its `Debug`
/// never shows it, and an empty one is refused when parsing.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// The token itself, for the agent's configuration.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token is visible ASCII without spaces".into());
        }
        Ok(Token(s.to_string()))
    }
}

impl ExampleArgs {
    /// Parses the process's arguments, exiting on a usage error.
    pub fn from_env() -> Self {
        <Self as clap::Parser>::parse()
    }

    /// The push settings the `--push-*` flags ask for, for `service`
    /// (`None` when neither backend is given).
    pub fn push_config(&self, service: &str) -> Option<profscope_agent::push::PushConfig> {
        if self.push_pyroscope.is_none() && self.push_otlp.is_none() {
            return None;
        }
        let mut config = profscope_agent::push::PushConfig::new(service)
            .version(env!("CARGO_PKG_VERSION"))
            .period(std::time::Duration::from_secs(self.push_period_s));
        if let Some(url) = &self.push_pyroscope {
            config = config.pyroscope(url.as_str());
        }
        if let Some(url) = &self.push_otlp {
            config = config.otlp(url.as_str());
        }
        Some(config)
    }

    /// `--addr`, else `default`.
    pub fn addr_or(&self, default: SocketAddr) -> SocketAddr {
        self.addr.unwrap_or(default)
    }

    /// An agent builder with these flags' agent settings (the token, the
    /// recorder), task dumps on: the examples build the workspace's patched
    /// tokio (`vendor/tokio`), which task dumps need.
    pub fn agent_builder(&self) -> AgentBuilder {
        let mut builder = Agent::builder().task_dumps(true);
        if let Some(token) = &self.token {
            builder = builder.bearer_token(token.expose());
        }
        if let Some(recorder) = self.recorder_config() {
            builder = builder.recorder(recorder);
        }
        if let Some(ms) = self.watchdog_ms {
            builder = builder.watchdog(profscope_agent::watchdog::WatchdogConfig::threshold(
                std::time::Duration::from_millis(ms),
            ));
        }
        builder
    }

    /// The recorder the `--recorder` flags ask for.
    pub fn recorder_config(&self) -> Option<profscope_agent::recorder::RecorderConfig> {
        use profscope_agent::recorder::{HeapGrowth, RecorderConfig};
        use std::time::Duration;
        if !self.recorder {
            return None;
        }
        let mut config = RecorderConfig::default();
        config.heap_every = Duration::from_secs(self.recorder_heap_every_s);
        config.before = Duration::from_secs(self.incident_before_s);
        config.after = Duration::from_secs(self.incident_after_s);
        config.triggers.panic = true;
        if let Some(mib) = self.heap_trigger_mib {
            config.triggers.heap_growth = Some(HeapGrowth::bytes(mib << 20));
        }
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug_output() {
        let args = <ExampleArgs as clap::Parser>::try_parse_from(["x", "--token", "s3cret"])
            .expect("parses");
        assert_eq!(args.token.as_ref().map(Token::expose), Some("s3cret"));
        assert!(!format!("{args:?}").contains("s3cret"));
        assert!(!format!("{:?}", args.agent_builder()).contains("s3cret"));
        assert!(<ExampleArgs as clap::Parser>::try_parse_from(["x", "--token", ""]).is_err());
    }

    #[test]
    fn hash_work_is_deterministic() {
        assert_eq!(hash_work(3), hash_work(3));
        assert_ne!(hash_work(1), hash_work(2));
    }
}
