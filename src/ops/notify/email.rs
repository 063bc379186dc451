//! The email sink: one message over SMTP with `lettre` (blocking, no async runtime). `tls`:
//! `starttls` (the default: the connection must be upgraded, never falls back to plain text),
//! `tls` (TLS from the first byte, port 465) or `none` (a relay on localhost; refused with a
//! password). Server certificates are checked against the webpki roots, or `ca_file`. The
//! idempotency key is the `Message-ID` (`<key@cortex-notify>`) and an `X-Cortex-Notification-Key`
//! header. A 2xx answer to the message acknowledges it.

use crate::domain::notify::config::{Sink, SmtpTls};
use crate::domain::notify::secrets::Secrets;
use crate::store::home::Home;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde_json::Value;
use std::time::Duration;

pub(crate) fn send(
    home: &Home,
    sink: &Sink,
    secrets: &Secrets,
    key: &str,
    body: &Value,
    timeout: Duration,
) -> Result<(bool, String), String> {
    let host = sink.host.clone().ok_or("the sink has no host")?;
    let mode = sink.tls.unwrap_or(SmtpTls::Starttls);
    let port = sink.port.unwrap_or(match mode {
        SmtpTls::Tls => 465,
        SmtpTls::Starttls => 587,
        SmtpTls::None => 25,
    });
    let tls = match mode {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls | SmtpTls::Tls => {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(ca) = &sink.ca_file {
                let path = home.configured_path(ca);
                let pem = std::fs::read(&path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| format!("TLS set-up: {e}"))?;
            if mode == SmtpTls::Tls { Tls::Wrapper(params) } else { Tls::Required(params) }
        }
    };
    let mut transport = SmtpTransport::builder_dangerous(host).port(port).tls(tls).timeout(Some(timeout));
    if let (Some(user), Some(secret)) = (&sink.username, &sink.password_secret) {
        let password = secrets.get(secret).ok_or_else(|| format!("no secret {secret:?}"))?;
        transport = transport.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    let title = body.get("title").and_then(Value::as_str).unwrap_or("Cortex notification");
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    let subject: String = format!("[cortex] {title}").chars().filter(|c| !c.is_control()).take(200).collect();
    let from = sink.from.as_deref().unwrap_or("").parse().map_err(|e| format!("from: {e}"))?;
    let mut builder = Message::builder().from(from).subject(subject).message_id(Some(format!("<{key}@cortex-notify>")));
    for to in &sink.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    let mut message = builder
        .body(format!("{text}\n\nNotification {key}\n"))
        .map_err(|e| format!("cannot build the message: {e}"))?;
    message
        .headers_mut()
        .insert_raw(HeaderValue::new(HeaderName::new_from_ascii_str("X-Cortex-Notification-Key"), key.to_string()));
    match transport.build().send(&message) {
        Ok(resp) => {
            let said = resp.message().collect::<Vec<_>>().join(" ");
            Ok((resp.is_positive(), format!("SMTP {} {said}", resp.code())))
        }
        Err(e) => Err(format!("SMTP: {e}")),
    }
}
