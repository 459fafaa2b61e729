//! With a bearer token configured, every agent endpoint answers 401 without
//! it (or with another), and serves with it. The endpoints are the model's
//! table, the same one the router serves, so a new endpoint is covered here
//! the day it is added.

use profscope_agent::Agent;
use profscope_profile::kind::agent_endpoints;

#[tokio::test]
async fn bearer_token_guards_every_endpoint() {
    let running = Agent::builder()
        .addr("127.0.0.1:0".parse().unwrap())
        .bearer_token("s3cret")
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    let mut paths: Vec<String> = agent_endpoints()
        .map(|e| {
            // A CPU capture as short as allowed; the others as they are.
            let query = if e.kind == Some("cpu") {
                "?seconds=1"
            } else {
                ""
            };
            format!("{}{query}", e.path)
        })
        .collect();
    // The index also answers without its trailing slash.
    paths.push("/debug/pprof".to_string());
    assert!(paths.len() >= 10, "{paths:?}");
    for path in &paths {
        let url = format!("{base}{path}");
        for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
            let (status, body, www) = get(&url, token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert_eq!(www.as_deref(), Some("Bearer"));
            assert_eq!(body, "missing or wrong bearer token\n");
        }
        // With the token, the request reaches its handler: 200, or 501 for
        // what this test build lacks (heap and task dumps), never 401.
        let (status, body, _) = get(&url, Some("s3cret")).await;
        assert!(status == 200 || status == 501, "{path}: {status} {body}");
    }
    running.shutdown().await.unwrap();
}

#[test]
fn empty_token_and_bad_limits_are_refused_at_build() {
    assert!(Agent::builder().bearer_token("").build().is_err());
    assert!(Agent::builder().max_seconds(0).build().is_err());
    assert!(Agent::builder().default_frequency(0).build().is_err());
    assert!(Agent::builder().default_frequency(5000).build().is_err());
    assert!(Agent::builder().max_concurrent_requests(0).build().is_err());
}

async fn get(url: &str, token: Option<&str>) -> (u16, String, Option<String>) {
    let url = url.to_string();
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::get(&url);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let r = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let www = r.header("www-authenticate").map(str::to_string);
        (r.status(), r.into_string().unwrap(), www)
    })
    .await
    .unwrap()
}

/// The token never shows in the agent's `Debug` output (a service may log
/// its configuration), and one no client could send is refused at build.
#[tokio::test]
async fn the_token_never_shows_and_must_be_sendable() {
    let builder = Agent::builder().bearer_token("s3cret-77");
    assert!(!format!("{builder:?}").contains("s3cret-77"));
    let agent = builder.build().unwrap();
    assert!(!format!("{agent:?}").contains("s3cret-77"));
    assert!(format!("{:?}", agent.config()).contains("<redacted>"));
    for bad in ["", "two words", "line\nbreak", "caf\u{e9}"] {
        let e = Agent::builder().bearer_token(bad).build().unwrap_err();
        assert!(e.to_string().contains("bearer token"), "{bad:?}: {e}");
    }
}
