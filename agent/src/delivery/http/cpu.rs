//! `GET /debug/pprof/profile?seconds=N&frequency=HZ&format=pprof|folded|svg`

use axum::extract::State;
use axum::response::Response;

use super::extract::{Frequency, Param, ProfileFormat, Seconds};
use super::respond::respond;
use crate::{Agent, Error};

pub(crate) async fn profile(
    State(agent): State<Agent>,
    Param(Seconds(duration)): Param<Seconds>,
    Param(Frequency(hz)): Param<Frequency>,
    Param(ProfileFormat(format)): Param<ProfileFormat>,
) -> Result<Response, Error> {
    let _permit = agent.capture_permit()?;
    let capture = agent.cpu().capture(duration, hz).await?;
    // Sample index 0 is `samples/count`: folded counts are samples.
    respond(&agent, format, "profile", 0, move |symbolizer| {
        capture.to_profile(symbolizer)
    })
    .await
}
