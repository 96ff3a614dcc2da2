//! The control service's HTTP API (JSON over HTTP, bearer tokens).
//!
//! A write carries the version its author expects to be current and gets 409
//! when another write came first, so concurrent CI jobs never lose an update.
//! A new config is validated by rollout-core before anything is written; the
//! version is committed, then fanned out by the [`push`](crate::push) loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rollout_core::config::Patch;
use rollout_core::{Config, ConfigDoc, Digest, Envelope, EnvelopeDoc, SecretKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Caller, Denied, Role, Tokens};
use crate::metrics::{Gauges, Metrics};
use crate::push::{PushOptions, Pusher};
use crate::store::{CommitError, EdgeRow, NewVersion, Store, VersionRow, now_ms};
use crate::time::{format_ms, parse_time};

/// Everything `rollout serve` needs.
#[derive(Debug)]
pub struct ServeOptions {
    /// The SQLite file.
    pub db: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The signing key.
    pub key: SecretKey,
    /// Who may call.
    pub tokens: Tokens,
    /// Fan-out settings.
    pub push: PushOptions,
    /// How long an edge may fail to answer before it is UNREACHABLE rather than STALE.
    pub unreachable_after: Duration,
}

/// Shared state of the service.
#[derive(Debug)]
pub struct App {
    /// The store.
    pub store: Store,
    key: SecretKey,
    tokens: Tokens,
    /// Fan-out bookkeeping.
    pub pusher: Pusher,
    /// Fan-out settings.
    pub push: PushOptions,
    /// Counters.
    pub metrics: Metrics,
    unreachable_after: Duration,
    committed: Mutex<HashMap<u64, Instant>>,
}

impl App {
    /// When this process committed `version`, if it did.
    pub fn committed_at(&self, version: u64) -> Option<Instant> {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&version)
            .copied()
    }

    /// Forgets commit instants up to `version`, once it has converged.
    pub fn forget_commits_up_to(&self, version: u64) {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|v, _| *v > version);
    }
}

/// Opens the store and serves the API until the future is dropped.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let app = open(opts)?;
    tracing::info!("control service listening on http://{addr}");
    println!("rollout control service listening on http://{addr}");
    serve_on(app, listener).await
}

/// Opens the store and builds the shared state.
pub fn open(opts: ServeOptions) -> anyhow::Result<Arc<App>> {
    let store = Store::open(&opts.db)?;
    Ok(Arc::new(App {
        store,
        key: opts.key,
        tokens: opts.tokens,
        pusher: Pusher::new(),
        push: opts.push,
        metrics: Metrics::default(),
        unreachable_after: opts.unreachable_after,
        committed: Mutex::default(),
    }))
}

/// Serves `app` on `listener`, with its reconciler, until dropped.
pub async fn serve_on(app: Arc<App>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let reconciler = tokio::spawn(crate::push::run(app.clone()));
    let served = axum::serve(listener, router(app)).await;
    reconciler.abort();
    Ok(served?)
}

/// The API routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/current", get(current))
        .route("/v1/at", get(at))
        .route("/v1/versions", get(history).post(create))
        .route("/v1/versions/{n}", get(version))
        .route("/v1/rollback", axum::routing::post(rollback))
        .route("/v1/status", get(status))
        .route(
            "/v1/edges",
            get(list_edges).post(add_edge).delete(remove_edge),
        )
        .route("/v1/audit", get(audit))
        .with_state(app)
}

