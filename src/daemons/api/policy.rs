//! Who may call what. Every request passes, in this order:
//!
//! 1. the browser checks ([`Site::refusal`]), with or without tokens: a `Host` header must name
//!    this API (a loopback address, `localhost`, the bind address, a name listed in
//!    `[api] allowed_hosts`) and, when it carries a port, this API's port — a DNS-rebinding page
//!    sends its own host name; an `Origin` header must be this API's own origin (`http`, an
//!    allowed host, this port; no port means 80) — another local web application
//!    (`http://127.0.0.1:3000`) or site is refused. A request without `Host` or `Origin` (curl,
//!    scripts) passes: browsers always send `Host`, and send `Origin` on every cross-origin change.
//!    A `Host` without a port passes for an allowed name: a browser omits the port only for
//!    port 80, where its request reaches this API only if it listens there.
//! 2. for a change (`POST`) sent by a browser — one carrying `Origin` or a `Sec-Fetch-*` header,
//!    which browsers add and page scripts cannot remove — the forgery check ([`forgery_refusal`]):
//!    it must carry `X-Cortex-Request: 1` or an `Authorization` header, and must not say
//!    `Sec-Fetch-Site: cross-site|same-site`. A cross-site `<form>` or `text/plain` `fetch` cannot
//!    add a header; a script that adds one triggers a CORS preflight (`OPTIONS`), which this API
//!    never approves (405, no `Access-Control-Allow-*`). So even a browser that left `Origin` out
//!    could not be made to change anything, while the dashboard (same origin) sends the header.
//!    `curl` and scripts send neither marker and are unaffected (the runbooks' lines).
//! 3. the endpoint's [`Access`] (the table is `routes::access`), decided by [`authorize`]:
//!
//! | access | without `tokens_file` | with `tokens_file` |
//! |---|---|---|
//! | `Open` | allowed | allowed; without a valid token, fields that may hold task text are left out |
//! | `Read` | allowed | any valid token (`read` or `operate`), else 401 |
//! | `Documented` | allowed (pause/resume/cancel, event acknowledgement: the runbooks' token-less changes) | an `operate` token, else 401 (403 for a `read` token) |
//! | `Operate` | 403: configure `[api] tokens_file`, or use the `cortex` CLI | an `operate` token, else 401 (403 for a `read` token) |

use super::http::{Request, Response};
use crate::store::api_tokens::{Caller, Kind, Tokens};
use std::net::{IpAddr, SocketAddr};

/// How an endpoint is guarded (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Monitoring reads (`/health`, `/status`, `/metrics`, `/scheduler/status`): always open.
    Open,
    /// Reads that show task output, commands, descriptions or schedules' task templates.
    Read,
    /// The changes the runbooks make without a token: scheduler pause/resume, dispatch cancel,
    /// event acknowledgement.
    Documented,
    /// Every other change (they start or re-start commands, or change schedules).
    Operate,
}

/// Decides whether a request whose endpoint has `access` may proceed; `Ok(Some(caller))` names a
/// valid token, `Ok(None)` an anonymous caller. `what` names the endpoint in refusals, `cli` the
/// `cortex` command that does the same without the API (named when the API refuses it).
pub(crate) fn authorize(
    access: Access,
    tokens: &Tokens,
    authorization: Option<&str>,
    what: &str,
    cli: &str,
) -> Result<Option<Caller>, Response> {
    if tokens.is_empty() {
        return match access {
            Access::Open | Access::Read | Access::Documented => Ok(None),
            Access::Operate => Err(Response::error(
                403,
                format!(
                    "{what} is refused without API tokens: it starts or changes what runs, and without tokens any local \
                     user could call it. Set [api] tokens_file in cortex.toml (a 0600 file of name:token lines) and send \
                     Authorization: Bearer <token>, or run `{cli}` on the host"
                ),
            )),
        };
    }
    let caller = tokens.check(authorization);
    match (access, caller) {
        (Access::Open, caller) => Ok(caller),
        (Access::Read, Some(c)) => Ok(Some(c)),
        (Access::Documented | Access::Operate, Some(c)) if c.kind == Kind::Operate => Ok(Some(c)),
        (Access::Documented | Access::Operate, Some(c)) => Err(Response::error(
            403,
            format!("{what} changes state; the token {:?} is a read-only ([read]) token", c.name),
        )),
        (_, None) => Err(Response::error(
            401,
            format!("{what} needs Authorization: Bearer <token> with a valid token from [api] tokens_file"),
        )
        .with_header("WWW-Authenticate", "Bearer")),
    }
}

