//! Profiles this process cannot produce answer 501 with how to enable them,
//! never an empty profile: heap without jemalloc profiling, task dumps
//! without a runtime.

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

/// Without jemalloc, `/debug/memory` still answers with what it can read
/// (RSS, smaps, thread stacks) and says jemalloc is absent.
#[tokio::test]
async fn memory_without_jemalloc_answers_with_what_it_can_read() {
    let running = Agent::builder()
        .addr("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    let (status, body) = get(&format!("{base}/debug/memory")).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["rss_bytes"].as_u64().unwrap() > 0, "{body}");
    assert!(json["thread_stacks_bytes"].as_u64().unwrap() > 0, "{body}");
    assert!(json["jemalloc"].is_null(), "{body}");
    let (status, text) = get(&format!("{base}/debug/memory?debug=1")).await;
    assert_eq!(status, 200);
    assert!(text.contains("jemalloc is not the allocator"), "{text}");
    assert!(text.contains("unexplained"), "{text}");
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

/// An agent built outside a tokio runtime has no runtime to watch: the task
/// endpoints (enabled) say so with 501, and `/debug/tokio` shows no runtime.
#[test]
fn task_dumps_without_a_runtime_answer_501() {
    let agent = Agent::builder()
        .addr("127.0.0.1:0".parse().unwrap())
        .task_dumps(true)
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt.block_on(agent.spawn()).unwrap();
    let base = format!("http://{}", running.local_addr());
    rt.block_on(async {
        for path in ["/debug/pprof/tasks", "/debug/pprof/goroutine?debug=1"] {
            let (status, body) = get(&format!("{base}{path}")).await;
            assert_eq!(status, 501, "{path}: {body}");
            assert!(body.contains("outside a tokio runtime"), "{body}");
        }
        let (status, body) = get(&format!("{base}/debug/tokio")).await;
        assert_eq!(status, 200);
        assert!(body.contains("\"runtime\":null"), "{body}");
    });
}
