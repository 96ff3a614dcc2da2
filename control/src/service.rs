//! The control service's HTTP API (JSON over HTTP, bearer tokens).
//!
//! A write carries the version its author expects to be current and gets 409
//! when another write came first, so concurrent CI jobs never lose an update.
//! A new config is validated by rollout-core before anything is written; the
//! version is committed, then fanned out by the [`push`](crate::push) loop.
//! Requests and replies are [`rollout_api`] types; errors become responses
//! in one place, [`ApiError`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rollout_api::{
    AtQuery, AuditEntry, AuditPage, Change, CreateVersion, EdgeAdded, EdgeList, EdgeRemoved,
    EdgeRequest, EdgeState, EdgeStatus, ErrorBody, HistoryPage, HistoryQuery, MAX_REQUEST_BYTES,
    RequestError, RollbackRequest, RollbackTarget, StatusView, Version, VersionView, holds, path,
    shorten,
};
use rollout_core::config::PatchError;
use rollout_core::{
    Config, ConfigDoc, ConfigError, Envelope, EnvelopeDoc, EnvelopeError, SecretKey,
};
use serde::de::DeserializeOwned;

use crate::auth::{Caller, Denied, Role, Tokens};
use crate::metrics::{Gauges, Metrics};
use crate::push::{Fanout, PushOptions};
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
    store: Arc<Store>,
    key: SecretKey,
    tokens: Tokens,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    unreachable_after: Duration,
}

/// Opens the store and serves the API until the future is dropped.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    let app = open(opts)?;
    tracing::info!("control service listening on http://{addr}");
    println!("rollout control service listening on http://{addr}");
    serve_on(app, listener).await
}

/// Opens the store and builds the shared state.
pub fn open(opts: ServeOptions) -> anyhow::Result<Arc<App>> {
    let store = Arc::new(Store::open(&opts.db)?);
    let metrics = Arc::new(Metrics::default());
    let fanout = Fanout::new(store.clone(), metrics.clone(), opts.push)?;
    Ok(Arc::new(App {
        store,
        key: opts.key,
        tokens: opts.tokens,
        fanout: Arc::new(fanout),
        metrics,
        unreachable_after: opts.unreachable_after,
    }))
}

/// Serves `app` on `listener`, with its reconciler, until dropped.
pub async fn serve_on(app: Arc<App>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let reconciler = tokio::spawn(app.fanout.clone().run());
    let served = axum::serve(listener, router(app)).await;
    reconciler.abort();
    Ok(served?)
}

/// The API routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(path::HEALTHZ, get(|| async { "ok\n" }))
        .route(path::METRICS, get(metrics))
        .route(path::CURRENT, get(current))
        .route(path::AT, get(at))
        .route(path::VERSIONS, get(history).post(create))
        .route(&format!("{}/{{n}}", path::VERSIONS), get(version))
        .route(path::ROLLBACK, post(rollback))
        .route(path::STATUS, get(status))
        .route(
            path::EDGES,
            get(list_edges).post(add_edge).delete(remove_edge),
        )
        .route(path::AUDIT, get(audit))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(app)
}

/// Why a new version was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A patch with no version to patch.
    #[error("no current config to patch")]
    NothingToPatch,
    /// A patch that names what the config does not have.
    #[error(transparent)]
    Patch(#[from] PatchError),
    /// A config core refuses.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An envelope an edge would refuse (over its size limit).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A stored version whose body does not parse: the store is damaged.
    #[error("stored version {version} does not parse")]
    Unreadable {
        /// The version.
        version: Version,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

/// Every way a call can fail, mapped to a status and a short, safe message
/// in one place; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, an unknown one, or a role too low.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// No such version, edge or time.
    #[error("{0}")]
    NotFound(String),
    /// A request that is not well-formed, or a config core refuses.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// Where, when one field is at fault.
        field: Option<String>,
    },
    /// Another write came first.
    #[error("expected version {expected}, but the current version is {current}")]
    Conflict {
        /// What the caller expected.
        expected: Version,
        /// What is current.
        current: Version,
    },
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] rusqlite::Error),
    /// A stored version is damaged.
    #[error("a stored version is unreadable")]
    Damaged(#[source] Refusal),
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            field: None,
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        ApiError::BadRequest {
            message: e.to_string(),
            field: Some(e.path),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let field = match &r {
            Refusal::Config(e) | Refusal::Envelope(EnvelopeError::Config(e)) => {
                Some(e.path.clone())
            }
            Refusal::Envelope(_) => Some("config".to_owned()),
            Refusal::NothingToPatch | Refusal::Patch(_) => Some("patch".to_owned()),
            Refusal::Unreadable { .. } => return ApiError::Damaged(r),
        };
        ApiError::BadRequest {
            message: r.to_string(),
            field,
        }
    }
}

