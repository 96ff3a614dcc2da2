//! Making a version, for people and plans alike: build the config, check it
//! with core's rules and the edge's envelope limits, sign it, write it; and,
//! in the same transaction, tell every running plan whose route it changed.

use rollout_api::Version;
use rollout_core::config::PatchError;
use rollout_core::{Config, ConfigDoc, ConfigError, Envelope, EnvelopeDoc, EnvelopeError};

use crate::hooks::{HookEvent, Listeners};
use crate::keys::{KeyError, Keyring};

use crate::store::{CommitError, NewHookRun, NewVersion, Tx, VersionRow, now_ms};
use crate::time::format_ms;

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
    /// The key file holds no key the edges trust.
    #[error("signing key: {0}")]
    Keys(#[from] KeyError),
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

/// The envelope stored for `row`, config and all.
pub fn envelope_of(row: &VersionRow) -> Result<EnvelopeDoc<ConfigDoc>, Refusal> {
    serde_json::from_slice(&row.body).map_err(|source| Refusal::Unreadable {
        version: row.version,
        source,
    })
}

/// Who makes a version, how and why.
#[derive(Debug)]
pub struct Author<'a> {
    /// The actor (a token's name, `plan:<id>`).
    pub actor: &'a str,
    /// What it is, for the audit log (`push`, `patch`, `rollback`, `plan`).
    pub action: &'a str,
    /// The version's reason.
    pub reason: String,
}

/// In `tx`: builds the config `doc` makes from the current version, checks
/// it as an edge will, signs it with the first key of `keys` the edges
/// trust (declaring all of `keys` trusted from then on) and writes it as the next
/// version (if `expected` is still current; `None`: whatever is). Then
/// every running plan whose route it changed, and that did not make it,
/// hears of it (see [`crate::plans::route_changed`]), and the hooks on
/// `version` are queued.
pub fn commit_in(
    tx: &Tx<'_>,
    keys: &Keyring,
    expected: Option<Version>,
    author: &Author<'_>,
    listeners: &Listeners,
    doc: impl FnOnce(Option<&VersionRow>) -> Result<ConfigDoc, Refusal>,
) -> Result<VersionRow, CommitError<Refusal>> {
    let mut configs = None;
    let row = tx.commit_version(expected, author.action, |version, parent| {
        let config = doc(parent)?;
        // The rules are core's: the same validation an edge runs.
        Config::try_from(&config)?;
        let before = parent.map(envelope_of).transpose()?.map(|e| e.config);
        let issued_ms = now_ms();
        let trusted = keys.trusted_after(parent.map(|p| (p.body.as_ref(), p.signature.as_str())));
        let key = keys.signer_for(&trusted)?;
        let mut envelope = EnvelopeDoc {
            version: version.get(),
            parent: parent.map(|p| p.digest),
            issued_at: format_ms(issued_ms),
            actor: author.actor.to_owned(),
            reason: author.reason.clone(),
            config: config.clone(),
            keys: None,
        };
        keys.declare(&mut envelope);
        let body = envelope.to_body();
        // The edge's own check, limits included, before anything is stored.
        let envelope = Envelope::parse(&body)?;
        configs = Some((before, config));
        Ok(NewVersion {
            signature: key.sign(&body),
            digest: envelope.digest,
            body,
            actor: author.actor.to_owned(),
            reason: author.reason.clone(),
            issued_at: format_ms(issued_ms),
            issued_ms,
        })
    })?;
    if let Some((before, after)) = configs {
        crate::plans::route_changed(tx, before.as_ref(), &after, &row, author, listeners)?;
        queue_version_hooks(tx, listeners, &row, before.as_ref(), &after)?;
    }
    Ok(row)
}

/// In the transaction that wrote version `row` (config `after`, following
/// `before`): queues the hooks on `version`.
pub fn queue_version_hooks(
    tx: &Tx<'_>,
    listeners: &Listeners,
    row: &VersionRow,
    before: Option<&ConfigDoc>,
    after: &ConfigDoc,
) -> crate::store::Result<()> {
    let routes = changed_routes(before, after).join(",");
    let run = NewHookRun {
        event: HookEvent::Version.as_str(),
        version: row.version,
        plan: crate::plans::plan_of(&row.actor),
        route: &routes,
        actor: &row.actor,
        reason: &row.reason,
    };
    listeners.queue(tx, HookEvent::Version, &run)
}

/// The ids of the routes `after` adds, removes or changes.
fn changed_routes(before: Option<&ConfigDoc>, after: &ConfigDoc) -> Vec<String> {
    let empty = Vec::new();
    let old = before.map_or(&empty, |c| &c.routes);
    let mut ids: Vec<String> = Vec::new();
    for r in &after.routes {
        if old.iter().find(|o| o.id == r.id) != Some(r) {
            ids.push(r.id.clone());
        }
    }
    for o in old {
        if !after.routes.iter().any(|r| r.id == o.id) {
            ids.push(o.id.clone());
        }
    }
    ids
}
