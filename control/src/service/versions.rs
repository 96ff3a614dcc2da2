//! Versions: the current one, history, new ones and rollbacks.

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use rollout_api::{
    AdoptRequest, AtQuery, Change, CreateVersion, HistoryPage, HistoryQuery, HookRunView,
    RollbackRequest, RollbackTarget, RouteWeight, Timeline, TimelinePoint, TimelineQuery, Version,
    VersionView, shorten,
};
use rollout_core::{ConfigDoc, Envelope, SignatureHeader};

use super::{ApiError, ApiResult, App, Authorized, Deployer, JsonBody, Reader};
use crate::auth::Caller;
use crate::commit::{Author, Refusal, commit_in, envelope_of, queue_version_hooks};
use crate::store::{AdoptRefusal, CommitError, HookRunRow, VersionRow};
use crate::time::{format_ms, parse_time};

fn view(app: &App, row: &VersionRow, with_config: bool) -> ApiResult<VersionView> {
    let mut runs = app.store.hook_runs_between(row.version, row.version)?;
    let hooks = runs.remove(&row.version).unwrap_or_default();
    view_with(app, row, with_config, &hooks)
}

/// A hook run for the API.
fn hook_view(r: &HookRunRow) -> HookRunView {
    HookRunView {
        id: r.id,
        hook: r.hook.clone(),
        event: r.event.clone(),
        plan: r.plan,
        status: r.status,
        output: r.output.clone(),
        queued_at: format_ms(r.queued_ms),
        finished_at: r.result_ms.filter(|_| r.status.is_final()).map(format_ms),
        attempts: r.attempts,
    }
}

fn view_with(
    app: &App,
    row: &VersionRow,
    with_config: bool,
    hooks: &[HookRunRow],
) -> ApiResult<VersionView> {
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
        hooks: hooks.iter().map(hook_view).collect(),
    })
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

pub(super) async fn current(a: Authorized<Reader>) -> ApiResult<Json<VersionView>> {
    let current = a.app.store.current()?;
    found(&a.app, current, || "no version has been issued yet".into())
}

pub(super) async fn version(
    a: Authorized<Reader>,
    Path(n): Path<Version>,
) -> ApiResult<Json<VersionView>> {
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

pub(super) async fn at(
    a: Authorized<Reader>,
    Query(q): Query<AtQuery>,
) -> ApiResult<Json<VersionView>> {
    let row = live_at(&a.app, &q.time)?;
    Ok(Json(view(&a.app, &row, true)?))
}

pub(super) async fn history(
    Authorized { app, .. }: Authorized<Reader>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let rows = app.store.history(q.before, limit)?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.version))
        .flatten();
    let mut runs = match (rows.last(), rows.first()) {
        (Some(low), Some(high)) => app.store.hook_runs_between(low.version, high.version)?,
        _ => Default::default(),
    };
    let versions = rows
        .iter()
        .map(|r| {
            let mut hooks = runs.remove(&r.version).unwrap_or_default();
            // A page stays small: the whole output is in the version's own view.
            for h in &mut hooks {
                h.output = shorten(&h.output, HISTORY_OUTPUT_CHARS).into_owned();
            }
            view_with(&app, r, false, &hooks)
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(HistoryPage {
        versions,
        next_before,
    }))
}

/// Characters of a hook run's output a history page shows.
const HISTORY_OUTPUT_CHARS: usize = 300;

/// 201 with the new version.
pub(super) type Created = (StatusCode, Json<VersionView>);

