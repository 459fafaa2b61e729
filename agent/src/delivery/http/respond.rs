//! The tail every profile handler shares: build the profile and encode it
//! as the requested body (gzipped pprof, folded stacks or an SVG
//! flamegraph), off the runtime, with the right headers.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use profscope_profile::Profile;
use profscope_profile::flamegraph::{FlamegraphOptions, flamegraph_svg};
use profscope_profile::fold::{fold, folded_text};

use crate::shared::symbols::Symbolizer;
use crate::{Agent, Error};

/// The body formats every profile endpoint can answer with (`?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Format {
    /// Gzipped pprof protobuf, what `go tool pprof`, Pyroscope and Parca read.
    #[default]
    Pprof,
    /// Folded stacks: one `root;…;leaf count` line per distinct stack.
    Folded,
    /// An interactive SVG flamegraph.
    Svg,
}

impl Format {
    /// The accepted spellings, for error messages.
    pub(crate) const ACCEPTED: &'static str = "pprof, folded or svg";

    /// Parses the `format` query parameter.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pprof" | "proto" => Some(Format::Pprof),
            "folded" | "collapsed" => Some(Format::Folded),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }

    /// The `Content-Type` of a body in this format.
    fn content_type(self) -> &'static str {
        match self {
            Format::Pprof => "application/octet-stream",
            Format::Folded => "text/plain; charset=utf-8",
            Format::Svg => "image/svg+xml",
        }
    }
}

/// Runs `build` (symbolizing, building: CPU work) and the encoding on a
/// blocking thread, never on the service's runtime workers. `name` is the
/// download's stem (`profile`, `heap`, …); folded and SVG bodies show
/// sample type `sample_index`.
pub(crate) async fn respond<F>(
    agent: &Agent,
    format: Format,
    name: &'static str,
    sample_index: usize,
    build: F,
) -> Result<Response, Error>
where
    F: FnOnce(&Symbolizer) -> Profile + Send + 'static,
{
    off_runtime(agent, move |symbolizer| {
        let profile = build(symbolizer);
        let response = encode(&profile, format, name, sample_index);
        drop_later(profile);
        response
    })
    .await
}

/// [`respond`] for a pprof body whose producer writes and gzips it itself
/// (a heap profile's samples are encoded as they are made, in two parts at
/// once): `build` runs off the runtime like the rest.
pub(crate) async fn respond_gzipped<F>(
    agent: &Agent,
    name: &'static str,
    build: F,
) -> Result<Response, Error>
where
    F: FnOnce(&Symbolizer) -> Result<Vec<u8>, Error> + Send + 'static,
{
    off_runtime(agent, move |symbolizer| {
        Ok(response(build(symbolizer)?, Format::Pprof, name))
    })
    .await
}

/// Runs `work` on a blocking thread, never on the service's runtime
/// workers, with the agent's symbolizer; what it allocates is labelled the
/// agent's (the symbolizer's caches, the encoder's buffers).
async fn off_runtime<F>(agent: &Agent, work: F) -> Result<Response, Error>
where
    F: FnOnce(&Symbolizer) -> Result<Response, Error> + Send + 'static,
{
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        let _agent = crate::capture::labels::agent_scope();
        work(agent.symbolizer())
    })
    .await
    .map_err(|e| Error::Internal(format!("encoding thread failed: {e}")))?
}

/// Frees `value` on another blocking thread, so the response does not
/// wait for it: a 10k-stack profile is ~30k allocations to free, about
/// 0.3 ms of a heap request.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(value))),
        Err(_) => drop(value),
    }
}

fn encode(
    profile: &Profile,
    format: Format,
    name: &str,
    sample_index: usize,
) -> Result<Response, Error> {
    let body = match format {
        // An HTTP answer: its latency counts (the push gzips on one thread).
        Format::Pprof => profscope_profile::gzip_two_threads(
            &profscope_profile::encode(profile),
            crate::capture::labels::agent_scope,
        )?,
        Format::Folded => folded_text(&fold(profile, sample_index)).into_bytes(),
        Format::Svg => {
            let unit = profile
                .sample_type
                .get(sample_index)
                .map_or("", |t| profile.string_at(t.unit));
            let opts = FlamegraphOptions::for_unit(format!("{name} profile"), unit);
            flamegraph_svg(&fold(profile, sample_index), &opts)?
        }
    };
    Ok(response(body, format, name))
}

/// `body` with the headers of its format.
fn response(body: Vec<u8>, format: Format, name: &str) -> Response {
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
    response
}
