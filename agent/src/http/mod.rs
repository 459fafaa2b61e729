//! The agent's HTTP surface: the router, the bearer-token check, and one
//! handler module per endpoint of the contract in DESIGN.md.

mod cmdline;
mod cpu;
mod heap;
mod index;
mod metrics;
mod tasks;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pprof::protos::Profile;

use crate::encode::{self, FlamegraphOptions, Format};
use crate::{Agent, Error};

pub(crate) fn router(agent: Agent) -> Router {
    Router::new()
        .route("/debug/pprof/", get(index::index))
        .route("/debug/pprof", get(index::index))
        .route("/debug/pprof/profile", get(cpu::profile))
        .route("/debug/pprof/cmdline", get(cmdline::cmdline))
        .route("/debug/pprof/heap", get(heap::heap))
        .route("/debug/pprof/allocs", get(heap::allocs))
        .route("/debug/pprof/tasks", get(tasks::tasks))
        .route("/debug/pprof/goroutine", get(tasks::goroutine))
        .route("/debug/tokio", get(metrics::tokio_json))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(agent.clone(), authorize))
        .with_state(agent)
}

/// Rejects requests without the configured bearer token (when there is one).
async fn authorize(State(agent): State<Agent>, request: Request, next: Next) -> Response {
    if let Some(token) = &agent.config().bearer_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Error::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// Encodes `profile` in `format` as a response. `name` is the download's file
/// stem (`profile`, `heap`, …); `count_name` labels flamegraph values.
pub(crate) fn respond(
    profile: &Profile,
    format: Format,
    name: &str,
    sample_index: usize,
) -> Result<Response, Error> {
    let body = match format {
        Format::Pprof => encode::pprof_gz(profile)?,
        Format::Folded => encode::folded_text(&encode::fold(profile, sample_index)).into_bytes(),
        Format::Svg => {
            let unit = profile
                .sample_type
                .get(sample_index)
                .map_or("samples", |t| encode::string(profile, t.ty));
            let opts = FlamegraphOptions::new(format!("{name} profile"), unit);
            encode::flamegraph_svg(&encode::fold(profile, sample_index), &opts)?
        }
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if format == Format::Pprof {
        let disposition = format!("attachment; filename=\"{name}.pb.gz\"");
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
