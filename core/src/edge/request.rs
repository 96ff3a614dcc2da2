//! The request machine: what every edge build does with one request, from
//! its raw facts to the answer, with the I/O left to the build.
//!
//! 1. [`receive`] checks the raw facts (framing, method, target, Host) and
//!    says whether the request is for the admin endpoint, is proxied, or is
//!    answered here (400 for a dot segment or a bad Host, 405 for CONNECT,
//!    501 for a transfer coding other than `chunked`).
//! 2. [`Inbound::forward`] decides, from what the store holds, where it goes:
//!    a [`Forward`] with the exact outbound request (origin, path, headers).
//! 3. The build sends it (buffering up to [`Forward::replay_limit`] bytes of
//!    body when failover may need to send it again) and hands the result to
//!    [`Forward::after`]: relay it, retry on old, or answer 502.

use std::borrow::Cow;
use std::net::{Ipv6Addr, SocketAddr};

use super::Answer;
use super::stored::Held;
use crate::config::{Config, Failover, Origin};
use crate::decide::{Arm, Decision, Reason, Request, decide};
use crate::http::{self, EdgeHeaders, HeaderList, Hop};

/// A header list as the machine takes it: names (ASCII) and raw value bytes,
/// in message order.
pub type RawHeaders = [(String, Vec<u8>)];

/// Most bytes of a request body an edge holds back so that failover can send
/// the request to old again. A longer body is streamed and never replayed.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// The facts of one request, as the transport received it.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The request target as sent: origin-form (`/p?q`), absolute-form,
    /// `*`, or an authority for CONNECT. Hosts that only report a path and
    /// query (wasi:http) pass that.
    pub target: &'a str,
    /// The authority the platform reports for the request when it does not
    /// pass Host headers through (wasi:http hides Host); `None` to take it
    /// from the request's own Host header.
    pub authority: Option<&'a str>,
    /// Request headers, in message order.
    pub headers: &'a RawHeaders,
    /// The client address, without port.
    pub client_ip: Option<&'a str>,
    /// Whether the client spoke TLS to the edge.
    pub https: bool,
}

/// Where a checked request goes.
#[derive(Debug)]
pub enum Target<'a> {
    /// The admin endpoint ([`super::admin`]).
    Admin,
    /// Proxied to an origin.
    Proxy(Inbound<'a>),
}

/// A request that passed [`receive`]'s checks.
#[derive(Debug)]
pub struct Inbound<'a> {
    raw: RawRequest<'a>,
    host: &'a str,
    path_with_query: &'a str,
}

/// Checks a request's framing, method, target and Host, the same way on every build.
pub fn receive<'a>(raw: &RawRequest<'a>) -> Result<Target<'a>, Answer> {
    let codings = raw
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_slice());
    if !only_chunked(codings) {
        return Err(Answer::text(501, TRANSFER_CODING_REFUSED));
    }
    if raw.method == "CONNECT" {
        return Err(Answer::text(405, "CONNECT is not served by this edge"));
    }
    if !METHODS.contains(&raw.method) {
        // RFC 9110 §9.1: methods are case-sensitive; an unknown one is 501.
        return Err(Answer::text(501, "method not implemented"));
    }
    let (target_authority, path_with_query) = split_target(raw.target)?;
    if let Some(c) = path_with_query.chars().find(|&c| !target_char(c)) {
        return Err(Answer::text(
            400,
            &format!("the request target holds {c:?}, which must be percent-encoded"),
        ));
    }
    let mut hosts = raw
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"));
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Answer::text(400, "more than one Host header"));
    }
    let host_header = match host_header.map(|(_, v)| std::str::from_utf8(v)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Err(Answer::text(400, "the Host header is not an authority")),
    };
    // RFC 9112 §3.2.2: an absolute-form target's authority replaces Host.
    let host = target_authority
        .or(raw.authority)
        .or(host_header)
        .ok_or_else(|| Answer::text(400, "a Host header is required"))?;
    if !valid_authority(host) {
        return Err(Answer::text(
            400,
            "the Host header is not an authority (host[:port], no userinfo)",
        ));
    }
    let path = path_with_query
        .split_once('?')
        .map_or(path_with_query, |(p, _)| p);
    if has_dot_segment(path) {
        return Err(Answer::text(
            400,
            "the path has a dot segment (`.` or `..`, also percent-encoded)",
        ));
    }
    if path == super::ADMIN_PATH {
        return Ok(Target::Admin);
    }
    Ok(Target::Proxy(Inbound {
        raw: RawRequest {
            // Only an address goes into the forwarded headers and the
            // client-ip key: a platform header a client could set on a
            // self-hosted runtime (cf-connecting-ip) is checked too.
            client_ip: raw
                .client_ip
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
            ..*raw
        },
        host,
        path_with_query,
    }))
}