/// An API error: a status and a short message; the detail goes to the log.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"error": error.into()}),
        }
    }
    fn not_found(what: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }
    fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        let status = match d {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Forbidden { .. } => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, d.to_string())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        tracing::error!("store: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store error; see the service log",
        )
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> ApiError {
        match e {
            CommitError::Conflict { expected, current } => ApiError {
                status: StatusCode::CONFLICT,
                body: json!({
                    "error": format!("expected version {expected}, but the current version is {current}"),
                    "current_version": current,
                }),
            },
            CommitError::Refused(e) => match e.downcast::<rollout_core::ConfigError>() {
                Ok(ce) => ApiError {
                    status: StatusCode::BAD_REQUEST,
                    body: json!({"error": ce.to_string(), "field": ce.path}),
                },
                Err(e) => ApiError::bad_request(format!("{e:#}")),
            },
            CommitError::Store(e) => e.into(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn caller(app: &App, headers: &HeaderMap, need: Role) -> ApiResult<Caller> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(app.tokens.check(auth, need)?)
}

/// A version as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionView {
    /// Version number.
    pub version: u64,
    /// Digest of the envelope body.
    pub digest: String,
    /// Digest of the previous body.
    pub parent: Option<String>,
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
    pub config: Option<serde_json::Value>,
}

fn view(app: &App, row: &VersionRow, with_config: bool) -> ApiResult<VersionView> {
    let config = if with_config {
        let doc: serde_json::Value = serde_json::from_slice(&row.body).map_err(|e| {
            tracing::error!("version {} body is not JSON: {e}", row.version);
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stored body unreadable")
        })?;
        doc.get("config").cloned()
    } else {
        None
    };
    Ok(VersionView {
        version: row.version,
        digest: row.digest.clone(),
        parent: row.parent.clone(),
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        issued_at: row.issued_at.clone(),
        converged_ms: app.store.convergence(row.version)?,
        config,
    })
}

async fn current(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<VersionView>> {
    caller(&app, &headers, Role::Read)?;
    let row = app
        .store
        .current()?
        .ok_or_else(|| ApiError::not_found("no version has been issued yet".into()))?;
    Ok(Json(view(&app, &row, true)?))
}

async fn version(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(n): Path<u64>,
) -> ApiResult<Json<VersionView>> {
    caller(&app, &headers, Role::Read)?;
    let row = app
        .store
        .version(n)?
        .ok_or_else(|| ApiError::not_found(format!("no version {n}")))?;
    Ok(Json(view(&app, &row, true)?))
}

#[derive(Debug, Deserialize)]
struct AtQuery {
    time: String,
}

async fn at(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<VersionView>> {
    caller(&app, &headers, Role::Read)?;
    let ms = parse_time(&q.time).map_err(ApiError::bad_request)?;
    let row = app
        .store
        .at(ms)?
        .ok_or_else(|| ApiError::not_found(format!("no version was live at {}", q.time)))?;
    Ok(Json(view(&app, &row, true)?))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

async fn history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    caller(&app, &headers, Role::Read)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let rows = app.store.history(q.before, limit)?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.version))
        .flatten();
    let versions = rows
        .iter()
        .map(|r| view(&app, r, false))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({"versions": versions, "next_before": next})))
}

/// A request for a new version.
#[derive(Debug, Deserialize, Serialize)]
pub struct CreateRequest {
    /// The version the author expects to be current (0: none yet).
    pub expected_version: u64,
    /// Why; recorded in the envelope and the audit.
    #[serde(default)]
    pub reason: Option<String>,
    /// A full config document.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Or a change to the current one.
    #[serde(default)]
    pub patch: Option<Patch>,
}

fn config_of(row: &VersionRow) -> anyhow::Result<ConfigDoc> {
    let doc: EnvelopeDoc<ConfigDoc> =
        serde_json::from_slice(&row.body).context("stored envelope does not parse")?;
    Ok(doc.config)
}

/// Validates, signs and commits `doc` as the next version.
fn commit(
    app: &App,
    expected: u64,
    who: &Caller,
    action: &str,
    reason: String,
    doc: impl FnOnce(Option<&VersionRow>) -> anyhow::Result<ConfigDoc>,
) -> ApiResult<VersionRow> {
    let row = app.store.commit(expected, action, |version, parent| {
        let config = doc(parent)?;
        // The rules are core's: the same validation an edge runs.
        Config::try_from(&config)?;
        let issued_ms = now_ms();
        let body = EnvelopeDoc {
            version,
            parent: parent.map(|p| p.digest.parse::<Digest>()).transpose()?,
            issued_at: format_ms(issued_ms),
            actor: who.name.clone(),
            reason: reason.clone(),
            config,
        }
        .to_body();
        // The edge's own check, limits included, before anything is stored.
        let envelope = Envelope::parse(&body)?;
        Ok(NewVersion {
            signature: app.key.sign(&body),
            digest: envelope.digest.to_string(),
            body,
            actor: who.name.clone(),
            reason: reason.clone(),
            issued_at: format_ms(issued_ms),
            issued_ms,
        })
    })?;
    app.committed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(row.version, Instant::now());
    tracing::info!(
        "{} committed version {}: {}",
        who.name,
        row.version,
        row.reason
    );
    app.pusher.wake();
    Ok(row)
}

async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let who = caller(&app, &headers, Role::Deploy)?;
    let req: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let (action, reason) = match (&req.config, &req.patch) {
        (Some(_), None) => ("push", "push".to_owned()),
        (None, Some(p)) => ("patch", p.to_string()),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of config and patch",
            ));
        }
    };
    let reason = req.reason.clone().unwrap_or(reason);
    let row = commit(&app, req.expected_version, &who, action, reason, |parent| {
        match (req.config, &req.patch) {
            (Some(config), _) => {
                let text = serde_json::to_vec(&config)?;
                // Core's parser names the field of a type error.
                Config::from_json(&text)?;
                Ok(serde_json::from_value(config)?)
            }
            (None, Some(patch)) => {
                let parent = parent.ok_or_else(|| anyhow::anyhow!("no current config to patch"))?;
                let mut doc = config_of(parent)?;
                patch.apply(&mut doc)?;
                Ok(doc)
            }
            (None, None) => anyhow::bail!("give exactly one of config and patch"),
        }
    })?;
    Ok((StatusCode::CREATED, Json(view(&app, &row, true)?)))
}

