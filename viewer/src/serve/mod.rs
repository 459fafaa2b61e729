//! The local web UI over the snapshot store and live agents (`profscope serve`).
//!
//! Server-rendered HTML pages with one small script and one stylesheet
//! compiled into the binary; the pages fetch nothing from the network (a
//! Content-Security-Policy of `'self'` makes the browser enforce it):
//!
//! | path | page |
//! |---|---|
//! | `GET /` | stored incidents, then snapshots grouped by source (an incident's by incident), newest first; relabel, delete, pick two to diff, capture |
//! | `GET /snapshot/{id}?type=NAME&icicle=0&s=RE&focus=PATH&short=&hide=&my=&mydir=DIR&tag=KEY=RE&notag=KEY=RE&by=KEY` | interactive icicle (inline `<svg>`: search, zoom, flip to a flame graph), peek and source panes, label filters, the by-label and top tables (`page_query.rs` reads the query) |
//! | `GET /snapshot/{id}/peek?fn=NAME&…` | `peek` and `list` of one function under the page's settings (JSON) |
//! | `GET /snapshot/{id}/profile.pb.gz` | the stored profile |
//! | `POST /snapshot/{id}/label`, `POST /snapshot/{id}/delete` | relabel (form field `label`), delete |
//! | `GET /diff?base=ID&new=ID&type=NAME&normalize=1` | differential flamegraph and the delta table of `profscope diff` |
//! | `GET /incident/{id}?type=NAME` | a stored incident (`profscope incidents URL`) as its heap diff: at the trigger vs before the window |
//! | `GET /capture`, `POST /capture` | capture form (`url`, `kind`, `seconds`, `label`) → progress page |
//! | `GET /capture/{job}`, `GET /capture/{job}/status` | progress (HTML, JSON); redirects to the snapshot when done |
//!
//! Ids are checked with [`is_valid_id`](crate::store::is_valid_id) before any
//! file is touched: anything that could leave the store (`..`, `/`, encoded
//! slashes, absolute paths) is a 400, an unknown id a 404. Bound to a
//! loopback address (the default), the server also refuses requests whose
//! `Host` is not a loopback name (DNS rebinding), and every POST whose
//! `Origin` is another site.
//!
//! Front ends call [`run`] (blocking, until Ctrl-C) or, inside their own
//! runtime, [`serve_until`] with a bound listener; [`router`] gives the
//! bare `axum::Router`.

mod capture;
mod flame;
mod html;
mod page_query;
mod pages;
mod snapshot;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::Error;
use crate::fetch::Token;
use crate::store::Store;

/// Settings of the web UI beyond its store and address.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The bearer token captures from live agents send (never shown on a page).
    pub token: Option<Token>,
}

impl ServeOptions {
    /// Options whose captures send `token`.
    pub fn with_token(token: Option<Token>) -> Self {
        ServeOptions { token }
    }
}

/// Shared state of the handlers.
#[derive(Debug, Clone)]
struct AppState {
    store: Store,
    captures: Arc<capture::Captures>,
    /// The profile the last snapshot page loaded.
    loaded: Arc<snapshot::LastLoaded>,
    /// Only loopback `Host` names are accepted (the server is bound to a
    /// loopback address).
    loopback: bool,
    options: Arc<ServeOptions>,
}

/// Serves the web UI on an already bound `listener` until `shutdown`
/// completes, then finishes the requests in flight. This is what tests and
/// the demo use inside their own tokio runtime:
///
/// ```no_run
/// # async fn f() -> profscope::Result<()> {
/// let store = profscope::store::Store::open_default()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// println!("http://{}/", listener.local_addr().unwrap());
/// profscope::serve::serve_until(store, listener, std::future::pending()).await
/// # }
/// ```
pub async fn serve_until(
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    serve_until_with(store, listener, ServeOptions::default(), shutdown).await
}

/// [`serve_until`] with [`ServeOptions`] (a token for captures).
pub async fn serve_until_with(
    store: Store,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let loopback = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(true);
    let app = router_with(store, loopback, options);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Server(e.to_string()))
}

/// The web UI as an axum `Router` (state included), for embedding. It
/// assumes a loopback bind: requests must name a loopback `Host`.
pub fn router(store: Store) -> Router {
    router_with(store, true, ServeOptions::default())
}

