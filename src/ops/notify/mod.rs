//! Sending one notification to one sink, and the operator's `cortex notify` views. Each attempt
//! is bounded by the sink's timeout and ends in an [`Outcome`]: acknowledged, or an error to
//! retry. Secrets are put into requests here and nowhere else; what a sink answers is masked of
//! every secret before it is kept, logged or shown.
//!
//! - [`http`]: the webhook (JSON POST, per-sink headers) and Signal (`signal-cli-rest-api`'s
//!   `POST /v2/send`) sinks, over `ureq` with rustls (ring) and the webpki roots.
//! - [`email`]: SMTP with STARTTLS (or implicit TLS, or none on a local relay) over `lettre`.
//! - [`command`]: a command hook: argv, the body as JSON on stdin, never a shell.
//! - [`list`]: `cortex notify list` and the status summary.

pub(crate) mod command;
pub(crate) mod email;
pub(crate) mod http;
pub mod list;

use crate::domain::notify::config::{NotifyConfig, Sink, SinkKind};
use crate::domain::notify::secrets::Secrets;
use serde_json::Value;
use std::time::Duration;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The sink acknowledged the notification.
    pub acknowledged: bool,
    /// What it answered (status line and the start of the body, or why there was no answer),
    /// secrets masked.
    pub answer: String,
}

/// The longest answer kept, in bytes.
const ANSWER_BYTES: usize = 2048;

fn kept(secrets: &Secrets, s: &str) -> String {
    let masked = secrets.mask(s);
    let mut end = masked.len().min(ANSWER_BYTES);
    while !masked.is_char_boundary(end) {
        end -= 1;
    }
    masked[..end].to_string()
}

/// Sends `body` (its `idempotency_key` is the notification's) to `sink` once, within
/// `timeout`.
pub fn send(
    home: &crate::store::home::Home,
    sink: &Sink,
    secrets: &Secrets,
    body: &Value,
    timeout: Duration,
) -> Outcome {
    let key = body.get("idempotency_key").and_then(Value::as_str).unwrap_or("").to_string();
    let result = match sink.kind {
        SinkKind::Webhook => http::webhook(home, sink, secrets, &key, body, timeout),
        SinkKind::Signal => http::signal(home, sink, secrets, &key, body, timeout),
        SinkKind::Email => email::send(home, sink, secrets, &key, body, timeout),
        SinkKind::Command => command::run(sink, &key, body, timeout),
    };
    match result {
        Ok((acknowledged, answer)) => Outcome { acknowledged, answer: kept(secrets, &answer) },
        Err(e) => Outcome { acknowledged: false, answer: kept(secrets, &e) },
    }
}

/// `cortex notify test [--sink NAME]`: sends a test message to each sink (or the one named)
/// now, outside the outbox, and returns (sink, outcome) pairs.
pub fn test(store: &crate::store::Store, only: Option<&str>) -> crate::base::error::Result<Vec<(String, Outcome)>> {
    use crate::base::error::Error;
    let Some((config, secrets)) = NotifyConfig::load_checked(store)? else {
        return Err(Error::refused(format!(
            "no {}: notifications are not configured (see the README, \"Alerts\")",
            store.home().relative(&store.path(crate::store::files::NOTIFICATIONS)).display()
        )));
    };
    if let Some(name) = only
        && !config.sinks.contains_key(name)
    {
        return Err(Error::refused(format!(
            "no sink {name:?} in notifications.json (sinks: {})",
            config.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let now = crate::base::clock::now();
    let mut out = Vec::new();
    for (name, sink) in config.sinks.iter().filter(|(n, _)| only.is_none_or(|o| o == n.as_str())) {
        let key = format!("ntf-test-{}-{}", now.timestamp_micros(), std::process::id());
        let body = crate::domain::notify::body::test_body(name, &key, now);
        out.push((name.clone(), send(store.home(), sink, &secrets, &body, config.timeout(sink))));
    }
    Ok(out)
}
