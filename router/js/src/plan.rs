//! The host-independent layer under the bindings: request facts in, a
//! plain-data outcome out, and the header lists a JavaScript edge sends. It
//! speaks JSON-shaped types only, so it is tested natively and the bindings
//! stay a thin conversion.

use std::borrow::Cow;

use rollout_core::edge::{Active, PushReply};
use rollout_core::http::{self, EdgeHeaders, Hop};
use rollout_core::{Applied, Arm, Config, Decision, MAX_ENVELOPE_BYTES, Origin, Reason};
use serde::{Deserialize, Serialize};

/// A header list as JavaScript holds it: `[[name, value], ...]`.
pub type HeaderList = http::HeaderList<String>;

/// Why input from JavaScript was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Request facts that are not the documented shape.
    #[error("request facts: {0}")]
    Facts(String),
    /// A `mint` that is not 16 bytes in hex.
    #[error("request facts: mint must be 32 hex digits (16 random bytes)")]
    Mint,
    /// An outcome that is not what `route()` returns.
    #[error("outcome: {0}")]
    Outcome(String),
    /// A header list that is not `[[name, value], ...]`.
    #[error("headers: {0}")]
    Headers(String),
    /// A hop that is not `{client_ip, host, proto}`.
    #[error("hop: {0}")]
    Hop(String),
    /// A bootstrap origin that is not `http(s)://host[:port]`.
    #[error("bootstrap origin: {0}")]
    BootstrapOrigin(String),
}

/// What an edge knows about a request: core's JSON form of
/// [`rollout_core::Request`], shared with `core/tests/vectors/decisions.json`.
pub use rollout_core::Facts;

/// `old` or `new`, as JSON spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArmName {
    /// The stable origin.
    Old,
    /// The candidate origin.
    New,
}

impl From<Arm> for ArmName {
    fn from(arm: Arm) -> ArmName {
        match arm {
            Arm::Old => ArmName::Old,
            Arm::New => ArmName::New,
        }
    }
}

impl From<ArmName> for Arm {
    fn from(arm: ArmName) -> Arm {
        match arm {
            ArmName::Old => Arm::Old,
            ArmName::New => Arm::New,
        }
    }
}

impl ArmName {
    /// `"old"` or `"new"`.
    pub fn as_str(self) -> &'static str {
        Arm::from(self).as_str()
    }
}

/// When a request that failed on `new` may be sent to `old` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverPlan {
    /// The old origin.
    pub origin: String,
    /// Retry when `new` cannot be reached.
    pub connect_error: bool,
    /// Retry when `new` answers one of these statuses.
    pub statuses: Vec<u16>,
}

/// The outcome for one request, as the plain object `route()` returns.
/// The first eight fields are the decision every edge build must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Route id; `null` when routing by the bootstrap origin.
    pub route: Option<String>,
    /// The arm.
    pub arm: ArmName,
    /// The origin to send the request to.
    pub origin: String,
    /// The key's bucket, when there was a key.
    pub bucket: Option<u32>,
    /// Why this arm: `weight`, `override`, `no-key` or `bootstrap`.
    pub reason: String,
    /// Where the key came from (`header:x-user-id`, `minted`, ...).
    pub key: Option<String>,
    /// Flags that are on, in config order.
    pub flags: Vec<String>,
    /// `Set-Cookie` value when a sticky id was minted.
    pub set_cookie: Option<String>,
    /// The applied config version (0: bootstrap or an unsigned config).
    pub version: u64,
    /// Debug headers for the client, when the config asks for them.
    #[serde(default)]
    pub debug_headers: HeaderList,
    /// Failover to `old`, when it applies to this request.
    #[serde(default)]
    pub failover: Option<FailoverPlan>,
}

impl Outcome {
    fn of(decision: &Decision<'_>, version: u64, debug: bool, method: &str) -> Outcome {
        Outcome {
            route: Some(decision.route.id().to_owned()),
            arm: decision.arm.into(),
            origin: decision.origin.to_string(),
            bucket: decision.bucket.map(|b| b.get()),
            reason: decision.reason.as_str().to_owned(),
            key: decision.key.map(|k| k.to_string()),
            flags: decision.flags.iter().map(|f| (*f).to_owned()).collect(),
            set_cookie: decision.set_cookie.as_ref().map(|c| c.header_value()),
            version,
            debug_headers: if debug {
                owned(decision.debug_headers())
            } else {
                Vec::new()
            },
            failover: decision.failover(method).map(|f| FailoverPlan {
                origin: decision.route.old().to_string(),
                connect_error: f.connect_error,
                statuses: f.statuses.clone(),
            }),
        }
    }

