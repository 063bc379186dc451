//! `coordination/config/notifications.json`: the sinks (where a notification goes) and the
//! rules (which events make one), loaded through the store (schema-checked, a bad file
//! quarantined and named), then checked for what a schema cannot say: every sink a rule names
//! exists, the secrets each sink names are in the secrets file, quiet hours' time zone is known.

use super::secrets::Secrets;
use crate::base::error::{Error, Result};
use crate::store::Store;
use crate::store::events::Severity;
use crate::store::files::NOTIFICATIONS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyConfig {
    /// The 0600 file of `name=value` secrets (relative to the home, or absolute).
    #[serde(default)]
    pub secrets_file: Option<String>,
    /// How long a notification is retried before it becomes `notification_failed`.
    #[serde(default = "default_deadline")]
    pub deadline_seconds: f64,
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_seconds: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_seconds: f64,
    /// How long one attempt may take (connect, send, answer).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    pub sinks: BTreeMap<String, Sink>,
    pub rules: Vec<Rule>,
}

fn default_deadline() -> f64 {
    3600.0
}
fn default_backoff_initial() -> f64 {
    5.0
}
fn default_backoff_max() -> f64 {
    300.0
}
fn default_timeout() -> f64 {
    10.0
}

/// Hours in which notifications below `min_severity` wait (they are sent when the quiet hours
/// end; their deadline counts from then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuietHours {
    /// `HH:MM`, local time of `timezone`.
    pub start: String,
    pub end: String,
    /// An IANA name (`Europe/Berlin`); UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// What is sent even in quiet hours (default: critical).
    #[serde(default = "default_quiet_severity")]
    pub min_severity: Severity,
}

fn default_quiet_severity() -> Severity {
    Severity::Critical
}

/// The kind of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Webhook,
    Signal,
    Email,
    Command,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Signal => "signal",
            SinkKind::Email => "email",
            SinkKind::Command => "command",
        }
    }
}

/// How an email sink talks to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required: no fallback to plain text).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS (a relay on localhost).
    None,
}

/// One sink. Which fields apply depends on `type` (the schema requires each kind's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sink {
    #[serde(rename = "type")]
    pub kind: SinkKind,
    #[serde(default)]
    pub deadline_seconds: Option<f64>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// webhook, signal: the URL (`https://…`), or `url_secret`: the secret holding it (a Slack
    /// webhook URL is itself a credential).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_secret: Option<String>,
    /// webhook: extra headers, and headers whose values are secrets (`{"Authorization": "name"}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_headers: BTreeMap<String, String>,
    /// signal: the sending number and the recipients.
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    /// email.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: Option<SmtpTls>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// email, webhook: a PEM file of extra trusted roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// command: the program and its arguments (never a shell).
    #[serde(default)]
    pub argv: Vec<String>,
}

/// One rule: which events, to which sinks, how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// Event types (`failure_notification`, `daemon_failed`…); empty: any type.
    #[serde(default)]
    pub events: Vec<String>,
    /// The least severity that matches (default: warning).
    #[serde(default = "default_rule_severity")]
    pub min_severity: Severity,
    /// Only events about these worker types (`data.worker_type`); empty: any.
    #[serde(default)]
    pub worker_types: Vec<String>,
    /// Only events about these schedules (`data.schedule_id` or `data.name`); empty: any.
    #[serde(default)]
    pub schedules: Vec<String>,
    pub sinks: Vec<String>,
    /// After a notification, matches within this many seconds are counted, not sent.
    #[serde(default)]
    pub throttle_seconds: f64,
    /// Matches within this many seconds of the first are sent as one notification.
    #[serde(default)]
    pub digest_seconds: f64,
    /// Whether the file's quiet hours apply to this rule (default true).
    #[serde(default = "yes")]
    pub quiet_hours: bool,
}

fn default_rule_severity() -> Severity {
    Severity::Warning
}
fn yes() -> bool {
    true
}

impl Sink {
    /// The names of the secrets this sink needs.
    pub fn secret_names(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> = Vec::new();
        if let Some(s) = &self.url_secret {
            out.push(("url_secret", s));
        }
        if let Some(s) = &self.password_secret {
            out.push(("password_secret", s));
        }
        for s in self.secret_headers.values() {
            out.push(("secret_headers", s));
        }
        out
    }
}

impl NotifyConfig {
    /// Loads the file: None when there is none (notifications are off). A file that does not
    /// parse or breaks its schema is quarantined and the error names it and the field.
    pub fn load(store: &Store) -> Result<Option<NotifyConfig>> {
        let path = store.path(NOTIFICATIONS);
        match store.read_value(NOTIFICATIONS)? {
            None => Ok(None),
            Some(v) => store.decode(&path, v).map(Some),
        }
    }

