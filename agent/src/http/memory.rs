//! `GET /debug/memory` (JSON; `?debug=1` for text): where the resident
//! memory goes.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::extract::Debug;
use crate::{Agent, Error};

pub(crate) async fn memory(
    State(agent): State<Agent>,
    Debug(debug): Debug,
) -> Result<Response, Error> {
    // Reads /proc files: off the runtime.
    let report = tokio::task::spawn_blocking(move || agent.memory_report())
        .await
        .map_err(|e| Error::Internal(format!("memory report thread failed: {e}")))?;
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
