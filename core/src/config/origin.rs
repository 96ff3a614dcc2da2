use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use super::Problem;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An origin to proxy to: `scheme://host[:port]`, nothing else.
///
/// No path, query, fragment or userinfo: the request's own path and query are
/// appended as they came, and credentials in a URL would leak into logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    scheme: Scheme,
    /// Lowercased; IPv6 literals keep their brackets.
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `http(s)://host[:port]`, with an optional trailing `/`.
    pub fn parse(s: &str) -> Result<Origin, Problem> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or(Problem::Origin("must be an absolute http or https URL"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(Problem::Origin("must be an absolute http or https URL")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(Problem::Origin("userinfo is not allowed"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(Problem::Origin("must not have a path, query or fragment"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or(Problem::Origin("unterminated IPv6 literal"))?;
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(Problem::Origin("invalid IPv6 literal"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(Problem::Origin("invalid port"))?),
            };
            (format!("[{}]", addr.to_ascii_lowercase()), port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        if host.is_empty() {
            return Err(Problem::Origin("must have a host"));
        }
        let host_ok = host.starts_with('[')
            || (host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !host_ok {
            return Err(Problem::Origin("invalid host name"));
        }
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(Problem::Origin("invalid port")),
            })
            .transpose()?;
        Ok(Origin { scheme, host, port })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host, lowercased (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if the URL names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `host` or `host:port`, for the Host header and the authority.
    pub fn authority(&self) -> String {
        // Built without `format!`: this runs on every proxied request, and
        // in the edge component the formatting machinery costs more than
        // the copy (indirect calls, each set up afresh per instance).
        match self.port {
            Some(p) => {
                let mut digits = itoa::Buffer::new();
                let port = digits.format(p);
                let mut out = String::with_capacity(self.host.len() + 1 + port.len());
                out.push_str(&self.host);
                out.push(':');
                out.push_str(port);
                out
            }
            None => self.host.clone(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_plain_scheme_host_port() {
        let ok = [
            ("https://new.example.com", "https://new.example.com"),
            (
                "HTTP://Old.Example.COM:8080/",
                "http://old.example.com:8080",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ];
        for (input, want) in ok {
            assert_eq!(
                Origin::parse(input).map(|o| o.to_string()).as_deref(),
                Ok(want),
                "{input}"
            );
        }
        let bad = [
            ("new.example.com", "must be an absolute http or https URL"),
            ("ftp://x", "must be an absolute http or https URL"),
            ("https://user:pw@x.example", "userinfo is not allowed"),
            (
                "https://x.example/base",
                "must not have a path, query or fragment",
            ),
            (
                "https://x.example?q",
                "must not have a path, query or fragment",
            ),
            ("https://", "must have a host"),
            ("https://:80", "must have a host"),
            ("https://x.example:0", "invalid port"),
            ("https://x.example:+80", "invalid port"),
            ("https://x.example:70000", "invalid port"),
            ("https://bad_host", "invalid host name"),
            ("http://[::1", "unterminated IPv6 literal"),
            ("http://[zz]", "invalid IPv6 literal"),
        ];
        for (input, want) in bad {
            assert_eq!(Origin::parse(input), Err(Problem::Origin(want)), "{input}");
        }
    }
}
