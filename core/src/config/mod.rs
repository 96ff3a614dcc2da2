//! The validated, lookup-ready config.
//!
//! A [`ConfigDoc`] becomes a [`Config`] once, when a config is applied; after
//! that a route cannot have a weight of 101 % or an origin with userinfo, and
//! [`decide`](crate::decide) only looks things up.

mod error;
mod origin;
mod patch;
pub mod wire;

// BTreeMap, not HashMap, for the duplicate checks: std's HashMap seeds its
// hasher from wasi:random/insecure-seed, an import every fresh instance of the
// edge component then links (about 1 800 instructions a request) for a map
// only pushes build.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Problem};
pub use origin::{Origin, Scheme};
pub use patch::{Patch, PatchError};
pub use wire::{ConfigDoc, FailoverDoc, FlagDoc, MatchDoc, OverrideDoc, RouteDoc};

use crate::weight::Weight;

/// The one schema number this build reads and writes.
pub const SCHEMA: u32 = 1;
/// Largest config document accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// Most routes in one config.
pub const MAX_ROUTES: usize = 256;
/// Most flags in one config, all routes together.
pub const MAX_FLAGS: usize = 256;
/// Most key sources on a route.
pub const MAX_KEY_SOURCES: usize = 8;
/// Most overrides on a route.
pub const MAX_OVERRIDES: usize = 8;
/// Most accepted tokens on one override.
pub const MAX_TOKENS: usize = 16;
/// Longest salt, key-source name, path prefix or allow-list entry.
pub const MAX_TEXT: usize = 1024;

/// A validated config, compiled for lookups.
///
/// It also derives serde for the compact form an edge keeps next to the signed
/// envelope ([`edge::Active`](crate::edge::Active)); that form is trusted, not
/// re-validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Routes with a `match`, in order.
    pub(crate) routes: Vec<Route>,
    /// The last route, which takes whatever the others did not. Holding it
    /// apart makes "every request has a route" a fact of the type.
    pub(crate) default: Route,
    pub(crate) debug_headers: bool,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub(crate) id: String,
    pub(crate) matches: Option<Match>,
    pub(crate) old: Origin,
    pub(crate) new: Origin,
    pub(crate) weight: Weight,
    pub(crate) salt: Salt,
    pub(crate) keys: Vec<KeySource>,
    /// Name of the cookie minted when no key is present.
    pub(crate) assign_cookie: Option<String>,
    pub(crate) overrides: Vec<Override>,
    pub(crate) flags: Vec<Flag>,
    pub(crate) failover: Option<Failover>,
}

/// A hash salt: the effective value and whether the document spelled it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Salt {
    pub(crate) value: String,
    pub(crate) explicit: bool,
}

/// Compiled match conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Match {
    pub(crate) host: Option<HostPattern>,
    pub(crate) path_prefix: Option<String>,
    pub(crate) methods: Vec<String>,
}

/// A host to match, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HostPattern {
    /// `shop.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

/// Where a stickiness key is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySource {
    /// A request header (name lowercased).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter, compared raw (not percent-decoded).
    Query(String),
    /// The client address the host reports.
    ClientIp,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Header(n) => write!(f, "header:{n}"),
            KeySource::Cookie(n) => write!(f, "cookie:{n}"),
            KeySource::Query(n) => write!(f, "query:{n}"),
            KeySource::ClientIp => f.write_str("client-ip"),
        }
    }
}

/// A validated override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Override {
    pub(crate) from: KeySource,
    pub(crate) tokens: Vec<[u8; 32]>,
}

/// A validated flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flag {
    pub(crate) name: String,
    pub(crate) weight: Weight,
    pub(crate) salt: Salt,
    /// Sorted and deduplicated, for binary search.
    pub(crate) allow: Vec<String>,
}

/// When to retry a failed request to `new` on `old`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    /// Retry on a connect error.
    pub connect_error: bool,
    /// Retry on these statuses from `new`.
    pub statuses: Vec<u16>,
}