/// Validates, signs and commits the config `doc` builds as the next version.
/// `expected`: the version the author read (`None`: whatever is current,
/// for a change that rebuilds from it inside the transaction).
pub(super) fn commit(
    app: &App,
    expected: impl Into<Option<Version>>,
    who: &Caller,
    action: &str,
    reason: String,
    doc: impl FnOnce(Option<&VersionRow>) -> Result<ConfigDoc, Refusal>,
) -> ApiResult<Created> {
    let expected = expected.into();
    let author = Author {
        actor: who.name.as_str(),
        action,
        reason,
    };
    let row = app.store.write(|tx| {
        commit_in(
            tx,
            &app.keys.current(),
            expected,
            &author,
            app.plans.listeners(),
            doc,
        )
    })?;
    tracing::info!(
        "{} committed version {}: {}",
        who.name,
        row.version,
        shorten(&row.reason, 200)
    );
    app.fanout.committed(row.version);
    app.events.wake();
    Ok((StatusCode::CREATED, Json(view(app, &row, true)?)))
}

pub(super) async fn create(
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

pub(super) async fn rollback(
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

/// Takes a version pushed around the service (break glass) into the
/// history, as it is: its signature must verify under a key the edges
/// trust, its number must be above the committed version, and its parent
/// must be the committed version, so the chain the edges saw has no fork.
pub(super) async fn adopt(
    Authorized { app, who, .. }: Authorized<Deployer>,
    JsonBody(req): JsonBody<AdoptRequest>,
) -> ApiResult<Created> {
    // Already in the history, with this signature (the service adopted it
    // from an edge, or an earlier call did): the same answer, 200, not 201.
    let stored = |app: &App| -> Result<Option<VersionRow>, ApiError> {
        let (Ok(envelope), Ok(signature)) = (
            Envelope::parse(req.body.as_bytes()),
            SignatureHeader::parse(&req.signature),
        ) else {
            return Ok(None);
        };
        Ok(app
            .store
            .version(Version::new(envelope.version))?
            .filter(|r| r.digest == envelope.digest && r.signature == signature.to_string()))
    };
    if let Some(row) = stored(&app)? {
        return Ok((StatusCode::OK, Json(view(&app, &row, true)?)));
    }
    let adopted = adopt_envelope(
        &app,
        req.body.clone().into_bytes(),
        &req.signature,
        who.name.as_str(),
        Gaps::Refuse,
    );
    match adopted {
        Ok(row) => Ok((StatusCode::CREATED, Json(view(&app, &row, true)?))),
        // Adopted from an edge between the check and this call.
        Err(ApiError::Busy(why)) => match stored(&app)? {
            Some(row) => Ok((StatusCode::OK, Json(view(&app, &row, true)?))),
            None => Err(ApiError::Busy(why)),
        },
        Err(e) => Err(e),
    }
}

/// Whether [`adopt_envelope`] takes a version whose parent is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gaps {
    /// Its parent must be the committed version.
    Refuse,
    /// Numbered more than one above the committed version, its parent
    /// may be one of the versions between them, none of which is stored:
    /// versions an edge holds after the database lost them (an
    /// asynchronous standby took over, a backup was restored). Their
    /// numbers are recorded lost (`lost_versions`), which `audit --verify`
    /// accepts as a known loss.
    Allow,
}

/// Adopts (`body`, `signature`) into the history for `actor`, with every
/// check the edges make and more: it parses, its signature verifies under
/// the keys edges trust after the committed version, it declares only keys
/// this service holds, its number is above the committed version and its
/// parent links to it (or, with [`Gaps::Allow`], a gap). Its version hooks
/// are queued and the fan-out is told. `signature` may carry a push stamp:
/// what is stored is the body's signature alone, as for any version.
pub(super) fn adopt_envelope(
    app: &App,
    body: Vec<u8>,
    signature: &str,
    actor: &str,
    gaps: Gaps,
) -> Result<VersionRow, ApiError> {
    let bad = |field: &str, message: String| ApiError::BadRequest {
        message,
        field: Some(field.to_owned()),
    };
    let envelope = Envelope::parse(&body).map_err(|e| bad("body", e.to_string()))?;
    let header = SignatureHeader::parse(signature).map_err(|e| bad("signature", e.to_string()))?;
    let issued_ms = humantime::parse_rfc3339(&envelope.issued_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            bad(
                "body",
                format!(
                    "issued_at {:?} is not an RFC 3339 UTC time",
                    envelope.issued_at
                ),
            )
        })?;
    // What it declares trusted must be keys this service holds: an adopted
    // version never hands edges to keys the service cannot sign with, nor
    // back to their bootstrap keys.
    let ring = app.keys.current().public_keys();
    match &envelope.keys {
        Some(keys) if keys.iter().all(|k| ring.contains(k)) => {}
        Some(_) => {
            return Err(bad(
                "body",
                "it declares a key this service does not hold".to_owned(),
            ));
        }
        None => {
            return Err(bad(
                "body",
                "it declares no keys (edges would fall back on their bootstrap keys)".to_owned(),
            ));
        }
    }
    let adopt = |tx: &crate::store::Tx<'_>| {
        let head = tx.current()?;
        let trusted = app.keys.current().trusted_after(
            head.as_ref()
                .map(|r| (r.body.as_ref(), r.signature.as_str())),
        );
        header
            .verify(&body, &trusted)
            .map_err(|e| CommitError::Refused(AdoptRefusal(format!("signature: {e}"))))?;
        let row = VersionRow {
            version: Version::new(envelope.version),
            parent: envelope.parent,
            digest: envelope.digest,
            body: body.clone().into(),
            signature: header.to_string(),
            actor: envelope.actor.clone(),
            reason: envelope.reason.clone(),
            issued_at: envelope.issued_at.clone(),
            issued_ms,
        };
        tx.adopt_version(&row, actor, gaps == Gaps::Allow)?;
        // A version like any other: its hooks run (a restore point for
        // what the operator pushed by hand).
        let before = head
            .as_ref()
            .and_then(|h| envelope_of(h).ok())
            .map(|e| e.config);
        if let Ok(after) = envelope_of(&row) {
            queue_version_hooks(
                tx,
                app.plans.listeners(),
                &row,
                before.as_ref(),
                &after.config,
            )?;
        }
        Ok::<_, CommitError<AdoptRefusal>>(row)
    };
    // Taken from the edges by the leader's background work: only while
    // this replica holds the lease, as every leader-made write.
    let row = match gaps {
        Gaps::Allow => app.store.write_fenced(adopt),
        Gaps::Refuse => app.store.write(adopt),
    };
    let row = match row {
        Ok(row) => row,
        Err(CommitError::Refused(AdoptRefusal(why))) => {
            return Err(ApiError::Busy(format!(
                "version {} cannot be adopted: {why}",
                envelope.version
            )));
        }
        Err(CommitError::Store(e)) => return Err(e.into()),
        Err(CommitError::Conflict { expected, current }) => {
            return Err(ApiError::Conflict { expected, current });
        }
    };
    tracing::info!(
        "{} adopted version {} by {}",
        shorten(actor, 200),
        row.version,
        shorten(&row.actor, 200)
    );
    app.fanout.committed(row.version);
    Ok(row)
}

