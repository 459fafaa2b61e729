//! What to push where.

use std::time::Duration;

/// Credentials for a backend.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// `Authorization: Basic …` (Grafana Cloud: instance id and API token).
    Basic {
        /// The user name.
        user: String,
        /// The password or token.
        password: String,
    },
    /// `Authorization: Bearer …`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    // Credentials never reach logs or panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// A backend: its base URL (the agent appends `/ingest` for Pyroscope and
/// `/v1development/profiles` for OTLP), credentials and tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// Base URL, e.g. `http://pyroscope:4040` or `http://otel-collector:4318`.
    pub url: String,
    /// Credentials, if the backend wants them.
    pub auth: Option<Auth>,
    /// The tenant (`X-Scope-OrgID`), for multi-tenant Pyroscope.
    pub tenant: Option<String>,
}

impl Endpoint {
    /// A backend at `url` without credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Endpoint {
            url: url.into().trim_end_matches('/').to_string(),
            auth: None,
            tenant: None,
        }
    }

    /// Sends `Authorization: Basic`.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(Auth::Basic {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Sends `Authorization: Bearer`.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(Auth::Bearer(token.into()));
        self
    }

    /// Sends `X-Scope-OrgID: tenant`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }
}

impl From<&str> for Endpoint {
    fn from(url: &str) -> Self {
        Endpoint::new(url)
    }
}

impl From<String> for Endpoint {
    fn from(url: String) -> Self {
        Endpoint::new(url)
    }
}

/// What the agent pushes, where and how often. Start from
/// [`PushConfig::new`] and hand it to
/// [`AgentBuilder::push`](crate::AgentBuilder::push).
///
/// ```no_run
/// # fn run() -> Result<(), profscope_agent::Error> {
/// use profscope_agent::push::{Endpoint, PushConfig};
/// let agent = profscope_agent::Agent::builder()
///     .push(
///         PushConfig::new("checkout")
///             .version(env!("CARGO_PKG_VERSION"))
///             .label("env", "prod")
///             .pyroscope(Endpoint::new("http://pyroscope:4040").tenant("team-a"))
///             .otlp("http://otel-collector:4318"),
///     )
///     .build()?;
/// // … on shutdown: deliver what is queued, for at most two seconds.
/// agent.shutdown_push(std::time::Duration::from_secs(2));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushConfig {
    /// `service_name` (Pyroscope's application name, OTLP's `service.name`).
    pub service_name: String,
    /// `version` label and `service.version`.
    pub version: Option<String>,
    /// Further labels on every profile (`env`, `region`, …).
    pub labels: Vec<(String, String)>,
    /// Grafana Pyroscope's HTTP ingest.
    pub pyroscope: Option<Endpoint>,
    /// An OTLP/HTTP profiles endpoint (OTel Collector, Pyroscope 2.0).
    pub otlp: Option<Endpoint>,
    /// How long each profile covers; default 15 s, as Pyroscope's clients.
    pub period: Duration,
    /// Most bytes waiting for delivery; past it the oldest are dropped.
    /// Default 8 MiB.
    pub queue_bytes: usize,
    /// Longest one delivery attempt may take. Default 10 s.
    pub request_timeout: Duration,
    /// Attempts per delivery before it is dropped. Default 5.
    pub max_attempts: u32,
    /// gzip OTLP bodies (`Content-Encoding: gzip`). Default on. (The pprof
    /// sent to Pyroscope is always gzip, as Go writes it.)
    pub gzip: bool,
    /// Push the period's CPU profile. Default on.
    pub cpu: bool,
    /// Push the heap profile (when heap profiling is on). Default on.
    pub heap: bool,
    /// Push the task profile (a task dump each period, which pauses the
    /// runtime briefly; needs `taskdump`). Default off, as Go's clients
    /// leave goroutine profiles off.
    pub tasks: bool,
}

impl PushConfig {
    /// Pushes nowhere yet, for service `service_name`, with the defaults.
    pub fn new(service_name: impl Into<String>) -> Self {
        PushConfig {
            service_name: service_name.into(),
            version: None,
            labels: Vec::new(),
            pyroscope: None,
            otlp: None,
            period: Duration::from_secs(15),
            queue_bytes: 8 << 20,
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            gzip: true,
            cpu: true,
            heap: true,
            tasks: false,
        }
    }

    /// Pushes to Grafana Pyroscope's ingest at `endpoint` (base URL).
    pub fn pyroscope(mut self, endpoint: impl Into<Endpoint>) -> Self {
        self.pyroscope = Some(endpoint.into());
        self
    }

    /// Pushes OTLP profiles to `endpoint` (base URL).
    pub fn otlp(mut self, endpoint: impl Into<Endpoint>) -> Self {
        self.otlp = Some(endpoint.into());
        self
    }

    /// The service's version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Adds a label to every profile.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// How long each pushed profile covers (1 s to 1 h).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The queue's cap in bytes.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Longest one delivery attempt may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Which profiles to push.
    pub fn profiles(mut self, cpu: bool, heap: bool, tasks: bool) -> Self {
        (self.cpu, self.heap, self.tasks) = (cpu, heap, tasks);
        self
    }

    /// gzip OTLP bodies or not.
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.service_name.trim().is_empty() {
            return Err("push: service_name is empty".into());
        }
        if self.pyroscope.is_none() && self.otlp.is_none() {
            return Err("push: no Pyroscope or OTLP endpoint".into());
        }
        for e in self.pyroscope.iter().chain(&self.otlp) {
            let lower = e.url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(format!("push: endpoint {:?} is not an http(s) URL", e.url));
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.period) {
            return Err("push: period must be between 1 s and 1 h".into());
        }
        if self.queue_bytes < 64 << 10 {
            return Err("push: queue_bytes must be at least 64 KiB".into());
        }
        if self.max_attempts == 0 || self.request_timeout.is_zero() {
            return Err("push: max_attempts and request_timeout must be positive".into());
        }
        Ok(())
    }
}
