//! `GET /debug/pprof/heap` and `GET /debug/pprof/allocs`
//! (`?seconds=N` for a delta, `format=`, `gc=` accepted and ignored).

use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;

use crate::extract::{DeltaSeconds, ProfileFormat};
use crate::heap::SAMPLE_TYPES;
use crate::{Agent, Error};

pub(crate) async fn heap(
    State(agent): State<Agent>,
    DeltaSeconds(delta): DeltaSeconds,
    ProfileFormat(format): ProfileFormat,
) -> Result<Response, Error> {
    serve(agent, delta, format, "inuse_space", "heap").await
}

pub(crate) async fn allocs(
    State(agent): State<Agent>,
    DeltaSeconds(delta): DeltaSeconds,
    ProfileFormat(format): ProfileFormat,
) -> Result<Response, Error> {
    serve(agent, delta, format, "alloc_space", "allocs").await
}

async fn serve(
    agent: Agent,
    delta: Option<std::time::Duration>,
    format: crate::encode::Format,
    default_type: &'static str,
    name: &'static str,
) -> Result<Response, Error> {
    let _permit = agent.request_permit()?;
    let mut snapshot = agent.heap().snapshot().await?;
    if let Some(wait) = delta {
        // Dropped with the request when the client goes away.
        tokio::time::sleep(wait).await;
        let later = agent.heap().snapshot().await?;
        snapshot = later.delta(&snapshot);
    }
    let sample_index = SAMPLE_TYPES
        .iter()
        .position(|(t, _)| *t == default_type)
        .unwrap_or(3);
    let encoder = agent.clone();
    tokio::task::spawn_blocking(move || {
        let profile = snapshot.to_profile(encoder.symbolizer(), default_type, SystemTime::now());
        super::respond(&profile, format, name, sample_index)
    })
    .await
    .map_err(|e| Error::Internal(format!("encoding thread failed: {e}")))?
}