impl Failover {
    /// Whether a response status from `new` should be retried on `old`.
    pub fn retries_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

impl Config {
    /// Parses, validates and compiles a JSON config document.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::new(
                "config",
                Problem::TooLarge {
                    size: bytes.len(),
                    limit: MAX_CONFIG_BYTES,
                },
            ));
        }
        let doc = parse_doc(bytes)?;
        Config::try_from(&doc)
    }

    /// The routes, in match order, the default route last.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().chain(std::iter::once(&self.default))
    }

    /// The route with this id.
    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes().find(|r| r.id == id)
    }

    /// Whether responses carry the debug headers.
    pub fn debug_headers(&self) -> bool {
        self.debug_headers
    }

    /// The document this config was compiled from, normalised (lowercased
    /// hosts and header names, sorted allow-lists).
    pub fn to_doc(&self) -> ConfigDoc {
        ConfigDoc {
            schema: SCHEMA,
            debug_headers: self.debug_headers,
            routes: self.routes().map(Route::to_doc).collect(),
        }
    }
}

impl Route {
    /// The route id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The stable origin.
    pub fn old(&self) -> &Origin {
        &self.old
    }
    /// The candidate origin.
    pub fn new_origin(&self) -> &Origin {
        &self.new
    }
    /// Share of keys sent to `new`.
    pub fn weight(&self) -> Weight {
        self.weight
    }
    /// The effective salt.
    pub fn salt(&self) -> &str {
        &self.salt.value
    }
    /// Key sources in order.
    pub fn key_sources(&self) -> &[KeySource] {
        &self.keys
    }
    /// Failover policy, if any.
    pub fn failover(&self) -> Option<&Failover> {
        self.failover.as_ref()
    }

    fn to_doc(&self) -> RouteDoc {
        RouteDoc {
            id: self.id.clone(),
            matches: self.matches.as_ref().map(|m| MatchDoc {
                host: m.host.as_ref().map(|h| match h {
                    HostPattern::Exact(h) => h.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                }),
                path_prefix: m.path_prefix.clone(),
                methods: m.methods.clone(),
            }),
            old: self.old.to_string(),
            new: self.new.to_string(),
            new_weight: self.weight.percent(),
            salt: self.salt.explicit.then(|| self.salt.value.clone()),
            key: self.keys.iter().map(ToString::to_string).collect(),
            assign_cookie: self.assign_cookie.is_some(),
            overrides: self
                .overrides
                .iter()
                .map(|o| OverrideDoc {
                    from: o.from.to_string(),
                    token_sha256: o.tokens.iter().map(hex::encode).collect(),
                })
                .collect(),
            flags: self
                .flags
                .iter()
                .map(|f| FlagDoc {
                    name: f.name.clone(),
                    percent: f.weight.percent(),
                    salt: f.salt.explicit.then(|| f.salt.value.clone()),
                    allow: f.allow.clone(),
                })
                .collect(),
            failover: self.failover.as_ref().map(|f| FailoverDoc {
                connect_error: f.connect_error,
                statuses: f.statuses.clone(),
            }),
        }
    }
}

/// Parses JSON into the document type, naming the path of a type error.
pub(crate) fn parse_doc(bytes: &[u8]) -> Result<ConfigDoc, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let doc: ConfigDoc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // serde_path_to_error says "." for the root and "?" before it has
        // entered any value (truncated or empty input).
        let path = if path == "." || path == "?" {
            "config".to_owned()
        } else {
            path
        };
        ConfigError::new(path, Problem::Syntax(e.into_inner().to_string()))
    })?;
    de.end()
        .map_err(|e| ConfigError::new("config", Problem::Syntax(e.to_string())))?;
    Ok(doc)
}

impl TryFrom<&ConfigDoc> for Config {
    type Error = ConfigError;

