//! `GET /v1/keys` and `POST /v1/keys`: the signing keys, rotated and
//! retired by signed versions (see [`crate::keys`]).

use axum::Json;
use axum::http::StatusCode;
use rollout_api::{KeyChange, KeyList, KeyView, Version};
use rollout_core::{KeyId, SecretKey};

use super::versions::commit;
use super::{Administrator, ApiError, ApiResult, App, Authorized, JsonBody, Reader};
use crate::commit::envelope_of;
use crate::keys::KeyError;

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        match e {
            KeyError::Unknown(..) => ApiError::NotFound(e.to_string()),
            KeyError::Last(_) | KeyError::NoTrustedSigner { .. } | KeyError::TooMany(_) => {
                ApiError::Busy(e.to_string())
            }
            KeyError::Line { .. } | KeyError::Empty | KeyError::Duplicate(_) | KeyError::Io(_) => {
                ApiError::Keys(e.to_string())
            }
        }
    }
}

/// The keys now, against what edges trust once they hold the committed version.
fn key_list(app: &App, version: Option<Version>) -> ApiResult<KeyList> {
    let ring = app.keys.current();
    let latest = app.store.current()?;
    let trusted = ring.trusted_after(
        latest
            .as_ref()
            .map(|r| (r.body.as_ref(), r.signature.as_str())),
    );
    let signer = ring.signer_for(&trusted).ok().map(SecretKey::public_key);
    let keys = ring
        .public_keys()
        .into_iter()
        .map(|k| KeyView {
            id: k.id().to_string(),
            public_key: k.to_string(),
            signs: Some(k) == signer,
            trusted_by_edges: trusted.contains(&k),
        })
        .collect();
    Ok(KeyList { keys, version })
}

pub(super) async fn list_keys(a: Authorized<Reader>) -> ApiResult<Json<KeyList>> {
    Ok(Json(key_list(&a.app, None)?))
}

fn fresh_key() -> Result<SecretKey, ApiError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ApiError::Keys(format!("no randomness: {e}")))?;
    Ok(SecretKey::from_seed(seed))
}

/// Rotates to a new key or retires one: the key file changes first, then a
/// version (the current config, unchanged) declares the new set, signed by
/// a key edges already trust.
pub(super) async fn change_keys(
    Authorized { app, who, .. }: Authorized<Administrator>,
    JsonBody(change): JsonBody<KeyChange>,
) -> ApiResult<(StatusCode, Json<KeyList>)> {
    let ring = app.keys.current();
    let latest = app.store.current()?;
    let Some(latest) = latest else {
        // Edges hold nothing yet and trust only the key they were deployed
        // with: a version signed by it must land first.
        return Err(ApiError::Busy(
            "no version yet: push a first version (signed by the key edges were deployed with) before rotating or retiring keys".to_owned(),
        ));
    };
    let latest = Some(latest);
    let trusted_now = ring.trusted_after(
        latest
            .as_ref()
            .map(|r| (r.body.as_ref(), r.signature.as_str())),
    );
    let (new_ring, action, what, why) = match change {
        KeyChange::Rotate { reason } => {
            let new = fresh_key()?;
            let id = new.public_key().id();
            (
                ring.rotated(new)?,
                "keys rotate",
                format!("rotate signing key: trust {id}"),
                reason,
            )
        }
        KeyChange::Retire { id, reason } => {
            let id: KeyId = id
                .trim()
                .parse()
                .map_err(|e: rollout_core::EnvelopeError| ApiError::BadRequest {
                    message: e.to_string(),
                    field: Some("id".to_owned()),
                })?;
            let retired = ring.retired(id)?;
            // The version that retires it must be signed by a key edges
            // trust now, and that key must stay.
            retired.signer_for(&trusted_now)?;
            (
                retired,
                "keys retire",
                format!("retire signing key {id}"),
                reason,
            )
        }
    };
    let reason = match why {
        Some(r) => format!("{what}: {r}"),
        None => what.clone(),
    };
    // The file first, then the version declaring it; if the version cannot
    // be committed, the file goes back, so a refused change leaves nothing.
    app.keys.replace(new_ring)?;
    let made = commit(&app, None, &who, "keys", reason, |parent| {
        let parent = parent.ok_or(crate::commit::Refusal::NothingToPatch)?;
        Ok(envelope_of(parent)?.config)
    });
    let made = match made {
        Ok((_, Json(made))) => made,
        Err(e) => {
            if let Err(restore) = app.keys.replace(ring) {
                tracing::error!("restoring the key file after a refused key change: {restore}");
            }
            return Err(e);
        }
    };
    app.store.audit(who.name.as_str(), action, &what)?;
    tracing::info!("{}: {what}", who.name);
    Ok((
        StatusCode::CREATED,
        Json(key_list(&app, Some(made.version))?),
    ))
}
