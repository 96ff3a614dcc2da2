//! Outbound HTTP, allowed only to listed origins (Spin's
//! `allowed_outbound_hosts`), with timeouts a proxy needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks};

use crate::limits::TimedBody;
use crate::{Edge, Metrics};

/// Origins the component may call: `scheme://host:port` entries, or `*` for any.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    any: bool,
    origins: Vec<(String, String, u16)>,
}

/// An allow-list entry that is not `scheme://host[:port]` or `*`.
#[derive(Debug, thiserror::Error)]
#[error("allowed outbound origin {0:?} must be http(s)://host[:port] or *")]
pub struct InvalidAllowEntry(String);

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl AllowList {
    /// Parses entries such as `http://127.0.0.1:8081` or `*`.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, InvalidAllowEntry> {
        let mut list = AllowList::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                list.any = true;
                continue;
            }
            let uri: http::Uri = entry
                .parse()
                .map_err(|_| InvalidAllowEntry(entry.to_owned()))?;
            let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
                return Err(InvalidAllowEntry(entry.to_owned()));
            };
            if scheme != "http" && scheme != "https" {
                return Err(InvalidAllowEntry(entry.to_owned()));
            }
            let port = uri.port_u16().unwrap_or(default_port(scheme));
            list.origins
                .push((scheme.to_owned(), host.to_ascii_lowercase(), port));
        }
        Ok(list)
    }

    /// Whether a request to this URI may leave.
    pub fn permits(&self, uri: &http::Uri) -> bool {
        if self.any {
            return true;
        }
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(default_port(scheme));
        self.origins
            .iter()
            .any(|(s, h, p)| s == scheme && h.eq_ignore_ascii_case(host) && *p == port)
    }
}

/// The hooks wasi:http calls for every outbound request.
/// Kept-alive connections to plain-HTTP origins, shared by the requests one
/// listener serves (as a CDN keeps its origin connections warm), so a request
/// does not pay a TCP handshake to reach its origin.
pub(crate) type Pool = Client<HttpConnector, WasiBody>;

/// How long to wait for an origin to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an origin's response head.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn pool() -> Pool {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

pub(crate) struct Hooks {
    edge: Arc<Edge>,
    pool: Option<Pool>,
    metrics: Option<Arc<Metrics>>,
    /// How long an origin's response body may pause between frames.
    between_bytes: Duration,
    /// Set once a request leaves for an origin, when the host watches for it.
    sent: Option<Arc<AtomicBool>>,
    /// The instance writing request bodies: one it fails part-way never ends.
    instance: Option<crate::integrity::Instance>,
}

impl Hooks {
    /// Hooks for one request; without a pool every request opens its own
    /// connection, without metrics none is timed. An origin's response body
    /// that pauses longer than `between_bytes` fails.
    pub(crate) fn new(
        edge: Arc<Edge>,
        pool: Option<Pool>,
        metrics: Option<Arc<Metrics>>,
        between_bytes: Duration,
    ) -> Hooks {
        Hooks {
            edge,
            pool,
            metrics,
            between_bytes,
            sent: None,
            instance: None,
        }
    }

    /// Request bodies fail instead of ending once `instance` failed.
    pub(crate) fn guard_bodies(&mut self, instance: crate::integrity::Instance) {
        self.instance = Some(instance);
    }

    /// Sets `sent` once an outbound request passes the allow-list.
    pub(crate) fn report_sent(&mut self, sent: Arc<AtomicBool>) {
        self.sent = Some(sent);
    }
}

/// The wasi:http error a failed pooled request becomes, so the component sees
/// the same codes (and fails over the same way) as with a direct connection.
fn pooled_error(e: &hyper_util::client::legacy::Error) -> wasmtime_wasi_http::Error {
    if e.is_connect() {
        let timed_out = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            wasmtime_wasi_http::Error::ConnectionTimeout
        } else {
            wasmtime_wasi_http::Error::ConnectionRefused
        }
    } else {
        wasmtime_wasi_http::Error::ConnectionTerminated
    }
}

/// Whether an origin's response is framed by a transfer coding other than
/// `chunked` alone (`gzip, chunked`, or `gzip` read to the close). hyper
/// decodes only `chunked`, and wasi:http hides Transfer-Encoding from the
/// component, so relaying it would hand the client the bytes under the other
/// codings with nothing saying they are coded: such a response is an origin
/// failure (502), never relayed.
fn coded_beyond_chunked(headers: &http::HeaderMap) -> bool {
    let codings = headers.get_all(http::header::TRANSFER_ENCODING);
    !rollout_core::edge::request::only_chunked(codings.iter().map(|v| v.as_bytes()))
}

type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

/// The headers a component may neither see nor set: exactly
/// wasmtime-wasi-http's `DEFAULT_FORBIDDEN_HEADERS` (a test holds them
/// equal). Its default check allocates a closure and builds and drops that
/// list of nine `HeaderName`s for every header that crosses into or out of
/// the component, some thirty per proxied request; names are lowercase, so
/// comparing the text is the same test.
const FORBIDDEN: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

fn forbidden(name: &http::HeaderName) -> bool {
    FORBIDDEN.contains(&name.as_str())
}

