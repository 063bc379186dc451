//! Support for the API and scheduler tests: a live `cortex-api` on a free port in a temporary
//! home, a raw HTTP/1.1 client (so tests control every byte), config edits; fabricated dispatch
//! records are `records`'.
#![allow(dead_code)]

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The operate token [`Api::start_operated`] configures (named `operator`).
pub(crate) const OPERATOR_TOKEN: &str = "operator-0123456789abcdef-secret";

/// A temporary home whose daemons but the API are disabled, so that what the API reports
/// depends only on the files a test sets up.
pub(crate) fn api_only_home() -> TestHome {
    let h = TestHome::new();
    h.set_config(
        "daemons",
        "disabled",
        r#"["worker", "pm", "heartbeat", "metrics", "coordinator", "integration", "failure-pattern", "auto-fix", "notify"]"#,
    );
    h
}

/// Writes `text` as the home's tokens file `api-tokens` (0600) and points `[api] tokens_file` at it.
pub(crate) fn write_tokens_file(h: &TestHome, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = h.join("api-tokens");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    h.set_config("api", "tokens_file", "\"api-tokens\"");
}

/// A running `cortex-api`; stopped (SIGTERM) when dropped.
pub(crate) struct Api {
    pub port: u16,
    pub child: Child,
    /// Sent as `Authorization: Bearer` by [`Api::get`] and [`Api::post`] when set.
    pub token: Option<String>,
}

impl Api {
    /// Binds the home's API to a free port and starts the daemon; waits until it answers.
    pub(crate) fn start(h: &TestHome) -> Api {
        let port = free_port();
        h.set_config("api", "bind", &format!("\"127.0.0.1:{port}\""));
        Api::start_on(h, port)
    }

    /// Like [`Api::start`] with a tokens file holding [`OPERATOR_TOKEN`], which `get` and
    /// `post` then send: for the changes that need a token (retry, schedule actions).
    pub(crate) fn start_operated(h: &TestHome) -> Api {
        write_tokens_file(h, &format!("operator:{OPERATOR_TOKEN}\n"));
        let mut api = Api::start(h);
        api.token = Some(OPERATOR_TOKEN.to_string());
        api
    }

    /// Starts the daemon on the port already configured.
    pub(crate) fn start_on(h: &TestHome, port: u16) -> Api {
        let child = spawn_api(h);
        let mut api = Api { port, child, token: None };
        api.wait_ready();
        api
    }

    /// The `Authorization` header of this client's token, if it has one.
    fn auth(&self) -> Vec<(&'static str, String)> {
        self.token.iter().map(|t| ("Authorization", format!("Bearer {t}"))).collect()
    }

    pub(crate) fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("cortex-api exited ({st}): {err}");
            }
            if let Ok((200, _)) = try_request(self.port, "GET", "/status", &[], b"") {
                return;
            }
            assert!(Instant::now() < deadline, "cortex-api did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let auth = self.auth();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
        json_request(self.port, "GET", path, &headers, b"")
    }

    pub(crate) fn post(&self, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let auth = self.auth();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
        json_request(self.port, "POST", path, &headers, body)
    }

    /// SIGKILL, no clean-up (the PID file stays behind, stale).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
    }
}

/// Starts `cortex-api` in the home without waiting.
pub(crate) fn spawn_api(h: &TestHome) -> Child {
    Command::new(bin("cortex-api"))
        .arg("--home")
        .arg(h.path())
        .env_remove("CORTEX_HOME")
        .env_remove("COMMIT_RELAY_HOME")
        .env_remove("CORTEX_API_BIND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cortex-api")
}

/// Response headers, names lower-cased.
pub(crate) type Headers = Vec<(String, String)>;

/// Reads one response from a stream: status, headers and body.
pub(crate) fn read_response(stream: &mut impl BufRead) -> std::io::Result<(u16, Headers, Vec<u8>)> {
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        stream.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok((status, headers, body))
}

/// One request on a new connection (`Connection: close`); status and body.
pub(crate) fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("Host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes)?;
    let mut r = BufReader::new(s);
    let (status, _, body) = read_response(&mut r)?;
    Ok((status, body))
}

/// A request whose response must be JSON.
pub(crate) fn json_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let (status, body) = try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port} failed: {e}"));
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// Runs runbook lines with `sh -c` against the API on `port` (the runbooks' `127.0.0.1:8900`
/// becomes the test's port; nothing else changes).
pub(crate) struct Shell {
    pub port: u16,
}

impl Shell {
    /// Runs runbook lines; returns (exit code, stdout, stderr).
    pub(crate) fn run(&self, script: &str) -> (i32, String, String) {
        let script = script.replace("127.0.0.1:8900", &format!("127.0.0.1:{}", self.port));
        let out = Command::new("sh").arg("-c").arg(&script).output().expect("run sh");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs lines that must succeed with nothing on stderr; returns stdout trimmed.
    pub(crate) fn ok(&self, script: &str) -> String {
        let (code, out, err) = self.run(script);
        assert!(code == 0 && err.is_empty(), "runbook lines failed ({code}):\n{script}\nstdout: {out}\nstderr: {err}");
        out.trim().to_string()
    }
}
