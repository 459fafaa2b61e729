//! `GET /debug/memory` (JSON; `?debug=1` for text): where the resident
//! memory goes.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::extract::{DebugText, JsonByDefault, Param};
use crate::{Agent, Error};

pub(crate) async fn memory(
    State(agent): State<Agent>,
    Param(DebugText(debug, _)): Param<DebugText<JsonByDefault>>,
) -> Result<Response, Error> {
    // Reads /proc files: off the runtime, bounded.
    let report = agent.render_page(Agent::memory_report).await?;
    Ok(if debug {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.to_text(),
        )
            .into_response()
    } else {
        Json(report).into_response()
    })
}