/// Why a request with a transfer coding other than `chunked` is refused.
pub const TRANSFER_CODING_REFUSED: &str = "transfer codings other than chunked are not implemented";

/// Whether a message whose `Transfer-Encoding` field values are `values` (in
/// order, every line) is one an edge can pass on unchanged: no field at all,
/// or exactly one coding, `chunked` (case-insensitive, RFC 9112 §7; empty
/// list elements are ignored, RFC 9110 §5.6.1). HTTP libraries decode
/// `chunked` and hand on the bytes under the codings before it, and the next
/// hop is framed anew, so a request with `gzip, chunked` would reach the
/// origin with its gzip coding silently dropped: RFC 9112 §6.1 answers a
/// coding the server does not implement with 501, and an edge never forwards
/// such a message.
pub fn only_chunked<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> bool {
    let mut present = false;
    let mut codings = 0;
    for value in values {
        present = true;
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                continue;
            }
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return false;
            }
            codings += 1;
        }
    }
    !present || codings == 1
}

/// The methods an edge proxies (RFC 9110 §9.3 and PATCH); CONNECT is refused.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];

/// Whether `c` may appear unencoded in a path or query: RFC 3986's
/// unreserved characters, sub-delimiters but `'`, `:`, `@`, `/`, `?` and `%`.
/// Everything else (spaces, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`,
/// `'`, `#`, controls, bytes above 0x7E) is what URL parsers in JavaScript
/// runtimes rewrite (`\` becomes `/`, the rest percent-encoded, `#` cut), so
/// a request holding one would reach the origin differently per build.
fn target_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&()*+,;=:@/?%".contains(c)
}

/// `(authority of an absolute-form target, path and query)`.
fn split_target(target: &str) -> Result<(Option<&str>, &str), Answer> {
    if target.starts_with('/') {
        return Ok((None, target));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else if target == "*" {
        return Err(Answer::text(400, "asterisk-form targets are not served"));
    } else {
        return Err(Answer::text(400, "the request target is not a path"));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.starts_with('?') || path.is_empty() {
        // `http://host?q` has the empty path, which HTTP sends as `/`; the
        // machine passes targets through as sent, so refuse rather than invent.
        return Err(Answer::text(
            400,
            "an absolute-form target needs a path starting with `/`",
        ));
    }
    Ok((Some(authority), path))
}

/// RFC 9110 §7.2 Host: `uri-host [":" port]`, restricted to what every
/// platform reads alike: a DNS-style name (letters, digits, `-._~`), an IPv4
/// address, or a bracketed IPv6 address; no userinfo, no spaces.
pub fn valid_authority(authority: &str) -> bool {
    let (name, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return false,
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        }
    };
    let name_ok = name.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    name_ok && port_ok
}

/// Whether a path has a `.` or `..` segment, also spelled `%2e`/`%2E`. WHATWG
/// URL parsers (every JavaScript edge) resolve those before a handler runs,
/// so the only rule every build can keep is to refuse them.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let mut dots = 0;
        let mut rest = segment.as_bytes();
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && rest[2] | 0x20 == b'e'
            {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

/// The client IP from an `ip:port` (or `[ip6]:port`) peer address, as hosts
/// such as Spin report it; anything else is passed through.
pub fn client_ip_of(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        // The dotted quad written out directly (the same text as
        // `Ipv4Addr`'s Display): every proxied request comes here.
        Ok(SocketAddr::V4(v4)) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
            out
        }
        Ok(addr) => addr.ip().to_string(),
        Err(_) => addr.to_owned(),
    }
}

