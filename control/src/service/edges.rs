//! Edges: their states against the committed version, registering them,
//! and the audit log.

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use rollout_api::{
    AuditEntry, AuditPage, EdgeAdded, EdgeList, EdgeRemoved, EdgeRequest, EdgeState, EdgeStatus,
    StatusView, Version, holds, shorten,
};

use super::{Administrator, ApiError, ApiResult, Authorized, JsonBody, Reader};
use crate::store::{EdgeRow, VersionRow, now_ms};
use crate::time::format_ms;

/// An edge's state against the committed version (`None`: none yet): ACK
/// when it holds it; NACK when it refused it; UNREACHABLE when it has not
/// answered for `unreachable_after_ms`; STALE otherwise (behind, and being
/// retried).
pub(super) fn edge_status(
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

pub(super) async fn status(
    Authorized { app, .. }: Authorized<Reader>,
) -> ApiResult<Json<StatusView>> {
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
        leadership: Some(app.leadership_view()?),
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

pub(super) async fn list_edges(a: Authorized<Reader>) -> ApiResult<Json<EdgeList>> {
    let edges = a.app.store.edges()?.into_iter().map(|e| e.url).collect();
    Ok(Json(EdgeList { edges }))
}

pub(super) async fn add_edge(
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

pub(super) async fn remove_edge(
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

pub(super) async fn audit(a: Authorized<Reader>) -> ApiResult<Json<AuditPage>> {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
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