    /// What is wrong beyond the schema, each problem naming the field (`rules[0].sinks`…);
    /// `secrets` is the loaded secrets file (None: it could not be read, reported apart).
    pub fn problems(&self, secrets: Option<&Secrets>) -> Vec<String> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                out.push(format!("rules[{i}].name: {:?} is used by an earlier rule; names must be unique", r.name));
            }
            for s in &r.sinks {
                if !self.sinks.contains_key(s) {
                    out.push(format!(
                        "rules[{i}].sinks: no sink {s:?} (sinks: {})",
                        self.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        if let Some(q) = &self.quiet_hours
            && let Some(tz) = &q.timezone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            out.push(format!("quiet_hours.timezone: {tz:?} is not a known time zone (e.g. Europe/Berlin, UTC)"));
        }
        if self.backoff_max_seconds < self.backoff_initial_seconds {
            out.push("backoff_max_seconds: is below backoff_initial_seconds".into());
        }
        for (name, sink) in &self.sinks {
            let needed = sink.secret_names();
            if !needed.is_empty() && self.secrets_file.is_none() {
                out.push(format!("sinks.{name}: names secrets but secrets_file is not set"));
            }
            if let Some(secrets) = secrets {
                for (field, secret) in needed {
                    if secrets.get(secret).is_none() {
                        out.push(format!("sinks.{name}.{field}: no secret {secret:?} in the secrets file"));
                    }
                }
            }
            if sink.kind == SinkKind::Email && sink.username.is_some() != sink.password_secret.is_some() {
                out.push(format!("sinks.{name}: username and password_secret go together"));
            }
            if sink.kind == SinkKind::Email && sink.tls == Some(SmtpTls::None) && sink.password_secret.is_some() {
                out.push(format!("sinks.{name}.tls: \"none\" would send the password in clear; use starttls or tls"));
            }
            if sink.kind == SinkKind::Command && !sink.argv[0].starts_with('/') {
                out.push(format!(
                    "sinks.{name}.argv[0]: {:?} is not an absolute path (the hook runs without a shell or PATH search)",
                    sink.argv[0]
                ));
            }
            for h in sink.headers.keys() {
                let lower = h.to_ascii_lowercase();
                if ["authorization", "proxy-authorization", "cookie"].contains(&lower.as_str())
                    || ["token", "secret", "api-key", "apikey", "password"].iter().any(|w| lower.contains(w))
                {
                    out.push(format!(
                        "sinks.{name}.headers.{h}: looks like a credential; name it in secret_headers and put its value in the secrets file"
                    ));
                }
            }
            if let Some(url) = &sink.url
                && url
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or("").contains('@'))
            {
                out.push(format!(
                    "sinks.{name}.url: holds a user name or password; use url_secret and the secrets file"
                ));
            }
            if let Some(url) = &sink.url
                && url.starts_with("http://")
                && !is_loopback_url(url)
                && (!sink.secret_headers.is_empty() || sink.kind == SinkKind::Signal)
            {
                out.push(format!("sinks.{name}.url: plain http to a remote host would expose the message; use https"));
            }
        }
        out
    }

    /// Loads the secrets file the config names (an empty set when it names none).
    pub fn secrets(&self, store: &Store) -> Result<Secrets> {
        match &self.secrets_file {
            None => Ok(Secrets::default()),
            Some(p) => Secrets::load(&store.home().configured_path(p)),
        }
    }

    /// Loads the file, its secrets, and checks both: what the daemon runs with, and what
    /// `cortex config check` and `cortex notify test` report. An error names the file and field.
    pub fn load_checked(store: &Store) -> Result<Option<(NotifyConfig, Secrets)>> {
        let Some(config) = NotifyConfig::load(store)? else { return Ok(None) };
        let secrets = config.secrets(store)?;
        let problems = config.problems(Some(&secrets));
        if !problems.is_empty() {
            return Err(Error::Config { path: Some(store.path(NOTIFICATIONS)), detail: problems.join("; ") });
        }
        Ok(Some((config, secrets)))
    }

    /// The deadline of a notification to `sink`.
    pub fn deadline(&self, sink: &Sink) -> std::time::Duration {
        secs(sink.deadline_seconds.unwrap_or(self.deadline_seconds))
    }

    /// How long one attempt to `sink` may take.
    pub fn timeout(&self, sink: &Sink) -> std::time::Duration {
        secs(sink.timeout_seconds.unwrap_or(self.timeout_seconds))
    }
}

/// Seconds as a duration (negative or NaN: zero).
pub fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(if s.is_finite() && s > 0.0 { s.min(1e9) } else { 0.0 })
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_json_are_refused() {
        let c: NotifyConfig = serde_json::from_value(serde_json::json!({"sinks": {
            "a": {"type": "webhook", "url": "https://u:p@example.org/x", "headers": {"Authorization": "Bearer x", "X-Team": "ops"}},
            "b": {"type": "webhook", "url": "https://example.org/x?a=b@c", "headers": {"X-Api-Key": "k"}}
        }, "rules": []}))
        .unwrap();
        let p = c.problems(None).join("\n");
        assert!(p.contains("sinks.a.url: holds a user name"), "{p}");
        assert!(p.contains("sinks.a.headers.Authorization: looks like a credential"), "{p}");
        assert!(!p.contains("X-Team"), "{p}");
        assert!(!p.contains("sinks.b.url"), "an @ in the query is not userinfo: {p}");
        assert!(p.contains("sinks.b.headers.X-Api-Key"), "{p}");
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:8080/v2/send"));
        assert!(is_loopback_url("http://localhost/x"));
        assert!(is_loopback_url("http://[::1]:9/x"));
        assert!(!is_loopback_url("http://example.com/x"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example/x"));
    }
}
