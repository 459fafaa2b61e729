//! `GET /debug/pprof/profile?seconds=N&frequency=HZ&format=pprof|folded|svg`

use axum::extract::State;
use axum::response::Response;

use crate::extract::{Frequency, ProfileFormat, Seconds};
use crate::{Agent, Error};

pub(crate) async fn profile(
    State(agent): State<Agent>,
    Seconds(duration): Seconds,
    Frequency(hz): Frequency,
    ProfileFormat(format): ProfileFormat,
) -> Result<Response, Error> {
    let capture = agent.cpu().capture(duration, hz).await?;
    // Symbolizing and encoding are CPU work: keep them off the runtime.
    tokio::task::spawn_blocking(move || {
        let profile = capture.to_profile(agent.symbolizer());
        // Sample index 0 is `samples/count`: folded counts are samples.
        super::respond(&profile, format, "profile", 0)
    })
    .await
    .map_err(|e| Error::Internal(format!("encoding thread failed: {e}")))?
}