/// How long the leader waits after an adoption pass that adopted nothing
/// before it runs another, however often edges report being ahead: a
/// version that cannot be adopted is refused by every edge on every push.
const ADOPT_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Edges asked at once in an adoption pass.
const ADOPT_FANOUT: usize = 16;

/// The leader's watch over what edges hold: whenever an edge reports a
/// version the history lacks, asks every edge what it holds and adopts,
/// lowest first, what they hold above the committed version, each read
/// back from one edge that holds it and adopted as `edge <url>`. That is
/// how versions the database lost (an asynchronous standby took over, a
/// backup was restored) come back into the history with the signature they
/// were pushed with, and how a break-glass version is taken in once the
/// service is back. What cannot be adopted (another envelope under a
/// stored number, a parent that contradicts the history, edges that hold
/// different envelopes under one number) is written to the audit log once,
/// and edges move on at the next commit, which is numbered above what they
/// hold.
pub(super) async fn adopt_from_edges(app: std::sync::Arc<App>) {
    let mut memo = AdoptMemo::default();
    loop {
        app.fanout.edge_ahead().await;
        match adopt_pass(&app, &mut memo).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(ADOPT_RETRY).await,
            Err(e) => {
                tracing::warn!("adopting versions edges hold: {e}");
                tokio::time::sleep(ADOPT_RETRY).await;
            }
        }
    }
}