    /// The `x-rollout-flags` value.
    pub fn flags_header(&self) -> String {
        self.flags.join(",")
    }

    /// The values the edge's own headers report.
    fn edge_headers(&self) -> EdgeHeaders<'_> {
        EdgeHeaders {
            arm: self.arm.into(),
            version: self.version,
            flags: Cow::Owned(self.flags_header()),
            set_cookie: self.set_cookie.as_deref(),
            debug: self
                .debug_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
        }
    }
}

fn owned(pairs: Vec<(&'static str, String)>) -> HeaderList {
    pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()
}

/// Decides a request under `active`.
pub fn route(active: &Active, facts: &Facts) -> Result<Outcome, InputError> {
    let config: &Config = &active.config;
    let decision = facts.decide(config).map_err(|_| InputError::Mint)?;
    Ok(Outcome::of(
        &decision,
        active.applied.version,
        config.debug_headers(),
        &facts.method,
    ))
}

/// The outcome when no usable config is applied: everything to the bootstrap
/// origin, on `old`.
pub fn bootstrap(origin: &str) -> Result<Outcome, InputError> {
    let origin = Origin::parse(origin).map_err(|p| InputError::BootstrapOrigin(p.to_string()))?;
    Ok(Outcome {
        route: None,
        arm: ArmName::Old,
        origin: origin.to_string(),
        bucket: None,
        reason: Reason::Bootstrap.as_str().to_owned(),
        key: None,
        flags: Vec::new(),
        set_cookie: None,
        version: 0,
        debug_headers: vec![(
            "x-rollout-reason".to_owned(),
            Reason::Bootstrap.as_str().to_owned(),
        )],
        failover: None,
    })
}

/// The outcome for retrying on `old` after `new` failed, when the outcome
/// allows failover.
pub fn failed_over(outcome: &Outcome) -> Option<Outcome> {
    let plan = outcome.failover.as_ref()?;
    Some(Outcome {
        arm: ArmName::Old,
        origin: plan.origin.clone(),
        failover: None,
        ..outcome.clone()
    })
}

/// Headers the platform adds to every inbound request: they describe the
/// edge's own hop, and Cloudflare refuses some of them on a subrequest.
fn is_platform_header(name: &str) -> bool {
    name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("cf-"))
}

/// Headers for the request to the origin: the client's minus hop-by-hop,
/// platform and edge headers, plus the decision and the forwarded headers.
pub fn origin_request_headers(
    incoming: &[(String, String)],
    outcome: &Outcome,
    hop: Hop<'_>,
) -> HeaderList {
    http::origin_request_headers(incoming, &outcome.edge_headers(), hop, is_platform_header)
}

/// Headers for the client: the origin's minus hop-by-hop and edge headers,
/// plus the edge's own.
pub fn client_response_headers(origin: &[(String, String)], outcome: &Outcome) -> HeaderList {
    http::client_response_headers(origin, &outcome.edge_headers())
}

/// The headers the edge adds to every response, its own errors included:
/// `x-rollout-arm`, `x-rollout-version`, the sticky cookie and debug headers.
/// Debug headers are limited to the edge's own names, so an outcome edited in
/// JavaScript cannot add arbitrary headers this way.
pub fn edge_response_headers(outcome: &Outcome) -> HeaderList {
    http::edge_response_headers(&outcome.edge_headers())
}

/// What the edge holds, from the stored compact form. Foreign or damaged
/// bytes count as nothing applied, as on the Spin edge.
pub fn current(active: Option<&[u8]>) -> Option<Applied> {
    active
        .and_then(Active::from_compact)
        .map(|active| active.applied)
}

/// The 413 reply for a push body over the limit, before it is read whole.
pub fn oversized_reply(current: Option<Applied>) -> String {
    let error = format!("body is over the limit of {MAX_ENVELOPE_BYTES} bytes");
    reply_text(PushReply::nack(current, error).to_json())
}

