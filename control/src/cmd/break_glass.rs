//! Break glass (`rollout push --direct`): sign locally and PUT straight to
//! edges, through the same edge client the control service's fan-out uses.
//!
//! The version is one above the highest any edge holds; the control
//! service, when back, numbers its next version above it and so takes over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rollout_api::{Actor, EdgeState, Reason, Version};
use rollout_control::client::{Fail, exit};
use rollout_control::edge_client::{Answer, EdgeClient, Retries, Signed};
use rollout_control::keys::Keys;
use rollout_core::{ConfigDoc, Digest, EnvelopeDoc};
use serde::Serialize;

use super::{Ctx, Output, print_json};

/// Time limit of each request to an edge.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct EdgeResult<'a> {
    edge: &'a str,
    /// ACK, NACK, or UNREACHABLE when there was no usable answer.
    state: EdgeState,
    error: String,
}

#[derive(Serialize)]
struct BreakGlass<'a> {
    version: Version,
    digest: Digest,
    /// The record for `rollout adopt`.
    record: &'a Path,
    edges: Vec<EdgeResult<'a>>,
}

/// Who is breaking the glass: `break-glass:$USER`, or `break-glass` when
/// USER is unset or not a valid actor name.
fn actor() -> String {
    std::env::var("USER")
        .ok()
        .and_then(|user| format!("break-glass:{user}").parse::<Actor>().ok())
        .map_or_else(|| "break-glass".to_owned(), String::from)
}

pub(crate) async fn push(
    ctx: &Ctx,
    doc: &ConfigDoc,
    edges: &[String],
    key: &Path,
    reason: Option<Reason>,
    record: Option<&Path>,
) -> Result<(), Fail> {
    let keys = Keys::from_file(key)
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", key.display())))?;
    let ring = keys.current();
    let client = EdgeClient::new(TIMEOUT)
        .map_err(|e| Fail::new(exit::FAILED, format!("http client: {e}")))?
        .stamping_with(keys);
    let mut top: Option<(Version, Option<Digest>)> = None;
    // The keys every edge trusts: the signer must be one of them.
    let mut trusted = ring.public_keys();
    for edge in edges {
        let reply = client
            .report(edge)
            .await
            .map_err(|e| Fail::new(exit::FAILED, format!("asking {edge} what it holds: {e}")))?;
        if !reply.keys.is_empty() {
            trusted.retain(|k| reply.keys.contains(&k.id()));
        }
        let held = reply.digest.map_or((Version::NONE, None), |d| {
            (Version::new(reply.version), Some(d))
        });
        if top.is_none_or(|t| held.0 > t.0) {
            top = Some(held);
        }
    }
    let (held, parent) =
        top.ok_or_else(|| Fail::new(exit::INVALID, "--direct needs at least one --edge"))?;
    let version = held
        .get()
        .checked_add(1)
        .filter(|v| *v <= rollout_core::MAX_VERSION)
        .map(Version::new)
        .ok_or_else(|| {
            Fail::new(
                exit::INVALID,
                format!(
                    "an edge reports version {held}, at the limit of {}: no version can follow it; check that edge",
                    rollout_core::MAX_VERSION
                ),
            )
        })?;
    let signer = ring
        .signer_for(&trusted)
        .map_err(|e| Fail::new(exit::INVALID, format!("{}: {e}", key.display())))?;
    let mut envelope = EnvelopeDoc {
        version: version.get(),
        parent,
        issued_at: rollout_control::time::format_ms(rollout_control::store::now_ms()),
        actor: actor(),
        reason: reason.map_or_else(|| "break-glass push".to_owned(), String::from),
        config: doc.clone(),
        keys: None,
    };
    // Only keys every named edge trusts already (and this file holds): a
    // break-glass push never widens what edges trust, whatever old copy of
    // the key file it is made with.
    rollout_control::keys::declare(&mut envelope, &trusted);
    let body = envelope.to_body();
    let signed = Signed {
        version,
        digest: Digest::of(&body),
        signature: signer.sign(&body),
        body: Bytes::from(body),
        stamp: true,
    };
    // Recorded before anything is sent, so the control service can adopt
    // what edges may hold (`rollout adopt FILE`), whatever happens next.
    let record = record.map_or_else(
        || PathBuf::from(format!("break-glass-v{version}.json")),
        Path::to_path_buf,
    );
    let adopt = rollout_api::AdoptRequest {
        body: String::from_utf8_lossy(&signed.body).into_owned(),
        signature: signed.signature.clone(),
    };
    let text = serde_json::to_string_pretty(&adopt)
        .map_err(|e| Fail::new(exit::FAILED, format!("break-glass record: {e}")))?;
    super::keys::write_secret(&record, &format!("{text}\n"), false)?;
    let once = Retries {
        count: 0,
        backoff: Duration::ZERO,
    };
    let mut results = Vec::new();
    let mut code = exit::OK;
    for edge in edges {
        let (state, error) = match client.push(edge, &signed, once).await.answer {
            Answer::Ack { .. } => (EdgeState::Ack, String::new()),
            Answer::Nack { error, .. } => {
                code = code.max(exit::NACK);
                (EdgeState::Nack, error)
            }
            Answer::NoAnswer(error) => {
                code = code.max(exit::FAILED);
                (EdgeState::Unreachable, error)
            }
        };
        if ctx.out == Output::Text {
            println!("{edge:<32} {state:<12} {error}");
        }
        results.push(EdgeResult { edge, state, error });
    }
    match ctx.out {
        Output::Json => print_json(&BreakGlass {
            version,
            digest: signed.digest,
            record: &record,
            edges: results,
        })?,
        Output::Text => {
            println!(
                "break-glass version {version} ({}) signed locally",
                signed.digest
            );
            println!(
                "recorded in {}: once the control service is back, it takes this version into its history from the edges that hold it; `rollout adopt {}` does the same by hand",
                record.display(),
                record.display()
            );
        }
    }
    if code == exit::OK {
        Ok(())
    } else {
        Err(Fail::new(code, "not every edge took the break-glass push"))
    }
}
