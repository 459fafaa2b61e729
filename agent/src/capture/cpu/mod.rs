//! CPU profiles: capture (stopped as soon as the requester goes away) and
//! the Go-style profile the project's builder makes of it (one location per
//! address, real mappings, a `thread` label, the real period).
//!
//! On Linux (x86_64; aarch64 compiled but untested) captures are consumers
//! of the agent's own sample stream (`crate::capture::sampler`): per-thread CPU
//! timers, a signal-pure handler, any number of overlapping captures.
//! Elsewhere, or with the `pprof-rs` feature, pprof-rs samples instead, one
//! capture at a time. See BENCHMARKS.md for the measurements behind this.

use std::time::{Duration, SystemTime};

use profscope_profile::Profile;

use crate::Error;
use crate::shared::profile_builder::ProfileBuilder;
use crate::shared::symbols::Symbolizer;

cfg_own_sampler! {
    mod own;
    use own as backend;
}
cfg_not_own_sampler! {
    mod pprof_rs;
    use pprof_rs as backend;
}

/// The lowest and highest sampling frequency accepted, in Hz (checked by
/// the HTTP layer's `frequency` extractor). 99 Hz, Go's 100 Hz shifted off
/// round timer periods, is the default.
pub const FREQUENCY_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;

/// One distinct stack seen during a capture.
#[derive(Debug, Clone)]
pub struct CapturedStack {
    /// Lookup addresses, leaf first: the interrupted instruction, then each
    /// return address minus one (so it points inside the call).
    pub addresses: Vec<u64>,
    /// Name (or id) of the sampled thread.
    pub thread: String,
    /// Number of samples with this stack.
    pub count: i64,
    /// CPU time they stand for, in nanoseconds (samples × the stream's
    /// period while they were taken).
    pub cpu_ns: i64,
    /// The label set the thread ran under (0: none).
    pub labels: u32,
}

/// The raw result of a CPU capture, not yet symbolized.
#[derive(Debug, Clone)]
pub struct CpuCapture {
    /// Distinct stacks with their sample counts.
    pub stacks: Vec<CapturedStack>,
    /// Sampling frequency asked for, in Hz.
    pub frequency: u32,
    /// The real sampling period (the sample stream's, which runs at the
    /// fastest rate any consumer asked for).
    pub period: Duration,
    /// Wall-clock start of the capture.
    pub start: SystemTime,
    /// How long the capture ran.
    pub duration: Duration,
    /// Samples dropped during the capture, by reason (see the README's
    /// "The sampler"): `ring_full`, `no_slot`, `stopped`, `not_ours`,
    /// `in_signal_handler`.
    /// Empty where the sampler does not count them (pprof-rs).
    pub dropped: Vec<(&'static str, u64)>,
}

impl CpuCapture {
    /// Total samples in the capture.
    pub fn sample_count(&self) -> i64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// Symbolizes the capture into a Go-style CPU profile: sample types
    /// `samples/count` and `cpu/nanoseconds`, period type `cpu/nanoseconds`.
    pub fn to_profile(&self, symbolizer: &Symbolizer) -> Profile {
        symbolizer.resolve_all(self.stacks.iter().flat_map(|s| s.addresses.iter().copied()));
        let period = self.period.as_nanos() as i64;
        let mut builder =
            ProfileBuilder::new(symbolizer, &[("samples", "count"), ("cpu", "nanoseconds")])
                .period("cpu", "nanoseconds", period)
                .time(self.start, self.duration);
        let dropped: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        if !dropped.is_empty() {
            builder = builder.comment(&format!("samples dropped: {}", dropped.join(" ")));
        }
        for stack in &self.stacks {
            let set = crate::capture::labels::pairs_of(stack.labels);
            let mut labels: Vec<(&str, &str)> = vec![("thread", &stack.thread)];
            if let Some(set) = &set {
                labels.extend(set.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            builder.add_sample(&stack.addresses, vec![stack.count, stack.cpu_ns], &labels);
        }
        builder.build()
    }
}

/// Takes CPU profiles of this process. Cheap; all profilers share the
/// process's one sample stream.
#[derive(Debug, Default)]
pub struct CpuProfiler {
    backend: backend::Backend,
}

impl CpuProfiler {
    /// A profiler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples the whole process for `duration` at `frequency` Hz (within
    /// [`FREQUENCY_RANGE`]).
    ///
    /// Captures may overlap: each gets every sample of its own window. With
    /// the pprof-rs backend (not Linux, or the `pprof-rs` feature) only one
    /// runs at a time and a second fails with [`Error::CaptureRunning`]; the
    /// own sampler fails with [`Error::Conflict`] when something else in the
    /// process handles SIGPROF. Dropping the returned future stops the
    /// capture at once: that is how a client disconnect cancels it.
    pub async fn capture(&self, duration: Duration, frequency: u32) -> Result<CpuCapture, Error> {
        self.backend.capture(duration, frequency).await
    }

    /// Whether the process's sample stream is running now (some capture is
    /// in progress, or the last one ended less than ~100 ms ago).
    pub fn is_sampling() -> bool {
        backend::is_sampling()
    }
}

/// The own sampler's counters since the process started (`None` where
/// pprof-rs samples).
pub(crate) fn sampler_stats() -> Option<SamplerStats> {
    backend::sampler_stats()
}

cfg_own_sampler! {
    pub(crate) use crate::capture::sampler::SamplerStats;
}
cfg_not_own_sampler! {
    /// Nothing is counted where pprof-rs samples.
    #[derive(Debug, Clone)]
    pub(crate) struct SamplerStats {
        pub(crate) dropped: Vec<(&'static str, u64)>,
        pub(crate) stack_unknown: u64,
        pub(crate) faults_recovered: u64,
        pub(crate) ranges_truncated: u64,
        pub(crate) signal_taken: u64,
        pub(crate) threads_unsampled: u64,
    }
}

/// Whether captures share the process's one sample stream (the own
/// sampler), so a periodic consumer (push) never makes an ad-hoc capture
/// wait. With pprof-rs only one capture runs at a time.
pub const fn shares_stream() -> bool {
    cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64"),
        not(feature = "pprof-rs")
    ))
}

/// How long the pprof-rs backend's warm-up took, once it has run (`None`
/// with the own sampler, which needs none).
pub fn warm_up_duration() -> Option<Duration> {
    backend::warm_up_duration()
}
