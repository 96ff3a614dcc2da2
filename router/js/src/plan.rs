//! Decisions as plain data, for `Router.route()`: request facts in core's JSON
//! form (`core/tests/vectors/decisions.json`) in, the decision out. What an
//! edge does with a request is [`crate::edge`]'s; this is for tools and for
//! checking the shared decision vectors in JavaScript.

use rollout_core::edge::Active;
use rollout_core::http;
use rollout_core::{Arm, Config, Decision};
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

#[cfg(test)]
mod tests {
    use rollout_core::edge::{Trust, receive_push};
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
            keys: None,
        }
        .to_body();
        let key = SecretKey::from_seed([3; 32]);
        receive_push(
            None,
            &body,
            Some(&key.sign(&body)),
            &Trust::key(key.public_key()),
        )
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
        assert_eq!(
            get.failover.as_ref().map(|f| f.origin.as_str()),
            Some("http://127.0.0.1:1")
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
        assert_eq!(post.failover, None);
    }
}
