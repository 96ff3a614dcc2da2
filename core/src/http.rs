//! Header rules every edge applies the same way: which headers may travel to
//! an origin or back to a client, the `forwarded` headers it appends, and the
//! header lists it builds from them.
//!
//! The list builders are generic over the header value type so that every
//! edge shares one copy: Spin carries values as bytes (`Vec<u8>`), a
//! JavaScript edge as `String`s.

use std::borrow::Cow;

use crate::Arm;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `host`: the origin's host comes only from config.
const NEVER_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "http2-settings",
    "host",
];

/// Headers the edge sets itself; copies arriving from a client or an origin
/// are dropped so nobody can forge what the edge reports.
pub const EDGE_HEADERS: &[&str] = &[
    "x-rollout-arm",
    "x-rollout-version",
    "x-rollout-flags",
    "x-rollout-route",
    "x-rollout-bucket",
    "x-rollout-reason",
    "x-rollout-key",
];

/// Decides which headers of one message may be copied to the next hop.
#[derive(Debug, Clone, Default)]
pub struct HeaderFilter {
    /// Extra names listed in the message's `Connection` header, lowercased.
    named: Vec<String>,
}

impl HeaderFilter {
    /// A filter for a message whose `Connection` header values are `connection`.
    pub fn new<'a>(connection: impl IntoIterator<Item = &'a str>) -> HeaderFilter {
        let named = connection
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        HeaderFilter { named }
    }

    /// Whether header `name` may be copied to the next hop. The edge's own
    /// namespace (`x-rollout-*`) never is, whatever the name, so nobody can
    /// forge what the edge reports, now or in a later version.
    pub fn forwards(&self, name: &str) -> bool {
        let is = |list: &[&str]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
        !(is(NEVER_FORWARDED)
            || is(EDGE_HEADERS)
            || prefixed(name, "proxy-")
            || prefixed(name, "x-rollout-")
            || self.named.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }
}

fn prefixed(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// What the edge knows about the hop it received, for the forwarded headers.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// Client address (IP, without port).
    pub client_ip: Option<&'a str>,
    /// Host the client asked for.
    pub host: &'a str,
    /// `http` or `https`, as the client spoke to the edge.
    pub proto: &'a str,
}

/// `x-forwarded-for`, `x-forwarded-host`, `x-forwarded-proto` and
/// `forwarded` (RFC 7239) values for the outbound request, each appended to
/// the values the request already carried.
pub fn forwarded_headers(
    existing_xff: Option<&str>,
    existing_forwarded: Option<&str>,
    hop: Hop<'_>,
) -> Vec<(&'static str, String)> {
    let append = |existing: Option<&str>, value: String| match existing
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(e) => format!("{e}, {value}"),
        None => value,
    };
    let mut out = Vec::with_capacity(4);
    // Built in place (no string per part): this runs on every request.
    let mut element = String::with_capacity(64);
    if let Some(ip) = hop.client_ip {
        out.push(("x-forwarded-for", append(existing_xff, ip.to_owned())));
        // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
        if ip.contains(':') {
            element.extend(["for=\"[", ip, "]\";"]);
        } else {
            element.extend(["for=", ip, ";"]);
        }
    }
    let host_token = hop
        .host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if host_token {
        element.extend(["host=", hop.host, ";"]);
    } else {
        element.push_str("host=\"");
        element.extend(hop.host.chars().filter(|c| !matches!(c, '"' | '\\')));
        element.push_str("\";");
    }
    element.extend(["proto=", hop.proto]);
    out.push(("forwarded", append(existing_forwarded, element)));
    out.push(("x-forwarded-host", hop.host.to_owned()));
    out.push(("x-forwarded-proto", hop.proto.to_owned()));
    out
}

/// A header list as an edge holds it: `(name, value)` pairs in message order.
pub type HeaderList<V> = Vec<(String, V)>;

/// What the edge reports about a request in the headers it sets itself, as
/// plain data from the adapter's own outcome type.
#[derive(Debug, Clone)]
pub struct EdgeHeaders<'a> {
    /// The arm the request goes to (`x-rollout-arm`).
    pub arm: Arm,
    /// The applied config version, 0 when none is (`x-rollout-version`).
    pub version: u64,
    /// The flags that are on, comma-separated (`x-rollout-flags`). Borrowed
    /// where the adapter holds it joined already, owned where it joins on
    /// demand.
    pub flags: Cow<'a, str>,
    /// The `Set-Cookie` value for a minted sticky id.
    pub set_cookie: Option<&'a str>,
    /// Debug headers for the client. Only names in [`EDGE_HEADERS`] are
    /// sent, so an outcome that came back from outside the edge cannot add
    /// arbitrary response headers this way.
    pub debug: Vec<(&'a str, &'a str)>,
}

