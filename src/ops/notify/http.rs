//! The HTTP sinks. Webhook: `POST url` with the JSON body, `Content-Type: application/json`,
//! `Idempotency-Key: <key>`, the sink's `headers` and its `secret_headers` (values from the
//! secrets file). Signal: `POST <url>/v2/send` with `{"message", "number", "recipients"}` (the
//! `signal-cli-rest-api` form), the key at the end of the message. A 2xx answer acknowledges;
//! anything else (another status, no connection, a timeout) is retried. Redirects are not
//! followed (a POST is not replayed elsewhere with its headers).

use crate::domain::notify::config::Sink;
use crate::domain::notify::secrets::Secrets;
use crate::store::home::Home;
use serde_json::{Value, json};
use std::time::Duration;

fn agent(home: &Home, sink: &Sink, timeout: Duration) -> Result<ureq::Agent, String> {
    let mut cfg = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("cortex-notify/{}", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &sink.ca_file {
        let path = home.configured_path(ca);
        let pem = std::fs::read(&path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(format!("ca_file {}: no certificate in it", path.display()));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
            .build();
        cfg = cfg.tls_config(tls);
    }
    Ok(cfg.build().into())
}

fn url(sink: &Sink, secrets: &Secrets) -> Result<String, String> {
    match (&sink.url, &sink.url_secret) {
        (Some(u), _) => Ok(u.clone()),
        (None, Some(name)) => secrets.get(name).map(str::to_string).ok_or_else(|| format!("no secret {name:?}")),
        (None, None) => Err("the sink has no url".into()),
    }
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    payload: &[u8],
) -> Result<(bool, String), String> {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.send(payload) {
        Ok(mut resp) => {
            let status = resp.status();
            let text = resp.body_mut().with_config().limit(4096).read_to_vec().unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            Ok((status.is_success(), format!("HTTP {} {}", status.as_u16(), text.trim())))
        }
        Err(e) => Err(format!("no answer: {e}")),
    }
}

pub(crate) fn webhook(
    home: &Home,
    sink: &Sink,
    secrets: &Secrets,
    key: &str,
    body: &Value,
    timeout: Duration,
) -> Result<(bool, String), String> {
    let agent = agent(home, sink, timeout)?;
    let mut headers: Vec<(String, String)> = vec![("Idempotency-Key".into(), key.into())];
    headers.extend(sink.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (k, name) in &sink.secret_headers {
        let v = secrets.get(name).ok_or_else(|| format!("no secret {name:?} for header {k}"))?;
        headers.push((k.clone(), v.to_string()));
    }
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    post(&agent, &url(sink, secrets)?, &headers, &payload)
}

pub(crate) fn signal(
    home: &Home,
    sink: &Sink,
    secrets: &Secrets,
    key: &str,
    body: &Value,
    timeout: Duration,
) -> Result<(bool, String), String> {
    let agent = agent(home, sink, timeout)?;
    let base = url(sink, secrets)?;
    let endpoint = format!("{}/v2/send", base.trim_end_matches('/'));
    let title = body.get("title").and_then(Value::as_str).unwrap_or("");
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    let message = format!("{title}\n{text}\n(id {key})");
    let payload = json!({
        "message": message,
        "number": sink.number,
        "recipients": sink.recipients,
    });
    let mut headers: Vec<(String, String)> = vec![("Idempotency-Key".into(), key.into())];
    for (k, name) in &sink.secret_headers {
        let v = secrets.get(name).ok_or_else(|| format!("no secret {name:?} for header {k}"))?;
        headers.push((k.clone(), v.to_string()));
    }
    let payload = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    post(&agent, &endpoint, &headers, &payload)
}
