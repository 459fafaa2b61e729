//! `GET /debug/pprof/tasks` and `GET /debug/pprof/goroutine` (`debug=1` for
//! text, `format=` otherwise): tokio task dumps, counted by backtrace; and
//! `taskleak`. All three answer 501 unless `AgentBuilder::task_dumps(true)`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Format;
use super::extract::{DebugText, Param, ProfileFormat, Seconds};
use super::respond::respond;
use crate::{Agent, Error};

pub(crate) async fn tasks(
    State(agent): State<Agent>,
    Param(DebugText(debug, _)): Param<DebugText>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    serve(agent, debug, format, "tasks").await
}

pub(crate) async fn goroutine(
    State(agent): State<Agent>,
    Param(DebugText(debug, _)): Param<DebugText>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    serve(agent, debug, format, "goroutine").await
}

async fn serve(
    agent: Agent,
    debug: bool,
    format: Format,
    name: &'static str,
) -> Result<Response, Error> {
    let handle = watched_runtime(&agent)?;
    let _permit = agent.request_permit()?;
    let stacks = crate::capture::tasks::dump(&handle).await?;
    if debug {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            stacks.to_text(),
        )
            .into_response());
    }
    respond(&agent, format, name, 0, move |symbolizer| {
        stacks.to_profile(symbolizer, name)
    })
    .await
}

/// `GET /debug/pprof/taskleak?seconds=N`: tasks at the same await point in
/// each of three dumps spread over N seconds, grouped by stack.
pub(crate) async fn taskleak(
    State(agent): State<Agent>,
    Param(Seconds(window)): Param<Seconds>,
    Param(DebugText(debug, _)): Param<DebugText>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let handle = watched_runtime(&agent)?;
    let _permit = agent.request_permit()?;
    // Dropped with the request when the client goes away.
    let leaks = crate::capture::tasks::find_leaks(&handle, window, 3).await?;
    if debug {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            leaks.to_text(),
        )
            .into_response());
    }
    respond(&agent, format, "taskleak", 0, move |symbolizer| {
        leaks.to_profile(symbolizer)
    })
    .await
}

/// The runtime whose tasks the agent dumps; 501 unless the builder
/// enabled task dumps.
fn watched_runtime(agent: &Agent) -> Result<tokio::runtime::Handle, Error> {
    if !agent.config().task_dumps {
        return Err(Error::NotAvailable(
            crate::capture::tasks::TASK_DUMPS_OFF.into(),
        ));
    }
    agent
        .runtime_handle()
        .cloned()
        .ok_or_else(|| Error::NotAvailable("the agent was built outside a tokio runtime".into()))
}
