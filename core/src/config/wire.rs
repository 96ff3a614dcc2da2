//! The config document as it is written, stored and pushed (JSON).
//!
//! These types only describe shape; [`Config`](crate::Config) is what they
//! become once every rule has been checked. `docs/config.md` explains each
//! field and `schema/config.schema.json` is generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A whole config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rollout config")]
pub struct ConfigDoc {
    /// Document schema number; this build reads schema 1.
    pub schema: u32,
    /// Add `x-rollout-route`, `x-rollout-bucket`, `x-rollout-reason` and
    /// `x-rollout-key` to responses, for debugging a rollout. Off by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub debug_headers: bool,
    /// Routes, tried in order; the first whose `match` fits the request wins.
    /// The last route has no `match` and catches everything else.
    pub routes: Vec<RouteDoc>,
}

/// One route: which requests it takes and how it splits them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    /// Unique name of the route (1-64 of `A-Z a-z 0-9 - _ .`); the default salt.
    pub id: String,
    /// Which requests this route takes. Absent on the default route.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<MatchDoc>,
    /// The stable origin, e.g. `https://old.internal:8443`.
    pub old: String,
    /// The candidate origin.
    pub new: String,
    /// Percentage of keys sent to `new`, 0 to 100 with at most 4 decimals.
    #[schemars(range(min = 0, max = 100))]
    pub new_weight: f64,
    /// Hash salt; defaults to `id`. Changing it re-buckets every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Where the stickiness key comes from, first present source wins:
    /// `header:NAME`, `cookie:NAME`, `query:NAME` or `client-ip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// When no key source is present, mint a random id and set it as the
    /// first `cookie:NAME` source's cookie, so the visitor stays put.
    #[serde(default, skip_serializing_if = "is_false")]
    pub assign_cookie: bool,
    /// Ways to force an arm regardless of weight, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideDoc>,
    /// Feature flags evaluated for this route's key and passed to the origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<FlagDoc>,
    /// Retry on `old` when `new` fails, for idempotent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverDoc>,
}

/// Conditions a request must meet, all of them, to take a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    /// Host name, exact (`shop.example.com`) or one wildcard label
    /// (`*.example.com`). Case-insensitive; the port is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix on segment boundaries: `/api` takes `/api` and `/api/x`,
    /// not `/apix`. A prefix ending in `/` takes everything below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Methods, e.g. `["GET", "HEAD"]`. Empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// A way for a request to force an arm: the value of a header or cookie is
/// `old` or `new`, followed by `:TOKEN` when tokens are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideDoc {
    /// `header:NAME` or `cookie:NAME`.
    pub from: String,
    /// Lowercase hex SHA-256 digests of accepted tokens. Empty: no token
    /// needed (anyone who can set the header or cookie can pick the arm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_sha256: Vec<String>,
}

/// A feature flag: on for a share of keys and for an allow-list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagDoc {
    /// Flag name (1-64 of `a-z 0-9 - _ .`), as sent in `x-rollout-flags`.
    pub name: String,
    /// Percentage of keys the flag is on for, 0 to 100 with at most 4 decimals.
    #[schemars(range(min = 0, max = 100))]
    pub percent: f64,
    /// Hash salt; defaults to `name`, so flags are independent of each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Keys the flag is always on for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// When to send a request that failed on `new` to `old` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverDoc {
    /// Retry when `new` cannot be reached (connect error, refused, DNS).
    #[serde(default = "yes")]
    pub connect_error: bool,
    /// Retry when `new` answers one of these 5xx statuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}
