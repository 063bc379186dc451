//! Delivery for real: matching and throttling, retries until a receiver answers, the deadline,
//! SIGKILL mid-delivery, hostile messages, the sinks' forms, `cortex config check`, idle cost.

use crate::receivers::{HttpReceiver, SmtpReceiver, hook_script};
use crate::support::task::{LONG, add, configure, fast_home, start, wait_finished};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const SECRET: &str = "Bearer s3cr3t-t0ken-never-logged";

/// Writes `coordination/config/notifications.json` and the 0600 secrets file it names.
fn configure_notify(h: &TestHome, mut config: Value) {
    let secrets = h.join("notify-secrets");
    std::fs::write(&secrets, format!("# notify secrets\ntoken={SECRET}\n")).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    config["secrets_file"] = json!("notify-secrets");
    std::fs::write(h.join("coordination/config/notifications.json"), serde_json::to_vec_pretty(&config).unwrap())
        .unwrap();
}

fn state(h: &TestHome) -> Value {
    std::fs::read(h.join("coordination/notify/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn outbox(h: &TestHome) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(h.join("coordination/notify/outbox")).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".json") {
            out.push(serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap());
        }
    }
    out
}

fn emit(h: &TestHome, kind: &str, severity: &str, message: &str) {
    h.cortex_ok(&["event", "emit", "--type", kind, "--severity", severity, "--message", message]);
}

/// The metrics as `GET /metrics` renders them.
fn metrics(h: &TestHome) -> String {
    let home = cortex::Home::at(h.path());
    let config = cortex::store::config::Config::load(&home).unwrap();
    cortex::ops::status::StatusReader::new(cortex::Store::new(home), config).metrics().unwrap()
}

fn health(h: &TestHome) -> cortex::ops::status::Health {
    let home = cortex::Home::at(h.path());
    let config = cortex::store::config::Config::load(&home).unwrap();
    cortex::ops::status::StatusReader::new(cortex::Store::new(home), config).health().unwrap()
}

fn webhook_sink(r: &HttpReceiver) -> Value {
    json!({"type": "webhook", "url": r.url("/hook"), "headers": {"X-Team": "ops"},
           "secret_headers": {"Authorization": "token"}})
}

