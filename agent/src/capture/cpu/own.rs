//! Captures as consumers of the agent's own sample stream.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::{CapturedStack, CpuCapture};
use crate::Error;
use crate::capture::sampler::{self, SamplerError};

#[derive(Debug, Default)]
pub(super) struct Backend;

impl Backend {
    pub(super) async fn capture(&self, duration: Duration, frequency: u32) -> Result<CpuCapture, Error> {
        // The sender lives in this future: when the future is dropped (the
        // client went away), the capture thread sees the channel close.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let task = tokio::task::spawn_blocking(move || run(duration, frequency, &stop_rx));
        let result = task
            .await
            .map_err(|e| Error::Internal(format!("capture thread failed: {e}")))?;
        drop(stop_tx);
        result
    }
}

fn run(duration: Duration, frequency: u32, stop: &mpsc::Receiver<()>) -> Result<CpuCapture, Error> {
    let subscription = sampler::subscribe(frequency).map_err(to_error)?;
    match stop.recv_timeout(duration) {
        Err(RecvTimeoutError::Timeout) => {}
        // Client gone (or explicit stop): leave the stream right away.
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            drop(subscription);
            return Err(Error::Internal("capture cancelled".into()));
        }
    }
    let collected = subscription.finish().map_err(to_error)?;
    let stacks = collected
        .stacks
        .into_iter()
        .map(|s| CapturedStack {
            // The leaf as interrupted; callers' return addresses minus one,
            // so each points inside its call.
            addresses: s
                .frames
                .iter()
                .enumerate()
                .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
                .collect(),
            thread: s.thread.to_string(),
            count: s.samples,
            cpu_ns: s.cpu_ns,
            labels: s.labels,
        })
        .collect();
    Ok(CpuCapture {
        stacks,
        frequency,
        period: collected.period,
        start: collected.start,
        duration: collected.duration,
        dropped: collected.dropped,
    })
}

/// The sample stream cannot serve this capture (409, with why), or failed.
fn to_error(e: SamplerError) -> Error {
    match e {
        SamplerError::SignalInUse | SamplerError::SignalTaken => Error::Conflict(e.to_string()),
        SamplerError::Os(_) | SamplerError::Gone => Error::Internal(e.to_string()),
    }
}

pub(super) fn sampler_stats() -> Option<sampler::SamplerStats> {
    Some(sampler::stats())
}

pub(super) fn is_sampling() -> bool {
    sampler::is_running()
}

pub(super) fn warm_up_duration() -> Option<Duration> {
    None
}
