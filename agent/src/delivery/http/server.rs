//! The side port's connection loop ([`Agent::spawn`](crate::Agent::spawn),
//! [`Agent::serve`](crate::Agent::serve)). `axum::serve` sets no hyper
//! timer, so a client that opens a connection and never finishes its
//! headers would hold it forever; here each connection is served by
//! hyper's HTTP/1 builder with a timer and:
//! * a header-read timeout (`Config::header_read_timeout`): a connection
//!   that has not sent a whole request head in time is closed, idle
//!   keep-alive connections included (slow-loris);
//! * a connection cap (`Config::max_connections`): past it, a new
//!   connection gets a one-line 503 and is closed at once;
//! * a lifetime cap of the longest capture plus a minute, so a client that
//!   stops reading its response cannot hold a connection for good.
//!
//! In the merged-router case the service's own server owns all of this.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Error;

/// What bounds the connections of the side port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_lifetime: Duration,
}

/// The answer to a connection past the cap, written without waiting.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 51\r\n\
connection: close\r\nretry-after: 1\r\n\r\n\
too many connections to the profiling agent; retry\n";

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// the connections in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Refusals being answered at once; past these, a connection is just closed.
    let refusals = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(_) => {
                    // Out of file descriptors or memory: back off rather
                    // than spin; connections in flight finish meanwhile.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream, &refusals);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        let lifetime = limits.max_lifetime;
        tokio::spawn(async move {
            // Dropping the connection closes it; errors are the client's.
            let _ = tokio::time::timeout(lifetime, connection).await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection past the cap with a 503 and closes it. The request
/// is read (up to 64 KiB, for at most a second) before closing, so the
/// client gets the answer rather than a reset.
fn refuse(stream: tokio::net::TcpStream, refusals: &Arc<Semaphore>) {
    // A fresh socket's send buffer takes these bytes at once.
    let _ = stream.try_write(TOO_MANY);
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let drain = async {
            let mut read = 0;
            while read < 64 * 1024 && stream.readable().await.is_ok() {
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        drop(permit);
    });
}

/// Errors of one connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