#[test]
fn a_failing_worker_type_sends_one_message_then_throttles() {
    let h = fast_home();
    configure(
        &h,
        &[("retry", "failure_notification_threshold", "2"), ("retry", "failure_notification_throttle_seconds", "0")],
    );
    let r = HttpReceiver::start();
    configure_notify(
        &h,
        json!({"sinks": {"ops": webhook_sink(&r)},
               "rules": [{"name": "failing-workers", "events": ["failure_notification"], "min_severity": "error",
                          "worker_types": ["fix-worker"], "sinks": ["ops"], "throttle_seconds": 3600}]}),
    );
    let _w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let _n = start(&h, "notify");
    let ids: Vec<String> = (0..4)
        .map(|i| {
            add(&h, &["--description", &format!("f{i}"), "--type", "fix-worker", "--max-attempts", "1", "--", "false"])
        })
        .collect();
    wait_finished(&h, &ids);
    wait_until(LONG, "three failure_notification events (failures 2, 3, 4)", || {
        h.events_of("failure_notification").len() == 3
    });
    wait_until(LONG, "the notify daemon held back the second and third", || {
        state(&h)["rules"]["failing-workers"]["suppressed"] == 2
    });
    wait_until(LONG, "the first acknowledged", || r.acknowledged().len() == 1);
    wait_until(LONG, "counted in the state file", || state(&h)["counters"]["ops"]["delivered"] == 1);
    let reqs = r.requests();
    assert_eq!(reqs.len(), 1, "one message, then the throttle: {reqs:?}");
    let req = &reqs[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
    assert_eq!(req.header("authorization"), Some(SECRET), "the secret header comes from the secrets file");
    assert_eq!(req.header("x-team"), Some("ops"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = req.json();
    assert_eq!(req.header("idempotency-key"), body["idempotency_key"].as_str());
    assert_eq!(body["rule"], "failing-workers");
    assert_eq!(body["sink"], "ops");
    assert_eq!(body["events"][0]["type"], "failure_notification");
    assert_eq!(body["events"][0]["data"]["worker_type"], "fix-worker");
    assert_eq!(body["events"][0]["data"]["consecutive_failures"], 2);
    // The secret is in no file the daemon wrote: its log, its state, its outbox.
    for dir in ["logs", "coordination/notify"] {
        for e in walk(&h.join(dir)) {
            let text = String::from_utf8_lossy(&std::fs::read(&e).unwrap()).into_owned();
            assert!(!text.contains("s3cr3t"), "{} holds the secret", e.display());
        }
    }
    let list = h.cortex_ok(&["notify", "list"]);
    assert!(list.contains("[DELIVERED]") && list.contains("failing-workers → ops"), "{list}");
    let status = String::from_utf8_lossy(&h.cortex(&["status"]).stdout).into_owned();
    assert!(status.contains("notify: RUNNING"), "{status}");
    assert!(status.contains("Notifications: 0 pending, 1 delivered, 0 failed"), "{status}");
    let m = metrics(&h);
    assert!(m.contains(r#"cortex_notifications_total{sink="ops",result="delivered"} 1"#), "{m}");
    assert!(m.contains(r#"cortex_notifications_total{sink="ops",result="failed"} 0"#), "{m}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

fn fast_retries(sinks: Value, rules: Value, deadline: f64) -> Value {
    json!({"deadline_seconds": deadline, "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.4,
           "timeout_seconds": 5, "sinks": sinks, "rules": rules})
}

#[test]
fn a_receiver_answering_500_three_times_then_200_gets_the_message_once() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    r.answer_next(&[500, 500, 500]);
    configure_notify(
        &h,
        fast_retries(
            json!({"ops": webhook_sink(&r)}),
            json!([{"name": "daemons", "events": ["daemon_failed"], "sinks": ["ops"]}]),
            60.0,
        ),
    );
    let _n = start(&h, "notify");
    emit(&h, "daemon_failed", "critical", "metrics is FAILED");
    wait_until(LONG, "acknowledged after three 500s", || r.acknowledged().len() == 1);
    wait_until(LONG, "the outbox says delivered", || {
        outbox(&h).iter().any(|d| d["state"] == "delivered" && d["attempts"] == 4)
    });
    let reqs = r.requests();
    assert_eq!(reqs.iter().map(|q| q.answered).collect::<Vec<_>>(), [500, 500, 500, 200]);
    let keys: BTreeSet<&str> = reqs.iter().filter_map(|q| q.header("idempotency-key")).collect();
    assert_eq!(keys.len(), 1, "every attempt carries the same key");
    assert!(reqs.windows(2).all(|w| w[0].body == w[1].body), "every attempt sends the same body");
    // The state file follows the outbox file in the same pass.
    wait_until(LONG, "the counters", || state(&h)["counters"]["ops"]["delivered"] == 1);
    let st = state(&h);
    assert_eq!(st["counters"]["ops"]["retried"].as_u64(), Some(3));
    assert_eq!(st["pending"], 0);
    assert!(h.events_of("notification_failed").is_empty());
}

#[test]
fn a_receiver_down_past_the_deadline_gives_notification_failed() {
    let h = TestHome::new();
    let down = free_port();
    configure_notify(
        &h,
        fast_retries(
            json!({"pager": {"type": "webhook", "url": format!("http://127.0.0.1:{down}/hook")}}),
            json!([{"name": "breakers", "events": ["circuit_breaker_tripped"], "sinks": ["pager"]}]),
            1.5,
        ),
    );
    let _n = start(&h, "notify");
    let started = Instant::now();
    emit(&h, "circuit_breaker_tripped", "error", "breaker of fix-worker opened");
    wait_until(LONG, "notification_failed", || !h.events_of("notification_failed").is_empty());
    // The event comes first, then the outbox file and the state file of the same pass.
    wait_until(LONG, "counted in the state file", || state(&h)["counters"]["pager"]["failed"] == 1);
    assert!(started.elapsed() >= Duration::from_millis(1400), "not before the deadline");
    let failed = &h.events_of("notification_failed")[0];
    assert_eq!((failed["data"]["sink"].as_str(), failed["data"]["rule"].as_str()), (Some("pager"), Some("breakers")));
    assert!(failed["data"]["attempts"].as_u64().unwrap() >= 2, "retried before giving up: {failed}");
    let d = outbox(&h);
    assert_eq!((d.len(), d[0]["state"].as_str()), (1, Some("failed")), "kept, never silently dropped: {d:?}");
    let list = h.cortex_ok(&["notify", "list"]);
    assert!(list.contains("[FAILED]") && list.contains("last answer: no answer"), "{list}");
    let status = String::from_utf8_lossy(&h.cortex(&["status"]).stdout).into_owned();
    assert!(status.contains("Problem: 1 notification(s) could not be delivered"), "{status}");
    let hl = health(&h);
    assert!(!hl.healthy && hl.problems.iter().any(|p| p.contains("notification(s) could not be delivered")), "{hl:?}");
    let m = metrics(&h);
    assert!(m.contains(r#"cortex_notifications_total{sink="pager",result="failed"} 1"#), "{m}");
    let status = {
        let home = cortex::Home::at(h.path());
        let config = cortex::store::config::Config::load(&home).unwrap();
        cortex::ops::status::StatusReader::new(cortex::Store::new(home), config).system_status().unwrap()
    };
    let v = serde_json::to_value(&status).unwrap();
    assert_eq!(v["notifications"]["totals"]["pager"]["failed"], 1, "GET /status: {v}");
    assert_eq!(v["notifications"]["recent_failures"][0]["sink"], "pager", "GET /status: {v}");
    // Acknowledged, it no longer makes /health unhealthy on its own account.
    h.cortex_ok(&["event", "ack", "--all"]);
    assert!(!health(&h).problems.iter().any(|p| p.contains("could not be delivered")));
}

#[test]
fn sigkill_mid_delivery_resends_only_the_unacknowledged_with_the_same_keys() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    r.set_hold(true);
    configure_notify(
        &h,
        fast_retries(
            json!({"ops": webhook_sink(&r)}),
            json!([{"name": "deploys", "events": ["deploy_finished"], "min_severity": "info", "sinks": ["ops"]}]),
            120.0,
        ),
    );
    let n = start(&h, "notify");
    for i in 0..3 {
        emit(&h, "deploy_finished", "info", &format!("deploy {i}"));
    }
    wait_until(LONG, "the first delivery held by the receiver", || r.requests().len() == 1);
    wait_until(LONG, "all three in the outbox", || outbox(&h).len() == 3);
    n.kill9();
    r.set_hold(false);
    let held = r.requests()[0].clone();
    let _n = start(&h, "notify");
    wait_until(LONG, "three notifications acknowledged", || {
        r.acknowledged()
            .iter()
            .filter_map(|q| q.header("idempotency-key").map(str::to_string))
            .collect::<BTreeSet<_>>()
            .len()
            == 3
    });
    wait_until(LONG, "the outbox all delivered", || outbox(&h).iter().all(|d| d["state"] == "delivered"));
    let keys: BTreeSet<String> = outbox(&h).iter().map(|d| d["key"].as_str().unwrap().to_string()).collect();
    let mut bodies: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for q in r.requests() {
        let k = q.header("idempotency-key").unwrap().to_string();
        assert!(keys.contains(&k), "a request with a key the outbox does not have: {k}");
        assert_eq!(q.json()["idempotency_key"], k.as_str());
        bodies.entry(k).or_default().push(q.body.clone());
    }
    for (k, b) in &bodies {
        assert!(b.windows(2).all(|w| w[0] == w[1]), "a duplicate of {k} differs");
    }
    let held_key = held.header("idempotency-key").unwrap();
    assert_eq!(held.answered, 0, "the held request was never answered (its sender was killed)");
    assert!(bodies[held_key].len() >= 2, "the unacknowledged one is sent again with its key");
    let acked: Vec<String> =
        r.acknowledged().iter().map(|q| q.header("idempotency-key").unwrap().to_string()).collect();
    assert_eq!(acked.len(), 3, "each acknowledged once: {acked:?}");
    let messages: BTreeSet<String> =
        r.acknowledged().iter().map(|q| q.json()["events"][0]["message"].as_str().unwrap().to_string()).collect();
    assert_eq!(messages, ["deploy 0", "deploy 1", "deploy 2"].map(String::from).into_iter().collect());
}

#[test]
fn a_hostile_message_arrives_intact_as_json_and_never_reaches_a_shell() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    let hook_out = h.join("hook-out.jsonl");
    let hook = hook_script(h.path(), &hook_out);
    let marker = h.join("pwned");
    let mut message = format!(
        "quote \" apostrophe ' backslash \\ $(touch {m}) `touch {m}` ; touch {m} && touch {m} | touch {m}\n\
         second line\r\nthird\ttab \u{1b}[2J\u{1b}]0;title\u{7} \u{202e}reversed \u{0} nul?",
        m = marker.display()
    );
    message = message.replace('\u{0}', "");
    message.push_str(&"x".repeat(100 * 1024));
    configure_notify(
        &h,
        fast_retries(
            json!({"ops": webhook_sink(&r),
                   "hook": {"type": "command", "argv": [hook.to_str().unwrap(), format!("$(touch {})", marker.display())]}}),
            json!([{"name": "all", "events": ["operator_note"], "min_severity": "info", "sinks": ["ops", "hook"]}]),
            60.0,
        ),
    );
    let _n = start(&h, "notify");
    emit(&h, "operator_note", "warning", &message);
    wait_until(LONG, "the webhook got it", || r.acknowledged().len() == 1);
    wait_until(LONG, "the hook got it", || std::fs::read(&hook_out).is_ok_and(|b| b.ends_with(b"\n")));
    let body = r.acknowledged()[0].json();
    assert_eq!(body["events"][0]["message"].as_str(), Some(message.as_str()), "intact in the webhook body");
    let text = std::fs::read_to_string(&hook_out).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line on the hook's stdin");
    let hooked: Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(hooked["events"][0]["message"].as_str(), Some(message.as_str()), "intact on the hook's stdin");
    // The hook writes its key after its stdin.
    let keys_file = h.join("hook-out.jsonl.keys");
    wait_until(LONG, "the hook wrote its key", || std::fs::read(&keys_file).is_ok_and(|b| b.ends_with(b"\n")));
    let keys = std::fs::read_to_string(&keys_file).unwrap();
    assert_eq!(keys.trim(), hooked["idempotency_key"].as_str().unwrap(), "the key in the hook's environment");
    assert!(!marker.exists(), "a shell ran part of the message or of argv");
    // The title people read has no raw terminal controls.
    assert!(!body["title"].as_str().unwrap().contains('\u{1b}'), "{}", body["title"]);
}

#[test]
fn signal_and_email_sinks_and_notify_test_print_what_the_sink_answered() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    let smtp = SmtpReceiver::start();
    configure_notify(
        &h,
        fast_retries(
            json!({
                "signal": {"type": "signal", "url": r.url(""), "number": "+4915100000000",
                           "recipients": ["+4915111111111", "group.abc"]},
                "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "tls": "none",
                         "from": "cortex@example.org", "to": ["ops@example.org"]}
            }),
            json!([{"name": "zombies", "events": ["zombie_detected"], "sinks": ["signal", "mail"]}]),
            60.0,
        ),
    );
    let out = h.cortex_ok(&["notify", "test", "--sink", "signal"]);
    assert!(out.starts_with("signal: OK (HTTP 200"), "{out}");
    let req = &r.requests()[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v2/send"));
    let b = req.json();
    assert_eq!(b["number"], "+4915100000000");
    assert_eq!(b["recipients"], json!(["+4915111111111", "group.abc"]));
    assert!(b["message"].as_str().unwrap().contains("Cortex test notification"), "{b}");
    let out = h.cortex_ok(&["notify", "test", "--sink", "mail"]);
    assert!(out.starts_with("mail: OK (SMTP 250"), "{out}");
    assert_eq!(smtp.mails().len(), 1);
    let bad = h.cortex(&["notify", "test", "--sink", "nope"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("no sink \"nope\""));

    let _n = start(&h, "notify");
    emit(&h, "zombie_detected", "warning", "dispatch d-1 is a zombie");
    wait_until(LONG, "the mail", || smtp.mails().len() == 2);
    wait_until(LONG, "the signal message", || r.acknowledged().len() == 2);
    let mail = &smtp.mails()[1];
    assert_eq!(
        (mail.from.as_str(), mail.to.as_slice()),
        ("<cortex@example.org>", ["<ops@example.org>".to_string()].as_slice())
    );
    let key = outbox(&h).into_iter().find(|d| d["sink"] == "mail").unwrap()["key"].as_str().unwrap().to_string();
    assert!(mail.data.contains(&format!("Message-ID: <{key}@cortex-notify>")), "{}", mail.data);
    assert!(mail.data.contains("dispatch d-1 is a zombie"), "{}", mail.data);
    let sig = r.acknowledged()[1].json();
    assert!(sig["message"].as_str().unwrap().contains("dispatch d-1 is a zombie"), "{sig}");
}

#[test]
fn config_check_validates_rules_sinks_and_the_secrets_file() {
    let h = TestHome::new();
    configure_notify(
        &h,
        json!({"sinks": {"ops": {"type": "webhook", "url_secret": "missing"}},
               "rules": [{"name": "r", "sinks": ["ops", "nowhere"]}]}),
    );
    std::fs::set_permissions(h.join("notify-secrets"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = h.cortex(&["config", "check"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("notify-secrets") && err.contains("chmod 600"), "{err}");
    assert!(err.contains("rules[0].sinks: no sink \"nowhere\""), "{err}");
    std::fs::set_permissions(h.join("notify-secrets"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = String::from_utf8_lossy(&h.cortex(&["config", "check"]).stderr).into_owned();
    assert!(err.contains("sinks.ops.url_secret: no secret \"missing\""), "{err}");
    // The schema: a sink of an unknown type, named with its field.
    std::fs::write(
        h.join("coordination/config/notifications.json"),
        r#"{"sinks": {"x": {"type": "pager"}}, "rules": []}"#,
    )
    .unwrap();
    let out = h.cortex(&["config", "check"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("notifications.json") && err.contains("/sinks/x/type"), "{err}");
    // `cortex repair` leaves the operator's file alone and points at no default it does not have.
    let out = h.cortex(&["repair"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("notifications.json") && text.contains("fix it by hand"), "{text}");
    assert!(!text.contains("restore-defaults --file notifications.json"), "{text}");
}

/// CPU time (user + system, clock ticks) of a process.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn without_notifications_json_the_daemon_costs_nothing() {
    let h = TestHome::new();
    let n = start(&h, "notify");
    let before = cpu_ticks(n.pid());
    let home = cortex::Home::at(h.path());
    for i in 0..2000 {
        cortex::store::events::emit(
            &home,
            cortex::store::events::EventKind::DaemonFailed,
            cortex::store::events::Severity::Critical,
            "test",
            format!("event {i}"),
            Value::Null,
        )
        .unwrap();
    }
    // Its loop still turns (heartbeat marks) but it reads nothing.
    let mark = || h.read_json("run/notify.state.json")["heartbeat_at"].clone();
    let first = mark();
    wait_until(LONG, "a heartbeat after the events", || mark() != first);
    let used = cpu_ticks(n.pid()) - before;
    assert!(used <= 5, "{used} ticks of CPU for 2000 events it has no rule for");
    assert!(!h.join("coordination/notify/state.json").exists(), "nothing written");
}

/// Throughput: 1,000 matching events appended at once, each delivered to a local webhook.
/// `cargo test --test notify throughput -- --ignored --nocapture` prints the figure.
#[test]
#[ignore]
fn throughput_1000_events_to_a_local_webhook() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    configure_notify(
        &h,
        fast_retries(
            json!({"ops": {"type": "webhook", "url": r.url("/hook")}}),
            json!([{"name": "all", "events": ["load_test"], "min_severity": "info", "sinks": ["ops"]}]),
            600.0,
        ),
    );
    let _n = start(&h, "notify");
    let home = cortex::Home::at(h.path());
    let events: Vec<cortex::store::events::Event> = (0..1000)
        .map(|i| {
            cortex::store::events::Event::new(
                cortex::store::events::EventKind::parse("load_test"),
                cortex::store::events::Severity::Warning,
                "test",
                format!("event {i}"),
            )
        })
        .collect();
    let started = Instant::now();
    cortex::store::events::append_many(&home, &events).unwrap();
    wait_until(Duration::from_secs(600), "1000 delivered", || r.acknowledged().len() == 1000);
    let took = started.elapsed();
    println!(
        "throughput: 1000 events matched and delivered in {:.2} s ({:.0} notifications/s)",
        took.as_secs_f64(),
        1000.0 / took.as_secs_f64()
    );
    let keys: BTreeSet<String> =
        r.acknowledged().iter().map(|q| q.header("idempotency-key").unwrap().to_string()).collect();
    assert_eq!(keys.len(), 1000);
}

#[test]
fn email_goes_over_starttls_to_a_server_that_requires_it() {
    let h = TestHome::new();
    let smtp = SmtpReceiver::start_tls();
    std::fs::write(h.join("smtp-ca.pem"), &smtp.cert_pem).unwrap();
    let mail = |ca: Option<&str>| {
        let mut sink = json!({"type": "email", "host": "127.0.0.1", "port": smtp.port, "tls": "starttls",
                              "from": "cortex@example.org", "to": ["ops@example.org"]});
        if let Some(ca) = ca {
            sink["ca_file"] = json!(ca);
        }
        sink
    };
    let rules = json!([{"name": "r", "events": ["daemon_failed"], "sinks": ["mail"]}]);
    // Not trusting the self-signed certificate, the upgrade fails and nothing is sent in clear.
    configure_notify(&h, fast_retries(json!({"mail": mail(None)}), rules.clone(), 60.0));
    let out = h.cortex(&["notify", "test"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success() && text.starts_with("mail: FAILED (SMTP"), "{text}");
    assert!(smtp.mails().is_empty());
    // Trusting it (ca_file), the message goes over TLS.
    configure_notify(&h, fast_retries(json!({"mail": mail(Some("smtp-ca.pem"))}), rules, 60.0));
    let out = h.cortex_ok(&["notify", "test", "--sink", "mail"]);
    assert!(out.starts_with("mail: OK (SMTP 250"), "{out}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].secure, "sent after STARTTLS");
    assert!(mails[0].data.contains("Cortex test notification"), "{}", mails[0].data);
}

#[test]
fn a_bad_notifications_json_is_reported_and_the_last_good_rules_stay_in_force() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    let good = fast_retries(
        json!({"ops": {"type": "webhook", "url": r.url("/hook")}}),
        json!([{"name": "daemons", "events": ["daemon_failed"], "sinks": ["ops"]}]),
        60.0,
    );
    configure_notify(&h, good.clone());
    let mut n = start(&h, "notify");
    let path = h.join("coordination/config/notifications.json");
    let outside = tempfile::tempdir().unwrap();
    let decoy = outside.path().join("notifications.json");
    std::fs::write(&decoy, r#"{"sinks": {}, "rules": []}"#).unwrap();
    let cases: [(&str, Option<&[u8]>); 4] = [
        ("empty", Some(b"")),
        ("truncated", Some(b"{\"sinks\": {\"ops\"")),
        ("wrong shape", Some(b"[1, 2, 3]\n")),
        ("a link outside the home", None),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let reported = h.events_of("notification_config_invalid").len();
        // Replaced in one rename, as an editor saves it (removing the file turns
        // notifications off, which is not what this test is about).
        let tmp = h.join("coordination/config/notifications.new");
        match bytes {
            Some(b) => std::fs::write(&tmp, b).unwrap(),
            None => std::os::unix::fs::symlink(&decoy, &tmp).unwrap(),
        }
        std::fs::rename(&tmp, &path).unwrap();
        wait_until(LONG, &format!("{what}: reported"), || h.events_of("notification_config_invalid").len() > reported);
        let ev = h.events_of("notification_config_invalid").pop().unwrap();
        assert!(ev["message"].as_str().unwrap().contains("notifications.json"), "{what}: {ev}");
        assert!(n.child.try_wait().unwrap().is_none(), "{what}: cortex-notify exited");
        // The last good rules still send.
        emit(&h, "daemon_failed", "critical", &format!("case {i}"));
        wait_until(LONG, &format!("{what}: still delivered"), || r.acknowledged().len() == i + 1);
        match bytes {
            Some(b) => assert_eq!(std::fs::read(&path).unwrap(), b, "{what}: overwritten"),
            None => assert!(path.symlink_metadata().unwrap().file_type().is_symlink(), "{what}: link replaced"),
        }
        let check = h.cortex(&["config", "check"]);
        assert!(!check.status.success(), "{what}: config check passed");
    }
    // Put back in one rename too: the cursor carries on from where the last good rules left it.
    let tmp = h.join("coordination/config/notifications.new");
    let mut good = good;
    good["secrets_file"] = json!("notify-secrets");
    std::fs::write(&tmp, serde_json::to_vec(&good).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    h.cortex_ok(&["config", "check"]);
    emit(&h, "daemon_failed", "critical", "after");
    wait_until(LONG, "delivered after the file was put back", || r.acknowledged().len() == cases.len() + 1);
    assert!(n.child.try_wait().unwrap().is_none());
    n.child.kill().ok();
}

#[test]
fn notify_can_be_disabled_like_any_daemon() {
    let h = TestHome::new();
    h.set_config("daemons", "disabled", r#"["notify"]"#);
    let status = String::from_utf8_lossy(&h.cortex(&["status"]).stdout).into_owned();
    assert!(status.contains("notify: DISABLED"), "{status}");
    let out = h.cortex(&["start", "notify"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("notify is disabled"), "{err}");
}

/// pm keeps cortex-notify alive: SIGKILLed while a receiver holds its request, it is restarted
/// by pm and the notification is delivered, with its key.
#[test]
fn pm_restarts_a_killed_notify_and_the_delivery_completes() {
    use crate::support::fleet::Fleet;
    use crate::support::supervisor::{sigkill, watching};
    let f = Fleet::new("");
    let r = HttpReceiver::start();
    r.set_hold(true);
    configure_notify(
        &f.h,
        fast_retries(
            json!({"ops": webhook_sink(&r)}),
            json!([{"name": "daemons", "events": ["daemon_failed"], "sinks": ["ops"]}]),
            120.0,
        ),
    );
    f.ok(&["start", "pm", "notify"]);
    let pm = f.ready("pm").expect("pm runs");
    wait_until(LONG, "pm watches notify", || watching(pm, "notify"));
    emit(&f.h, "daemon_failed", "critical", "worker is FAILED");
    wait_until(LONG, "the request held", || r.requests().len() == 1);
    let old = f.ready("notify").unwrap();
    sigkill(old);
    f.wait_ready_other("notify", Some(old), LONG);
    r.set_hold(false);
    wait_until(LONG, "delivered by the restarted daemon", || r.acknowledged().len() == 1);
    let keys: BTreeSet<String> =
        r.requests().iter().map(|q| q.header("idempotency-key").unwrap().to_string()).collect();
    assert_eq!(keys.len(), 1, "one notification, one key, however many attempts");
    wait_until(LONG, "restart event", || {
        f.h.events_of("daemon_restarted").iter().any(|e| e["data"]["daemon"] == "notify")
    });
    f.ok(&["stop"]);
}

/// The event log is followed from the persisted offset: across its rotation, and across a
/// restart of cortex-notify (an event written while it was down is sent once it is back; none
/// is sent twice).
#[test]
fn the_event_log_is_followed_across_rotation_and_restart() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    configure_notify(
        &h,
        fast_retries(
            json!({"ops": {"type": "webhook", "url": r.url("/hook")}}),
            json!([{"name": "deploys", "events": ["deploy_finished"], "min_severity": "info", "sinks": ["ops"]}]),
            60.0,
        ),
    );
    let n = start(&h, "notify");
    let messages = || -> Vec<String> {
        r.acknowledged().iter().map(|q| q.json()["events"][0]["message"].as_str().unwrap().to_string()).collect()
    };
    emit(&h, "deploy_finished", "info", "one");
    wait_until(LONG, "one", || messages() == ["one"]);
    // Down while an event is written and the log is rotated (renamed to .1, a new file), then
    // one more: on start it reads the rest of the old file from its offset, then the new one.
    drop(n);
    emit(&h, "deploy_finished", "info", "two");
    let log = h.join("coordination/dashboard-events.jsonl");
    cortex::store::rotation::rotate_file(&log, 3).unwrap();
    emit(&h, "deploy_finished", "info", "three");
    let _n = start(&h, "notify");
    wait_until(LONG, "two and three", || messages().len() == 3);
    // Rotated while it runs: it follows the new file.
    cortex::store::rotation::rotate_file(&log, 3).unwrap();
    emit(&h, "deploy_finished", "info", "four");
    wait_until(LONG, "four", || messages().len() == 4);
    let mut got = messages();
    got.sort();
    assert_eq!(got, ["four", "one", "three", "two"], "each once");
    wait_until(LONG, "nothing pending", || state(&h)["pending"] == 0);
    assert_eq!(r.requests().len(), 4, "none sent twice");
}

/// A burst is one message: the first match opens the digest window, the daemon wakes when it
/// closes (its own deadline, no event needed) and sends every match of the window at once.
#[test]
fn a_burst_within_the_digest_window_is_one_message() {
    let h = TestHome::new();
    let r = HttpReceiver::start();
    configure_notify(
        &h,
        fast_retries(
            json!({"ops": {"type": "webhook", "url": r.url("/hook")}}),
            json!([{"name": "zombies", "events": ["zombie_detected"], "sinks": ["ops"], "digest_seconds": 1.5}]),
            60.0,
        ),
    );
    let _n = start(&h, "notify");
    let home = cortex::Home::at(h.path());
    let burst: Vec<cortex::store::events::Event> = (0..25)
        .map(|i| {
            cortex::store::events::Event::new(
                cortex::store::events::EventKind::ZombieDetected,
                cortex::store::events::Severity::Warning,
                "test",
                format!("zombie {i}"),
            )
        })
        .collect();
    cortex::store::events::append_many(&home, &burst).unwrap();
    wait_until(LONG, "the digest", || r.acknowledged().len() == 1);
    let body = r.acknowledged()[0].json();
    assert_eq!(body["event_count"], 25, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 20, "20 kept, the rest counted");
    assert!(body["text"].as_str().unwrap().contains("… and 5 more event(s)"), "{}", body["text"]);
    assert_eq!(r.requests().len(), 1, "one message for the burst");
}