/// A refusal naming `error`, leaving `current` in place.
pub fn nack_reply(current: Option<Applied>, error: &str) -> String {
    reply_text(PushReply::nack(current, error).to_json())
}

/// JSON replies are built by serde_json, so they are UTF-8.
pub fn reply_text(json: Vec<u8>) -> String {
    String::from_utf8(json).unwrap_or_default()
}

/// A hop as JavaScript describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopFacts {
    /// Client address, without port.
    #[serde(default, alias = "clientIp")]
    pub client_ip: Option<String>,
    /// Host the client asked for.
    pub host: String,
    /// `http` or `https`.
    pub proto: String,
}

impl HopFacts {
    /// The core form.
    pub fn hop(&self) -> Hop<'_> {
        Hop {
            client_ip: self.client_ip.as_deref(),
            host: &self.host,
            proto: if self.proto == "https" {
                "https"
            } else {
                "http"
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use rollout_core::edge::receive_push;
    use rollout_core::{ConfigDoc, EnvelopeDoc, SecretKey};

    use super::*;

    const CONFIG: &str = r#"{"schema":1,"debug_headers":true,"routes":[
      {"id":"api","match":{"path_prefix":"/api"},"old":"http://127.0.0.1:1","new":"http://127.0.0.1:2",
       "new_weight":100,"key":["header:x-user-id"],"failover":{"statuses":[503]},
       "flags":[{"name":"beta","percent":100}]},
      {"id":"web","old":"https://old.example","new":"https://new.example","new_weight":0,
       "key":["cookie:sid"],"assign_cookie":true}]}"#;

    fn active(version: u64) -> Active {
        let config: ConfigDoc = serde_json::from_str(CONFIG).expect("doc");
        let body = EnvelopeDoc {
            version,
            parent: None,
            issued_at: "2026-11-27T08:00:00Z".into(),
            actor: "test".into(),
            reason: "test".into(),
            config,
        }
        .to_body();
        let key = SecretKey::from_seed([3; 32]);
        receive_push(None, &body, Some(&key.sign(&body)), &key.public_key())
            .apply
            .expect("applies")
    }

    fn facts(json: &str) -> Facts {
        serde_json::from_str(json).expect("facts")
    }