impl From<CommitError<Refusal>> for ApiError {
    fn from(e: CommitError<Refusal>) -> ApiError {
        match e {
            CommitError::Conflict { expected, current } => ApiError::Conflict { expected, current },
            CommitError::Refused(r) => r.into(),
            CommitError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, field, current_version) = match &self {
            ApiError::Denied(Denied::Unauthenticated) => (StatusCode::UNAUTHORIZED, None, None),
            ApiError::Denied(Denied::Forbidden { .. }) => (StatusCode::FORBIDDEN, None, None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, None, None),
            ApiError::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, field.clone(), None),
            ApiError::Conflict { current, .. } => (StatusCode::CONFLICT, None, Some(*current)),
            ApiError::Store(_) | ApiError::Damaged(_) => {
                tracing::error!("{}", error_chain(&self));
                (StatusCode::INTERNAL_SERVER_ERROR, None, None)
            }
        };
        let error = match &self {
            ApiError::Store(_) | ApiError::Damaged(_) => format!("{self}; see the service log"),
            _ => self.to_string(),
        };
        let body = ErrorBody {
            error,
            field,
            current_version,
        };
        (status, Json(body)).into_response()
    }
}

/// An error with its causes, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

type ApiResult<T> = Result<T, ApiError>;

/// The role a handler needs, as a type.
trait Need {
    const ROLE: Role;
}

/// Reads versions, history, status, edges.
#[derive(Debug)]
struct Reader;
/// Also makes versions.
#[derive(Debug)]
struct Deployer;
/// Also adds and removes edges.
#[derive(Debug)]
struct Administrator;

impl Need for Reader {
    const ROLE: Role = Role::Read;
}
impl Need for Deployer {
    const ROLE: Role = Role::Deploy;
}
impl Need for Administrator {
    const ROLE: Role = Role::Admin;
}

/// The service and a caller whose bearer token has at least role `N`:
/// in a handler's arguments, the check runs before the handler does.
#[derive(Debug)]
struct Authorized<N> {
    app: Arc<App>,
    who: Caller,
    need: PhantomData<N>,
}

impl<N: Need + Send + Sync> FromRequestParts<Arc<App>> for Authorized<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> ApiResult<Self> {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(Authorized {
            app: app.clone(),
            who: app.tokens.check(auth, N::ROLE)?,
            need: PhantomData,
        })
    }
}

/// The envelope stored for `row`, config and all.
fn envelope_of(row: &VersionRow) -> Result<EnvelopeDoc<ConfigDoc>, Refusal> {
    serde_json::from_slice(&row.body).map_err(|source| Refusal::Unreadable {
        version: row.version,
        source,
    })
}

fn view(app: &App, row: &VersionRow, with_config: bool) -> ApiResult<VersionView> {
    let config = if with_config {
        Some(envelope_of(row).map_err(ApiError::Damaged)?.config)
    } else {
        None
    };
    Ok(VersionView {
        version: row.version,
        digest: row.digest,
        parent: row.parent,
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        issued_at: row.issued_at.clone(),
        converged_ms: app.store.convergence(row.version)?,
        config,
    })
}

/// A JSON request body read with [`rollout_api::from_json`], so that an
/// error names the field at fault.
#[derive(Debug)]
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        // Over the body limit: 413.
        let bytes = Bytes::from_request(req, app)
            .await
            .map_err(IntoResponse::into_response)?;
        rollout_api::from_json(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::from(e).into_response())
    }
}

/// `row` with its config, or 404 saying what is `missing`.
fn found(
    app: &App,
    row: Option<VersionRow>,
    missing: impl FnOnce() -> String,
) -> ApiResult<Json<VersionView>> {
    let row = row.ok_or_else(|| ApiError::NotFound(missing()))?;
    Ok(Json(view(app, &row, true)?))
}