/// What adoption passes remember.
#[derive(Debug, Default)]
struct AdoptMemo {
    /// Envelopes refused, with the committed version they were refused
    /// against: not read back again until that changes.
    refused: std::collections::HashMap<rollout_core::Digest, Option<rollout_core::Applied>>,
    /// Envelopes whose refusal is in the audit log.
    told: std::collections::HashSet<rollout_core::Digest>,
}

/// One pass of [`adopt_from_edges`]: whether it adopted anything.
async fn adopt_pass(app: &App, memo: &mut AdoptMemo) -> Result<bool, ApiError> {
    use futures_util::StreamExt as _;
    let edges = app.store.edges()?;
    // What each edge holds now, asked directly: the stored rows may be
    // older than the database they came back with.
    let client = app.fanout.client().clone();
    let reports: Vec<(i64, String, Result<Option<rollout_core::Applied>, String>)> =
        futures_util::stream::iter(edges.into_iter().map(|e| (e.id, e.url)))
            .map(move |(id, url)| {
                let client = client.clone();
                async move {
                    let held = client.held(&url).await;
                    (id, url, held)
                }
            })
            .buffer_unordered(ADOPT_FANOUT)
            .collect()
            .await;
    // Edges that did not answer, or handed back something else than they
    // reported: they may hold what the others do not.
    let mut silent = Vec::new();
    // By number, then envelope: the edges that hold it.
    let mut held =
        std::collections::BTreeMap::<u64, std::collections::BTreeMap<_, Vec<String>>>::new();
    for (id, url, report) in reports {
        match report {
            Ok(report) => {
                // Stored first: the numbering (and adoption's ceiling)
                // follows what edges hold now.
                app.store.record_held(id, report)?;
                if let Some(h) = report {
                    held.entry(h.version)
                        .or_default()
                        .entry(h.digest)
                        .or_default()
                        .push(url);
                }
            }
            Err(_) => silent.push(url),
        }
    }
    let mut adopted = false;
    for (version, envelopes) in held {
        let head = app.store.current()?.map(|h| h.applied());
        let head_version = head.map_or(0, |h| h.version);
        if version < head_version {
            continue;
        }
        if version == head_version {
            // Another envelope under the committed number cannot come in.
            for (digest, urls) in envelopes {
                if head.is_some_and(|h| h.digest != digest) {
                    let why = format!("version {version} in the history is another envelope");
                    refuse(app, memo, version, digest, head, &urls[0], &why)?;
                }
            }
            continue;
        }
        // Each envelope under this number, read back and checked against
        // the keys this service holds: what an edge only claims is not one.
        let ring = app.keys.current().public_keys();
        let mut genuine = Vec::new();
        for (digest, urls) in envelopes {
            if memo.refused.get(&digest).is_some_and(|at| *at == head) {
                continue;
            }
            for url in &urls {
                match app.fanout.client().read_back(url).await {
                    Ok((body, signature))
                        if rollout_core::Digest::of(&body) == digest
                            && SignatureHeader::parse(&signature)
                                .and_then(|h| h.verify(&body, &ring).map(|_| ()))
                                .is_ok() =>
                    {
                        genuine.push((digest, url.clone(), body, signature));
                        break;
                    }
                    Ok(_) => {
                        tracing::warn!(
                            "{url} handed back an envelope that is not the version {version} it reported, or not signed by a key this service holds"
                        );
                        silent.push(url.clone());
                    }
                    Err(e) => {
                        tracing::warn!("reading back the envelope {url} holds: {e}");
                        silent.push(url.clone());
                    }
                }
            }
        }
        let (digest, url, body, signature) = match genuine.len() {
            0 => break,
            1 => genuine.remove(0),
            n => {
                // Two histories under one number: which one the fleet
                // should run is for a person to say.
                for (digest, url, _, _) in &genuine {
                    let why = format!(
                        "{} other signed envelope(s) are held under the same number",
                        n - 1
                    );
                    refuse(app, memo, version, *digest, head, url, &why)?;
                }
                break;
            }
        };
        // Numbers below it that no edge holds are recorded lost only when
        // every edge answered: one that did not may hold them.
        if version > head_version + 1 && !silent.is_empty() {
            tracing::warn!(
                "version {version} waits before versions {}..={} are taken as lost: {} did not answer (remove an edge that is gone for good)",
                head_version + 1,
                version - 1,
                silent.join(", ")
            );
            break;
        }
        let actor = format!("edge {url}");
        match adopt_envelope(app, body.to_vec(), &signature, &actor, Gaps::Allow) {
            Ok(_) => adopted = true,
            // Refused by a rule: remembered, and nothing above it (it may
            // descend from it) is guessed at.
            Err(ApiError::Busy(why) | ApiError::BadRequest { message: why, .. }) => {
                refuse(app, memo, version, digest, head, &url, &why)?;
                break;
            }
            // The store failed, or a commit came first: the next pass
            // tries again.
            Err(e) => return Err(e),
        }
    }
    Ok(adopted)
}