    fn value<'a>(list: &'a HeaderList, name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn route_reports_the_decision_as_plain_data() {
        let got = route(
            &active(4),
            &facts(r#"{"method":"GET","host":"h","path":"/api/x","headers":[["X-User-Id","u1"]]}"#),
        )
        .expect("routes");
        assert_eq!(got.route.as_deref(), Some("api"));
        assert_eq!(got.arm, ArmName::New);
        assert_eq!(got.origin, "http://127.0.0.1:2");
        assert_eq!(got.version, 4);
        assert_eq!(got.flags, ["beta"]);
        assert_eq!(got.key.as_deref(), Some("header:x-user-id"));
        assert_eq!(got.bucket, Some(rollout_core::bucket_of("api", "u1").get()));
        assert_eq!(value(&got.debug_headers, "x-rollout-route"), Some("api"));
        let json = serde_json::to_value(&got).expect("json");
        assert_eq!(json["arm"], "new", "arms are lowercase strings in JSON");
        assert_eq!(json["set_cookie"], serde_json::Value::Null);
    }

    #[test]
    fn a_mint_must_be_sixteen_hex_bytes() {
        let a = active(1);
        let ok = route(
            &a,
            &facts(r#"{"method":"GET","host":"h","path":"/","mint":"0123456789abcdef0123456789abcdef"}"#),
        )
        .expect("routes");
        assert!(
            ok.set_cookie
                .as_deref()
                .is_some_and(|c| c.starts_with("sid=0123456789abcdef0123456789abcdef;"))
        );
        for bad in ["abc", "zz23456789abcdef0123456789abcdef", ""] {
            let f = Facts {
                mint: Some(bad.into()),
                ..facts(r#"{"method":"GET","host":"h","path":"/"}"#)
            };
            assert_eq!(route(&a, &f), Err(InputError::Mint), "{bad:?}");
        }
        assert!(
            serde_json::from_str::<Facts>(r#"{"method":"GET","host":"h","path":"/","extra":1}"#)
                .is_err(),
            "unknown fields are refused, so a typo cannot silently drop a fact"
        );
    }

    #[test]
    fn failover_is_offered_only_for_idempotent_requests_on_new() {
        let a = active(1);
        let get = route(
            &a,
            &facts(r#"{"method":"GET","host":"h","path":"/api","headers":[["x-user-id","u"]]}"#),
        )
        .expect("routes");
        let retry = failed_over(&get).expect("GET on new fails over");
        assert_eq!(
            (retry.arm, retry.origin.as_str(), retry.failover),
            (ArmName::Old, "http://127.0.0.1:1", None)
        );
        assert_eq!(
            get.failover.as_ref().map(|f| f.statuses.clone()),
            Some(vec![503])
        );
        let post = route(
            &a,
            &facts(r#"{"method":"POST","host":"h","path":"/api","headers":[["x-user-id","u"]]}"#),
        )
        .expect("routes");
        assert_eq!(failed_over(&post), None);
    }

    #[test]
    fn bootstrap_routes_to_old_and_refuses_a_bad_origin() {
        let b = bootstrap("http://127.0.0.1:9000/").expect("valid");
        assert_eq!(
            (b.arm, b.origin.as_str(), b.version, b.route),
            (ArmName::Old, "http://127.0.0.1:9000", 0, None)
        );
        assert_eq!(
            bootstrap("http://user@host").map(|_| ()),
            Err(InputError::BootstrapOrigin(
                "userinfo is not allowed".into()
            ))
        );
    }

    #[test]
    fn the_origin_gets_the_decision_and_none_of_the_hop_headers() {
        let a = active(7);
        let incoming: HeaderList = [
            ("accept", "*/*"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("host", "edge.example"),
            ("cf-connecting-ip", "203.0.113.9"),
            ("x-rollout-arm", "new"),
            ("x-forwarded-for", "203.0.113.1"),
            ("x-user-id", "u"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let outcome = route(
            &a,
            &Facts {
                headers: incoming.clone(),
                ..facts(r#"{"method":"GET","host":"h","path":"/"}"#)
            },
        )
        .expect("routes");
        let hop = HopFacts {
            client_ip: Some("192.0.2.1".into()),
            host: "edge.example".into(),
            proto: "https".into(),
        };
        let out = origin_request_headers(&incoming, &outcome, hop.hop());
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "accept",
                "x-user-id",
                "x-rollout-arm",
                "x-rollout-version",
                "x-rollout-flags",
                "x-forwarded-for",
                "forwarded",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(value(&out, "x-rollout-arm"), Some("old"), "weight 0 on web");
        assert_eq!(value(&out, "x-rollout-version"), Some("7"));
        assert_eq!(
            value(&out, "x-forwarded-for"),
            Some("203.0.113.1, 192.0.2.1")
        );
    }

    #[test]
    fn the_client_gets_the_origin_headers_and_the_edge_headers() {
        let a = active(2);
        let outcome = route(
            &a,
            &facts(r#"{"method":"GET","host":"h","path":"/","mint":"000102030405060708090a0b0c0d0e0f"}"#),
        )
        .expect("routes");
        let origin: HeaderList = [
            ("content-type", "text/plain"),
            ("x-rollout-version", "999"),
            ("keep-alive", "5"),
            ("set-cookie", "a=1"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let out = client_response_headers(&origin, &outcome);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "set-cookie",
                "x-rollout-arm",
                "x-rollout-version",
                "set-cookie",
                "x-rollout-route",
                "x-rollout-reason",
                "x-rollout-bucket",
                "x-rollout-key"
            ]
        );
        assert_eq!(value(&out, "x-rollout-version"), Some("2"));
        let forged = Outcome {
            debug_headers: vec![("location".into(), "https://evil.example".into())],
            ..outcome
        };
        assert!(
            value(&edge_response_headers(&forged), "location").is_none(),
            "debug headers are limited to the edge's names"
        );
    }

    #[test]
    fn replies_for_refusals_name_the_current_version() {
        let a = active(5);
        let held = current(Some(&a.to_compact()));
        assert_eq!(held.map(|h| h.version), Some(5));
        assert_eq!(current(Some(b"junk")), None);
        let json: serde_json::Value = serde_json::from_str(&oversized_reply(held)).expect("json");
        assert_eq!(json["status"], "nack");
        assert_eq!(json["version"], 5);
        assert_eq!(
            json["error"],
            format!("body is over the limit of {MAX_ENVELOPE_BYTES} bytes")
        );
    }
}
