//! The per-request decision: which route, which arm, which flags.
//!
//! Everything here runs on every request, so it only looks up what
//! [`Config`] compiled: no parsing of config, no validation, and no
//! allocation beyond the [`Decision`] itself.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::bucket::{Bucket, bucket_of};
use crate::config::{Config, Failover, HostPattern, KeySource, Match, Origin, Route};

/// Max-Age of a minted sticky cookie: 400 days, the most browsers keep.
pub const COOKIE_MAX_AGE_SECS: u32 = 400 * 24 * 60 * 60;

/// Which origin serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arm {
    /// The stable origin.
    Old,
    /// The candidate origin.
    New,
}

impl Arm {
    /// `"old"` or `"new"`, as in `x-rollout-arm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Old => "old",
            Arm::New => "new",
        }
    }
}

impl std::fmt::Display for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an edge knows about a request. Header names are compared
/// case-insensitively; header values are the request's own.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Host the client asked for (Host header or authority), port allowed.
    pub host: &'a str,
    /// Path, starting with `/`.
    pub path: &'a str,
    /// Query string without `?`; empty when there is none.
    pub query: &'a str,
    /// Request headers. Several `cookie` headers are all read.
    pub headers: &'a [(&'a str, &'a str)],
    /// The client address, as the host reports it.
    pub client_ip: Option<&'a str>,
    /// Random bytes for a minted sticky id. Supplied by the caller, because
    /// core has no randomness; `None` means a cookie cannot be minted.
    pub mint: Option<[u8; 16]>,
}

/// Why a request got its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The key's bucket was compared with the route's weight.
    Weight,
    /// An override in the request picked the arm.
    Override,
    /// No key source was present and none could be minted: old.
    NoKey,
    /// There was no usable config; the edge used its bootstrap origin.
    Bootstrap,
}

impl Reason {
    /// Short name, as in `x-rollout-reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Weight => "weight",
            Reason::Override => "override",
            Reason::NoKey => "no-key",
            Reason::Bootstrap => "bootstrap",
        }
    }
}

/// Where the stickiness key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin<'c> {
    /// One of the route's key sources.
    Source(&'c KeySource),
    /// Minted for this request (and set as a cookie).
    Minted,
}

impl std::fmt::Display for KeyOrigin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::Source(s) => s.fmt(f),
            KeyOrigin::Minted => f.write_str("minted"),
        }
    }
}

/// A sticky-id cookie to set on the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie<'c> {
    /// Cookie name, from the route's first `cookie:` key source.
    pub name: &'c str,
    /// The minted id: 32 lowercase hex digits.
    pub value: String,
}

impl SetCookie<'_> {
    /// The `Set-Cookie` header value.
    pub fn header_value(&self) -> String {
        format!(
            "{}={}; Max-Age={COOKIE_MAX_AGE_SECS}; Path=/; HttpOnly; Secure; SameSite=Lax",
            self.name, self.value
        )
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'c> {
    /// The route that matched.
    pub route: &'c Route,
    /// The arm chosen.
    pub arm: Arm,
    /// The origin of that arm.
    pub origin: &'c Origin,
    /// The key's bucket under the route's salt, when there was a key.
    pub bucket: Option<Bucket>,
    /// Where the key came from, when there was one.
    pub key: Option<KeyOrigin<'c>>,
    /// Why this arm.
    pub reason: Reason,
    /// Names of the flags that are on, in config order.
    pub flags: Vec<&'c str>,
    /// A cookie to set, when a sticky id was minted.
    pub set_cookie: Option<SetCookie<'c>>,
    /// How many SHA-256 buckets the decision computed: the arm's, when
    /// there was a key, and each flag's whose allow-list did not already
    /// admit the key. What the performance budget for decide is counted in.
    pub hashes: u32,
}

impl Decision<'_> {
    /// Failover policy that applies to this request: only when it went to
    /// `new`, the route has one, and the method is idempotent (RFC 9110 §9.2.2)
    /// so sending it twice is safe.
    pub fn failover(&self, method: &str) -> Option<&Failover> {
        let idempotent = matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        (self.arm == Arm::New && idempotent)
            .then_some(())
            .and(self.route.failover.as_ref())
    }

    /// The `x-rollout-flags` value: flag names joined by commas.
    pub fn flags_header(&self) -> String {
        self.flags.join(",")
    }

    /// The debug headers a config with `debug_headers` adds to responses:
    /// `x-rollout-route`, `x-rollout-reason`, and `x-rollout-bucket` and
    /// `x-rollout-key` when there was a key. Every edge build sends the same
    /// set, so a rollout is debugged the same way on each.
    pub fn debug_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("x-rollout-route", self.route.id().to_owned()),
            ("x-rollout-reason", self.reason.as_str().to_owned()),
        ];
        if let Some(b) = self.bucket {
            out.push(("x-rollout-bucket", b.to_string()));
        }
        if let Some(k) = self.key {
            out.push(("x-rollout-key", k.to_string()));
        }
        out
    }
}

