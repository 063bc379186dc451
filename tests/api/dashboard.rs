//! The dashboard's server side over real HTTP (issue 21): the page and its files with their
//! headers, the JSON endpoint list kept for scripts, the browser (CSRF) checks on changes, the
//! Server-Sent Events stream and the endpoints the page reads.
use crate::support::api::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request with exactly these headers; status, headers (lower-case names) and body.
pub(crate) fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Headers, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("Host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    read_response(&mut BufReader::new(s)).unwrap()
}

fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `GET /` gives a browser the page with a strict CSP and the hardening headers, and scripts
/// (no `Accept`, `*/*`, `application/json`) the JSON endpoint list as before; the assets have
/// their types and an ETag that answers 304.
#[test]
fn the_page_and_its_assets_are_served_with_strict_headers() {
    let h = api_only_home();
    let api = Api::start(&h);
    let p = api.port;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let (code, hd, body) = exchange(p, "GET", "/", &[("Accept", browser)], b"");
    assert_eq!(code, 200);
    assert_eq!(header(&hd, "content-type"), Some("text/html; charset=utf-8"));
    let csp = header(&hd, "content-security-policy").expect("a CSP on the page");
    for part in ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header(&hd, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&hd, "referrer-policy"), Some("no-referrer"));
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("/assets/app.js"), "{page}");
    let etag = header(&hd, "etag").expect("an ETag").to_string();
    let (code, _, body) = exchange(p, "GET", "/", &[("Accept", browser), ("If-None-Match", &etag)], b"");
    assert_eq!((code, body.len()), (304, 0));

    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let (code, hd, body) = exchange(p, "GET", "/", &headers, b"");
        assert_eq!(code, 200);
        assert_eq!(header(&hd, "content-type"), Some("application/json"), "Accept {accept:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["service"], "cortex-api");
    }

    for (name, ty) in [("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8")] {
        let (code, hd, body) = exchange(p, "GET", &format!("/assets/{name}"), &[], b"");
        assert_eq!(code, 200, "{name}");
        assert_eq!(header(&hd, "content-type"), Some(ty));
        assert_eq!(header(&hd, "x-content-type-options"), Some("nosniff"));
        assert!(!body.is_empty());
        let etag = header(&hd, "etag").unwrap().to_string();
        assert_eq!(exchange(p, "GET", &format!("/assets/{name}"), &[("If-None-Match", &etag)], b"").0, 304);
    }
    assert_eq!(exchange(p, "GET", "/assets/..%2Fmod.rs", &[], b"").0, 404);
    assert_eq!(exchange(p, "GET", "/assets/nope.js", &[], b"").0, 404);
    // DNS rebinding: the page itself is refused to a foreign host name.
    let rebound = format!("rebind.evil.example:{p}");
    assert_eq!(exchange(p, "GET", "/", &[("Accept", browser), ("Host", &rebound)], b"").0, 403);
}