/// Remembers that the envelope `digest` (version `version`, held by
/// `url`) was refused while `head` was committed, and says so once in the
/// audit log.
fn refuse(
    app: &App,
    memo: &mut AdoptMemo,
    version: u64,
    digest: rollout_core::Digest,
    head: Option<rollout_core::Applied>,
    url: &str,
    why: &str,
) -> Result<(), ApiError> {
    memo.refused.insert(digest, head);
    if !memo.told.contains(&digest) {
        tracing::warn!("version {version} that {url} holds is not adopted: {why}");
        app.store.write_fenced(|tx| {
            tx.audit(
                &format!("edge {url}"),
                "adopt-refused",
                &format!("version {version} ({digest}) that this edge holds: {why}"),
            )
        })?;
        memo.told.insert(digest);
    }
    Ok(())
}

/// `GET /v1/timeline`: each route's weight and flags at each of the newest
/// versions, oldest first, rollbacks marked.
pub(super) async fn timeline(
    Authorized { app, .. }: Authorized<Reader>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult<Json<Timeline>> {
    let limit = q.limit.unwrap_or(200).clamp(1, 2000);
    let mut rows = app.store.history(None, limit)?;
    rows.reverse();
    let (low, low_ms) = rows
        .first()
        .map_or((Version::NONE, 0), |r| (r.version, r.issued_ms));
    // A commit's audit entry is written with it: an hour's margin for a
    // clock that stepped back keeps every one of them in the scan.
    let actions = app.store.version_actions(low, low_ms - 3_600_000)?;
    let converged = app.store.convergence_from(low)?;
    let mut versions = Vec::with_capacity(rows.len());
    for row in &rows {
        let config = envelope_of(row).map_err(ApiError::Damaged)?.config;
        let action = actions.get(&row.version).cloned();
        // A plan's rollback says so in its reason ("plan N rollback: ...").
        let plan_rollback = crate::plans::plan_of(&row.actor)
            .is_some_and(|id| row.reason.starts_with(&format!("plan {id} rollback: ")));
        let rollback = action.as_deref() == Some("rollback")
            || (action.as_deref() == Some("plan") && plan_rollback);
        versions.push(TimelinePoint {
            version: row.version,
            issued_at: row.issued_at.clone(),
            actor: row.actor.clone(),
            reason: row.reason.clone(),
            action,
            rollback,
            converged_ms: converged.get(&row.version).copied(),
            routes: config
                .routes
                .iter()
                .map(|r| RouteWeight {
                    id: r.id.clone(),
                    new_weight: r.new_weight,
                    flags: r
                        .flags
                        .iter()
                        .map(|f| (f.name.clone(), f.percent))
                        .collect(),
                })
                .collect(),
        });
    }
    Ok(Json(Timeline { versions }))
}
