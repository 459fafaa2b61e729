//! `GET /debug/pprof/cmdline`: the command line, NUL separated, like Go's.

use axum::http::header;
use axum::response::IntoResponse;

pub(crate) async fn cmdline() -> impl IntoResponse {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        args.join("\0"),
    )
}
