//! Host-independent pieces of the edge: turning a decision into the headers of
//! the outbound request and of the response. Kept free of wasi types so they
//! are tested natively.

use std::borrow::Cow;

use rollout_core::http::{self, EdgeHeaders, Hop};
use rollout_core::{Arm, Decision, Reason};

/// A header list as wasi:http carries it.
pub type HeaderList = http::HeaderList<Vec<u8>>;

/// What the edge decided for a request, in the terms its headers need.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The arm.
    pub arm: Arm,
    /// The applied config version (0 when routing by bootstrap defaults).
    pub version: u64,
    /// `x-rollout-flags` value.
    pub flags: String,
    /// `Set-Cookie` value for a minted sticky id.
    pub set_cookie: Option<String>,
    /// Debug headers for the client, when the config asks for them.
    pub debug: Vec<(&'static str, String)>,
}

impl Outcome {
    /// The outcome of a decision under config `version`.
    pub fn of(decision: &Decision<'_>, version: u64, debug_headers: bool) -> Outcome {
        let debug = if debug_headers {
            decision.debug_headers()
        } else {
            Vec::new()
        };
        Outcome {
            arm: decision.arm,
            version,
            flags: decision.flags_header(),
            set_cookie: decision.set_cookie.as_ref().map(|c| c.header_value()),
            debug,
        }
    }

    /// Routing by the bootstrap origin: no config is applied.
    pub fn bootstrap() -> Outcome {
        Outcome {
            arm: Arm::Old,
            version: 0,
            flags: String::new(),
            set_cookie: None,
            debug: vec![("x-rollout-reason", Reason::Bootstrap.as_str().to_owned())],
        }
    }

    /// The values the edge's own headers report.
    fn edge_headers(&self) -> EdgeHeaders<'_> {
        EdgeHeaders {
            arm: self.arm,
            version: self.version,
            flags: Cow::Borrowed(&self.flags),
            set_cookie: self.set_cookie.as_deref(),
            debug: self.debug.iter().map(|(n, v)| (*n, v.as_str())).collect(),
        }
    }
}

/// Headers Spin adds to every inbound request (and overwrites if a client
/// sent them); they describe the edge, not the client, so they stay here.
fn is_spin_header(name: &str) -> bool {
    const LEGACY: &[&str] = &[
        "x-full-url",
        "path-info",
        "x-matched-route",
        "x-component-route",
        "x-raw-component-route",
        "x-base-path",
        "x-client-addr",
    ];
    name.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("spin-"))
        || LEGACY.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// The client IP from Spin's `spin-client-addr` (`ip:port` or `[ip6]:port`).
pub fn client_ip(client_addr: &str) -> String {
    match client_addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => client_addr.to_owned(),
    }
}

/// Headers for the outbound request: the client's, minus hop-by-hop, Spin
/// and edge headers, plus the decision and the appended forwarded headers.
pub fn request_headers(
    incoming: &[(String, Vec<u8>)],
    outcome: &Outcome,
    hop: Hop<'_>,
) -> HeaderList {
    http::origin_request_headers(incoming, &outcome.edge_headers(), hop, is_spin_header)
}

/// Headers for the client: the origin's, minus hop-by-hop and edge headers,
/// plus `x-rollout-arm`, `x-rollout-version`, the sticky cookie and debug headers.
pub fn response_headers(origin: &[(String, Vec<u8>)], outcome: &Outcome) -> HeaderList {
    http::client_response_headers(origin, &outcome.edge_headers())
}

/// The headers the edge adds to every response it gives, its own errors included.
pub fn edge_response_headers(outcome: &Outcome) -> HeaderList {
    http::edge_response_headers(&outcome.edge_headers())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn names(list: &HeaderList) -> Vec<&str> {
        list.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn value<'a>(list: &'a HeaderList, name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    #[test]
    fn the_origin_gets_the_decision_and_no_hop_by_hop_or_spin_headers() {
        let incoming = h(&[
            ("accept", "*/*"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("spin-full-url", "http://edge/x"),
            ("x-full-url", "http://edge/x"),
            ("x-rollout-arm", "new"),
            ("x-forwarded-for", "203.0.113.1"),
        ]);
        let outcome = Outcome {
            arm: Arm::Old,
            version: 7,
            flags: "a,b".into(),
            set_cookie: None,
            debug: vec![],
        };
        let hop = Hop {
            client_ip: Some("192.0.2.1"),
            host: "shop.example.com",
            proto: "http",
        };
        let out = request_headers(&incoming, &outcome, hop);
        assert_eq!(
            names(&out),
            [
                "accept",
                "x-rollout-arm",
                "x-rollout-version",
                "x-rollout-flags",
                "x-forwarded-for",
                "forwarded",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(
            value(&out, "x-rollout-arm"),
            Some("old"),
            "a client cannot pick the arm by header"
        );
        assert_eq!(
            value(&out, "x-forwarded-for"),
            Some("203.0.113.1, 192.0.2.1")
        );
        assert_eq!(value(&out, "x-rollout-flags"), Some("a,b"));
    }

    #[test]
    fn the_client_sees_the_arm_version_and_cookie() {
        let origin = h(&[
            ("content-type", "text/plain"),
            ("x-rollout-version", "999"),
            ("keep-alive", "5"),
        ]);
        let outcome = Outcome {
            arm: Arm::New,
            version: 3,
            flags: String::new(),
            set_cookie: Some("sid=abc; Path=/".into()),
            debug: vec![],
        };
        let out = response_headers(&origin, &outcome);
        assert_eq!(
            names(&out),
            [
                "content-type",
                "x-rollout-arm",
                "x-rollout-version",
                "set-cookie"
            ]
        );
        assert_eq!(value(&out, "x-rollout-version"), Some("3"));
    }

    #[test]
    fn client_addresses_lose_their_port() {
        assert_eq!(client_ip("192.0.2.1:5555"), "192.0.2.1");
        assert_eq!(client_ip("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(client_ip("192.0.2.1"), "192.0.2.1");
        assert_eq!(client_ip("2001:db8::1"), "2001:db8::1");
    }
}