/// The values of header `name`, joined with `", "` as one field value
/// (RFC 9110 §5.3). Values that are not UTF-8 are skipped.
fn joined<V: AsRef<[u8]>>(headers: &[(String, V)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v.as_ref()).ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// `headers` without the ones its `Connection` header names (RFC 9110
/// §7.6.1): they describe the hop the message came on, not the message.
/// Borrowed when none of the headers it names is there (almost every
/// request: `Connection: keep-alive` rarely comes with a `Keep-Alive`
/// header): nothing is copied.
pub fn without_connection_named<V: AsRef<[u8]> + Clone>(
    headers: &[(String, V)],
) -> Cow<'_, [(String, V)]> {
    let filter = connection_filter(headers);
    let named = |n: &str| filter.named.iter().any(|x| x.eq_ignore_ascii_case(n));
    if !headers.iter().any(|(n, _)| named(n)) {
        return Cow::Borrowed(headers);
    }
    Cow::Owned(headers.iter().filter(|(n, _)| !named(n)).cloned().collect())
}

/// The filter for a message with `headers`, honouring its `Connection` header.
fn connection_filter<V: AsRef<[u8]>>(headers: &[(String, V)]) -> HeaderFilter {
    HeaderFilter::new(
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .filter_map(|(_, v)| std::str::from_utf8(v.as_ref()).ok()),
    )
}

/// Headers for the request to the origin: the client's `incoming` headers
/// minus hop-by-hop, edge and platform headers, then `x-rollout-arm`,
/// `x-rollout-version`, `x-rollout-flags` and the [`forwarded_headers`]
/// (which replace any the client sent, their values appended to).
///
/// `is_platform_header` names the headers the edge's host adds to every
/// inbound request (Spin's `spin-*`, Cloudflare's `cf-*`): they describe the
/// edge's own hop, not the client's, so they stay at the edge.
pub fn origin_request_headers<V>(
    incoming: &[(String, V)],
    edge: &EdgeHeaders<'_>,
    hop: Hop<'_>,
    is_platform_header: impl Fn(&str) -> bool,
) -> HeaderList<V>
where
    V: AsRef<[u8]> + Clone + From<String>,
{
    let filter = connection_filter(incoming);
    let forwarded = forwarded_headers(
        joined(incoming, "x-forwarded-for").as_deref(),
        joined(incoming, "forwarded").as_deref(),
        hop,
    );
    let mut out: HeaderList<V> = incoming
        .iter()
        .filter(|(n, _)| filter.forwards(n) && !is_platform_header(n))
        // The edge states the hop itself: a client's x-forwarded-* (port,
        // prefix, ...) would speak for the edge; x-forwarded-for and
        // forwarded are appended to, the others replaced.
        .filter(|(n, _)| !forwarded.iter().any(|(f, _)| f.eq_ignore_ascii_case(n)))
        .filter(|(n, _)| !prefixed(n, "x-forwarded-"))
        .cloned()
        .collect();
    out.push(("x-rollout-arm".into(), edge.arm.as_str().to_owned().into()));
    out.push(("x-rollout-version".into(), edge.version.to_string().into()));
    out.push((
        "x-rollout-flags".into(),
        edge.flags.clone().into_owned().into(),
    ));
    out.extend(forwarded.into_iter().map(|(n, v)| (n.to_owned(), v.into())));
    out
}