/// The header the dashboard sends with every change; a cross-site form cannot send it.
pub(crate) const REQUEST_HEADER: &str = "X-Cortex-Request";

/// The refusal of a change a browser sends without proof that this API's own page sent it (see
/// the module's step 2); None when it may proceed to the access check.
pub(crate) fn forgery_refusal(req: &Request) -> Option<Response> {
    if req.method != "POST" {
        return None;
    }
    let fetch_site = req.header("Sec-Fetch-Site").map(|s| s.trim().to_ascii_lowercase());
    if let Some(site) = fetch_site.as_deref()
        && (site == "cross-site" || site == "same-site")
    {
        return Some(Response::error(
            403,
            format!(
                "refused: a {site} request from a browser cannot change anything here (use this API's own page or the cortex CLI)"
            ),
        ));
    }
    let browser = req.header("Origin").is_some()
        || req.headers.iter().any(|(n, _)| n.to_ascii_lowercase().starts_with("sec-fetch-"));
    let proven = req.header(REQUEST_HEADER).is_some_and(|v| v.trim() == "1") || req.header("Authorization").is_some();
    if browser && !proven {
        return Some(Response::error(
            403,
            format!(
                "refused: a change sent by a browser must carry the header {REQUEST_HEADER}: 1 (the dashboard sends it; a \
                 cross-site form cannot) or Authorization: Bearer <token>"
            ),
        ));
    }
    None
}

/// This API's own address, against which `Host` and `Origin` are checked.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// The port the API listens on.
    pub port: u16,
    /// The address it is bound to (a wildcard accepts any IP address as a host).
    pub bind: IpAddr,
    /// Extra host names (`[api] allowed_hosts`), lower case.
    pub names: Vec<String>,
}

impl Site {
    pub(crate) fn new(local: SocketAddr, allowed_hosts: &[String]) -> Site {
        Site {
            port: local.port(),
            bind: local.ip(),
            names: allowed_hosts.iter().map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect(),
        }
    }

    /// The refusal of a request a browser was tricked into sending (foreign `Host` or `Origin`).
    pub(crate) fn refusal(&self, req: &Request) -> Option<Response> {
        if let Some(host) = req.header("Host")
            && !self.host_allowed(host)
        {
            return Some(Response::error(
                403,
                format!(
                    "refused: Host {host:?} is not this API (allowed: 127.0.0.1:{p}, localhost:{p}, [::1]:{p}, the bind \
                     address, and names in [api] allowed_hosts)",
                    p = self.port
                ),
            ));
        }
        if let Some(origin) = req.header("Origin")
            && !self.origin_allowed(origin)
        {
            return Some(Response::error(
                403,
                format!("refused: cross-origin request from {origin:?} (this API is http://127.0.0.1:{})", self.port),
            ));
        }
        None
    }

