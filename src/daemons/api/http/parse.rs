//! The HTTP/1.1 request parser: pure over bytes (no sockets, no clocks), so it is unit-tested
//! here and fuzzed directly (`fuzz/fuzz_targets/http_request.rs`). It owns the request limits
//! that do not depend on time: the head within [`MAX_HEAD_BYTES`], at most `MAX_HEADERS`
//! headers, a `Content-Length` body of at most the server's `max_body` (413 before a byte of it
//! is read); `Transfer-Encoding` bodies are refused (411). The reactor ([`super`]) calls
//! [`parse`] on a connection's unconsumed bytes after each read.

use super::message::{Request, Response};
use std::net::SocketAddr;

/// Largest request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 100;

/// What [`parse`] made of the bytes a connection has sent so far.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed (and whether the client waits for `100 Continue` first).
    Incomplete { expect_continue: bool },
    /// One whole request, which took the first `consumed` bytes.
    Complete { req: Request, consumed: usize, keep_alive: bool, head_only: bool },
    /// The request is refused with this response (the connection is then closed).
    Bad(Response),
}

/// Parses the request at the start of `buf` (a connection's unconsumed bytes): head within
/// [`MAX_HEAD_BYTES`], at most `MAX_HEADERS` headers, a body of `Content-Length` up to
/// `max_body`. Pure (no I/O), so the fuzzer calls it directly.
pub fn parse(buf: &[u8], peer: SocketAddr, max_body: usize) -> Parsed {
    let limit = buf.len().min(MAX_HEAD_BYTES + 4);
    let Some(head_end) = buf[..limit].windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Parsed::Bad(Response::error(431, "request head too large"));
        }
        return Parsed::Incomplete { expect_continue: false };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parsed::Bad(Response::error(400, "request head is not valid UTF-8"));
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad(Response::error(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return Parsed::Bad(Response::error(400, "malformed request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => {
            return Parsed::Bad(Response::error(505, "only HTTP/1.0 and HTTP/1.1 are served"));
        }
        _ => return Parsed::Bad(Response::error(400, "malformed request line")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad(Response::error(400, "malformed header line"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Parsed::Bad(Response::error(400, "malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
        if headers.len() > MAX_HEADERS {
            return Parsed::Bad(Response::error(431, "too many headers"));
        }
    }
    fn get<'h>(headers: &'h [(String, String)], n: &'static str) -> impl Iterator<Item = &'h str> + 'h {
        headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str())
    }
    if get(&headers, "Transfer-Encoding").next().is_some() {
        return Parsed::Bad(Response::error(411, "chunked request bodies are not accepted; send Content-Length"));
    }
    let mut lengths = get(&headers, "Content-Length").map(|v| v.parse::<u64>());
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(Ok(n)), None) => n,
        _ => return Parsed::Bad(Response::error(400, "invalid Content-Length")),
    };
    drop(lengths);
    if length > max_body as u64 {
        return Parsed::Bad(Response::error(413, format!("request body too large: at most {max_body} bytes")));
    }
    let length = length as usize;
    let body_start = head_end + 4;
    if buf.len() < body_start + length {
        let expect_continue = get(&headers, "Expect").any(|v| v.eq_ignore_ascii_case("100-continue"));
        return Parsed::Incomplete { expect_continue };
    }
    let connection = get(&headers, "Connection").next().unwrap_or("").to_ascii_lowercase();
    let keep_alive = if http10 { connection.contains("keep-alive") } else { !connection.contains("close") };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let head_only = method == "HEAD";
    let req = Request {
        method: if head_only { "GET".into() } else { method.to_string() },
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: buf[body_start..body_start + length].to_vec(),
        peer,
    };
    Parsed::Complete { req, consumed: body_start + length, keep_alive, head_only }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    /// The status a refused request gets; 0 for incomplete, 200 for complete.
    fn status(raw: &[u8], max_body: usize) -> u16 {
        match parse(raw, peer(), max_body) {
            Parsed::Bad(r) => r.status,
            Parsed::Incomplete { .. } => 0,
            Parsed::Complete { .. } => 200,
        }
    }

    fn complete(raw: &[u8], max_body: usize) -> (Request, usize, bool, bool) {
        match parse(raw, peer(), max_body) {
            Parsed::Complete { req, consumed, keep_alive, head_only } => (req, consumed, keep_alive, head_only),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_body() {
        let raw = b"POST /scheduler/pause?x=a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcdGET";
        let (req, consumed, keep_alive, _) = complete(raw, 100);
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/scheduler/pause");
        assert_eq!(req.query_params()["x"], "a b");
        assert_eq!(req.body, b"abcd");
        assert_eq!(consumed, raw.len() - 3);
        assert!(keep_alive);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 10), 413);
        assert_eq!(status(b"garbage\r\n\r\n", 10), 400);
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n", 10), 505);
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 10), 411);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost", 10), 0);
        assert_eq!(status(&[b'a'; MAX_HEAD_BYTES + 10], 10), 431);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 10), 0);
    }

    #[test]
    fn pipelined_requests_parse_one_after_the_other() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyHEAD /c HTTP/1.1\r\nConnection: close\r\n\r\n";
        let (a, n1, keep_a, head_a) = complete(raw, 10);
        assert_eq!((a.method.as_str(), a.path.as_str(), keep_a, head_a), ("GET", "/a", true, false));
        let rest = &raw[n1..];
        let (b, n2, _, _) = complete(rest, 10);
        assert_eq!((b.method.as_str(), b.path.as_str(), b.body.as_slice()), ("POST", "/b", &b"xy"[..]));
        let rest = &rest[n2..];
        // HEAD is served as GET without the body; `Connection: close` ends the connection.
        let (c, n3, keep_c, head_c) = complete(rest, 10);
        assert_eq!((c.method.as_str(), c.path.as_str(), keep_c, head_c), ("GET", "/c", false, true));
        assert_eq!(n3, rest.len());
        // A request cut short in the middle of the pipeline waits for more bytes.
        assert_eq!(status(&raw[..n1 + 10], 10), 200);
        assert_eq!(status(&raw[n1..n1 + 10], 10), 0);
    }

    #[test]
    fn limits_are_exact() {
        // A body of exactly max_body is served; one byte more is refused before it is read.
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", 4), 200);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 4), 413);
        // A head of exactly MAX_HEAD_BYTES (without its blank line) is accepted; one byte more is not.
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
            h.resize(len, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        assert_eq!(status(&head(MAX_HEAD_BYTES), 0), 200);
        assert_eq!(status(&head(MAX_HEAD_BYTES + 1), 0), 431);
        // At most MAX_HEADERS headers.
        let headers = |n: usize| {
            let mut h = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                h.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        assert_eq!(status(&headers(MAX_HEADERS), 0), 200);
        assert_eq!(status(&headers(MAX_HEADERS + 1), 0), 431);
    }

    #[test]
    fn body_framing_is_content_length_only() {
        // No Content-Length: no body; the following bytes are the next request.
        let (req, consumed, _, _) = complete(b"POST / HTTP/1.1\r\n\r\nabc", 10);
        assert!(req.body.is_empty());
        assert_eq!(consumed, 19);
        // Two Content-Length headers, even equal ones, or a non-number: refused (no smuggling).
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\na", 10), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 10), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\na", 10), 411);
        // A client that waits for `100 Continue` is told so while its body is missing.
        match parse(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", peer(), 10) {
            Parsed::Incomplete { expect_continue } => assert!(expect_continue),
            other => panic!("expected incomplete, got {other:?}"),
        }
    }

    #[test]
    fn keep_alive_follows_the_version() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n", 0).2);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0).2);
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n", 0).2);
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0).2);
    }
}