/// Headers the platforms this edge runs on add to inbound requests: Spin's
/// (`spin-*` and its older names) and Cloudflare's (`cf-*`). They describe the
/// edge's own hop, so they never travel on, whichever build received them.
pub fn is_platform_header(name: &str) -> bool {
    const SPIN_LEGACY: &[&str] = &[
        "x-full-url",
        "path-info",
        "x-matched-route",
        "x-component-route",
        "x-raw-component-route",
        "x-base-path",
        "x-client-addr",
    ];
    let prefixed = |p: &str| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    };
    prefixed("spin-") || prefixed("cf-") || SPIN_LEGACY.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// What the edge decided for a request, in the terms its headers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The arm.
    pub arm: Arm,
    /// The applied config version (0 when routing by the bootstrap origin).
    pub version: u64,
    /// `x-rollout-flags` value.
    pub flags: String,
    /// `Set-Cookie` value for a minted sticky id.
    pub set_cookie: Option<String>,
    /// Debug headers for the client, when the config asks for them.
    pub debug: Vec<(&'static str, String)>,
}

impl Outcome {
    fn of(decision: &Decision<'_>, version: u64, debug_headers: bool) -> Outcome {
        Outcome {
            arm: decision.arm,
            version,
            flags: decision.flags_header(),
            set_cookie: decision.set_cookie.as_ref().map(|c| c.header_value()),
            debug: if debug_headers {
                decision.debug_headers()
            } else {
                Vec::new()
            },
        }
    }

    fn bootstrap() -> Outcome {
        Outcome {
            arm: Arm::Old,
            version: 0,
            flags: String::new(),
            set_cookie: None,
            debug: vec![("x-rollout-reason", Reason::Bootstrap.as_str().to_owned())],
        }
    }

    fn edge_headers(&self) -> EdgeHeaders<'_> {
        EdgeHeaders {
            arm: self.arm,
            version: self.version,
            flags: Cow::Borrowed(&self.flags),
            set_cookie: self.set_cookie.as_deref(),
            debug: self.debug.iter().map(|(n, v)| (*n, v.as_str())).collect(),
        }
    }

    /// The headers the edge puts on every response it gives for this
    /// request, its own errors included.
    pub fn response_headers(&self) -> HeaderList<Vec<u8>> {
        http::edge_response_headers(&self.edge_headers())
    }
}