    fn try_from(doc: &ConfigDoc) -> Result<Config, ConfigError> {
        if doc.schema != SCHEMA {
            return Err(ConfigError::new(
                "schema",
                Problem::UnsupportedSchema(doc.schema),
            ));
        }
        check_count("routes", "routes", doc.routes.len(), MAX_ROUTES)?;
        if doc.routes.is_empty() {
            return Err(ConfigError::new("routes", Problem::Empty));
        }
        let flag_count = doc.routes.iter().map(|r| r.flags.len()).sum();
        check_count("routes", "flags", flag_count, MAX_FLAGS)?;

        let mut ids: BTreeMap<&str, String> = BTreeMap::new();
        let mut routes = Vec::with_capacity(doc.routes.len());
        for (i, r) in doc.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            if let Some(first) = ids.insert(&r.id, format!("{path}.id")) {
                return Err(ConfigError::new(
                    format!("{path}.id"),
                    Problem::Duplicate {
                        value: r.id.clone(),
                        first,
                    },
                ));
            }
            if i > 0
                && routes
                    .last()
                    .is_some_and(|prev: &Route| prev.matches.is_none())
            {
                return Err(ConfigError::new(
                    path,
                    Problem::Unreachable(doc.routes[i - 1].id.clone()),
                ));
            }
            routes.push(compile_route(r, &path)?);
        }
        let default = match routes.pop() {
            Some(last) if last.matches.is_none() => last,
            _ => {
                return Err(ConfigError::new(
                    format!("routes[{}].match", doc.routes.len() - 1),
                    Problem::NoDefaultRoute,
                ));
            }
        };
        Ok(Config {
            routes,
            default,
            debug_headers: doc.debug_headers,
        })
    }
}

impl TryFrom<ConfigDoc> for Config {
    type Error = ConfigError;

    fn try_from(doc: ConfigDoc) -> Result<Config, ConfigError> {
        Config::try_from(&doc)
    }
}

fn check_count(
    path: &str,
    what: &'static str,
    count: usize,
    limit: usize,
) -> Result<(), ConfigError> {
    if count > limit {
        return Err(ConfigError::new(
            path,
            Problem::TooMany { what, count, limit },
        ));
    }
    Ok(())
}

