//! Task output streams (`/tasks/<id>/log/stream`) over real HTTP against a running task: closed
//! streams give their place back, a client that does not read is closed (not sent a torn
//! stream), and a stream from offset 0 of a large log gets all of it, a few chunks at a time.
use crate::dashboard::SseClient;
use crate::support::api::*;
use crate::support::wait_until;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Opens a log stream on a raw socket and reads its response head.
fn open_raw(port: u16, path: &str, auth: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "the stream's head: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    s
}

#[test]
fn closed_log_streams_give_their_place_back_and_slow_or_far_back_readers_are_served() {
    use crate::support::task::*;
    let h = fast_home();
    let api = Api::start_operated(&h);
    let p = api.port;
    let _worker = start(&h, "worker");
    let _coordinator = start(&h, "coordinator");
    let (r1, r2) = (h.join("release-1"), h.join("release-2"));
    // 12 MB of output (past the 4 MiB a client may have buffered) between two waits.
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.05; done; yes 0123456789abcdef | head -c 12000000; \
         while [ ! -e {} ]; do sleep 0.05; done",
        r1.display(),
        r2.display()
    );
    let body =
        serde_json::json!({"description": "log streams", "timeout_seconds": 300, "command": ["sh", "-c", script]});
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let (code, v) = api.post("/tasks", body.to_string().as_bytes());
    assert_eq!(code, 201, "{v}");
    let id = v["task"]["task_id"].as_str().unwrap().to_string();
    wait_until(LONG, "the task runs", || api.get(&format!("/tasks/{id}")).1["status"] == "in_progress");
    let path = format!("/tasks/{id}/log/stream");

    // More streams opened and closed than are followed at once (256).
    for _ in 0..300 {
        drop(open_raw(p, &path, &auth));
    }
    // A new stream is followed (once the server saw the closes), not refused.
    wait_until(LONG, "a new log stream is followed", || {
        let mut s = SseClient::open(p, &path, &[("Authorization", &auth)]);
        let m = s.next().expect("a message");
        assert!(m.event == "log" || m.event == "error", "{m:?}");
        m.event == "log" && m.data["data"].as_str().is_some_and(|d| d.contains("first\n"))
    });

    // A client that reads nothing while 12 MB are written: closed by the server.
    let mut stuck = TcpStream::connect(("127.0.0.1", p)).unwrap();
    nix::sys::socket::setsockopt(&stuck, nix::sys::socket::sockopt::RcvBuf, &65536).unwrap();
    stuck
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nAuthorization: {auth}\r\n\r\n").as_bytes())
        .unwrap();
    // A reader from offset 0 gets every byte, in order, while the log grows and after.
    let mut all = SseClient::open(p, &format!("{path}?offset=0"), &[("Authorization", &auth)]);
    std::fs::write(&r1, "").unwrap();
    let total = 6 + 12_000_000u64;
    let mut at = 0u64;
    while at < total {
        // A reader that falls behind is closed and comes back from where it is, as the page does.
        let Some(m) = all.next() else {
            all = SseClient::open(p, &format!("{path}?offset={at}"), &[("Authorization", &auth)]);
            continue;
        };
        assert_eq!(m.event, "log", "{m:?}");
        assert_eq!(m.data["offset"].as_u64(), Some(at), "each byte once, in order");
        at = m.data["next_offset"].as_u64().unwrap();
    }
    assert_eq!(at, total);
    stuck.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    let began = std::time::Instant::now();
    loop {
        // Keep-alives reset the read timeout: the close must come in time, not at the task's end.
        assert!(began.elapsed() < Duration::from_secs(60), "the stream that does not read was not closed");
        match stuck.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("the stream that does not read was not closed: {e} after {got} bytes"),
        }
    }
    assert!((got as u64) < total, "closed before everything was sent: {got} bytes");
    std::fs::write(&r2, "").unwrap();
    wait_until(LONG, "the task completes", || api.get(&format!("/tasks/{id}")).1["status"] == "completed");
}
