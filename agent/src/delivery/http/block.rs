//! `GET /debug/pprof/block` (`?seconds=N` for the last N seconds, else
//! cumulative since start, like Go's) and `GET /debug/pprof/delta_block`
//! (the growth since the previous request, godeltaprof's): the watchdog's
//! stalls in Go's block-profile shape. 501 with how to turn it on when the
//! watchdog is off.

use axum::extract::State;
use axum::response::Response;

use super::extract::{DeltaSeconds, Param, ProfileFormat};
use super::respond::respond;
use crate::capture::watchdog::Watchdog;
use crate::{Agent, Error};

/// What to tell a user whose agent runs no watchdog.
const NOT_ENABLED: &str = "the blocking watchdog is off: enable it with \
     `Agent::builder().watchdog(WatchdogConfig::default())` (and, for every task, \
     `profscope_agent::watchdog::install_poll_hooks` on the runtime builder)";

fn watchdog(agent: &Agent) -> Result<Watchdog, Error> {
    let watchdog = agent
        .watchdog()
        .cloned()
        .ok_or_else(|| Error::NotAvailable(NOT_ENABLED.into()))?;
    match watchdog.stopped() {
        Some(why) => Err(Error::NotAvailable(why)),
        None => Ok(watchdog),
    }
}

pub(crate) async fn block(
    State(agent): State<Agent>,
    Param(DeltaSeconds(window)): Param<DeltaSeconds>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let rows = watchdog(&agent)?.rows(window);
    // Sample index 1: `delay/nanoseconds`, what a block profile shows.
    respond(&agent, format, "block", 1, move |symbolizer| {
        Watchdog::to_profile(&rows, symbolizer)
    })
    .await
}

pub(crate) async fn delta_block(
    State(agent): State<Agent>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let rows = watchdog(&agent)?.delta_rows();
    respond(&agent, format, "delta_block", 1, move |symbolizer| {
        Watchdog::to_profile(&rows, symbolizer)
    })
    .await
}
