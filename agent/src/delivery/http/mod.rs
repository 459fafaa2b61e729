//! The agent's HTTP surface: request → validate (extractors) → capture →
//! model → encode ([`respond`]). The router serves the model's endpoint
//! table (`profscope_profile::kind::ENDPOINTS`) behind the bearer-token
//! check, one handler module per profile or page (`heap.rs` answers the
//! heap's three paths, `block.rs` the watchdog's two, `recorder.rs` the
//! flight recorder's, `unavailable.rs` Go's paths Rust has no profile
//! for); a new endpoint is a row in that table plus its line in
//! [`handler`] (a test fails when one is missing). Errors become answers
//! in `error.rs` alone.

mod block;
mod cmdline;
mod cpu;
mod error;
pub(crate) mod extract;
mod heap;
mod index;
mod memory;
pub(crate) mod metrics;
mod recorder;
mod respond;
pub(crate) mod server;
mod tasks;
mod unavailable;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use profscope_profile::kind::agent_endpoints;

use crate::{Agent, Error};

pub(crate) use respond::Format;

pub(crate) fn router(agent: Agent) -> Router {
    let mut router = Router::new().route("/debug/pprof", get(index::index));
    for endpoint in agent_endpoints() {
        if let Some(handler) = handler(endpoint.path) {
            router = router.route(endpoint.path, handler);
        }
    }
    router
        .route_layer(middleware::from_fn_with_state(agent.clone(), authorize))
        .with_state(agent)
}

/// The handler of each path the endpoint table says the agent serves
/// (a test checks that none is missing).
fn handler(path: &str) -> Option<MethodRouter<Agent>> {
    Some(match path {
        "/debug/pprof/" => get(index::index),
        "/debug/pprof/profile" => get(cpu::profile),
        "/debug/pprof/heap" => get(heap::heap),
        "/debug/pprof/allocs" => get(heap::allocs),
        "/debug/pprof/delta_heap" => get(heap::delta_heap),
        "/debug/pprof/block" => get(block::block),
        "/debug/pprof/delta_block" => get(block::delta_block),
        "/debug/pprof/mutex" | "/debug/pprof/delta_mutex" => get(unavailable::not_in_rust),
        "/debug/pprof/tasks" => get(tasks::tasks),
        "/debug/pprof/goroutine" => get(tasks::goroutine),
        "/debug/pprof/taskleak" => get(tasks::taskleak),
        "/debug/pprof/recent/profile" => get(recorder::recent_profile),
        "/debug/pprof/recent/heap" => get(recorder::recent_heap),
        "/debug/pprof/recent/metrics" => get(recorder::recent_metrics),
        "/debug/pprof/incidents" => get(recorder::incidents).post(recorder::fire),
        "/debug/pprof/incidents/{id}/{profile}" => get(recorder::incident_profile),
        "/debug/pprof/cmdline" => get(cmdline::cmdline),
        "/debug/tokio" => get(metrics::tokio_json),
        "/debug/memory" => get(memory::memory),
        "/metrics" => get(metrics::metrics),
        _ => return None,
    })
}

/// Rejects requests without the configured bearer token (when there is one).
async fn authorize(State(agent): State<Agent>, request: Request, next: Next) -> Response {
    if let Some(token) = &agent.config().bearer_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Error::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// The credentials of an `Authorization: Bearer …` value (the scheme is
/// case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{agent_endpoints, bearer, constant_time_eq, handler};

    #[test]
    fn every_endpoint_in_the_table_has_a_handler() {
        for e in agent_endpoints() {
            assert!(handler(e.path).is_some(), "no handler for {}", e.path);
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