async fn current(a: Authorized<Reader>) -> ApiResult<Json<VersionView>> {
    let current = a.app.store.current()?;
    found(&a.app, current, || "no version has been issued yet".into())
}

async fn version(a: Authorized<Reader>, Path(n): Path<Version>) -> ApiResult<Json<VersionView>> {
    found(&a.app, a.app.store.version(n)?, || {
        format!("no version {n}")
    })
}

/// The version live at `time` (RFC 3339 or "10m ago").
fn live_at(app: &App, time: &str) -> ApiResult<VersionRow> {
    let ms = parse_time(time).map_err(ApiError::bad_request)?;
    app.store
        .at(ms)?
        .ok_or_else(|| ApiError::NotFound(format!("no version was live at {time}")))
}

async fn at(a: Authorized<Reader>, Query(q): Query<AtQuery>) -> ApiResult<Json<VersionView>> {
    let row = live_at(&a.app, &q.time)?;
    Ok(Json(view(&a.app, &row, true)?))
}

async fn history(
    Authorized { app, .. }: Authorized<Reader>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let rows = app.store.history(q.before, limit)?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.version))
        .flatten();
    let versions = rows
        .iter()
        .map(|r| view(&app, r, false))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(HistoryPage {
        versions,
        next_before,
    }))
}

/// 201 with the new version.
type Created = (StatusCode, Json<VersionView>);

/// Validates, signs and commits the config `doc` builds as the next version.
fn commit(
    app: &App,
    expected: Version,
    who: &Caller,
    action: &str,
    reason: String,
    doc: impl FnOnce(Option<&VersionRow>) -> Result<ConfigDoc, Refusal>,
) -> ApiResult<Created> {
    let row = app.store.commit(expected, action, |version, parent| {
        let config = doc(parent)?;
        // The rules are core's: the same validation an edge runs.
        Config::try_from(&config)?;
        let issued_ms = now_ms();
        let body = EnvelopeDoc {
            version: version.get(),
            parent: parent.map(|p| p.digest),
            issued_at: format_ms(issued_ms),
            actor: who.name.to_string(),
            reason: reason.clone(),
            config,
        }
        .to_body();
        // The edge's own check, limits included, before anything is stored.
        let envelope = Envelope::parse(&body)?;
        Ok::<_, Refusal>(NewVersion {
            signature: app.key.sign(&body),
            digest: envelope.digest,
            body,
            actor: who.name.to_string(),
            reason: reason.clone(),
            issued_at: format_ms(issued_ms),
            issued_ms,
        })
    })?;
    tracing::info!(
        "{} committed version {}: {}",
        who.name,
        row.version,
        shorten(&row.reason, 200)
    );
    app.fanout.committed(row.version);
    Ok((StatusCode::CREATED, Json(view(app, &row, true)?)))
}

async fn create(
    Authorized { app, who, .. }: Authorized<Deployer>,
    JsonBody(req): JsonBody<CreateVersion>,
) -> ApiResult<Created> {
    let (action, default_reason) = match &req.change {
        Change::Config(_) => ("push", "push".to_owned()),
        Change::Patch(p) => ("patch", p.to_string()),
    };
    let reason = req.reason.map_or(default_reason, String::from);
    let build = |parent: Option<&VersionRow>| match req.change {
        Change::Config(doc) => Ok(doc),
        Change::Patch(patch) => {
            let parent = parent.ok_or(Refusal::NothingToPatch)?;
            let mut doc = envelope_of(parent)?.config;
            patch.apply(&mut doc)?;
            Ok(doc)
        }
    };
    commit(&app, req.expected_version, &who, action, reason, build)
}

/// The version a rollback restores, and the words for it.
fn restore_point(app: &App, target: &RollbackTarget) -> ApiResult<(VersionRow, String)> {
    Ok(match target {
        RollbackTarget::To(n) => {
            let row = app
                .store
                .version(*n)?
                .ok_or_else(|| ApiError::NotFound(format!("no version {n}")))?;
            let what = format!("rollback to version {}", row.version);
            (row, what)
        }
        RollbackTarget::At(t) => {
            let row = live_at(app, t)?;
            let what = format!("rollback to version {} (live at {t})", row.version);
            (row, what)
        }
    })
}