/// Headers for the client: the `origin`'s response headers minus hop-by-hop
/// and edge headers, then the [`edge_response_headers`].
pub fn client_response_headers<V>(origin: &[(String, V)], edge: &EdgeHeaders<'_>) -> HeaderList<V>
where
    V: AsRef<[u8]> + Clone + From<String>,
{
    let filter = connection_filter(origin);
    let mut out: HeaderList<V> = origin
        .iter()
        .filter(|(n, _)| filter.forwards(n))
        .cloned()
        .collect();
    out.extend(edge_response_headers(edge));
    out
}

/// The headers the edge adds to every response it gives, its own errors
/// included: `x-rollout-arm`, `x-rollout-version`, the sticky cookie and the
/// debug headers.
pub fn edge_response_headers<V: From<String>>(edge: &EdgeHeaders<'_>) -> HeaderList<V> {
    let mut out: HeaderList<V> = vec![
        ("x-rollout-arm".into(), edge.arm.as_str().to_owned().into()),
        ("x-rollout-version".into(), edge.version.to_string().into()),
    ];
    if let Some(cookie) = edge.set_cookie {
        out.push(("set-cookie".into(), cookie.to_owned().into()));
    }
    out.extend(
        edge.debug
            .iter()
            .filter(|(n, _)| EDGE_HEADERS.contains(n))
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned().into())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_stay_behind() {
        let f = HeaderFilter::new(["close, X-Secret", " keep-alive"]);
        for name in [
            "Connection",
            "keep-alive",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Proxy-Authorization",
            "proxy-anything",
            "Host",
            "x-secret",
            "X-Rollout-Arm",
        ] {
            assert!(!f.forwards(name), "{name} must not be forwarded");
        }
        for name in [
            "accept",
            "cookie",
            "authorization",
            "x-user-id",
            "forwarded",
            "content-length",
        ] {
            assert!(f.forwards(name), "{name} must be forwarded");
        }
    }

    #[test]
    fn forwarded_headers_append_to_what_came_in() {
        let hop = Hop {
            client_ip: Some("2001:db8::7"),
            host: "shop.example.com",
            proto: "https",
        };
        let got = forwarded_headers(Some("198.51.100.1"), Some("for=198.51.100.1"), hop);
        assert_eq!(
            got,
            [
                ("x-forwarded-for", "198.51.100.1, 2001:db8::7".to_owned()),
                (
                    "forwarded",
                    "for=198.51.100.1, for=\"[2001:db8::7]\";host=shop.example.com;proto=https"
                        .to_owned()
                ),
                ("x-forwarded-host", "shop.example.com".to_owned()),
                ("x-forwarded-proto", "https".to_owned()),
            ]
        );
        let hop = Hop {
            client_ip: Some("192.0.2.9"),
            host: "h:8080",
            proto: "http",
        };
        let got = forwarded_headers(None, None, hop);
        assert_eq!(got[0], ("x-forwarded-for", "192.0.2.9".to_owned()));
        assert_eq!(
            got[1],
            (
                "forwarded",
                "for=192.0.2.9;host=\"h:8080\";proto=http".to_owned()
            )
        );
    }

    fn strings(pairs: &[(&str, &str)]) -> HeaderList<String> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn bytes(pairs: &[(&str, &str)]) -> HeaderList<Vec<u8>> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn text<V: AsRef<[u8]>>(list: &[(String, V)]) -> Vec<(&str, &str)> {
        list.iter()
            .map(|(n, v)| {
                let v = std::str::from_utf8(v.as_ref()).expect("test values are UTF-8");
                (n.as_str(), v)
            })
            .collect()
    }

    /// `(name, value)` pairs, as a test case writes them.
    type Pairs = &'static [(&'static str, &'static str)];

    /// A stand-in for an edge platform's own inbound headers.
    fn is_cdn_header(name: &str) -> bool {
        name.get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("cdn-"))
    }

    fn edge() -> EdgeHeaders<'static> {
        EdgeHeaders {
            arm: Arm::New,
            version: 7,
            flags: "a,b".into(),
            set_cookie: Some("sid=abc; Path=/"),
            debug: vec![("x-rollout-route", "web"), ("x-rollout-reason", "weight")],
        }
    }

    const HOP: Hop<'static> = Hop {
        client_ip: Some("192.0.2.1"),
        host: "shop.example.com",
        proto: "https",
    };

    /// The decision and forwarded headers every origin request ends with.
    const DECISION_AND_HOP: &[(&str, &str)] = &[
        ("x-rollout-arm", "new"),
        ("x-rollout-version", "7"),
        ("x-rollout-flags", "a,b"),
        ("x-forwarded-for", "192.0.2.1"),
        (
            "forwarded",
            "for=192.0.2.1;host=shop.example.com;proto=https",
        ),
        ("x-forwarded-host", "shop.example.com"),
        ("x-forwarded-proto", "https"),
    ];

    #[test]
    fn the_origin_gets_the_clients_headers_minus_hop_edge_and_platform_ones() {
        let cases: &[(&str, Pairs, Pairs)] = &[
            ("no headers", &[], &[]),
            (
                "end-to-end headers pass in order, any case",
                &[("Accept", "*/*"), ("cookie", "sid=1"), ("X-User-Id", "u")],
                &[("Accept", "*/*"), ("cookie", "sid=1"), ("X-User-Id", "u")],
            ),
            (
                "hop-by-hop, host and connection-named headers stay behind",
                &[
                    ("connection", "X-Private, close"),
                    ("x-private", "secret"),
                    ("te", "trailers"),
                    ("Host", "edge.example"),
                    ("proxy-authorization", "basic x"),
                    ("accept", "*/*"),
                ],
                &[("accept", "*/*")],
            ),
            (
                "a client cannot forge the edge's headers",
                &[
                    ("x-rollout-arm", "old"),
                    ("X-Rollout-Flags", "all"),
                    ("x-rollout-debug", "1"),
                ],
                &[],
            ),
            (
                "platform headers stay at the edge",
                &[
                    ("cdn-client-ip", "203.0.113.9"),
                    ("CDN-Ray", "1"),
                    ("cdnx", "kept"),
                ],
                &[("cdnx", "kept")],
            ),
            (
                "forwarded headers from the client are replaced by the edge's",
                &[
                    ("x-forwarded-host", "evil.example"),
                    ("X-Forwarded-Proto", "http"),
                    ("x-forwarded-port", "443"),
                    ("X-Forwarded-Prefix", "/evil"),
                ],
                &[],
            ),
        ];
        for (what, incoming, kept) in cases {
            let want: Vec<(&str, &str)> = kept.iter().chain(DECISION_AND_HOP).copied().collect();
            let got = origin_request_headers(&strings(incoming), &edge(), HOP, is_cdn_header);
            assert_eq!(text(&got), want, "{what} (string values)");
            let got = origin_request_headers(&bytes(incoming), &edge(), HOP, is_cdn_header);
            assert_eq!(text(&got), want, "{what} (byte values)");
        }
    }

    #[test]
    fn the_forwarded_chain_appends_to_every_value_the_client_sent() {
        let incoming = [
            ("X-Forwarded-For", "203.0.113.1"),
            ("accept", "*/*"),
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=203.0.113.1"),
        ];
        let got = origin_request_headers(&strings(&incoming), &edge(), HOP, is_cdn_header);
        let got = text(&got);
        assert_eq!(got[0], ("accept", "*/*"));
        assert!(got.contains(&("x-forwarded-for", "203.0.113.1, 198.51.100.2, 192.0.2.1")));
        assert!(got.contains(&(
            "forwarded",
            "for=203.0.113.1, for=192.0.2.1;host=shop.example.com;proto=https"
        )));
    }

    #[test]
    fn values_that_are_not_utf8_are_left_out_of_the_forwarded_chain() {
        let mut incoming = bytes(&[("x-forwarded-for", "203.0.113.1")]);
        incoming.push(("x-forwarded-for".to_owned(), vec![0xff, 0xfe]));
        let got = origin_request_headers(&incoming, &edge(), HOP, is_cdn_header);
        assert!(text(&got).contains(&("x-forwarded-for", "203.0.113.1, 192.0.2.1")));
    }

    #[test]
    fn the_client_gets_the_origins_headers_and_the_edges() {
        let edge_headers: &[(&str, &str)] = &[
            ("x-rollout-arm", "new"),
            ("x-rollout-version", "7"),
            ("set-cookie", "sid=abc; Path=/"),
            ("x-rollout-route", "web"),
            ("x-rollout-reason", "weight"),
        ];
        let cases: &[(&str, Pairs, Pairs)] = &[
            ("no headers", &[], &[]),
            (
                "end-to-end headers pass, the origin's cookies too",
                &[("content-type", "text/plain"), ("set-cookie", "a=1")],
                &[("content-type", "text/plain"), ("set-cookie", "a=1")],
            ),
            (
                "hop-by-hop and connection-named headers stay behind",
                &[
                    ("Connection", "x-internal"),
                    ("X-Internal", "1"),
                    ("keep-alive", "5"),
                    ("transfer-encoding", "chunked"),
                    ("etag", "\"1\""),
                ],
                &[("etag", "\"1\"")],
            ),
            (
                "an origin cannot forge the edge's headers",
                &[("x-rollout-version", "999"), ("X-Rollout-Arm", "old")],
                &[],
            ),
            (
                "platform headers are the origin's to send",
                &[("cdn-cache-status", "hit")],
                &[("cdn-cache-status", "hit")],
            ),
        ];
        for (what, origin, kept) in cases {
            let want: Vec<(&str, &str)> = kept.iter().chain(edge_headers).copied().collect();
            let got = client_response_headers(&strings(origin), &edge());
            assert_eq!(text(&got), want, "{what} (string values)");
            let got = client_response_headers(&bytes(origin), &edge());
            assert_eq!(text(&got), want, "{what} (byte values)");
        }
    }

    #[test]
    fn edge_response_headers_carry_only_the_edges_names() {
        let bare = EdgeHeaders {
            arm: Arm::Old,
            version: 0,
            flags: Cow::Owned(String::new()),
            set_cookie: None,
            debug: Vec::new(),
        };
        let got: HeaderList<String> = edge_response_headers(&bare);
        assert_eq!(
            text(&got),
            [("x-rollout-arm", "old"), ("x-rollout-version", "0")]
        );
        let forged = EdgeHeaders {
            debug: vec![
                ("location", "https://evil.example"),
                ("x-rollout-bucket", "42"),
                // Names are matched exactly: core's debug names are lowercase.
                ("X-Rollout-Key", "header:x-user-id"),
            ],
            ..bare
        };
        let got: HeaderList<Vec<u8>> = edge_response_headers(&forged);
        assert_eq!(
            text(&got),
            [
                ("x-rollout-arm", "old"),
                ("x-rollout-version", "0"),
                ("x-rollout-bucket", "42")
            ]
        );
    }
}
