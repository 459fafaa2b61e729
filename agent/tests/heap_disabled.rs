//! Without jemalloc profiling in the process, the heap endpoints answer 501
//! with how to enable it — never an empty profile.

use profscope_agent::Agent;

#[tokio::test]
async fn heap_endpoints_answer_501_with_how_to_enable() {
    let agent = Agent::builder()
        .addr("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let running = agent.spawn().await.unwrap();
    let base = format!("http://{}", running.local_addr());
    for path in [
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/heap?seconds=1",
    ] {
        let (status, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 501, "{path}: {body}");
        assert!(body.contains("jemalloc_profiling!"), "{body}");
        assert!(body.contains("`heap` feature"), "{body}");
    }
    running.shutdown().await.unwrap();
}

async fn get(url: &str) -> (u16, String) {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    })
    .await
    .unwrap()
}