/// A request to restore an earlier config as a new version.
#[derive(Debug, Deserialize, Serialize)]
pub struct RollbackRequest {
    /// The version the author expects to be current.
    pub expected_version: u64,
    /// Restore this version's config.
    #[serde(default)]
    pub to: Option<u64>,
    /// Or the config that was live at this time (RFC 3339).
    #[serde(default)]
    pub at: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

async fn rollback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<RollbackRequest>,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let who = caller(&app, &headers, Role::Deploy)?;
    let source = match (req.to, &req.at) {
        (Some(n), None) => app
            .store
            .version(n)?
            .ok_or_else(|| ApiError::not_found(format!("no version {n}")))?,
        (None, Some(t)) => {
            let ms = parse_time(t).map_err(ApiError::bad_request)?;
            app.store
                .at(ms)?
                .ok_or_else(|| ApiError::not_found(format!("no version was live at {t}")))?
        }
        _ => return Err(ApiError::bad_request("give exactly one of to and at")),
    };
    let what = match &req.at {
        Some(t) => format!("rollback to version {} (live at {t})", source.version),
        None => format!("rollback to version {}", source.version),
    };
    let reason = match &req.reason {
        Some(r) => format!("{what}: {r}"),
        None => what,
    };
    let config = config_of(&source).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let row = commit(&app, req.expected_version, &who, "rollback", reason, |_| {
        Ok(config)
    })?;
    Ok((StatusCode::CREATED, Json(view(&app, &row, true)?)))
}

/// One edge as `status` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeStatus {
    /// Base URL.
    pub url: String,
    /// `ACK`, `NACK`, `STALE` or `UNREACHABLE`.
    pub state: String,
    /// The version it last acknowledged, or reported holding (0: none).
    pub acked_version: u64,
    /// The version last pushed to it.
    pub sent_version: u64,
    /// Versions behind the committed one.
    pub lag: u64,
    /// Why it refused, or why it cannot be reached.
    pub error: Option<String>,
    /// Last answer, RFC 3339.
    pub last_contact: Option<String>,
    /// Duration of its last successful push, ms.
    pub push_latency_ms: Option<f64>,
}

/// An edge's state against the committed version (`version` 0: none yet):
/// ACK when it holds it; NACK when it refused it; UNREACHABLE when it has
/// not answered for `unreachable_after_ms`; STALE otherwise (behind, and
/// being retried).
fn edge_state(
    e: &EdgeRow,
    version: u64,
    digest: Option<&str>,
    now_ms: i64,
    unreachable_after_ms: i64,
) -> (&'static str, Option<String>) {
    let holds = e.acked_version == version && e.acked_digest.as_deref() == digest;
    if version == 0 || holds {
        return ("ACK", None);
    }
    if let Some((_, err)) = e.nack.as_ref().filter(|(v, _)| *v == version) {
        return ("NACK", Some(err.clone()));
    }
    let unreachable = e
        .failing_since_ms
        .is_some_and(|since| now_ms - since >= unreachable_after_ms);
    let state = if unreachable { "UNREACHABLE" } else { "STALE" };
    (state, e.last_error.clone())
}

fn edge_status(app: &App, e: &EdgeRow, current: Option<&VersionRow>) -> EdgeStatus {
    let (version, digest) = current.map_or((0, None), |c| (c.version, Some(c.digest.as_str())));
    let after = app.unreachable_after.as_millis() as i64;
    let (state, error) = edge_state(e, version, digest, now_ms(), after);
    EdgeStatus {
        url: e.url.clone(),
        state: state.to_owned(),
        acked_version: e.acked_version,
        sent_version: e.sent_version,
        lag: version.saturating_sub(e.acked_version),
        error,
        last_contact: e.last_contact_ms.map(format_ms),
        push_latency_ms: e.latency_ms,
    }
}

/// The answer to `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The committed version (0: none).
    pub version: u64,
    /// Its digest.
    pub digest: Option<String>,
    /// When it was committed.
    pub issued_at: Option<String>,
    /// Commit to last ACK, ms, once every edge holds it.
    pub converged_ms: Option<f64>,
    /// Every edge.
    pub edges: Vec<EdgeStatus>,
}

