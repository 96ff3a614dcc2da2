//! rollout-api: the control service's HTTP API as types.
//!
//! Every request and reply of `rollout serve` is a type here, shared by the
//! service, the `rollout` CLI, tests and fuzz targets. The crate has no
//! server or client dependencies: it is serde shapes, the limits on what a
//! caller may send, and the few rules both sides must read alike (whether an
//! edge holds the committed version, what an edge's state is called).
//!
//! Wire types become domain types at the boundary: a [`CreateVersion`] has
//! exactly one [`Change`], a [`Reason`] is never over [`MAX_REASON_BYTES`],
//! and [`from_json`] names the field of any error.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod plans;
mod text;
mod version;

use rollout_core::config::Patch;
use rollout_core::{Applied, ConfigDoc, Digest};
use serde::{Deserialize, Serialize};

pub use plans::{
    Alert, AlertReply, AlertWebhook, CheckView, PlanEvent, PlanEvents, PlanList, PlanQuery,
    PlanView, StartPlan, TemplateList,
};
pub use text::{Actor, InvalidText, MAX_ACTOR_BYTES, MAX_REASON_BYTES, Reason, clip, shorten};
pub use version::Version;

/// Largest request body the API reads, in bytes: room for a config at
/// rollout-core's limit written out by hand (indentation, key order).
pub const MAX_REQUEST_BYTES: usize = 2 * rollout_core::config::MAX_CONFIG_BYTES;

/// The API's paths.
pub mod path {
    /// `GET`: Prometheus text.
    pub const METRICS: &str = "/metrics";
    /// `GET`: liveness.
    pub const HEALTHZ: &str = "/healthz";
    /// `GET`: the committed version with its config.
    pub const CURRENT: &str = "/v1/current";
    /// `GET`: a history page; `POST`: a new version.
    pub const VERSIONS: &str = "/v1/versions";
    /// `GET ?time=`: the version live at a time.
    pub const AT: &str = "/v1/at";

    /// `GET`: one version.
    pub fn version(n: super::Version) -> String {
        format!("{VERSIONS}/{n}")
    }

    /// `POST`: restore an earlier config as a new version.
    pub const ROLLBACK: &str = "/v1/rollback";
    /// `GET`: every edge against the committed version.
    pub const STATUS: &str = "/v1/status";
    /// `GET`, `POST`, `DELETE ?url=`: registered edges.
    pub const EDGES: &str = "/v1/edges";
    /// `GET`: who did what.
    pub const AUDIT: &str = "/v1/audit";
    /// `GET ?route=`: plans; `POST`: start one.
    pub const PLANS: &str = "/v1/plans";

    /// `GET`: one plan.
    pub fn plan(id: i64) -> String {
        format!("{PLANS}/{id}")
    }

    /// `POST`: `pause`, `resume`, `promote`, `abort` or `retry` plan `id`.
    pub fn plan_command(id: i64, command: &str) -> String {
        format!("{PLANS}/{id}/{command}")
    }

    /// `GET`: plan `id`'s events.
    pub fn plan_events(id: i64) -> String {
        format!("{PLANS}/{id}/events")
    }

    /// `GET`: stored check templates.
    pub const TEMPLATES: &str = "/v1/templates";

    /// `PUT`, `DELETE`: one template.
    pub fn template(name: &str) -> String {
        format!("{TEMPLATES}/{name}")
    }

    /// `POST`: an Alertmanager webhook.
    pub const ALERTS: &str = "/v1/alerts";
    /// `GET`: the signing keys; `POST`: rotate to a new key, or retire one.
    pub const KEYS: &str = "/v1/keys";
    /// `POST`: a version made around the service (break glass), into its history.
    pub const ADOPT: &str = "/v1/adopt";
    /// `GET`: the caller's token name and role.
    pub const WHOAMI: &str = "/v1/whoami";
    /// `GET`: every route's weight and flags at each version, oldest first.
    pub const TIMELINE: &str = "/v1/timeline";

    /// `GET`: plan `id`'s judged measurements, oldest first.
    pub fn plan_checks(id: i64) -> String {
        format!("{PLANS}/{id}/checks")
    }
}

/// `POST /v1/adopt`: a signed envelope pushed around the service (what
/// `rollout push --direct` records), to take into the history as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    /// The exact envelope body, as text.
    pub body: String,
    /// Its `rollout-signature` header value.
    pub signature: String,
}

