//! Delivery: one request at a time from the queue's front; retries with
//! exponential backoff and full jitter on 5xx, 429 and connection errors,
//! none on other 4xx.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::config::Auth;
use super::queue::{DropReason, Outcome, Queue};
use super::wire::Delivery;
use super::{Counters, Rng};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the sender behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
    /// Longest wait between attempts: twice the period (a new delivery
    /// arrives every period anyway), at most 30 s.
    pub(crate) max_backoff: Duration,
}

impl Policy {
    pub(crate) fn new(timeout: Duration, max_attempts: u32, period: Duration) -> Self {
        Policy {
            timeout,
            max_attempts,
            max_backoff: period.saturating_mul(2).clamp(FIRST_BACKOFF, MAX_BACKOFF),
        }
    }
}

/// Runs until the queue is closed and drained (or its deadline passed).
pub(crate) fn run(queue: &Queue, counters: &Counters, policy: Policy) {
    let Policy {
        timeout,
        max_attempts,
        max_backoff,
    } = policy;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(5)))
        .build();
    let mut failures_in_a_row = 0u32;
    let mut jitter = Jitter::new();
    while let Some(delivery) = queue.next() {
        // Near the shutdown deadline, an attempt may only take what is left.
        let budget = match queue.deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()).min(timeout),
            None => timeout,
        };
        let result = attempt(&agent, &delivery, budget);
        let outcome = match result {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                failures_in_a_row = 0;
                Outcome::Sent
            }
            Err(retry) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                let attempts = delivery.attempts.fetch_add(1, Ordering::Relaxed) + 1;
                if !retry {
                    Outcome::Drop(DropReason::Rejected)
                } else if attempts >= max_attempts {
                    Outcome::Drop(DropReason::RetriesExhausted)
                } else {
                    Outcome::Retry
                }
            }
        };
        queue.finish(outcome);
        if outcome != Outcome::Sent {
            failures_in_a_row = failures_in_a_row.saturating_add(1);
            queue.pause(jitter.backoff(failures_in_a_row, max_backoff));
        }
    }
}

/// One attempt: `Ok` on 2xx, else whether a retry may help.
fn attempt(agent: &ureq::Agent, d: &Delivery, timeout: Duration) -> Result<(), bool> {
    if timeout.is_zero() {
        return Err(false);
    }
    let mut request = agent
        .post(&d.url)
        .timeout(timeout)
        .set("Content-Type", &d.content_type)
        .set(
            "User-Agent",
            concat!("profscope/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(encoding) = d.content_encoding {
        request = request.set("Content-Encoding", encoding);
    }
    if let Some(tenant) = &d.tenant {
        request = request.set("X-Scope-OrgID", tenant);
    }
    match &d.auth {
        Some(Auth::Basic { user, password }) => {
            let credentials = base64(format!("{user}:{password}").as_bytes());
            request = request.set("Authorization", &format!("Basic {credentials}"));
        }
        Some(Auth::Bearer(token)) => {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        None => {}
    }
    match request.send_bytes(&d.body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(code == 429 || code >= 500),
        Err(ureq::Error::Transport(_)) => Err(true),
    }
}

/// Exponential backoff with full jitter (AWS's "full jitter": uniform in
/// [0, min(cap, base·2ⁿ)]), so agents restarted together spread out.
struct Jitter(Rng);

impl Jitter {
    fn new() -> Self {
        Jitter(Rng::seeded())
    }

    fn backoff(&mut self, failures: u32, cap: Duration) -> Duration {
        let ceiling = FIRST_BACKOFF
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(cap);
        let ms = ceiling.as_millis() as u64;
        // At least a tenth of the ceiling: never a hot loop.
        Duration::from_millis(ms / 10 + self.0.next() % (ms - ms / 10 + 1))
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut j = Jitter::new();
        for failures in 1..40 {
            let d = j.backoff(failures, MAX_BACKOFF);
            let ceiling = FIRST_BACKOFF
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_BACKOFF);
            assert!(d <= ceiling && d >= ceiling / 10, "{failures}: {d:?}");
        }
    }
}
