//! `profscope serve`: the library's web UI on its own runtime, with the
//! address printed and, on request, a browser opened.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use profscope::fetch::Token;
use profscope::serve::{ServeOptions, serve_until_with};
use profscope::store::Store;

/// Serves the web UI on `addr` until interrupted (Ctrl-C). With `open`,
/// the page is also opened in the default browser; captures send `token`.
pub(crate) fn run(store: Store, addr: SocketAddr, open: bool, token: Option<Token>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("profscope-serve")
        .enable_all()
        .build()
        .context("runtime")?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}/");
        println!(
            "profscope serve: {url}   (store {}; Ctrl-C to stop)",
            store.dir().display()
        );
        if !local.ip().is_loopback() {
            eprintln!(
                "warning: {local} is not a loopback address: anyone who can reach it can read \
                 and delete snapshots and make this machine fetch URLs"
            );
        }
        if open {
            open_browser(&url);
        }
        serve_until_with(store, listener, ServeOptions::with_token(token), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    });
    // A capture still running on a blocking thread must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

pub(super) fn open_browser(url: &str) {
    let cmd = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(cmd)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("could not open a browser ({cmd}: {e}); open {url} yourself");
    }
}
