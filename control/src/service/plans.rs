//! Plans, check templates and alerts.

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use rollout_api::{
    AlertReply, AlertWebhook, CheckResult, CheckResults, PlanEvents, PlanList, PlanQuery, PlanView,
    StartPlan, TemplateList, shorten,
};
use rollout_core::plan::CheckDoc;
use rollout_core::plan::judge::{Counts, Measurement};
use rollout_core::plan::machine::Command;

use super::{ApiError, ApiResult, Authorized, Deployer, JsonBody, Reader};
use crate::plans::{check_template, event_view, plan_view};
use crate::time::format_ms;

pub(super) async fn start_plan(
    Authorized { app, who, .. }: Authorized<Deployer>,
    JsonBody(req): JsonBody<StartPlan>,
) -> ApiResult<(StatusCode, Json<PlanView>)> {
    let row = app.plans.start(who.name.as_str(), req).await?;
    tracing::info!(
        "{} started plan {} on route {}",
        who.name,
        row.id,
        row.route
    );
    Ok((StatusCode::CREATED, Json(plan_view(&row))))
}

pub(super) async fn list_plans(
    a: Authorized<Reader>,
    Query(q): Query<PlanQuery>,
) -> ApiResult<Json<PlanList>> {
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let rows = a.app.store.plans(q.route.as_deref(), limit)?;
    Ok(Json(PlanList {
        plans: rows.iter().map(plan_view).collect(),
    }))
}

pub(super) async fn plan(a: Authorized<Reader>, Path(id): Path<i64>) -> ApiResult<Json<PlanView>> {
    let row = a
        .app
        .store
        .plan(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no plan {id}")))?;
    Ok(Json(plan_view(&row)))
}

pub(super) async fn plan_events(
    a: Authorized<Reader>,
    Path(id): Path<i64>,
) -> ApiResult<Json<PlanEvents>> {
    let rows = a.app.store.plan_events(id, 1000)?;
    Ok(Json(PlanEvents {
        events: rows.iter().map(event_view).collect(),
    }))
}

/// `GET /v1/plans/{id}/checks?limit=`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ChecksQuery {
    limit: Option<u32>,
}

pub(super) async fn plan_checks(
    a: Authorized<Reader>,
    Path(id): Path<i64>,
    Query(q): Query<ChecksQuery>,
) -> ApiResult<Json<CheckResults>> {
    if a.app.store.plan(id)?.is_none() {
        return Err(ApiError::NotFound(format!("no plan {id}")));
    }
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let rows = a.app.store.check_results(id, limit)?;
    let rate = |c: &Counts| (c.samples > 0).then(|| c.errors as f64 / c.samples as f64);
    let checks = rows
        .into_iter()
        .map(|r| {
            let m: Option<Measurement> = serde_json::from_str(&r.measurement).ok();
            let (old, new, value) = match &m {
                Some(Measurement::Probe(p)) => (rate(&p.interval_old), rate(&p.interval_new), None),
                Some(Measurement::Value(v)) => (None, None, Some(*v)),
                Some(Measurement::PerArm { new, .. }) => (None, None, Some(*new)),
                Some(Measurement::Error(_)) | None => (None, None, None),
            };
            CheckResult {
                name: r.name,
                at: format_ms(r.at_ms),
                verdict: r.verdict,
                detail: r.detail,
                old_error_rate: old,
                new_error_rate: new,
                value,
            }
        })
        .collect();
    Ok(Json(CheckResults { checks }))
}

pub(super) async fn plan_command(
    Authorized { app, who, .. }: Authorized<Deployer>,
    Path((id, command)): Path<(i64, String)>,
) -> ApiResult<Json<PlanView>> {
    let by = who.name.as_str();
    let row = match command.as_str() {
        "pause" => app.plans.command(id, by, Command::Pause).await?,
        "resume" => app.plans.command(id, by, Command::Resume).await?,
        "promote" => app.plans.command(id, by, Command::Promote).await?,
        "abort" => app.plans.command(id, by, Command::Abort).await?,
        "retry" => app.plans.retry(id, by).await?,
        other => {
            return Err(ApiError::NotFound(format!(
                "no plan command {:?} (pause, resume, promote, abort, retry)",
                shorten(other, 40)
            )));
        }
    };
    tracing::info!("{} did {command} on plan {id}", who.name);
    Ok(Json(plan_view(&row)))
}

pub(super) async fn list_templates(a: Authorized<Reader>) -> ApiResult<Json<TemplateList>> {
    Ok(Json(TemplateList {
        templates: a.app.store.templates()?.into_iter().collect(),
    }))
}

/// A template's name follows a check's: 1-64 of `a-z 0-9 - _ .`.
fn template_name(name: &str) -> ApiResult<()> {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    if name.is_empty() || name.len() > 64 || !name.bytes().all(ok) {
        return Err(ApiError::BadRequest {
            message: "template name: must be 1-64 of a-z 0-9 - _ .".to_owned(),
            field: Some("name".to_owned()),
        });
    }
    Ok(())
}

pub(super) async fn put_template(
    Authorized { app, who, .. }: Authorized<Deployer>,
    Path(name): Path<String>,
    JsonBody(doc): JsonBody<CheckDoc>,
) -> ApiResult<StatusCode> {
    template_name(&name)?;
    check_template(&name, &doc)?;
    app.store.write(|tx| {
        tx.put_template(&name, &doc, who.name.as_str())?;
        tx.audit(who.name.as_str(), "template put", &name)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_template(
    Authorized { app, who, .. }: Authorized<Deployer>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let removed = app.store.write(|tx| {
        let removed = tx.delete_template(&name)?;
        if removed {
            tx.audit(who.name.as_str(), "template delete", &name)?;
        }
        Ok::<_, crate::store::Error>(removed)
    })?;
    if !removed {
        return Err(ApiError::NotFound(format!(
            "no template {:?}",
            shorten(&name, 64)
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An Alertmanager webhook: every firing alert labelled `rollout_route`
/// rolls back that route's running plan at once.
pub(super) async fn alerts(
    Authorized { app, who, .. }: Authorized<Deployer>,
    JsonBody(hook): JsonBody<AlertWebhook>,
) -> ApiResult<Json<AlertReply>> {
    let mut aborted = Vec::new();
    for alert in hook.alerts.iter().filter(|a| a.status == "firing") {
        let Some(route) = alert.labels.get("rollout_route") else {
            continue;
        };
        let name = alert
            .labels
            .get("alertname")
            .map_or("(unnamed)", String::as_str);
        if let Some(id) = app.plans.alert(route, &shorten(name, 100)).await? {
            tracing::warn!(
                "alert {} from {} aborted plan {id} on route {route}",
                shorten(name, 100),
                who.name
            );
            aborted.push(id);
        }
    }
    Ok(Json(AlertReply { aborted }))
}