impl WasiHttpHooks for Hooks {
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        forbidden(name)
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        static FILTER: std::sync::LazyLock<ForbiddenHeaderFilter> =
            std::sync::LazyLock::new(|| Arc::new(forbidden));
        FILTER.clone()
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> Box<
        dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), wasmtime_wasi_http::Error>>
            + Send,
    > {
        if !self.edge.allow.permits(request.uri()) {
            tracing::warn!(
                "outbound request to {} denied: not an allowed origin",
                request.uri()
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if let Some(sent) = &self.sent {
            sent.store(true, Ordering::Relaxed);
        }
        let request = match &self.instance {
            Some(instance) => request.map(|body| instance.body(body)),
            None => request,
        };
        // Timed from here, past the allow check: a denied request never
        // reaches an origin, so it says nothing about one. The timer moves
        // into the future below rather than wrapping it, so timing costs no
        // second allocation per request.
        let timer = self
            .metrics
            .as_ref()
            .map(|m| m.origin_timer(request.headers()));
        // spin-sdk never passes options; without these every wait would be
        // wasmtime's default of ten minutes, and a dead origin would hold a
        // request that long instead of failing over.
        let options = options.unwrap_or(RequestOptions {
            connect_timeout: Some(CONNECT_TIMEOUT),
            first_byte_timeout: Some(FIRST_BYTE_TIMEOUT),
            between_bytes_timeout: Some(self.between_bytes),
        });
        if let Some(pool) = self
            .pool
            .as_ref()
            .filter(|_| request.uri().scheme_str() == Some("http"))
        {
            let pool = pool.clone();
            let first_byte = options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT);
            let between_bytes = options.between_bytes_timeout.unwrap_or(self.between_bytes);
            return Box::new(async move {
                let sent = tokio::time::timeout(first_byte, pool.request(request)).await;
                let coded = matches!(&sent, Ok(Ok(resp)) if coded_beyond_chunked(resp.headers()));
                if let Some(timer) = timer {
                    timer.finish(matches!(sent, Ok(Ok(_))) && !coded);
                }
                let resp = match sent {
                    Err(_) => return Err(wasmtime_wasi_http::Error::ConnectionReadTimeout),
                    Ok(Err(e)) => return Err(pooled_error(&e)),
                    // Dropped, never relayed. Its chunked framing was intact,
                    // so hyper may still reuse the connection.
                    Ok(Ok(_)) if coded => return Err(wasmtime_wasi_http::Error::HttpProtocolError),
                    Ok(Ok(resp)) => resp,
                };
                // An origin that stops sending mid-body would otherwise hold
                // the instance (and the client) until it closes, which a
                // dead peer never does.
                let mut resp = resp.map(|body| TimedBody::new(body, between_bytes).boxed_unsync());
                crate::drop_connection_named(resp.headers_mut());
                // The pool drives its connections itself.
                Ok((resp, Box::new(async { Ok(()) }) as IoFuture))
            });
        }
        Box::new(async move {
            let sent = wasmtime_wasi_http::default_send_request(request, Some(options)).await;
            let coded = matches!(&sent, Ok((resp, _)) if coded_beyond_chunked(resp.headers()));
            if let Some(timer) = timer {
                timer.finish(sent.is_ok() && !coded);
            }
            let (mut resp, io) = sent?;
            if coded {
                return Err(wasmtime_wasi_http::Error::HttpProtocolError);
            }
            crate::drop_connection_named(resp.headers_mut());
            Ok((resp.map(|b| b.boxed_unsync()), Box::new(io) as IoFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forbidden_headers_are_wasmtimes() {
        for name in &wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS {
            assert!(forbidden(name), "{name} must stay forbidden");
        }
        let from_request = |n: &str| forbidden(&n.parse::<http::HeaderName>().expect("name"));
        assert!(from_request("Keep-Alive"), "names are matched in any case");
        assert!(from_request("HTTP2-Settings"));
        for allowed in ["content-length", "x-forwarded-for", "cookie", "hosts", "te"] {
            assert!(!from_request(allowed), "{allowed} is not forbidden");
        }
        // No name beyond wasmtime's list: each of ours is one of its nine.
        assert_eq!(
            FORBIDDEN.len(),
            wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.len()
        );
        for name in FORBIDDEN {
            assert!(from_request(name));
            assert!(
                wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS
                    .iter()
                    .any(|d| d.as_str() == name),
                "{name} is not in wasmtime's list"
            );
        }
        let mut hooks = Hooks::new(
            Arc::new(Edge {
                kv: Arc::new(crate::kv::MemoryKv::default()),
                variables: Default::default(),
                allow: AllowList::new(&["*"]).expect("any"),
            }),
            None,
            None,
            Duration::from_secs(1),
        );
        assert!(hooks.is_forbidden_header(&http::header::HOST));
        assert!((hooks.forbidden_header_filter())(&http::header::UPGRADE));
        assert!(!(hooks.forbidden_header_filter())(&http::header::ACCEPT));
    }

    #[test]
    fn only_listed_origins_are_permitted() {
        let list =
            AllowList::new(&["http://127.0.0.1:8081", "https://new.example.com"]).expect("valid");
        let permits = |u: &str| list.permits(&u.parse().expect("uri"));
        assert!(permits("http://127.0.0.1:8081/x"));
        assert!(permits("https://NEW.example.com:443/"));
        assert!(!permits("http://127.0.0.1:8082/"));
        assert!(!permits("http://new.example.com/"), "scheme must match");
        assert!(!permits("https://evil.example.com/"));
        assert!(
            AllowList::new(&["*"])
                .expect("any")
                .permits(&"http://x:1/".parse().expect("uri"))
        );
        assert!(AllowList::new(&["ftp://x"]).is_err());
        assert!(AllowList::new(&["not a url"]).is_err());
    }
}