impl<'a> Inbound<'a> {
    /// The Host the request named (validated).
    pub fn host(&self) -> &'a str {
        self.host
    }

    /// The path and query, exactly as sent.
    pub fn path_with_query(&self) -> &'a str {
        self.path_with_query
    }

    /// Decides where the request goes, from what the store `held`; without
    /// a usable config, everything goes to what `bootstrap` gives (the
    /// edge's old origin setting; asked for only then) on old. `mint` is 16
    /// random bytes for a sticky id.
    pub fn forward(
        &self,
        held: &Held<'_>,
        bootstrap: impl FnOnce() -> Option<String>,
        mint: Option<[u8; 16]>,
    ) -> Result<Forward, Answer> {
        // Headers the client named in Connection belong to its hop: gone
        // before anything reads them, as rollout-host strips them before the
        // component runs.
        let message = http::without_connection_named(self.raw.headers);
        let text: Vec<(&str, &str)> = message
            .iter()
            // A value that is not UTF-8 reads as empty: no key, but still
            // counted, so a duplicate key header stays a duplicate.
            .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap_or("")))
            .collect();
        let (path, query) = self
            .path_with_query
            .split_once('?')
            .unwrap_or((self.path_with_query, ""));
        let request = Request {
            method: self.raw.method,
            host: self.host,
            path,
            query,
            headers: &text,
            client_ip: self.raw.client_ip,
            mint,
        };
        let rederived;
        let stored = match held {
            Held::Ready(stored) => Some(stored),
            Held::Rederived { value } => {
                rederived = super::stored::compact_of(value).and_then(super::StoredActive::parse);
                rederived.as_ref()
            }
            Held::Nothing | Held::Unreadable => None,
        };
        let config: Option<(Config, u64)> =
            stored.and_then(|s| Some((s.config_for(&request)?, s.applied().version)));
        let Some((config, version)) = config else {
            let origin = bootstrap()
                .and_then(|o| Origin::parse(&o).ok())
                .ok_or_else(|| {
                    Answer::text(
                        502,
                        "no config applied and no valid old origin setting to fall back to",
                    )
                    .with_headers(Outcome::bootstrap().response_headers())
                })?;
            return Ok(self.plan(&message, origin, Outcome::bootstrap(), None));
        };
        let decision = decide(&config, &request);
        let failover = decision
            .failover(self.raw.method)
            .map(|f| (decision.route.old().clone(), f.clone()));
        let outcome = Outcome::of(&decision, version, config.debug_headers());
        Ok(self.plan(&message, decision.origin.clone(), outcome, failover))
    }

    fn plan(
        &self,
        message: &RawHeaders,
        origin: Origin,
        outcome: Outcome,
        failover: Option<(Origin, Failover)>,
    ) -> Forward {
        let hop = Hop {
            client_ip: self.raw.client_ip,
            host: self.host,
            proto: if self.raw.https { "https" } else { "http" },
        };
        let headers =
            http::origin_request_headers(message, &outcome.edge_headers(), hop, is_platform_header);
        // The client's request as it came is kept only for a retry on old:
        // most routes have no failover, and copying every header costs two
        // allocations each.
        let failover = failover.map(|(old, policy)| {
            Box::new(Replay {
                old,
                policy,
                client_headers: message.to_vec(),
                hop_host: self.host.to_owned(),
                client_ip: self.raw.client_ip.map(str::to_owned),
            })
        });
        Forward {
            method: self.raw.method.to_owned(),
            origin,
            path_with_query: self.path_with_query.to_owned(),
            headers,
            head_only: self.raw.method.eq_ignore_ascii_case("HEAD"),
            outcome,
            failover,
            https: self.raw.https,
        }
    }
}

/// The request to send to an origin, and the rules for what comes back.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The method.
    pub method: String,
    /// The origin (scheme, host, port) to send to.
    pub origin: Origin,
    /// Path and query, exactly as the client sent them.
    pub path_with_query: String,
    /// The headers to send, in order. A transport adds only what its HTTP
    /// client must (Host for the origin, framing).
    pub headers: HeaderList<Vec<u8>>,
    /// The decision, for the edge's response headers.
    pub outcome: Outcome,
    head_only: bool,
    failover: Option<Box<Replay>>,
    https: bool,
}

/// What sending a request again on old takes: old's origin, the failover
/// policy, and the client's request as it came (its headers after the
/// Connection-named ones were dropped, its Host, its address).
#[derive(Debug, Clone)]
struct Replay {
    old: Origin,
    policy: Failover,
    client_headers: HeaderList<Vec<u8>>,
    hop_host: String,
    client_ip: Option<String>,
}

/// Why an origin gave no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Nothing reached the origin: refused, unreachable, DNS, TLS, or not on
    /// the edge's outbound allow-list.
    #[error("{0}")]
    Connect(String),
    /// The exchange failed after it began.
    #[error("{0}")]
    Other(String),
}

/// What to do once the origin answered, or failed to.
#[derive(Debug)]
pub enum After {
    /// Relay the origin's response: its status, [`Forward::response_headers`]
    /// and (when [`Forward::relays_body`]) its body.
    Relay,
    /// Send this request to old instead, with the same body.
    Retry(Box<Forward>),
    /// Answer the client with this.
    Answer(Answer),
}