async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<StatusView>> {
    caller(&app, &headers, Role::Read)?;
    let current = app.store.current()?;
    let edges = app.store.edges()?;
    Ok(Json(StatusView {
        version: current.as_ref().map_or(0, |c| c.version),
        digest: current.as_ref().map(|c| c.digest.clone()),
        issued_at: current.as_ref().map(|c| c.issued_at.clone()),
        converged_ms: match &current {
            Some(c) => app.store.convergence(c.version)?,
            None => None,
        },
        edges: edges
            .iter()
            .map(|e| edge_status(&app, e, current.as_ref()))
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
struct EdgeRequest {
    url: String,
}

fn check_edge_url(url: &str) -> ApiResult<String> {
    let url = url.trim().trim_end_matches('/');
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::bad_request("url: must be http(s)://host[:port]"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::bad_request("url: must not carry credentials"));
    }
    Ok(url.to_owned())
}

async fn list_edges(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    caller(&app, &headers, Role::Read)?;
    let urls: Vec<String> = app.store.edges()?.into_iter().map(|e| e.url).collect();
    Ok(Json(json!({"edges": urls})))
}

async fn add_edge(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<EdgeRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let who = caller(&app, &headers, Role::Admin)?;
    let url = check_edge_url(&req.url)?;
    let added = app.store.add_edge(&url)?;
    if added {
        app.store.audit(&who.name, "edge add", &url)?;
        app.pusher.wake();
    }
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"url": url, "added": added}))))
}

async fn remove_edge(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(req): Query<EdgeRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = caller(&app, &headers, Role::Admin)?;
    let url = req.url.trim().trim_end_matches('/');
    if !app.store.remove_edge(url)? {
        return Err(ApiError::not_found(format!("no edge {url}")));
    }
    app.store.audit(&who.name, "edge remove", url)?;
    Ok(Json(json!({"url": url, "removed": true})))
}

async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    caller(&app, &headers, Role::Read)?;
    let entries: Vec<_> = app
        .store
        .audit_log(200)?
        .into_iter()
        .map(|(ms, actor, action, detail)| {
            json!({"at": format_ms(ms), "actor": actor, "action": action, "detail": detail})
        })
        .collect();
    Ok(Json(json!({"audit": entries})))
}

async fn metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let current = app.store.current()?;
    let edges = app.store.edges()?;
    let version = current.as_ref().map_or(0, |c| c.version);
    let edges_acked = edges
        .iter()
        .filter(|e| {
            current.as_ref().is_some_and(|c| {
                e.acked_version == c.version && e.acked_digest.as_deref() == Some(c.digest.as_str())
            })
        })
        .count();
    let text = app.metrics.render(&Gauges {
        version,
        versions: app.store.version_count()?,
        edges: edges.len(),
        edges_acked,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_states_follow_ack_nack_and_how_long_an_edge_is_silent() {
        let base = EdgeRow {
            id: 1,
            url: "http://e".into(),
            sent_version: 2,
            acked_version: 1,
            acked_digest: Some("d1".into()),
            reported_version: 1,
            nack: None,
            last_error: None,
            failing_since_ms: None,
            last_contact_ms: None,
            latency_ms: None,
        };
        let with = |f: &dyn Fn(&mut EdgeRow)| {
            let mut e = base.clone();
            f(&mut e);
            e
        };
        let refused = with(&|e| e.nack = Some((2, "signature does not verify".into())));
        let old_nack = with(&|e| e.nack = Some((1, "old".into())));
        let silent = |since| {
            with(&|e| {
                e.failing_since_ms = Some(since);
                e.last_error = Some("timed out".into());
            })
        };
        let other_digest = with(&|e| {
            e.acked_version = 2;
            e.acked_digest = Some("elsewhere".into());
        });
        let cases: [(&str, EdgeRow, &str, Option<&str>); 7] = [
            (
                "holds it",
                with(&|e| {
                    e.acked_version = 2;
                    e.acked_digest = Some("d2".into());
                }),
                "ACK",
                None,
            ),
            ("behind, answering", base.clone(), "STALE", None),
            (
                "refused this version",
                refused,
                "NACK",
                Some("signature does not verify"),
            ),
            ("refused an older one", old_nack, "STALE", None),
            ("silent a little", silent(9_000), "STALE", Some("timed out")),
            (
                "silent too long",
                silent(0),
                "UNREACHABLE",
                Some("timed out"),
            ),
            ("same number, other body", other_digest, "STALE", None),
        ];
        for (what, edge, state, error) in cases {
            let got = edge_state(&edge, 2, Some("d2"), 10_000, 5_000);
            assert_eq!((got.0, got.1.as_deref()), (state, error), "{what}");
        }
        assert_eq!(
            edge_state(&base, 0, None, 0, 0).0,
            "ACK",
            "nothing to hold yet"
        );
    }
}