/// One signing key of the control service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyView {
    /// Its id (16 hex digits), as signatures and edges name it.
    pub id: String,
    /// The public key, as edges take it (`ed25519:<base64>`).
    pub public_key: String,
    /// Whether it signs the next version.
    pub signs: bool,
    /// Whether edges trust it once they hold the committed version.
    pub trusted_by_edges: bool,
}

/// `GET /v1/keys`, and the answer to a key change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// The keys in the service's key file, first preferred.
    pub keys: Vec<KeyView>,
    /// The version a key change committed (declaring the new set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

/// `POST /v1/keys`: a key change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "action", rename_all = "lowercase")]
pub enum KeyChange {
    /// A new key goes first; the next version (signed by a key edges trust)
    /// declares it trusted, and the version after is signed by it.
    Rotate {
        /// Why.
        #[serde(default)]
        reason: Option<Reason>,
    },
    /// The key leaves the key file and the set edges trust.
    Retire {
        /// The key's id.
        id: String,
        /// Why.
        #[serde(default)]
        reason: Option<Reason>,
    },
}

/// A request body that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RequestError {
    /// Where: `config.routes[0].new_weight`, `reason`, or `request` for the whole.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Parses a JSON request body, naming the field of any error.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RequestError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // "." is the root, "?" means the input ended before any value.
        let path = if path == "." || path == "?" {
            "request".to_owned()
        } else {
            path
        };
        RequestError {
            path,
            message: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| RequestError {
        path: "request".to_owned(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Whether an edge that reports holding `held` holds `committed`: the same
/// version with the same digest. A version number alone is not enough: a
/// break-glass push can give an edge another body under the same number.
pub fn holds(held: Option<Applied>, committed: Applied) -> bool {
    held == Some(committed)
}

/// An edge's state against the committed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EdgeState {
    /// It holds the committed version (or nothing is committed yet).
    #[serde(rename = "ACK")]
    Ack,
    /// It refused the committed version; `error` says why.
    #[serde(rename = "NACK")]
    Nack,
    /// It is behind and being pushed again.
    #[serde(rename = "STALE")]
    Stale,
    /// It has not answered for longer than the service's `--unreachable-after`.
    #[serde(rename = "UNREACHABLE")]
    Unreachable,
}

impl EdgeState {
    /// The name the API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeState::Ack => "ACK",
            EdgeState::Nack => "NACK",
            EdgeState::Stale => "STALE",
            EdgeState::Unreachable => "UNREACHABLE",
        }
    }
}

impl std::fmt::Display for EdgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a new version changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A whole config document.
    Config(ConfigDoc),
    /// A change to the current config.
    Patch(Patch),
}

/// `POST /v1/versions`: a new version, if `expected_version` is still current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CreateVersionWire", into = "CreateVersionWire")]
pub struct CreateVersion {
    /// The version the author expects to be current ([`Version::NONE`]: none yet).
    pub expected_version: Version,
    /// Why; recorded in the envelope and the audit log.
    pub reason: Option<Reason>,
    /// The change.
    pub change: Change,
}

/// `Ok` with the one of `a` and `b` that is given, or `Err(both_or_neither)`.
fn one_of<A, B, T>(
    (a, from_a): (Option<A>, impl FnOnce(A) -> T),
    (b, from_b): (Option<B>, impl FnOnce(B) -> T),
    both_or_neither: &'static str,
) -> Result<T, &'static str> {
    match (a, b) {
        (Some(a), None) => Ok(from_a(a)),
        (None, Some(b)) => Ok(from_b(b)),
        _ => Err(both_or_neither),
    }
}

// Missing `Option` fields read as `None`; `expected_version` is required.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVersionWire {
    expected_version: Version,
    reason: Option<Reason>,
    config: Option<ConfigDoc>,
    patch: Option<Patch>,
}

impl TryFrom<CreateVersionWire> for CreateVersion {
    type Error = &'static str;

    fn try_from(w: CreateVersionWire) -> Result<CreateVersion, &'static str> {
        let config = (w.config, Change::Config);
        let patch = (w.patch, Change::Patch);
        Ok(CreateVersion {
            expected_version: w.expected_version,
            reason: w.reason,
            change: one_of(config, patch, "give exactly one of config and patch")?,
        })
    }
}

impl From<CreateVersion> for CreateVersionWire {
    fn from(c: CreateVersion) -> CreateVersionWire {
        let (config, patch) = match c.change {
            Change::Config(doc) => (Some(doc), None),
            Change::Patch(p) => (None, Some(p)),
        };
        CreateVersionWire {
            expected_version: c.expected_version,
            reason: c.reason,
            config,
            patch,
        }
    }
}