async fn rollback(
    Authorized { app, who, .. }: Authorized<Deployer>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> ApiResult<Created> {
    let (source, what) = restore_point(&app, &req.target)?;
    let reason = match &req.reason {
        Some(r) => format!("{what}: {r}"),
        None => what,
    };
    let config = envelope_of(&source).map_err(ApiError::Damaged)?.config;
    commit(&app, req.expected_version, &who, "rollback", reason, |_| {
        Ok(config)
    })
}

/// An edge's state against the committed version (`None`: none yet): ACK
/// when it holds it; NACK when it refused it; UNREACHABLE when it has not
/// answered for `unreachable_after_ms`; STALE otherwise (behind, and being
/// retried).
fn edge_status(
    e: &EdgeRow,
    committed: Option<&VersionRow>,
    now_ms: i64,
    unreachable_after_ms: i64,
) -> EdgeStatus {
    let version = committed.map_or(Version::NONE, |c| c.version);
    let (state, error) = match committed {
        None => (EdgeState::Ack, None),
        Some(c) if holds(e.acked, c.applied()) => (EdgeState::Ack, None),
        Some(c) => match e.nack.as_ref().filter(|(v, _)| *v == c.version) {
            Some((_, err)) => (EdgeState::Nack, Some(err.clone())),
            None => {
                let unreachable = e
                    .silent
                    .as_ref()
                    .is_some_and(|s| now_ms - s.since_ms >= unreachable_after_ms);
                let state = if unreachable {
                    EdgeState::Unreachable
                } else {
                    EdgeState::Stale
                };
                (state, e.silent.as_ref().map(|s| s.error.clone()))
            }
        },
    };
    EdgeStatus {
        url: e.url.clone(),
        state,
        acked_version: e.held_version(),
        sent_version: e.sent_version,
        lag: e.held_version().behind(version),
        error,
        last_contact: e.last_contact_ms.map(format_ms),
        push_latency_ms: e.latency_ms,
    }
}

async fn status(Authorized { app, .. }: Authorized<Reader>) -> ApiResult<Json<StatusView>> {
    let current = app.store.current()?;
    let edges = app.store.edges()?;
    let after = app.unreachable_after.as_millis() as i64;
    let now = now_ms();
    Ok(Json(StatusView {
        version: current.as_ref().map_or(Version::NONE, |c| c.version),
        digest: current.as_ref().map(|c| c.digest),
        issued_at: current.as_ref().map(|c| c.issued_at.clone()),
        converged_ms: match &current {
            Some(c) => app.store.convergence(c.version)?,
            None => None,
        },
        edges: edges
            .iter()
            .map(|e| edge_status(e, current.as_ref(), now, after))
            .collect(),
    }))
}

/// Longest edge URL accepted.
const MAX_EDGE_URL_BYTES: usize = 2048;

fn check_edge_url(url: &str) -> ApiResult<String> {
    let url = url.trim().trim_end_matches('/');
    let bad = |message: String| ApiError::BadRequest {
        message: format!("url: {message}"),
        field: Some("url".to_owned()),
    };
    if url.len() > MAX_EDGE_URL_BYTES {
        return Err(bad(format!("longer than {MAX_EDGE_URL_BYTES} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be http(s)://host[:port]".to_owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not carry credentials".to_owned()));
    }
    Ok(url.to_owned())
}

async fn list_edges(a: Authorized<Reader>) -> ApiResult<Json<EdgeList>> {
    let edges = a.app.store.edges()?.into_iter().map(|e| e.url).collect();
    Ok(Json(EdgeList { edges }))
}

async fn add_edge(
    Authorized { app, who, .. }: Authorized<Administrator>,
    JsonBody(req): JsonBody<EdgeRequest>,
) -> ApiResult<(StatusCode, Json<EdgeAdded>)> {
    let url = check_edge_url(&req.url)?;
    let added = app.store.add_edge(&url)?;
    if added {
        app.store.audit(who.name.as_str(), "edge add", &url)?;
        app.fanout.wake();
    }
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(EdgeAdded { url, added })))
}

async fn remove_edge(
    Authorized { app, who, .. }: Authorized<Administrator>,
    Query(req): Query<EdgeRequest>,
) -> ApiResult<Json<EdgeRemoved>> {
    let url = req.url.trim().trim_end_matches('/');
    let Some(edge) = app.store.edges()?.into_iter().find(|e| e.url == url) else {
        return Err(ApiError::NotFound(format!("no edge {}", shorten(url, 200))));
    };
    app.store.remove_edge(url)?;
    app.fanout.forget(edge.id);
    app.store.audit(who.name.as_str(), "edge remove", url)?;
    Ok(Json(EdgeRemoved {
        url: url.to_owned(),
        removed: true,
    }))
}

async fn audit(a: Authorized<Reader>) -> ApiResult<Json<AuditPage>> {
    let audit = a
        .app
        .store
        .audit_log(200)?
        .into_iter()
        .map(|r| AuditEntry {
            at: format_ms(r.at_ms),
            actor: r.actor,
            action: r.action,
            detail: r.detail,
        })
        .collect();
    Ok(Json(AuditPage { audit }))
}

async fn metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let current = app.store.current()?;
    let edges = app.store.edges()?;
    let edges_acked = current.as_ref().map_or(0, |c| {
        edges.iter().filter(|e| holds(e.acked, c.applied())).count()
    });
    let text = app.metrics.render(&Gauges {
        version: current.as_ref().map_or(0, |c| c.version.get()),
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
    use rollout_core::{Applied, Digest};

    use super::*;
    use crate::store::Silence;

    fn committed(version: u64, digest: Digest) -> VersionRow {
        VersionRow {
            version: Version::new(version),
            parent: None,
            digest,
            body: Bytes::new(),
            signature: String::new(),
            actor: "t".into(),
            reason: "r".into(),
            issued_at: "now".into(),
            issued_ms: 0,
        }
    }

    #[test]
    fn edge_states_follow_ack_nack_and_how_long_an_edge_is_silent() {
        let (d1, d2) = (Digest::of(b"one"), Digest::of(b"two"));
        let at = |version, digest| Some(Applied { version, digest });
        let base = EdgeRow {
            id: 1,
            url: "http://e".into(),
            sent_version: Version::new(2),
            acked: at(1, d1),
            reported_version: Version::new(1),
            nack: None,
            silent: None,
            last_contact_ms: None,
            latency_ms: None,
        };
        let with = |f: &dyn Fn(&mut EdgeRow)| {
            let mut e = base.clone();
            f(&mut e);
            e
        };
        let refused =
            with(&|e| e.nack = Some((Version::new(2), "signature does not verify".into())));
        let old_nack = with(&|e| e.nack = Some((Version::new(1), "old".into())));
        let silent = |since| {
            with(&|e| {
                e.silent = Some(Silence {
                    since_ms: since,
                    error: "timed out".into(),
                });
            })
        };
        let other_digest = with(&|e| e.acked = at(2, Digest::of(b"elsewhere")));
        let cases: [(&str, EdgeRow, EdgeState, Option<&str>); 7] = [
            (
                "holds it",
                with(&|e| e.acked = at(2, d2)),
                EdgeState::Ack,
                None,
            ),
            ("behind, answering", base.clone(), EdgeState::Stale, None),
            (
                "refused this version",
                refused,
                EdgeState::Nack,
                Some("signature does not verify"),
            ),
            ("refused an older one", old_nack, EdgeState::Stale, None),
            (
                "silent a little",
                silent(9_000),
                EdgeState::Stale,
                Some("timed out"),
            ),
            (
                "silent too long",
                silent(0),
                EdgeState::Unreachable,
                Some("timed out"),
            ),
            (
                "same number, other body",
                other_digest,
                EdgeState::Stale,
                None,
            ),
        ];
        let v2 = committed(2, d2);
        for (what, edge, state, error) in cases {
            let got = edge_status(&edge, Some(&v2), 10_000, 5_000);
            assert_eq!((got.state, got.error.as_deref()), (state, error), "{what}");
        }
        let nothing = edge_status(&base, None, 0, 0);
        assert_eq!(nothing.state, EdgeState::Ack, "nothing to hold yet");
        assert_eq!(
            edge_status(&base, Some(&v2), 0, 1).lag,
            1,
            "one version behind"
        );
    }
}
