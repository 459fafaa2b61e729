//! What labels cost: setting and restoring a label set around one poll
//! (a ready future polled bare and through `labels::scope`), and the route
//! layer's cost per request (an axum router called with and without it).
//!
//! ```text
//! cargo bench -p profscope-benches --bench labels
//! ```

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use profscope_agent::labels::{self, LabelSet, Scoped};
use tower::ServiceExt;

/// Polls `fut` once (it is ready).
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(fut).poll(&mut cx)
}

fn per_poll(c: &mut Criterion) {
    let set = LabelSet::new([("route", "/checkout"), ("tenant", "acme")]);
    let mut group = c.benchmark_group("poll");
    group.bench_function("bare", |b| {
        b.iter(|| poll_once(std::hint::black_box(std::future::ready(1u64))))
    });
    group.bench_function("labelled", |b| {
        b.iter(|| {
            poll_once(Scoped::new(
                set.clone(),
                std::hint::black_box(std::future::ready(1u64)),
            ))
        })
    });
    // Under an outer set (a tracing span's, a task group's): the wrapper
    // adds its set to it. A fresh wrapper finds the combination in the
    // shared table; later polls of the same wrapper compare one id.
    let outer = LabelSet::new([("method", "GET")]);
    group.bench_function("labelled under an outer set, fresh wrapper", |b| {
        labels::with(outer.pairs().iter().cloned(), || {
            b.iter(|| {
                poll_once(Scoped::new(
                    set.clone(),
                    std::hint::black_box(std::future::ready(1u64)),
                ))
            })
        })
    });
    group.bench_function("labelled under an outer set, same wrapper", |b| {
        labels::with(outer.pairs().iter().cloned(), || {
            let mut cx = Context::from_waker(Waker::noop());
            let mut fut = pin!(Scoped::new(
                set.clone(),
                std::future::poll_fn(|_| Poll::Ready(1u64))
            ));
            b.iter(|| std::hint::black_box(fut.as_mut().poll(&mut cx)))
        })
    });
    group.finish();
    // The interning a scope does when built (once per task, not per poll).
    c.bench_function("scope/build", |b| {
        b.iter(|| labels::scope([("route", "/checkout")], std::future::ready(1u64)))
    });
}

fn per_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let agent = rt.block_on(async { profscope_agent::Agent::builder().build().expect("agent") });
    let plain: Router = Router::new().route("/checkout", get(|| async { "ok" }));
    let layered: Router = Router::new()
        .route("/checkout", get(|| async { "ok" }))
        .route_layer(agent.route_metrics_layer());
    let request = || {
        axum::http::Request::builder()
            .uri("/checkout")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let mut group = c.benchmark_group("request");
    group.bench_function("without route layer", |b| {
        b.iter(|| rt.block_on(plain.clone().oneshot(request())))
    });
    group.bench_function("with route layer", |b| {
        b.iter(|| rt.block_on(layered.clone().oneshot(request())))
    });
    group.finish();
}

criterion_group!(benches, per_poll, per_request);
criterion_main!(benches);