/// Which earlier config a rollback restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// This version's.
    To(Version),
    /// The one live at this time (RFC 3339).
    At(String),
}

/// `POST /v1/rollback`: an earlier config as a new, higher version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RollbackWire", into = "RollbackWire")]
pub struct RollbackRequest {
    /// The version the author expects to be current.
    pub expected_version: Version,
    /// What to restore.
    pub target: RollbackTarget,
    /// Why.
    pub reason: Option<Reason>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackWire {
    to: Option<Version>,
    at: Option<String>,
    expected_version: Version,
    reason: Option<Reason>,
}

impl TryFrom<RollbackWire> for RollbackRequest {
    type Error = &'static str;

    fn try_from(w: RollbackWire) -> Result<RollbackRequest, &'static str> {
        let (to, at) = ((w.to, RollbackTarget::To), (w.at, RollbackTarget::At));
        Ok(RollbackRequest {
            target: one_of(to, at, "give exactly one of to and at")?,
            expected_version: w.expected_version,
            reason: w.reason,
        })
    }
}

impl From<RollbackRequest> for RollbackWire {
    fn from(r: RollbackRequest) -> RollbackWire {
        let (to, at) = match r.target {
            RollbackTarget::At(t) => (None, Some(t)),
            RollbackTarget::To(v) => (Some(v), None),
        };
        RollbackWire {
            to,
            at,
            expected_version: r.expected_version,
            reason: r.reason,
        }
    }
}

/// A version as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// Version number.
    pub version: Version,
    /// Digest of the signed envelope body.
    pub digest: Digest,
    /// Digest of the previous version's body.
    pub parent: Option<Digest>,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When, RFC 3339.
    pub issued_at: String,
    /// Commit to last ACK, ms, once every edge acknowledged it.
    #[serde(default)]
    pub converged_ms: Option<f64>,
    /// The config document (absent in history pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigDoc>,
    /// The control service's hook runs that belong to it: those of its
    /// commit, and those of plan events while it was current (a restore
    /// point taken when a plan started, for one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRunView>,
}

/// Where a hook run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookStatus {
    /// Not started yet.
    Queued,
    /// Started, not finished.
    Running,
    /// Exit status 0, or a 2xx answer.
    Ok,
    /// Another exit status or answer, or it could not be started.
    Failed,
    /// Stopped at its time limit.
    Timeout,
}

impl HookStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookStatus::Queued => "queued",
            HookStatus::Running => "running",
            HookStatus::Ok => "ok",
            HookStatus::Failed => "failed",
            HookStatus::Timeout => "timeout",
        }
    }

    /// Whether it will not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            HookStatus::Ok | HookStatus::Failed | HookStatus::Timeout
        )
    }
}

/// One run of a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRunView {
    /// Its id (`ROLLOUT_RUN` in the hook's environment).
    pub id: i64,
    /// The hook's name.
    pub hook: String,
    /// What caused it: `version`, `plan.start`, `plan.promote`,
    /// `plan.abort` or `plan.fail`.
    pub event: String,
    /// The plan it belongs to, if any.
    pub plan: Option<i64>,
    /// Where it stands.
    pub status: HookStatus,
    /// What it said: its standard output (a restore point's name and LSN,
    /// say) or, when it failed, why.
    pub output: String,
    /// When it was queued, RFC 3339.
    pub queued_at: String,
    /// When it finished, RFC 3339.
    pub finished_at: Option<String>,
    /// How many times it was started (more than once only when the
    /// service stopped while it ran).
    pub attempts: u32,
}

/// `GET /v1/versions` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only versions below this one.
    pub before: Option<Version>,
    /// Page size (1 to 1000; default 50).
    pub limit: Option<u32>,
}

/// `GET /v1/versions`: a page of history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The versions, without their configs.
    pub versions: Vec<VersionView>,
    /// `before` for the next page, when there may be one.
    pub next_before: Option<Version>,
}

/// `GET /v1/at` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtQuery {
    /// RFC 3339, or a duration before now (`10m ago`).
    pub time: String,
}

/// One edge as `GET /v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatus {
    /// Base URL.
    pub url: String,
    /// Its state against the committed version.
    pub state: EdgeState,
    /// The version it last acknowledged, or reported holding.
    pub acked_version: Version,
    /// The version last pushed to it.
    pub sent_version: Version,
    /// Versions behind the committed one.
    pub lag: u64,
    /// Why it refused, or why it cannot be reached.
    pub error: Option<String>,
    /// Last answer, RFC 3339.
    pub last_contact: Option<String>,
    /// Duration of its last successful push, ms.
    pub push_latency_ms: Option<f64>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The committed version ([`Version::NONE`]: none).
    pub version: Version,
    /// Its digest.
    pub digest: Option<Digest>,
    /// When it was committed.
    pub issued_at: Option<String>,
    /// Commit to last ACK, ms, once every edge holds it.
    pub converged_ms: Option<f64>,
    /// Every edge.
    pub edges: Vec<EdgeStatus>,
    /// Which replica of the control service leads (absent from services
    /// that predate replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leadership: Option<LeadershipView>,
}

