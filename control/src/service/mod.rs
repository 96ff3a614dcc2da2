//! The control service's HTTP API (JSON over HTTP, bearer tokens).
//!
//! A write carries the version its author expects to be current and gets 409
//! when another write came first, so concurrent CI jobs never lose an update.
//! A new config is validated by rollout-core before anything is written; the
//! version is committed, then fanned out by the [`push`](crate::push) loop.
//! Plans run in the [`plans`](crate::plans) executor. Requests and replies
//! are [`rollout_api`] types; errors become responses in one place,
//! [`ApiError`]; roles are checked by the [`Authorized`] extractor.

mod edges;
mod keys;
mod plans;
mod ui;
mod versions;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rollout_api::{EdgeState, ErrorBody, MAX_REQUEST_BYTES, RequestError, Version, holds, path};
use rollout_core::EnvelopeError;
use serde::de::DeserializeOwned;

use crate::auth::{Caller, Denied, Role, Tokens};
use crate::commit::Refusal;
use crate::events::{Events, Secret};
use crate::hooks::{HookSet, Hooks, Listeners};
use crate::keys::Keys;
use crate::lease::Leadership;
use crate::metrics::{Gauges, Metrics, PlanGauge};
use crate::plans::{PlanFailure, Plans};
use crate::push::{Fanout, PushOptions};
use crate::store::{CommitError, Store, now_ms};

/// Everything `rollout serve` needs.
#[derive(Debug)]
pub struct ServeOptions {
    /// The store: a SQLite file, or a `postgres://` URL.
    pub db: PathBuf,
    /// This replica's id (`None`: the host name and the port it listens on).
    pub replica: Option<String>,
    /// How long the leader lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where plan events are POSTed.
    pub webhooks: Vec<String>,
    /// The signing keys (see [`crate::keys`]).
    pub keys: Arc<Keys>,
    /// Who may call.
    pub tokens: Tokens,
    /// Fan-out settings.
    pub push: PushOptions,
    /// How long an edge may fail to answer before it is UNREACHABLE rather than STALE.
    pub unreachable_after: Duration,
    /// What signs plan events (and hooks' webhook calls).
    pub webhook_secret: Option<Secret>,
    /// The hooks run after commits and plan events.
    pub hooks: HookSet,
}

/// Shared state of the service.
#[derive(Debug)]
pub struct App {
    store: Arc<Store>,
    keys: Arc<Keys>,
    tokens: Tokens,
    fanout: Arc<Fanout>,
    plans: Arc<Plans>,
    events: Arc<Events>,
    hooks: Arc<Hooks>,
    metrics: Arc<Metrics>,
    leadership: Arc<Leadership>,
    unreachable_after: Duration,
}

impl App {
    /// Who leads, as the lease row says, and who answers.
    fn leadership_view(&self) -> Result<rollout_api::LeadershipView, ApiError> {
        let (leader, token) = self.leadership.current()?;
        Ok(rollout_api::LeadershipView {
            leader,
            token,
            replica: self.leadership.id().to_owned(),
            leading: self.leadership.clock().valid(),
        })
    }
}

/// Opens the store and serves the API until the future is dropped.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    let opts = ServeOptions {
        replica: opts
            .replica
            .clone()
            .or_else(|| Some(format!("{}:{}", host_name(), addr.port()))),
        ..opts
    };
    let app = open(opts)?;
    tracing::info!("control service listening on http://{addr}");
    println!("rollout control service listening on http://{addr}");
    serve_on(app, listener).await
}

