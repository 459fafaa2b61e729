//! Labels that follow the task, the three ways: the route layer
//! (`route=`), a task group (`task_group=`), `tracing` span fields
//! (`tenant=`) and `labels::scope` (`job=`).
//!
//! ```text
//! cargo run --release -p profscope-examples --example labels -- --addr 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/checkout?tenant=acme' &
//! curl -o cpu.pb.gz 'http://127.0.0.1:3000/debug/pprof/profile?seconds=10'
//! go tool pprof -tags cpu.pb.gz
//! go tool pprof -top -tagfocus route=/checkout cpu.pb.gz
//! ```

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use profscope_agent::labels;
use profscope_examples::{ExampleArgs, hash_work};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

profscope_agent::jemalloc_profiling!();

#[derive(serde::Deserialize)]
struct Tenant {
    tenant: Option<String>,
}

#[tokio::main]
async fn main() {
    let args = ExampleArgs::from_env();
    let addr = args.addr_or(([127, 0, 0, 1], 3000).into());
    // 3. tracing: the `tenant` field of any span labels what runs inside it.
    let subscriber = tracing_subscriber::registry().with(labels::TracingLayer::new(["tenant"]));
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("labels: {e}");
    }
    let agent = match args.agent_builder().build() {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("labels: {e}");
            std::process::exit(1);
        }
    };
    // 2. A task group: a background job labelled task_group=reindex.
    // (A reference: `tracing::Instrument` would otherwise claim `instrument`.)
    let reindex = &agent.task_group("reindex");
    tokio::spawn(reindex.instrument(async {
        loop {
            // 4. A scope inside it adds job=batch for this part only.
            labels::scope([("job", "batch")], async {
                tokio::task::spawn_blocking(|| hash_work(50)).await.ok();
            })
            .await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }));
    // 1. The route layer: every request labelled route=<matched path>.
    let app = Router::new()
        .route(
            "/checkout",
            get(|Query(t): Query<Tenant>| async move {
                let tenant = t.tenant.unwrap_or_else(|| "anonymous".into());
                async { format!("{:02x}\n", hash_work(200)[0]) }
                    .instrument(tracing::info_span!("checkout", tenant = tenant.as_str()))
                    .await
            }),
        )
        .route(
            "/search",
            get(|| async { format!("{:02x}\n", hash_work(50)[0]) }),
        )
        .route_layer(agent.route_metrics_layer())
        .merge(agent.router());
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("labels: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on http://{}",
        listener.local_addr().unwrap_or(addr)
    );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("labels: {e}");
        std::process::exit(1);
    }
}
