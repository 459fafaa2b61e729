//! Helpers shared by the benchmark harnesses: a minimal keep-alive HTTP
//! client for load (cheap enough not to dominate the machine), process CPU
//! time, and medians with their spread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that makes a harness binary run as the service
/// (child mode); its value names the mode.
pub const SERVE_ENV: &str = "PROFSCOPE_BENCH_SERVE";

pub use profscope_test_support::Service;

/// Re-runs this harness binary as a service in `mode` with extra `env`.
pub fn spawn_self(mode: &str, env: &[(&str, &str)]) -> Service {
    let exe = std::env::current_exe().expect("exe");
    let mut cmd = Command::new(exe);
    cmd.env(SERVE_ENV, mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Service::start(&mut cmd)
}

/// Child mode of a harness: builds the app inside a fresh runtime, serves it
/// on an ephemeral loopback port and announces it with the `listening on`
/// line [`Service::start`] reads. Never returns.
pub fn serve_child(app: impl FnOnce() -> axum::Router) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "listening on http://{}",
            listener.local_addr().expect("addr")
        );
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Throughput and CPU cost of one load window.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    /// Requests per second.
    pub rps: f64,
    /// Service CPU milliseconds per 1,000 requests.
    pub cpu_ms_per_1k: f64,
}

/// Drives `connections` keep-alive connections GETting `path` for `secs`.
pub fn run_load(svc: &Service, path: &str, connections: usize, secs: f64) -> Trial {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu(svc.pid());
    let t0 = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let (stop, done, host, path) = (
                stop.clone(),
                done.clone(),
                svc.host().to_string(),
                path.to_string(),
            );
            std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(&host) else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    if c.get(&path).is_ok_and(|s| s == 200) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (process_cpu(svc.pid()) - cpu0).as_secs_f64() * 1000.0;
    let n = done.load(Ordering::Relaxed) as f64;
    Trial {
        rps: n / elapsed,
        cpu_ms_per_1k: cpu / n.max(1.0) * 1000.0,
    }
}

/// A/B trials of one service: A without the profiler, B with it.
#[derive(Debug, Clone, Default)]
pub struct AbOutcome {
    /// What was measured, for the report.
    pub name: String,
    /// Trials without profiling.
    pub a: Vec<Trial>,
    /// Trials with profiling.
    pub b: Vec<Trial>,
}

/// Runs `pairs` A/B pairs, alternating the order inside pairs (A B, B A, …)
/// against drift; `trial(profiled)` runs one window.
pub fn ab_pairs(name: &str, pairs: usize, mut trial: impl FnMut(bool) -> Trial) -> AbOutcome {
    let mut out = AbOutcome {
        name: name.to_string(),
        ..AbOutcome::default()
    };
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for profiled in order {
            let t = trial(profiled);
            eprintln!(
                "{name} pair {pair} {}: {:.0} req/s, {:.1} CPU-ms/1k req",
                if profiled { "B (on)" } else { "A (off)" },
                t.rps,
                t.cpu_ms_per_1k
            );
            if profiled {
                out.b.push(t);
            } else {
                out.a.push(t);
            }
        }
    }
    out
}

/// One side of an A/B comparison of child services: this binary in child
/// `mode` with `env`.
pub type Side<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// A/B pairs of `path` on two child services of this binary, A then B,
/// each warmed by a second of load first: [`ab_pairs`] over [`run_load`]
/// with `connections` connections and windows of `secs`.
pub fn ab_children(
    name: &str,
    path: &str,
    connections: usize,
    (pairs, secs): (usize, f64),
    a: Side<'_>,
    b: Side<'_>,
) -> AbOutcome {
    let a = spawn_self(a.0, a.1);
    let b = spawn_self(b.0, b.1);
    let _ = run_load(&a, path, connections, 1.0);
    let _ = run_load(&b, path, connections, 1.0);
    ab_pairs(name, pairs, |on| {
        run_load(if on { &b } else { &a }, path, connections, secs)
    })
}

impl AbOutcome {
    /// Prints medians with spreads, the per-pair throughput ratio and the
    /// CPU-per-request ratio.
    pub fn print(&self) {
        let col =
            |v: &[Trial], f: fn(&Trial) -> f64| median_spread(&v.iter().map(f).collect::<Vec<_>>());
        let (ra, ra_lo, ra_hi) = col(&self.a, |t| t.rps);
        let (rb, rb_lo, rb_hi) = col(&self.b, |t| t.rps);
        let (ca, ca_lo, ca_hi) = col(&self.a, |t| t.cpu_ms_per_1k);
        let (cb, cb_lo, cb_hi) = col(&self.b, |t| t.cpu_ms_per_1k);
        let ratios: Vec<f64> = self
            .a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| b.rps / a.rps)
            .collect();
        let (rr, rr_lo, rr_hi) = median_spread(&ratios);
        println!("{}:", self.name);
        println!("  throughput off  {ra:8.0} req/s  (spread {ra_lo:.0}..{ra_hi:.0})");
        println!("  throughput on   {rb:8.0} req/s  (spread {rb_lo:.0}..{rb_hi:.0})");
        println!(
            "  on/off ratio    {rr:8.4}        (per-pair spread {rr_lo:.4}..{rr_hi:.4}); loss {:.2}%",
            (1.0 - rr) * 100.0
        );
        println!("  CPU-ms/1k off   {ca:8.1}        (spread {ca_lo:.1}..{ca_hi:.1})");
        println!(
            "  CPU-ms/1k on    {cb:8.1}        (spread {cb_lo:.1}..{cb_hi:.1}); ratio {:.4}",
            cb / ca
        );
    }
}

/// Reads an environment variable, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One keep-alive HTTP/1.1 connection issuing GETs.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Client {
    /// Connects to `host:port`.
    pub fn connect(host: &str) -> std::io::Result<Client> {
        let stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream),
            host: host.to_string(),
        })
    }

    /// GETs `path`, returning the status code; the body is read and dropped.
    pub fn get(&mut self, path: &str) -> std::io::Result<u16> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(
            &mut (&mut self.reader).take(length as u64),
            &mut std::io::sink(),
        )?;
        Ok(status)
    }
}

/// utime + stime of process `pid`.
pub fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let Some(close) = stat.rfind(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((field(11) + field(12)) * 1000 / hz)
}

/// Median and (min, max) of `xs`.
pub fn median_spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (median, v[0], v[v.len() - 1])
}

/// The allocation-heavy route both heap benches load: 200 short strings
/// and a 16 KiB buffer per request, all freed before answering.
pub async fn alloc_route() -> String {
    let words: Vec<String> = (0..200).map(|i| format!("item-{i}")).collect();
    let buf = vec![7u8; 16 << 10];
    format!("{} {}\n", words.len(), std::hint::black_box(buf).len())
}