/// This machine's name, for replica ids (`localhost` when unknown).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| crate::lease::check_replica_id(h).is_ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Opens the store and builds the shared state.
pub fn open(opts: ServeOptions) -> anyhow::Result<Arc<App>> {
    let store = Arc::new(Store::open(&opts.db)?);
    let replica = opts.replica.clone().unwrap_or_else(host_name);
    crate::lease::check_replica_id(&replica).map_err(|e| anyhow::anyhow!("--replica-id {e}"))?;
    let leadership = Arc::new(Leadership::new(store.clone(), replica, opts.lease_ttl));
    let metrics = Arc::new(Metrics::default());
    let fanout = Arc::new(
        Fanout::new(store.clone(), metrics.clone(), opts.keys.clone(), opts.push)?
            .gated_by(leadership.clock()),
    );
    let listeners = Listeners {
        webhooks: opts.webhooks.clone(),
        hooks: Arc::new(opts.hooks),
        wake_hooks: Arc::default(),
    };
    // The hook runner wakes the plans that wait for a run.
    let plans_wake = Arc::new(tokio::sync::Notify::new());
    let hooks = Arc::new(Hooks::new(
        store.clone(),
        &listeners,
        opts.webhook_secret.clone(),
        plans_wake.clone(),
    )?);
    let events = Arc::new(Events::new(
        store.clone(),
        opts.webhooks,
        opts.webhook_secret,
    )?);
    events.gated_by(leadership.clock());
    hooks.gated_by(leadership.clock());
    let plans = Arc::new(Plans::new(
        store.clone(),
        opts.keys.clone(),
        fanout.clone(),
        events.clone(),
        listeners,
        plans_wake,
    )?);
    Ok(Arc::new(App {
        store,
        keys: opts.keys,
        tokens: opts.tokens,
        fanout,
        plans,
        events,
        hooks,
        metrics,
        leadership,
        unreachable_after: opts.unreachable_after,
    }))
}

/// Serves `app` on `listener` until dropped; while this replica holds the
/// leader lease, also its fan-out, plans, webhooks and hooks.
pub async fn serve_on(app: Arc<App>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    // Stops the lease loop and the leader's work, then gives the lease up,
    // when the service stops, however it stops (this future dropped).
    let _release = Release {
        leadership: app.leadership.clone(),
        tasks: LeaderTasks(vec![
            tokio::spawn(app.leadership.clone().run()),
            tokio::spawn(lead(app.clone())),
        ]),
    };
    let served = axum::serve(listener, router(app)).await;
    Ok(served?)
}

/// Aborts the lease loop and the leader's work, then gives up the leader
/// lease, when dropped.
struct Release {
    leadership: Arc<Leadership>,
    tasks: LeaderTasks,
}

impl Drop for Release {
    fn drop(&mut self) {
        for t in &self.tasks.0 {
            t.abort();
        }
        self.leadership.release();
    }
}

