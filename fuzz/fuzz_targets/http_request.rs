//! The API's HTTP request parser (`api::http::parse`), the query decoder, and the bearer-token
//! checks on what a client sends. The first two bytes set the body limit. A complete request
//! must lie within the bytes given and within the limits; nothing may panic.
#![no_main]

use cortex::store::api_tokens::Tokens;
use cortex::daemons::api::http::{MAX_HEAD_BYTES, Parsed, parse, percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_body = u16::from_le_bytes([data[0], data[1]]) as usize;
    let buf = &data[2..];
    let peer = "127.0.0.1:9".parse().unwrap();
    match parse(buf, peer, max_body) {
        Parsed::Complete { req, consumed, .. } => {
            assert!(consumed <= buf.len());
            assert!(req.body.len() <= max_body);
            assert!(consumed <= MAX_HEAD_BYTES + 4 + max_body);
            assert!(req.path.starts_with('/'));
            let _ = req.query_params();
            let _ = percent_decode(&req.path);
            let tokens = Tokens::parse("ops:0123456789abcdef0123\n").unwrap();
            let who = tokens.check(req.header("Authorization"));
            if let Some(w) = who {
                assert_eq!(w.name, "ops");
            }
            // Pipelined bytes after the request parse on their own.
            let _ = parse(&buf[consumed..], peer, max_body);
        }
        Parsed::Bad(resp) => assert!(resp.status >= 400 && resp.status < 600),
        Parsed::Incomplete { .. } => {}
    }
    if let Ok(text) = std::str::from_utf8(buf) {
        let _ = Tokens::parse(text);
    }
});
