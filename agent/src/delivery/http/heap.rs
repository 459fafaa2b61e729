//! `GET /debug/pprof/heap` and `GET /debug/pprof/allocs` (`?seconds=N` for
//! a delta, `format=`, `gc=` accepted and ignored) and `GET
//! /debug/pprof/delta_heap` (godeltaprof's): the heap profile's three paths.

use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;

use super::Format;
use super::extract::{DeltaSeconds, Param, ProfileFormat};
use super::respond::{drop_later, respond, respond_gzipped};
use crate::capture::heap::{HeapSnapshot, sample_index};
use crate::{Agent, Error};

pub(crate) async fn heap(
    State(agent): State<Agent>,
    Param(DeltaSeconds(delta)): Param<DeltaSeconds>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    serve(agent, delta, format, "inuse_space", "heap").await
}

pub(crate) async fn allocs(
    State(agent): State<Agent>,
    Param(DeltaSeconds(delta)): Param<DeltaSeconds>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    serve(agent, delta, format, "alloc_space", "allocs").await
}

async fn serve(
    agent: Agent,
    delta: Option<std::time::Duration>,
    format: Format,
    default_type: &'static str,
    name: &'static str,
) -> Result<Response, Error> {
    let _permit = agent.request_permit()?;
    if delta.is_none() && format == Format::Pprof {
        return pprof_body(&agent, name, None, default_type).await;
    }
    let mut snapshot = agent.heap().snapshot().await?;
    if let Some(wait) = delta {
        // Dropped with the request when the client goes away.
        tokio::time::sleep(wait).await;
        let later = agent.heap().snapshot().await?;
        snapshot = later.delta(&snapshot);
    }
    body(&agent, format, name, snapshot, default_type).await
}

/// The response for `snapshot`: a pprof body encoded as it is built (a
/// 10k-stack heap profile's samples never exist as vectors), folded and
/// SVG bodies from the profile.
async fn body(
    agent: &Agent,
    format: Format,
    name: &'static str,
    snapshot: HeapSnapshot,
    default_type: &'static str,
) -> Result<Response, Error> {
    if format == Format::Pprof {
        return pprof_body(agent, name, Some(snapshot), default_type).await;
    }
    let profiler = agent.clone();
    respond(
        agent,
        format,
        name,
        sample_index(default_type),
        move |symbolizer| {
            let profile =
                profiler
                    .heap()
                    .profile(&snapshot, symbolizer, default_type, SystemTime::now());
            drop_later(snapshot);
            profile
        },
    )
    .await
}

/// A pprof body encoded as it is built, from `snapshot` or, when none is
/// given, from one taken on the blocking thread that encodes it: no
/// runtime worker waits on the snapshot, and its stacks are still in that
/// core's cache when the profile reads them.
async fn pprof_body(
    agent: &Agent,
    name: &'static str,
    snapshot: Option<HeapSnapshot>,
    default_type: &'static str,
) -> Result<Response, Error> {
    let profiler = agent.clone();
    respond_gzipped(agent, name, move |symbolizer| {
        let heap = profiler.heap();
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None => heap.snapshot_blocking()?,
        };
        let body = heap.gzipped_pprof(&snapshot, symbolizer, default_type, SystemTime::now());
        drop_later(snapshot);
        body
    })
    .await
}

/// `GET /debug/pprof/delta_heap`: `alloc_*` as the growth since the previous
/// request to this path, `inuse_*` current (godeltaprof's semantics, for
/// Grafana Alloy's `pyroscope.scrape` with `delta_heap` on).
pub(crate) async fn delta_heap(
    State(agent): State<Agent>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let _permit = agent.request_permit()?;
    let snapshot = agent.heap().delta_snapshot().await?;
    body(&agent, format, "delta_heap", snapshot, "alloc_space").await
}