/// Aborts the leader's tasks when dropped.
struct LeaderTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for LeaderTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Runs the leader's work whenever this replica leads, and stops it the
/// moment the lead runs out or is lost.
async fn lead(app: Arc<App>) {
    let mut token = app.leadership.watch();
    let clock = app.leadership.clock();
    loop {
        // Until this replica leads: the row names it and its clock runs.
        while token.borrow_and_update().is_none() || !clock.valid() {
            tokio::select! {
                changed = token.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let held = *token.borrow_and_update();
        // The counts of what edges hold, from the rows: other replicas
        // wrote them since this one last read them.
        if let Err(e) = app.store.edges() {
            tracing::warn!("reading the edges before leading: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        app.plans.forget_samplers();
        // Whatever this process believed about the edges may be stale:
        // every edge is pushed once, as after a restart.
        app.fanout.reset();
        let tasks = LeaderTasks(vec![
            tokio::spawn(app.fanout.clone().run()),
            tokio::spawn(app.plans.clone().run()),
            tokio::spawn(app.events.clone().run()),
            tokio::spawn(app.hooks.clone().run()),
            tokio::spawn(versions::adopt_from_edges(app.clone())),
        ]);
        while let Some(until) = clock.until() {
            tokio::select! {
                changed = token.changed() => {
                    if changed.is_err() || *token.borrow_and_update() != held {
                        break;
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {
                    if !clock.valid() {
                        break;
                    }
                }
            }
        }
        drop(tasks);
        app.fanout.reset();
        app.plans.forget_samplers();
        tracing::warn!("stopped the leader's work: the lease ran out or was lost");
    }
}

/// The API routes.
pub fn router(app: Arc<App>) -> Router {
    use edges::{add_edge, audit, list_edges, remove_edge, status};
    use plans::{
        alerts, delete_template, list_plans, list_templates, plan, plan_checks, plan_command,
        plan_events, put_template, start_plan,
    };
    use versions::{adopt, at, create, current, history, rollback, timeline, version};
    Router::new()
        .route("/", get(|| async { ui::asset("/") }))
        .route("/ui/app.js", get(|| async { ui::asset("/ui/app.js") }))
        .route("/ui/app.css", get(|| async { ui::asset("/ui/app.css") }))
        .route(path::WHOAMI, get(whoami))
        .route(path::TIMELINE, get(timeline))
        .route(&format!("{}/{{id}}/checks", path::PLANS), get(plan_checks))
        .route(path::HEALTHZ, get(|| async { "ok\n" }))
        .route(path::METRICS, get(metrics))
        .route(path::CURRENT, get(current))
        .route(path::AT, get(at))
        .route(path::VERSIONS, get(history).post(create))
        .route(&format!("{}/{{n}}", path::VERSIONS), get(version))
        .route(path::ROLLBACK, post(rollback))
        .route(path::ADOPT, post(adopt))
        .route(path::STATUS, get(status))
        .route(
            path::EDGES,
            get(list_edges).post(add_edge).delete(remove_edge),
        )
        .route(path::AUDIT, get(audit))
        .route(path::PLANS, get(list_plans).post(start_plan))
        .route(&format!("{}/{{id}}", path::PLANS), get(plan))
        .route(&format!("{}/{{id}}/events", path::PLANS), get(plan_events))
        .route(
            &format!("{}/{{id}}/{{command}}", path::PLANS),
            post(plan_command),
        )
        .route(path::TEMPLATES, get(list_templates))
        .route(
            &format!("{}/{{name}}", path::TEMPLATES),
            axum::routing::put(put_template).delete(delete_template),
        )
        .route(path::ALERTS, post(alerts))
        .route(path::KEYS, get(keys::list_keys).post(keys::change_keys))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(app)
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
    /// The request conflicts with the state (a plan already runs on the route).
    #[error("{0}")]
    Busy(String),
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
    Store(#[from] crate::store::Error),
    /// A stored version is damaged.
    #[error("a stored version is unreadable")]
    Damaged(#[source] Refusal),
    /// The service cannot sign: its key file holds no key the edges trust.
    #[error("{0}")]
    Keys(String),
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
            Refusal::Keys(_) => return ApiError::Keys(r.to_string()),
        };
        ApiError::BadRequest {
            message: r.to_string(),
            field,
        }
    }
}

impl From<PlanFailure> for ApiError {
    fn from(e: PlanFailure) -> ApiError {
        match e {
            PlanFailure::NotFound(m) => ApiError::NotFound(m),
            PlanFailure::Conflict(m) => ApiError::Busy(m),
            PlanFailure::Invalid { message, field } => ApiError::BadRequest { message, field },
            PlanFailure::Refused(r) => r.into(),
            PlanFailure::Store(e) => e.into(),
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
            ApiError::Busy(_) => (StatusCode::CONFLICT, None, None),
            ApiError::Keys(_) => (StatusCode::SERVICE_UNAVAILABLE, None, None),
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

/// `GET /v1/whoami`: any valid token's name and role (the dashboard shows
/// actions only to tokens that may take them).
async fn whoami(a: Authorized<Reader>) -> Json<rollout_api::WhoAmI> {
    let role = match a.who.role {
        Role::Read => "read",
        Role::Deploy => "deploy",
        Role::Admin => "admin",
    };
    Json(rollout_api::WhoAmI {
        name: a.who.name.to_string(),
        role: role.to_owned(),
    })
}

async fn metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let current = app.store.current()?;
    let edges = app.store.edges()?;
    let edges_acked = current.as_ref().map_or(0, |c| {
        edges.iter().filter(|e| holds(e.acked, c.applied())).count()
    });
    let (now, after) = (now_ms(), app.unreachable_after.as_millis() as i64);
    let edges_unreachable = edges
        .iter()
        .filter(|e| {
            edges::edge_status(e, current.as_ref(), now, after).state == EdgeState::Unreachable
        })
        .count();
    let running = app
        .store
        .running_plans()?
        .into_iter()
        .map(|p| PlanGauge {
            id: p.id,
            phase: p.state.phase.as_str(),
            step: p.state.step + 1,
            weight: p.state.weight.map(|w| w.percent()),
            checks: p
                .state
                .checks
                .iter()
                .map(|(n, c)| {
                    (
                        n.clone(),
                        c.last.as_ref().map(|j| j.verdict.as_str()),
                        c.fails,
                    )
                })
                .collect(),
            route: p.route,
        })
        .collect();
    let text = app.metrics.render(&Gauges {
        version: current.as_ref().map_or(0, |c| c.version.get()),
        versions: app.store.version_count()?,
        edges: edges.len(),
        edges_acked,
        edges_unreachable,
        plans_by_phase: app.store.plans_by_phase()?,
        running,
        leadership: app.leadership_view()?,
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
