//! `GET /metrics` (Prometheus text exposition) and `GET /debug/tokio` (JSON).

pub(crate) mod page;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::capture::runtime::TokioSnapshot;
use crate::{Agent, Error};

pub(crate) async fn metrics(State(agent): State<Agent>) -> Result<impl IntoResponse, Error> {
    // Reads /proc and jemalloc's statistics: off the runtime, bounded.
    let text = agent.render_page(Agent::metrics_text).await??;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

pub(crate) async fn tokio_json(State(agent): State<Agent>) -> Json<TokioSnapshot> {
    Json(agent.tokio_snapshot())
}