/// Decides where a request goes.
///
/// A config always has a default route, so every request gets a route and a
/// decision.
pub fn decide<'c>(config: &'c Config, req: &Request<'_>) -> Decision<'c> {
    let route = config
        .routes
        .iter()
        .find(|r| r.matches.as_ref().is_none_or(|m| matches(m, req)))
        .unwrap_or(&config.default);

    let mut minted = [0u8; 32];
    let (key, key_origin, set_cookie) = match find_key(route, req) {
        Some((value, source)) => (Some(value), Some(KeyOrigin::Source(source)), None),
        None => match (&route.assign_cookie, req.mint) {
            (Some(name), Some(bytes)) => {
                // Hex of 16 bytes is 32 ASCII bytes, always valid UTF-8.
                hex::encode_to_slice(bytes, &mut minted).unwrap_or_default();
                let value = std::str::from_utf8(&minted).unwrap_or_default();
                let cookie = SetCookie {
                    name,
                    value: value.to_owned(),
                };
                (Some(value), Some(KeyOrigin::Minted), Some(cookie))
            }
            _ => (None, None, None),
        },
    };

    on_route(
        route,
        key,
        key_origin,
        find_override(route, req),
        set_cookie,
    )
}

/// The decision for a stickiness key on a given route, with no request
/// around it (so no override and no minted cookie): what `rollout explain`
/// shows. The same rule as [`decide`] once the route and the key are known.
pub fn decide_key<'c>(route: &'c Route, key: &str) -> Decision<'c> {
    let key = key.trim();
    let key = (!key.is_empty()).then_some(key);
    on_route(route, key, None, None, None)
}

fn on_route<'c>(
    route: &'c Route,
    key: Option<&str>,
    key_origin: Option<KeyOrigin<'c>>,
    forced: Option<Arm>,
    set_cookie: Option<SetCookie<'c>>,
) -> Decision<'c> {
    let bucket = key.map(|k| bucket_of(&route.salt.value, k));
    let mut hashes = u32::from(bucket.is_some());
    let (arm, reason) = match forced {
        Some(arm) => (arm, Reason::Override),
        None => match bucket {
            Some(b) if route.weight.admits(b) => (Arm::New, Reason::Weight),
            Some(_) => (Arm::Old, Reason::Weight),
            None => (Arm::Old, Reason::NoKey),
        },
    };

    let flags = route
        .flags
        .iter()
        .filter(|f| match key {
            Some(k) => {
                f.allow.binary_search_by(|a| a.as_str().cmp(k)).is_ok() || {
                    hashes += 1;
                    f.weight.admits(bucket_of(&f.salt.value, k))
                }
            }
            // Without a key only a flag at 100 % is on.
            None => f.weight == crate::Weight::FULL,
        })
        .map(|f| f.name.as_str())
        .collect();

    Decision {
        route,
        arm,
        origin: match arm {
            Arm::Old => &route.old,
            Arm::New => &route.new,
        },
        bucket,
        key: key_origin,
        reason,
        flags,
        set_cookie,
        hashes,
    }
}

pub(crate) fn matches(m: &Match, req: &Request<'_>) -> bool {
    if !m.methods.is_empty() && !m.methods.iter().any(|x| x == req.method) {
        return false;
    }
    if let Some(pattern) = &m.host {
        let host = strip_port(req.host);
        let host = host.strip_suffix('.').unwrap_or(host);
        let ok = match pattern {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        };
        if !ok {
            return false;
        }
    }
    if let Some(prefix) = &m.path_prefix {
        let Some(rest) = req.path.strip_prefix(prefix.as_str()) else {
            return false;
        };
        if !(prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')) {
            return false;
        }
    }
    true
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The first present, non-empty key source.
fn find_key<'r, 'q>(route: &'r Route, req: &Request<'q>) -> Option<(&'q str, &'r KeySource)> {
    route
        .keys
        .iter()
        .find_map(|source| read_source(source, req).map(|v| (v, source)))
}

fn read_source<'q>(source: &KeySource, req: &Request<'q>) -> Option<&'q str> {
    let value = match source {
        KeySource::Header(name) => header(req, name),
        KeySource::Cookie(name) => cookie(req, name),
        KeySource::Query(name) => query(req.query, name),
        KeySource::ClientIp => req.client_ip,
    }?;
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// A key header's value: only when it occurs once and holds no comma and no
/// U+FFFD. Every platform can obey that rule: JavaScript's fetch `Headers`
/// joins repeated headers with `, ` and could not tell two values from one,
/// and Cloudflare's runtime hands over bytes that are not UTF-8 as U+FFFD.
fn header<'q>(req: &Request<'q>, name: &str) -> Option<&'q str> {
    let mut values = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v);
    let value = values.next()?;
    (values.next().is_none() && !value.contains([',', '\u{FFFD}'])).then_some(value)
}

/// A cookie by name from every `cookie` header (RFC 6265 §5.4 syntax).
fn cookie<'q>(req: &Request<'q>, name: &str) -> Option<&'q str> {
    req.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

fn query<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v)
    })
}

/// An arm forced by an override, if one is present and, where tokens are
/// required, carries a token whose digest the config lists.
fn find_override(route: &Route, req: &Request<'_>) -> Option<Arm> {
    route.overrides.iter().find_map(|o| {
        let value = read_source(&o.from, req)?;
        let (arm, token) = match value.split_once(':') {
            Some((arm, token)) => (arm, Some(token)),
            None => (value, None),
        };
        let arm = if arm.eq_ignore_ascii_case("new") {
            Arm::New
        } else if arm.eq_ignore_ascii_case("old") {
            Arm::Old
        } else {
            return None;
        };
        if o.tokens.is_empty() {
            return Some(arm);
        }
        let digest: [u8; 32] = Sha256::digest(token?.as_bytes()).into();
        // Compare against every listed digest so timing says nothing about
        // which one matched or how much of it.
        let accepted = o
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&digest));
        bool::from(accepted).then_some(arm)
    })
}

#[cfg(test)]
mod tests;