impl Forward {
    /// `Some(limit)` when failover may send this request again: hold back up
    /// to `limit` bytes of body before sending, so it can be replayed. A body
    /// that does not end within the limit is streamed and never replayed.
    pub fn replay_limit(&self) -> Option<usize> {
        self.failover.as_ref().map(|_| REPLAY_LIMIT)
    }

    /// What to do with the origin's `result` (its status, or why it gave
    /// none). `replayable`: the whole request body is held (or there is
    /// none), so the request can be sent again.
    pub fn after(&self, result: Result<u16, &OriginError>, replayable: bool) -> After {
        let retry = match (&self.failover, result) {
            (Some(replay), Ok(status)) => replay.policy.retries_status(status),
            (Some(replay), Err(OriginError::Connect(_))) => replay.policy.connect_error,
            _ => false,
        };
        if retry
            && replayable
            && let Some(replay) = &self.failover
        {
            let outcome = Outcome {
                arm: Arm::Old,
                ..self.outcome.clone()
            };
            let hop = Hop {
                client_ip: replay.client_ip.as_deref(),
                host: &replay.hop_host,
                proto: if self.https { "https" } else { "http" },
            };
            let headers = http::origin_request_headers(
                &replay.client_headers,
                &outcome.edge_headers(),
                hop,
                is_platform_header,
            );
            return After::Retry(Box::new(Forward {
                origin: replay.old.clone(),
                headers,
                outcome,
                failover: None,
                ..self.clone()
            }));
        }
        match result {
            // A final status HTTP can carry to the client (a 101 was never
            // asked for; 999 is not a status a Fetch Response can hold).
            Ok(status) if (200..=599).contains(&status) => After::Relay,
            Ok(status) => After::Answer(self.failed(&format!("it answered status {status}"))),
            Err(OriginError::Connect(why) | OriginError::Other(why)) => {
                After::Answer(self.failed(why))
            }
        }
    }

    /// The 502 for an origin that gave no usable response.
    pub fn failed(&self, why: &str) -> Answer {
        let label = if self.outcome.version == 0 {
            "bootstrap"
        } else {
            "config"
        };
        Answer::text(
            502,
            &format!("origin {} ({label}) failed: {why}", self.outcome.arm),
        )
        .with_headers(self.outcome.response_headers())
    }

    /// The 400 for a GET or HEAD that carries a body: builds disagree on
    /// what to do with one (send it unframed, drop it, refuse it), so every
    /// build refuses it. `None` for every other method.
    pub fn refuses_body(&self) -> Option<Answer> {
        let bodiless = self.method == "GET" || self.method == "HEAD";
        bodiless.then(|| {
            Answer::text(400, "a GET or HEAD request cannot carry a body")
                .with_headers(self.outcome.response_headers())
        })
    }

    /// The 400 for a request whose body broke before the edge held what it
    /// needed to send.
    pub fn unreadable_body(&self) -> Answer {
        Answer::text(400, "the request body could not be read")
            .with_headers(self.outcome.response_headers())
    }

    /// Headers for the client: the origin's, minus hop-by-hop and edge
    /// headers, plus the edge's own.
    pub fn response_headers(&self, origin: &RawHeaders) -> HeaderList<Vec<u8>> {
        http::client_response_headers(origin, &self.outcome.edge_headers())
    }

    /// Whether a response with `status` carries a body to relay.
    pub fn relays_body(&self, status: u16) -> bool {
        !(self.head_only || status == 204 || status == 304 || (100..200).contains(&status))
    }
}

/// An outbound allow-list: the origins an edge may send to (scheme, host and
/// port must match). Every build enforces one; Spin and rollout-host in the
/// host, the JavaScript edges with this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Origin>);

impl AllowList {
    /// Parses origins separated by spaces, commas or newlines.
    pub fn parse(list: &str) -> Result<AllowList, String> {
        list.split([' ', ',', '\n', '\t'])
            .filter(|s| !s.is_empty())
            .map(|s| Origin::parse(s).map_err(|e| format!("{s}: {e}")))
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    /// Whether `origin` is on the list.
    pub fn permits(&self, origin: &Origin) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

#[cfg(test)]
mod tests;
