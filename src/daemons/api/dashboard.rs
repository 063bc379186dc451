//! The dashboard's static files, embedded in the binary (`include_str!` from `dashboard/`): the
//! page (`GET /`, for a browser) and its assets (`GET /assets/<name>`), each with a content-hash
//! `ETag` (a matching `If-None-Match` gets 304), and on the page the browser hardening headers:
//! a strict `Content-Security-Policy` (scripts, styles and connections from this origin only, no
//! inline script or style, no framing), `X-Content-Type-Options` and `Referrer-Policy`.
//! Nothing here is built from data: every value the page shows comes from the JSON endpoints.

use super::http::{Request, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The page's Content-Security-Policy: everything from this origin only, no inline script or
/// style (`'self'` does not allow them), `data:` images for small icons, no plugins, no `<base>`,
/// no framing by any page.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("dashboard/index.html") };

/// The files under `/assets/`. A new file gets its line here.
const ASSETS: &[Asset] = &[
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("dashboard/app.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("dashboard/app.css") },
];

/// The `ETag` of each file (index first, then [`ASSETS`] in order), computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// True when the request is a browser asking for a page (`Accept` names `text/html`); scripts
/// and `curl` (no `Accept`, `*/*`, `application/json`) keep getting the JSON endpoint list.
pub(crate) fn wants_html(req: &Request) -> bool {
    req.header("Accept").is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// `GET /`: the page, with the hardening headers.
pub(crate) fn index(req: &Request) -> Response {
    serve(req, &INDEX, &etags()[0])
        .with_header("Content-Security-Policy", CSP)
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("X-Frame-Options", "DENY")
        .with_header("Vary", "Accept")
}

/// `GET /assets/<name>`; None for a name that is not embedded.
pub(crate) fn asset(req: &Request, name: &str) -> Option<Response> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    Some(serve(req, &ASSETS[i], &etags()[i + 1]).with_header("Referrer-Policy", "no-referrer"))
}

/// A file's response: 304 when the client holds this version, else the file. `no-cache`: the
/// browser keeps it but asks (a cheap 304) before each use, so a new binary's files are used at
/// once.
fn serve(req: &Request, asset: &Asset, etag: &str) -> Response {
    let fresh = req.header("If-None-Match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let resp = if fresh {
        Response::new(304, asset.content_type, Vec::new())
    } else {
        Response::new(200, asset.content_type, asset.body.as_bytes().to_vec())
    };
    resp.with_cache_control("no-cache").with_header("ETag", etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_the_page_has_no_inline_script() {
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        assert_eq!(etags().len(), ASSETS.len() + 1);
        assert!(!INDEX.body.contains("<script>"), "the CSP blocks inline scripts");
    }
}
