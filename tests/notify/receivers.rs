//! Receivers the notify tests start on free ports: an HTTP server (the webhook and the Signal
//! form), a plain-text SMTP server, and a command hook that appends its stdin to a file.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One request the HTTP receiver read.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it answered (0: held, never answered).
    pub answered: u16,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Request>,
    /// Statuses for the next requests (then 200).
    script: VecDeque<u16>,
    /// Requests hold (unanswered) while set.
    hold: bool,
}

/// A small HTTP/1.1 server on 127.0.0.1: records every request, answers from its script.
#[derive(Clone)]
pub(crate) struct HttpReceiver {
    pub port: u16,
    inner: Arc<(Mutex<Inner>, Condvar)>,
}

impl HttpReceiver {
    pub(crate) fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let r = HttpReceiver { port, inner: Arc::new((Mutex::new(Inner::default()), Condvar::new())) };
        let me = r.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(stream));
            }
        });
        r
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next `n` requests are answered `status`.
    pub(crate) fn answer_next(&self, statuses: &[u16]) {
        self.inner.0.lock().unwrap().script.extend(statuses.iter().copied());
    }

    /// Requests wait unanswered while `hold` (released ones are answered from the script).
    pub(crate) fn set_hold(&self, hold: bool) {
        self.inner.0.lock().unwrap().hold = hold;
        self.inner.1.notify_all();
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.inner.0.lock().unwrap().requests.clone()
    }

    /// The requests answered 2xx.
    pub(crate) fn acknowledged(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| (200..300).contains(&r.answered)).collect()
    }

    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let index = {
            let mut g = self.inner.0.lock().unwrap();
            g.requests.push(Request { method, path, headers, body, answered: 0 });
            g.requests.len() - 1
        };
        let status = {
            let mut g = self.inner.0.lock().unwrap();
            while g.hold {
                g = self.inner.1.wait(g).unwrap();
            }
            g.script.pop_front().unwrap_or(200)
        };
        let text = format!("{{\"status\":{status}}}");
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        let mut stream = stream;
        // A client that is gone (killed while we held its request) never sees the answer: it
        // closed the connection before we answered (an alive client waits for the answer).
        if client_alive(&stream) && stream.write_all(reply.as_bytes()).and_then(|_| stream.flush()).is_ok() {
            self.inner.0.lock().unwrap().requests[index].answered = status;
        }
    }
}

/// False when the peer has closed the connection (a killed client): a zero-byte peek.
fn client_alive(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut b = [0u8; 1];
    let alive = !matches!(stream.peek(&mut b), Ok(0));
    let _ = stream.set_nonblocking(false);
    alive
}

/// One message the SMTP receiver accepted.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// It came over TLS (after STARTTLS).
    pub secure: bool,
}

/// An SMTP server (EHLO, MAIL, RCPT, DATA, QUIT; no AUTH): plain text, or offering STARTTLS
/// with a self-signed certificate for 127.0.0.1 (then it accepts mail only after the upgrade,
/// like a server that requires TLS, and records whether each mail came over TLS).
#[derive(Clone)]
pub(crate) struct SmtpReceiver {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The certificate (PEM) a client must trust.
    pub cert_pem: String,
}

/// A duplex stream: plain TCP, or TLS after STARTTLS.
trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

impl SmtpReceiver {
    pub(crate) fn start() -> SmtpReceiver {
        SmtpReceiver::start_with(None, String::new())
    }

    /// A server that offers (and requires) STARTTLS, with a certificate generated now.
    pub(crate) fn start_tls() -> SmtpReceiver {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("self-signed certificate");
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
        // The ring provider, as the sinks use (ureq and lettre take it too); rustls 0.23.48
        // deprecates it for lacking post-quantum key exchange, which this test does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        SmtpReceiver::start_with(Some(Arc::new(config)), ck.cert.pem())
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, cert_pem: String) -> SmtpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let r = SmtpReceiver { port, mails: Arc::default(), tls, cert_pem };
        let me = r.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(stream));
            }
        });
        r
    }

    pub(crate) fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader: BufReader<Box<dyn Duplex>> = BufReader::new(Box::new(stream));
        let say = |r: &mut BufReader<Box<dyn Duplex>>, s: &str| {
            let _ = r.get_mut().write_all(format!("{s}\r\n").as_bytes());
            let _ = r.get_mut().flush();
        };
        say(&mut reader, "220 test-smtp ready");
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut secure = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let cmd = line.trim_end().to_string();
            let upper = cmd.to_ascii_uppercase();
            if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                say(&mut reader, "250-test-smtp");
                if self.tls.is_some() && !secure {
                    say(&mut reader, "250-STARTTLS");
                }
                say(&mut reader, "250 8BITMIME");
            } else if upper == "STARTTLS" && self.tls.is_some() && !secure {
                say(&mut reader, "220 go ahead");
                let conn = rustls::ServerConnection::new(self.tls.clone().unwrap()).expect("TLS session");
                let plain = std::mem::replace(reader.get_mut(), Box::new(std::io::Cursor::new(Vec::new())));
                reader = BufReader::new(Box::new(rustls::StreamOwned::new(conn, plain)));
                secure = true;
            } else if self.tls.is_some()
                && !secure
                && (upper.starts_with("MAIL") || upper.starts_with("RCPT") || upper == "DATA")
            {
                say(&mut reader, "530 must issue STARTTLS first");
            } else if upper.starts_with("MAIL FROM:") {
                from = cmd[10..].trim().to_string();
                say(&mut reader, "250 ok");
            } else if upper.starts_with("RCPT TO:") {
                to.push(cmd[8..].trim().to_string());
                say(&mut reader, "250 ok");
            } else if upper == "DATA" {
                say(&mut reader, "354 go ahead");
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).unwrap_or(0) == 0 {
                        return;
                    }
                    if l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                self.mails.lock().unwrap().push(Mail { from: from.clone(), to: std::mem::take(&mut to), data, secure });
                say(&mut reader, "250 queued as test");
            } else if upper == "QUIT" {
                say(&mut reader, "221 bye");
                return;
            } else if upper == "RSET" || upper == "NOOP" {
                say(&mut reader, "250 ok");
            } else {
                say(&mut reader, "502 not implemented");
            }
        }
    }
}

/// Writes an executable hook under `dir` that appends its stdin (one JSON line) to `out`, and
/// its key from the environment to `out.keys`. Returns its path.
pub(crate) fn hook_script(dir: &std::path::Path, out: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hook.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncat >> '{0}'\nprintf '%s\\n' \"$CORTEX_NOTIFICATION_KEY\" >> '{0}.keys'\necho hook-ok\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