fn router_with(store: Store, loopback: bool, options: ServeOptions) -> Router {
    let state = AppState {
        store,
        captures: Arc::new(capture::Captures::default()),
        loaded: Arc::new(snapshot::LastLoaded::default()),
        loopback,
        options: Arc::new(options),
    };
    Router::new()
        .route("/", get(pages::list))
        .route("/snapshot/{id}", get(snapshot::page))
        .route("/snapshot/{id}/profile.pb.gz", get(pages::download))
        .route("/snapshot/{id}/peek", get(snapshot::peek))
        .route("/snapshot/{id}/label", post(pages::relabel))
        .route("/snapshot/{id}/delete", post(pages::delete))
        .route("/diff", get(pages::diff))
        .route("/incident/{id}", get(pages::incident))
        .route("/capture", get(capture::form).post(capture::start))
        .route("/capture/{job}", get(capture::progress))
        .route("/capture/{job}/status", get(capture::status))
        .route("/assets/{name}", get(asset))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Everything a page handler can answer besides the page itself; one
/// status and one HTML error page each.
#[derive(Debug)]
pub(crate) enum PageError {
    /// 400: a malformed id, parameter or form field.
    BadRequest(String),
    /// 403: a cross-site POST or a foreign `Host`.
    Forbidden(String),
    /// 404: no such snapshot, capture or page.
    NotFound(String),
    /// 429: too many captures running.
    TooMany(String),
    /// 502: the agent being captured from failed.
    BadGateway(String),
    /// 500: the store or a renderer failed.
    Internal(String),
}

impl PageError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            PageError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            PageError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            PageError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            PageError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "Too many captures"),
            PageError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "Capture failed"),
            PageError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }

    fn message(&self) -> &str {
        match self {
            PageError::BadRequest(m)
            | PageError::Forbidden(m)
            | PageError::NotFound(m)
            | PageError::TooMany(m)
            | PageError::BadGateway(m)
            | PageError::Internal(m) => m,
        }
    }

    /// Maps a library error from working on user input: bad ids, sample
    /// types and incompatible profiles are the request's fault.
    fn from_input(e: impl Into<Error>) -> Self {
        let e = e.into();
        match e {
            Error::Profile(
                profscope_profile::Error::SampleType { .. }
                | profscope_profile::Error::Regex { .. }
                | profscope_profile::Error::Tag { .. },
            )
            | Error::Incompatible(_) => PageError::BadRequest(e.to_string()),
            Error::Store(ref m) if m.contains("not a valid snapshot id") => {
                PageError::BadRequest(e.to_string())
            }
            Error::NotFound(_) => PageError::NotFound(e.to_string()),
            Error::In { inner, origin } => match PageError::from_input(*inner) {
                PageError::BadRequest(m) => PageError::BadRequest(format!("{origin}: {m}")),
                PageError::NotFound(m) => PageError::NotFound(format!("{origin}: {m}")),
                other => PageError::Internal(format!("{origin}: {}", other.message())),
            },
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title) = self.status();
        let body = format!(
            "<h1>{} {}</h1>\n<p class=\"error\">{}</p>\n<p><a href=\"/\">Back to the snapshots</a></p>\n",
            status.as_u16(),
            title,
            html::esc(self.message())
        );
        (status, html::page(title, "", &body)).into_response()
    }
}

async fn not_found(req: Request) -> PageError {
    PageError::NotFound(format!("no page at {}", req.uri().path()))
}

/// Runs blocking work (file reads, decoding, rendering) off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PageError::Internal(format!("worker: {e}")))?
}

const CSS: &str = include_str!("../../assets/serve.css");
const JS: &str = include_str!("../../assets/serve.js");
const ICON: &str = include_str!("../../assets/icon.svg");

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (ty, body) = match name.as_str() {
        "serve.css" => ("text/css; charset=utf-8", CSS),
        "serve.js" => ("text/javascript; charset=utf-8", JS),
        "icon.svg" => ("image/svg+xml", ICON),
        _ => return PageError::NotFound(format!("no asset {name:?}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page's policy: everything from this origin only, no inline script.
/// (`style-src 'unsafe-inline'` is for the `<style>` inferno puts in its SVG.)
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self'; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Host and Origin checks before, security headers after every handler.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = check_request(&state, &req) {
        return e.into_response();
    }
    let mut res = next.run(req).await;
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send
    // `Origin: null` with the page's own form posts, which `check_request`
    // (rightly) refuses.
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

fn check_request(state: &AppState, req: &Request) -> Result<(), PageError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if state.loopback && !host.is_empty() && !is_loopback_host(host) {
        return Err(PageError::Forbidden(format!(
            "Host {host:?} is not a loopback name; open the page through 127.0.0.1 or localhost"
        )));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site" || v == "same-site");
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let foreign_origin = origin.is_some_and(|o| {
            let o = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .unwrap_or(o);
            o != host
        });
        if cross_site || foreign_origin {
            return Err(PageError::Forbidden(
                "cross-site form submissions are refused".into(),
            ));
        }
    }
    Ok(())
}

/// `localhost`, `*.localhost` or a loopback IP literal, with or without port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:7070",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "a.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:7070",
            "10.0.0.1:80",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
