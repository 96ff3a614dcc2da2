//! Config documents: bytes up to the first NUL are a config; when it parses,
//! the bytes after the NUL become a few requests (header, cookie and query
//! values for each of the config's key sources, path, host and method), each
//! decided, and the compiled config makes the compact round trip.
//!
//! Asserts, besides never panicking: `from_compact(to_compact(a)) == a`; the
//! route a request takes, decoded alone (`StoredActive::config_for`), gives
//! the decision the whole config gives; `to_doc` of a config is a valid
//! config that compiles to the same thing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rollout_core::edge::{Active, StoredActive};
use rollout_core::{Applied, Config, Decision, Digest, KeySource, Request, decide, decide_key};
use rollout_fuzz::split_nul;

/// What a decision says, comparable across configs.
fn summary(d: &Decision<'_>) -> String {
    format!(
        "{} {} {} {:?} {:?} {:?} {} {:?} {:?}",
        d.route.id(),
        d.arm,
        d.origin,
        d.bucket,
        d.key.map(|k| k.to_string()),
        d.reason,
        d.flags_header(),
        d.set_cookie.as_ref().map(|c| c.header_value()),
        d.debug_headers(),
    )
}

fn check(config: &Config, stored: &StoredActive<'_>, req: &Request<'_>) {
    let whole = decide(config, req);
    let _ = whole.failover(req.method);
    let alone = stored
        .config_for(req)
        .expect("the compact form of a valid config decodes");
    let part = decide(&alone, req);
    assert_eq!(summary(&whole), summary(&part), "config_for disagrees");
    let _ = decide_key(whole.route, req.path);
}

fuzz_target!(|data: &[u8]| {
    let (json, tail) = split_nul(data);
    let Ok(config) = Config::from_json(json) else {
        return;
    };

    // The normalised document is a config, and compiles to the same one.
    let again = Config::try_from(&config.to_doc()).expect("to_doc gives a valid config");
    assert_eq!(again, config, "to_doc does not round-trip");

    let active = Active {
        applied: Applied {
            version: 1 + u64::from(tail.first().copied().unwrap_or(0)),
            digest: Digest::of(json),
        },
        config,
    };
    let compact = active.to_compact();
    assert_eq!(
        Active::from_compact(&compact).as_ref(),
        Some(&active),
        "the compact form does not round-trip"
    );
    let stored = StoredActive::parse(&compact).expect("the compact form parses");
    assert_eq!(stored.applied(), active.applied);
    let config = &active.config;

    // The tail: `value \0 path \0 host \0 method \0 client-ip`, each optional.
    let mut parts = tail.split(|&b| b == 0).map(String::from_utf8_lossy);
    let value = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let ip = parts.next();
    let mint = tail.get(..16).and_then(|m| <[u8; 16]>::try_from(m).ok());

    // Every key source of every route, filled with the value.
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut query = String::new();
    for route in config.routes() {
        for source in route.key_sources() {
            match source {
                KeySource::Header(n) => headers.push((n.clone(), value.to_string())),
                KeySource::Cookie(n) => headers.push(("cookie".into(), format!("{n}={value}"))),
                KeySource::Query(n) => {
                    query.push_str(&format!("{n}={value}&"));
                }
                KeySource::ClientIp => {}
            }
        }
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let raw: [(&str, &str); 2] = [("x-user-id", &value), ("cookie", &value)];

    let path = if path.is_empty() { "/".into() } else { path };
    let requests = [
        Request {
            method: if method.is_empty() { "GET" } else { &method },
            host: &host,
            path: &path,
            query: &query,
            headers: &pairs,
            client_ip: ip.as_deref(),
            mint,
        },
        Request {
            method: "POST",
            host: "api.example.com",
            path: &value,
            query: &value,
            headers: &raw,
            client_ip: Some(&value),
            mint: None,
        },
        Request {
            method: &value,
            host: &value,
            path: &path,
            query: "",
            headers: &[],
            client_ip: None,
            mint: Some([0; 16]),
        },
    ];
    for req in &requests {
        check(config, &stored, req);
    }
});