    /// A `Host` header value: an allowed name, with this API's port if it has one.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        match split_host_port(host.trim()) {
            Some((name, port)) => self.name_allowed(name) && port.is_none_or(|p| p == self.port),
            None => false,
        }
    }

    /// An `Origin` header value: `http://<allowed name>[:port]`, the port (80 if absent) this API's.
    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        let Some(rest) = origin.trim().strip_prefix("http://") else { return false };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        match split_host_port(rest) {
            Some((name, port)) => self.name_allowed(name) && port.unwrap_or(80) == self.port,
            None => false,
        }
    }

    fn name_allowed(&self, name: &str) -> bool {
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            // A DNS-rebinding page always has a host *name*: an address literal is one the
            // client chose itself.
            return ip.is_loopback() || ip == self.bind || self.bind.is_unspecified();
        }
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Splits `name`, `name:port`, `[v6]` or `[v6]:port`; `None` when malformed (a port that is not
/// a number, an empty name, characters a host name cannot hold).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (inside, None),
            p => (inside, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        }
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(bind: &str) -> Site {
        Site::new(bind.parse().unwrap(), &["cortex.lan".to_string()])
    }

    #[test]
    fn hosts() {
        let s = site("127.0.0.1:8900");
        for h in
            ["127.0.0.1:8900", "localhost", "LOCALHOST:8900", "[::1]:8900", "[::1]", "127.0.0.2", "cortex.lan:8900"]
        {
            assert!(s.host_allowed(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8900",
            "10.0.0.1:8900",
            "[2001:db8::1]:8900",
            "localhost.evil.example",
            "127.0.0.1:3000",
            "localhost:80",
            "127.0.0.1:",
            "127.0.0.1:8900x",
            "127.0.0.1:99999",
            "",
            "[::1",
            "local host",
        ] {
            assert!(!s.host_allowed(h), "{h}");
        }
        let wild = site("0.0.0.0:8900");
        assert!(wild.host_allowed("10.0.0.1:8900"));
        assert!(!wild.host_allowed("rebind.evil.example:8900"));
        assert!(site("10.0.0.5:8900").host_allowed("10.0.0.5:8900"));
        assert!(!site("10.0.0.5:8900").host_allowed("10.0.0.6:8900"));
    }

    #[test]
    fn origins() {
        let s = site("127.0.0.1:8900");
        for o in ["http://127.0.0.1:8900", "http://localhost:8900/", "http://[::1]:8900"] {
            assert!(s.origin_allowed(o), "{o}");
        }
        for o in [
            "http://127.0.0.1:3000",
            "http://localhost",
            "https://127.0.0.1:8900",
            "http://evil.example:8900",
            "null",
            "file://",
            "",
        ] {
            assert!(!s.origin_allowed(o), "{o}");
        }
        assert!(site("127.0.0.1:80").origin_allowed("http://localhost"));
    }

    #[test]
    fn access_without_and_with_tokens() {
        let none = Tokens::none();
        for a in [Access::Open, Access::Read, Access::Documented] {
            assert!(matches!(authorize(a, &none, None, "x", "cortex x"), Ok(None)));
        }
        let e = authorize(Access::Operate, &none, None, "POST /x", "cortex x").unwrap_err();
        assert_eq!(e.status, 403);
        let body = String::from_utf8_lossy(&e.body);
        assert!(body.contains("tokens_file") && body.contains("`cortex x`"), "{body}");

        let t = Tokens::parse("op:oooooooooooooooooooo\n[read]\nro:rrrrrrrrrrrrrrrrrrrr\n").unwrap();
        let (op, ro) = (Some("Bearer oooooooooooooooooooo"), Some("Bearer rrrrrrrrrrrrrrrrrrrr"));
        let status = |a, h| authorize(a, &t, h, "x", "cortex x").map(|c| c.map(|c| c.name)).map_err(|r| r.status);
        assert_eq!(status(Access::Open, None), Ok(None));
        assert_eq!(status(Access::Open, ro), Ok(Some("ro".into())));
        assert_eq!(status(Access::Read, None), Err(401));
        assert_eq!(status(Access::Read, ro), Ok(Some("ro".into())));
        assert_eq!(status(Access::Read, op), Ok(Some("op".into())));
        for a in [Access::Documented, Access::Operate] {
            assert_eq!(status(a, None), Err(401));
            assert_eq!(status(a, Some("Bearer wrongwrongwrongwrong")), Err(401));
            assert_eq!(status(a, ro), Err(403));
            assert_eq!(status(a, op), Ok(Some("op".into())));
        }
    }
}
