//! Header rules every edge applies the same way: which headers may travel to
//! an origin or back to a client, and the `forwarded` headers it appends.

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

    /// Whether header `name` may be copied to the next hop.
    pub fn forwards(&self, name: &str) -> bool {
        let is = |list: &[&str]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
        !(is(NEVER_FORWARDED)
            || is(EDGE_HEADERS)
            || name
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
            || self.named.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }
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
    let mut element = String::new();
    if let Some(ip) = hop.client_ip {
        out.push(("x-forwarded-for", append(existing_xff, ip.to_owned())));
        // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
        if ip.contains(':') {
            element.push_str(&format!("for=\"[{ip}]\";"));
        } else {
            element.push_str(&format!("for={ip};"));
        }
    }
    let host_token = hop
        .host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if host_token {
        element.push_str(&format!("host={};", hop.host));
    } else {
        element.push_str(&format!("host=\"{}\";", hop.host.replace(['"', '\\'], "")));
    }
    element.push_str(&format!("proto={}", hop.proto));
    out.push(("forwarded", append(existing_forwarded, element)));
    out.push(("x-forwarded-host", hop.host.to_owned()));
    out.push(("x-forwarded-proto", hop.proto.to_owned()));
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
}