/// Which replica runs the fan-out, reconciliation, plans and hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipView {
    /// The replica holding an unexpired lease; `None` while none does
    /// (between a leader's loss and the next one's takeover).
    pub leader: Option<String>,
    /// The lease's fencing token (higher with every new holder).
    pub token: i64,
    /// The replica that answered this request.
    pub replica: String,
    /// Whether that replica acts as the leader now, by its own lease
    /// clock (it runs the fan-out, plans and hooks).
    #[serde(default)]
    pub leading: bool,
}

impl StatusView {
    /// How many edges hold the committed version.
    pub fn acked(&self) -> usize {
        self.edges
            .iter()
            .filter(|e| e.state == EdgeState::Ack)
            .count()
    }

    /// Whether the committed version is at least `min` and every edge holds it.
    pub fn converged_at(&self, min: Version) -> bool {
        self.version >= min && self.acked() == self.edges.len()
    }

    /// The first edge that refused the committed version.
    pub fn refusal(&self) -> Option<&EdgeStatus> {
        self.edges.iter().find(|e| e.state == EdgeState::Nack)
    }
}

/// `POST /v1/edges` body and `DELETE /v1/edges` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeRequest {
    /// The edge's base URL, e.g. `http://127.0.0.1:3000`.
    pub url: String,
}

/// `GET /v1/edges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeList {
    /// Base URLs, in registration order.
    pub edges: Vec<String>,
}

/// `POST /v1/edges`: 201 when added, 200 when it was already registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeAdded {
    /// The URL as registered (trimmed).
    pub url: String,
    /// False when it was already registered.
    pub added: bool,
}

/// `DELETE /v1/edges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRemoved {
    /// The URL.
    pub url: String,
    /// Always true (an unknown edge is a 404).
    pub removed: bool,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, RFC 3339.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What (`push`, `patch`, `rollback`, `edge add`...).
    pub action: String,
    /// The version and reason, or the edge.
    pub detail: String,
}

/// `GET /v1/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The entries.
    pub audit: Vec<AuditEntry>,
}

/// Every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// On 400, the field at fault (`routes[0].new_weight`, `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// On 409, the version that is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<Version>,
}

#[cfg(test)]
mod tests;

/// `GET /v1/whoami`: who the token is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's name (the actor of what it does).
    pub name: String,
    /// `read`, `deploy` or `admin`.
    pub role: String,
}

/// `GET /v1/timeline` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineQuery {
    /// How many of the newest versions (1 to 2000; default 200).
    pub limit: Option<u32>,
}

/// One route at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteWeight {
    /// The route's id.
    pub id: String,
    /// Percent of keys on new.
    pub new_weight: f64,
    /// Each flag's percentage.
    pub flags: std::collections::BTreeMap<String, f64>,
}

/// One version on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// The version.
    pub version: Version,
    /// When, RFC 3339.
    pub issued_at: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// How it was made: `push`, `patch`, `rollback`, `plan` or `adopt`.
    pub action: Option<String>,
    /// Whether it rolled back: a person's rollback, or a plan's.
    pub rollback: bool,
    /// Commit to last ACK, ms.
    pub converged_ms: Option<f64>,
    /// Its routes.
    pub routes: Vec<RouteWeight>,
}

/// `GET /v1/timeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Oldest first.
    pub versions: Vec<TimelinePoint>,
}

/// One judged measurement of a plan's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check.
    pub name: String,
    /// When, RFC 3339.
    pub at: String,
    /// `pass`, `fail`, `inconclusive` or `error`.
    pub verdict: String,
    /// The verdict in words.
    pub detail: String,
    /// Old's error rate in the interval (a probe), 0 to 1.
    pub old_error_rate: Option<f64>,
    /// New's error rate in the interval (a probe), 0 to 1.
    pub new_error_rate: Option<f64>,
    /// A query's value (Prometheus): its one value, or new's.
    pub value: Option<f64>,
}

/// `GET /v1/plans/{id}/checks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResults {
    /// Oldest first.
    pub checks: Vec<CheckResult>,
}
