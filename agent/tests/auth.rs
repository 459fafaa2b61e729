//! With a bearer token configured, every agent endpoint answers 401 without
//! it (or with another), and serves with it.

use profscope_agent::Agent;

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
    for path in [
        "/debug/pprof/",
        "/debug/pprof/profile?seconds=1",
        "/debug/pprof/heap",
        "/debug/pprof/cmdline",
        "/metrics",
        "/debug/tokio",
    ] {
        let url = format!("{base}{path}");
        for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
            let (status, body, www) = get(&url, token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert_eq!(www.as_deref(), Some("Bearer"));
            assert_eq!(body, "missing or wrong bearer token\n");
        }
    }
    let (status, body, _) = get(&format!("{base}/debug/pprof/cmdline"), Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get(&format!("{base}/metrics"), Some("s3cret")).await;
    assert_eq!(status, 200);
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
