//! The api daemon (`cortex-api`): the HTTP API on `[api] bind` (127.0.0.1:8900 by default, env
//! `CORTEX_API_BIND`). It reads coordination files through [`crate::ops::status`] and changes state
//! only through the library operations the CLI uses.
//!
//! - [`http`]: the HTTP/1.1 server (reactor + bounded handler pool, limits, timeouts).
//! - [`crate::store::api_tokens`]: bearer tokens from `[api] tokens_file` (operate and read-only kinds).
//! - [`policy`]: who may call what — the `Host`/`Origin` checks and the access kinds.
//! - [`commit`]: the scheduler's group commit (one committer thread batches pauses/resumes).
//! - [`routes`]: the endpoints.
//! - [`dashboard`]: the web page (`GET /` for a browser) and its embedded files.
//! - [`stream`]: the open Server-Sent Events streams (one thread writes them all).
//! - [`feed`]: what the streams carry (event log lines, status changes), computed once.
//! - [`overview`], [`tasks`], [`actions`]: the endpoints the dashboard reads and acts through.

pub(crate) mod actions;
pub(crate) mod commit;
pub(crate) mod dashboard;
pub(crate) mod feed;
pub mod http;
pub(crate) mod overview;
pub(crate) mod policy;
pub(crate) mod routes;
pub(crate) mod stream;
pub(crate) mod task_index;
pub(crate) mod task_rows;
pub(crate) mod tasks;

use crate::base::error::{Error, Result};
use crate::ops::status::StatusReader;
use crate::store::api_tokens::{Tokens, load_tokens};
use crate::store::config::Config;
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Checks the listen address against the tokens: a non-loopback address needs tokens.
pub fn check_bind(addr: &SocketAddr, tokens: &Tokens) -> Result<()> {
    if !addr.ip().is_loopback() && tokens.is_empty() {
        return Err(Error::refused(format!(
            "refusing to listen on {addr} without API tokens: anyone who can reach it could pause the scheduler, \
             cancel dispatches and read task output. Set [api] tokens_file (a 0600 file of name:token lines) or bind to 127.0.0.1"
        )));
    }
    Ok(())
}

/// Binds the listen socket, with an error that says what to do.
pub fn bind(addr: &str) -> Result<TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|_| Error::Config {
        path: None,
        detail: format!("[api] bind: {addr:?} is not an address:port such as 127.0.0.1:8900"),
    })?;
    let listener = TcpListener::bind(parsed).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: find it with `ss -ltnp`, or set [api] bind / CORTEX_API_BIND)"
        } else {
            ""
        };
        Error::System { action: format!("listen on {addr}"), source: e, hint }
    })?;
    // std listens with a queue of 128: a flood of connections fills it, and a normal client's
    // connection attempt is then dropped and retried by its kernel a whole second later. Listen
    // again with the system's maximum (net.core.somaxconn; 4096 by default) — on Linux this
    // only resizes the queue of the socket already listening.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXALLOWABLE)
        .map_err(|e| Error::system(format!("enlarge the listen queue on {addr}"), e.into()))?;
    Ok(listener)
}

/// The server limits from `[api]`.
pub fn limits(config: &Config) -> http::Limits {
    let timeout = Duration::from_secs(config.api.request_timeout_seconds.max(1));
    http::Limits {
        max_body: config.api.max_body_bytes as usize,
        request_timeout: timeout,
        idle_timeout: timeout,
        threads: config.api.threads.max(1) as usize,
        max_connections: config.api.max_connections.max(1) as usize,
    }
}

/// The api daemon's loop: load tokens, check the address, serve until SIGTERM.
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    crate::base::heap::keep_large_allocations_mapped();
    let tokens = load_tokens(&ctx.home, &ctx.config)?;
    let addr_text = ctx.config.api_bind();
    let addr: SocketAddr = addr_text.parse().map_err(|_| Error::Config {
        path: None,
        detail: format!("[api] bind / CORTEX_API_BIND: {addr_text:?} is not an address:port such as 127.0.0.1:8900"),
    })?;
    check_bind(&addr, &tokens)?;
    let listener = bind(&addr_text)?;
    let local = listener.local_addr().map_err(|e| Error::system(format!("read the address of {addr_text}"), e))?;
    let site = policy::Site::new(local, &ctx.config.api.allowed_hosts);
    let reader = Arc::new(StatusReader::new(ctx.store.clone(), ctx.config.clone()));
    let auth_note = if tokens.is_empty() {
        "no tokens (loopback only; reads, pause/resume and cancel open, other changes refused)".to_string()
    } else {
        format!("bearer tokens required for changes and task reads ({})", tokens.names().join(", "))
    };
    let committer = commit::Committer::start(ctx.store.clone())
        .map_err(|e| Error::system("start the scheduler committer thread", e))?;
    let hub = stream::Hub::start().map_err(|e| Error::system("start the event streams thread", e))?;
    let failed = Arc::new(overview::FailedWindow::default());
    let feed = feed::Feed::start(reader.clone(), hub.clone(), failed.clone())?;
    let app = Arc::new(routes::App {
        reader,
        tokens,
        site,
        committer,
        hub: hub.clone(),
        feed,
        live_tasks: Default::default(),
        failed,
    });
    let server = http::Server::start(listener, limits(&ctx.config), app)
        .map_err(|e| Error::system(format!("start the API server on {addr_text}"), e))?;
    tracing::info!(addr = %server.local_addr(), "API listening; {auth_note}");
    ctx.mark_ready()?;
    loop {
        if let Wake::Shutdown(_) = ctx.wait(None) {
            break;
        }
    }
    tracing::info!("API stopping");
    server.stop();
    hub.stop();
    Ok(())
}