fn compile_route(r: &RouteDoc, path: &str) -> Result<Route, ConfigError> {
    let at = |field: &str| format!("{path}.{field}");
    check_name(&r.id, NameRule::RouteId).map_err(|p| ConfigError::new(at("id"), p))?;
    let matches = r
        .matches
        .as_ref()
        .map(|m| compile_match(m, &at("match")))
        .transpose()?;
    let old = Origin::parse(&r.old).map_err(|p| ConfigError::new(at("old"), p))?;
    let new = Origin::parse(&r.new).map_err(|p| ConfigError::new(at("new"), p))?;
    let weight = Weight::from_percent(r.new_weight)
        .map_err(|e| ConfigError::new(at("new_weight"), e.into()))?;
    let salt =
        compile_salt(r.salt.as_deref(), &r.id).map_err(|p| ConfigError::new(at("salt"), p))?;

    check_count(&at("key"), "key sources", r.key.len(), MAX_KEY_SOURCES)?;
    let mut keys: Vec<KeySource> = Vec::with_capacity(r.key.len());
    for (i, k) in r.key.iter().enumerate() {
        let source = parse_source(k, SourceKinds::Key)
            .map_err(|p| ConfigError::new(format!("{path}.key[{i}]"), p))?;
        if let Some(j) = keys.iter().position(|s| *s == source) {
            return Err(ConfigError::new(
                format!("{path}.key[{i}]"),
                Problem::Duplicate {
                    value: k.clone(),
                    first: format!("{path}.key[{j}]"),
                },
            ));
        }
        keys.push(source);
    }
    let assign_cookie = if r.assign_cookie {
        let name = keys.iter().find_map(|k| match k {
            KeySource::Cookie(name) => Some(name.clone()),
            _ => None,
        });
        Some(name.ok_or_else(|| {
            ConfigError::new(at("assign_cookie"), Problem::AssignCookieWithoutCookie)
        })?)
    } else {
        None
    };

    check_count(
        &at("overrides"),
        "overrides",
        r.overrides.len(),
        MAX_OVERRIDES,
    )?;
    let overrides = r
        .overrides
        .iter()
        .enumerate()
        .map(|(i, o)| compile_override(o, &format!("{path}.overrides[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;

    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut flags = Vec::with_capacity(r.flags.len());
    for (i, f) in r.flags.iter().enumerate() {
        let fpath = format!("{path}.flags[{i}]");
        if let Some(first) = names.insert(&f.name, format!("{fpath}.name")) {
            return Err(ConfigError::new(
                format!("{fpath}.name"),
                Problem::Duplicate {
                    value: f.name.clone(),
                    first,
                },
            ));
        }
        flags.push(compile_flag(f, &fpath)?);
    }

    let failover = r
        .failover
        .as_ref()
        .map(|f| compile_failover(f, &at("failover")))
        .transpose()?;

    Ok(Route {
        id: r.id.clone(),
        matches,
        old,
        new,
        weight,
        salt,
        keys,
        assign_cookie,
        overrides,
        flags,
        failover,
    })
}

fn compile_match(m: &MatchDoc, path: &str) -> Result<Match, ConfigError> {
    if m.host.is_none() && m.path_prefix.is_none() && m.methods.is_empty() {
        return Err(ConfigError::new(path, Problem::EmptyMatch));
    }
    let host = m
        .host
        .as_deref()
        .map(|h| compile_host(h).map_err(|p| ConfigError::new(format!("{path}.host"), p)))
        .transpose()?;
    let path_prefix = m
        .path_prefix
        .as_deref()
        .map(|p| {
            check_len(p, MAX_TEXT)?;
            if !p.starts_with('/') || p.bytes().any(|b| b == b'?' || b == b'#' || !b.is_ascii_graphic()) {
                return Err(Problem::BadName(
                    "must start with '/' and hold no '?', '#', spaces or non-ASCII (percent-encode them)",
                ));
            }
            Ok(p.to_owned())
        })
        .transpose()
        .map_err(|p| ConfigError::new(format!("{path}.path_prefix"), p))?;
    check_count(&format!("{path}.methods"), "methods", m.methods.len(), 16)?;
    for (i, method) in m.methods.iter().enumerate() {
        check_name(method, NameRule::Method)
            .map_err(|p| ConfigError::new(format!("{path}.methods[{i}]"), p))?;
    }
    Ok(Match {
        host,
        path_prefix,
        methods: m.methods.clone(),
    })
}

fn compile_host(h: &str) -> Result<HostPattern, Problem> {
    const RULE: &str = "must be a host name like shop.example.com or *.example.com";
    let lower = h.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(Problem::BadName(RULE));
    }
    Ok(if suffix {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

fn compile_salt(salt: Option<&str>, default: &str) -> Result<Salt, Problem> {
    match salt {
        None => Ok(Salt {
            value: default.to_owned(),
            explicit: false,
        }),
        Some("") => Err(Problem::Empty),
        Some(s) if s.contains('\0') => Err(Problem::NulInSalt),
        Some(s) => {
            check_len(s, MAX_TEXT)?;
            Ok(Salt {
                value: s.to_owned(),
                explicit: true,
            })
        }
    }
}

#[derive(Clone, Copy)]
enum SourceKinds {
    Key,
    Override,
}

fn parse_source(s: &str, kinds: SourceKinds) -> Result<KeySource, Problem> {
    let expected = match kinds {
        SourceKinds::Key => "header:NAME, cookie:NAME, query:NAME or client-ip",
        SourceKinds::Override => "header:NAME or cookie:NAME",
    };
    let unknown = || Problem::UnknownSource(s.to_owned(), expected);
    if s == "client-ip" {
        return match kinds {
            SourceKinds::Key => Ok(KeySource::ClientIp),
            SourceKinds::Override => Err(unknown()),
        };
    }
    let (kind, name) = s.split_once(':').ok_or_else(unknown)?;
    match (kind, kinds) {
        ("header", _) => {
            check_name(name, NameRule::Token)?;
            Ok(KeySource::Header(name.to_ascii_lowercase()))
        }
        ("cookie", _) => {
            check_name(name, NameRule::Token)?;
            Ok(KeySource::Cookie(name.to_owned()))
        }
        ("query", SourceKinds::Key) => {
            check_name(name, NameRule::Query)?;
            Ok(KeySource::Query(name.to_owned()))
        }
        _ => Err(unknown()),
    }
}

fn compile_override(o: &OverrideDoc, path: &str) -> Result<Override, ConfigError> {
    let from = parse_source(&o.from, SourceKinds::Override)
        .map_err(|p| ConfigError::new(format!("{path}.from"), p))?;
    check_count(
        &format!("{path}.token_sha256"),
        "tokens",
        o.token_sha256.len(),
        MAX_TOKENS,
    )?;
    let mut tokens = Vec::with_capacity(o.token_sha256.len());
    for (i, t) in o.token_sha256.iter().enumerate() {
        let mut digest = [0u8; 32];
        let lower_hex = t
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex || hex::decode_to_slice(t, &mut digest).is_err() {
            return Err(ConfigError::new(
                format!("{path}.token_sha256[{i}]"),
                Problem::TokenDigest,
            ));
        }
        tokens.push(digest);
    }
    Ok(Override { from, tokens })
}

fn compile_flag(f: &FlagDoc, path: &str) -> Result<Flag, ConfigError> {
    check_name(&f.name, NameRule::FlagName)
        .map_err(|p| ConfigError::new(format!("{path}.name"), p))?;
    let weight = Weight::from_percent(f.percent)
        .map_err(|e| ConfigError::new(format!("{path}.percent"), e.into()))?;
    let salt = compile_salt(f.salt.as_deref(), &f.name)
        .map_err(|p| ConfigError::new(format!("{path}.salt"), p))?;
    for (i, entry) in f.allow.iter().enumerate() {
        let bad = if entry.is_empty() {
            Some(Problem::Empty)
        } else {
            check_len(entry, MAX_TEXT).err()
        };
        if let Some(p) = bad {
            return Err(ConfigError::new(format!("{path}.allow[{i}]"), p));
        }
    }
    let mut allow = f.allow.clone();
    allow.sort_unstable();
    allow.dedup();
    Ok(Flag {
        name: f.name.clone(),
        weight,
        salt,
        allow,
    })
}

fn compile_failover(f: &FailoverDoc, path: &str) -> Result<Failover, ConfigError> {
    check_count(
        &format!("{path}.statuses"),
        "statuses",
        f.statuses.len(),
        100,
    )?;
    for (i, &s) in f.statuses.iter().enumerate() {
        if !(500..=599).contains(&s) {
            return Err(ConfigError::new(
                format!("{path}.statuses[{i}]"),
                Problem::FailoverStatus(s),
            ));
        }
    }
    let mut statuses = f.statuses.clone();
    statuses.sort_unstable();
    statuses.dedup();
    Ok(Failover {
        connect_error: f.connect_error,
        statuses,
    })
}

#[derive(Clone, Copy)]
enum NameRule {
    RouteId,
    FlagName,
    /// An HTTP token (RFC 9110 §5.6.2): header and cookie names.
    Token,
    Query,
    Method,
}

fn check_len(s: &str, limit: usize) -> Result<(), Problem> {
    if s.len() > limit {
        return Err(Problem::TooLong {
            len: s.len(),
            limit,
        });
    }
    Ok(())
}

fn check_name(s: &str, rule: NameRule) -> Result<(), Problem> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let (ok, max, msg): (fn(u8) -> bool, usize, &'static str) = match rule {
        NameRule::RouteId => (
            |b| b.is_ascii_alphanumeric() || b"-_.".contains(&b),
            64,
            "must be 1-64 characters of A-Z a-z 0-9 - _ .",
        ),
        NameRule::FlagName => (
            |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b),
            64,
            "must be 1-64 characters of a-z 0-9 - _ .",
        ),
        NameRule::Token => (tchar, 128, "must be 1-128 characters of an HTTP token"),
        NameRule::Query => (
            |b| b.is_ascii_graphic() && !b"&=#+".contains(&b),
            128,
            "must be 1-128 printable ASCII characters without & = # +",
        ),
        NameRule::Method => (
            |b| b.is_ascii_uppercase(),
            16,
            "must be an uppercase method name such as GET",
        ),
    };
    if s.is_empty() || s.len() > max || !s.bytes().all(ok) {
        return Err(Problem::BadName(msg));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
