//! The flight recorder's paths: `GET /debug/pprof/recent/{profile,heap,
//! metrics}?seconds=N` (the recent past, answered at once), `GET
//! /debug/pprof/incidents` (every incident kept, oldest first), `GET
//! /debug/pprof/incidents/{id}/{cpu|heap}?window=before|after` and `POST
//! /debug/pprof/incidents` (a manual incident). 501 saying how to turn the
//! recorder on when it is off.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::extract::{IncidentWindow, Lookback, Param, ProfileFormat};
use super::respond::respond;
use crate::capture::heap::sample_index;
use crate::capture::recorder::{NOT_ENABLED, Recorder, TriggerKind};
use crate::{Agent, Error};

fn recorder(agent: &Agent) -> Result<Recorder, Error> {
    agent
        .recorder()
        .cloned()
        .ok_or_else(|| Error::NotAvailable(NOT_ENABLED.into()))
}

/// The window asked for, within what the recorder keeps.
fn within_reach(recorder: &Recorder, lookback: Duration) -> Result<Duration, Error> {
    let keep = recorder.config().keep_for.as_secs();
    if lookback.as_secs() > keep {
        return Err(Error::bad_parameter(
            "seconds",
            format!("{} is beyond what the recorder keeps", lookback.as_secs()),
            format!("an integer in 1..={keep} (seconds)"),
        ));
    }
    Ok(lookback)
}

pub(crate) async fn recent_profile(
    State(agent): State<Agent>,
    Param(Lookback(lookback)): Param<Lookback>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let recorder = recorder(&agent)?;
    let window = within_reach(&recorder, lookback)?;
    let capture = tokio::task::spawn_blocking(move || recorder.recent_cpu(window))
        .await
        .map_err(|e| Error::Internal(format!("recorder read failed: {e}")))??;
    respond(&agent, format, "recent-profile", 1, move |symbolizer| {
        capture.to_profile(symbolizer)
    })
    .await
}

pub(crate) async fn recent_heap(
    State(agent): State<Agent>,
    Param(Lookback(lookback)): Param<Lookback>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let recorder = recorder(&agent)?;
    let window = within_reach(&recorder, lookback)?;
    let snapshot = recorder.recent_heap(window)?;
    respond(
        &agent,
        format,
        "recent-heap",
        sample_index("inuse_space"),
        move |symbolizer| snapshot.to_profile(symbolizer, "inuse_space", SystemTime::now()),
    )
    .await
}

pub(crate) async fn recent_metrics(
    State(agent): State<Agent>,
    Param(Lookback(lookback)): Param<Lookback>,
) -> Result<Json<serde_json::Value>, Error> {
    let recorder = recorder(&agent)?;
    let window = within_reach(&recorder, lookback)?;
    Ok(Json(recorder.recent_metrics(window)))
}

pub(crate) async fn incidents(State(agent): State<Agent>) -> Result<Response, Error> {
    let recorder = recorder(&agent)?;
    Ok(Json(recorder.incidents()).into_response())
}

/// `POST /debug/pprof/incidents`: a manual incident; 201 with its listing,
/// or 429 while manual incidents cool down.
pub(crate) async fn fire(State(agent): State<Agent>) -> Result<Response, Error> {
    let recorder = recorder(&agent)?;
    let fired = tokio::task::spawn_blocking(move || {
        let id = recorder.fire(TriggerKind::Manual, BTreeMap::new(), BTreeMap::new());
        id.and_then(|id| recorder.incidents().into_iter().find(|i| i.id == id))
    })
    .await
    .map_err(|e| Error::Internal(format!("recorder failed: {e}")))?;
    match fired {
        Some(info) => Ok((StatusCode::CREATED, Json(info)).into_response()),
        None => Err(Error::Unavailable {
            reason: "manual incidents are cooling down; retry later".into(),
            retry_after_secs: 10,
        }),
    }
}

pub(crate) async fn incident_profile(
    State(agent): State<Agent>,
    Path((id, profile)): Path<(String, String)>,
    Param(IncidentWindow(window)): Param<IncidentWindow>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let recorder = recorder(&agent)?;
    match profile.as_str() {
        "cpu" | "profile" => {
            let capture = recorder.incident_cpu(&id, window == Some(true))?;
            respond(&agent, format, "incident-cpu", 1, move |symbolizer| {
                capture.to_profile(symbolizer)
            })
            .await
        }
        "heap" => {
            // The heap at the trigger is taken by the recorder's thread
            // right after the incident is listed: wait for it a little.
            let mut waited = Duration::ZERO;
            let snapshot = loop {
                if let Some(s) = recorder.incident_heap(&id, window)? {
                    break s;
                }
                if waited >= Duration::from_secs(30) {
                    return Err(Error::Unavailable {
                        reason: format!("incident {id}'s heap snapshot is still being taken"),
                        retry_after_secs: 1,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            };
            respond(
                &agent,
                format,
                "incident-heap",
                sample_index("inuse_space"),
                move |symbolizer| {
                    snapshot.to_profile(
                        symbolizer,
                        "inuse_space",
                        snapshot.time.unwrap_or_else(SystemTime::now),
                    )
                },
            )
            .await
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            Err(Error::NotFound(format!(
                "an incident has no profile {shown:?}: cpu or heap"
            )))
        }
    }
}
