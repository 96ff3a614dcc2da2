//! The CLI's side of the API, typed, and the exit codes it ends with.

use rollout_api::{
    AdoptRequest, AtQuery, AuditPage, CreateVersion, EdgeAdded, EdgeList, EdgeRemoved, EdgeRequest,
    ErrorBody, HistoryPage, HistoryQuery, KeyChange, KeyList, PlanEvents, PlanList, PlanQuery,
    PlanView, RollbackRequest, StartPlan, StatusView, TemplateList, Version, VersionView, path,
    shorten,
};
use rollout_core::plan::CheckDoc;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Exit codes of the `rollout` CLI (documented in `rollout --help` and the README).
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed: network, server or local error.
    pub const FAILED: u8 = 1;
    /// Bad usage or an invalid config (the message names the field).
    pub const INVALID: u8 = 2;
    /// Someone else changed the config first (409): re-read and retry.
    pub const CONFLICT: u8 = 3;
    /// Unknown token (401) or a role that may not do this (403).
    pub const DENIED: u8 = 4;
    /// Edges did not all acknowledge in time.
    pub const TIMEOUT: u8 = 5;
    /// An edge refused the committed version (NACK).
    pub const NACK: u8 = 6;
    /// No such version, edge, time or plan.
    pub const NOT_FOUND: u8 = 7;
    /// The plan waited for was aborted or failed (it rolled back).
    pub const ABORTED: u8 = 8;
    /// The stored history does not verify (`rollout audit --verify`).
    pub const BROKEN: u8 = 9;
}

/// Largest reply the CLI reads from the control service: a history page of
/// 1 000 versions with reasons at their limit fits several times over.
pub const MAX_API_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// A command that failed, with its exit code.
#[derive(Debug)]
pub struct Fail {
    /// Exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
    /// Whether the command's JSON result is already on stdout (so `--output
    /// json` prints no second document for the error).
    pub reported: bool,
}

impl Fail {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
            reported: false,
        }
    }

    /// The same failure, its result already printed.
    pub fn reported(self) -> Fail {
        Fail {
            reported: true,
            ..self
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Fail {
        Fail::new(exit::FAILED, format!("{e:#}"))
    }
}

/// A client of the control API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client for the service at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Calls the API; a non-2xx answer becomes a [`Fail`] with the matching exit code.
    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, Fail> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let unreachable = |e: reqwest::Error| {
            Fail::new(
                exit::FAILED,
                format!("cannot reach the control service at {}: {e}", self.base),
            )
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_API_REPLY_BYTES {
                return Err(Fail::new(
                    exit::FAILED,
                    format!("{what}: reply over {MAX_API_REPLY_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if (200..300).contains(&status) {
            // 204: no body, which reads as `()`.
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            return serde_json::from_slice(body)
                .map_err(|e| Fail::new(exit::FAILED, format!("{what}: unexpected reply: {e}")));
        }
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => e.error,
            Err(_) => shorten(&String::from_utf8_lossy(&body), 300).into_owned(),
        };
        let code = match status {
            400 | 413 | 422 => exit::INVALID,
            401 | 403 => exit::DENIED,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            _ => exit::FAILED,
        };
        Err(Fail::new(code, format!("{status}: {message}")))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).json(body)
    }

    /// The committed version, if there is one.
    pub async fn current(&self) -> Result<Option<VersionView>, Fail> {
        match self.call(self.get(path::CURRENT), "current version").await {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.code == exit::NOT_FOUND => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// The committed version number ([`Version::NONE`] when none was issued).
    pub async fn current_version(&self) -> Result<Version, Fail> {
        Ok(self.current().await?.map_or(Version::NONE, |v| v.version))
    }

    /// Version `n`, with its config.
    pub async fn version(&self, n: Version) -> Result<VersionView, Fail> {
        self.call(self.get(&path::version(n)), "version").await
    }

    /// The version live at `time` (RFC 3339).
    pub async fn at(&self, time: &str) -> Result<VersionView, Fail> {
        let q = AtQuery {
            time: time.to_owned(),
        };
        self.call(self.get(path::AT).query(&q), "version at").await
    }

    /// A page of history.
    pub async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, Fail> {
        self.call(self.get(path::VERSIONS).query(q), "history")
            .await
    }

    /// Commits a new version.
    pub async fn create(&self, req: &CreateVersion) -> Result<VersionView, Fail> {
        self.call(self.post(path::VERSIONS, req), "new version")
            .await
    }

    /// Restores an earlier config as a new version.
    pub async fn rollback(&self, req: &RollbackRequest) -> Result<VersionView, Fail> {
        self.call(self.post(path::ROLLBACK, req), "rollback").await
    }

    /// Takes a break-glass version into the history.
    pub async fn adopt(&self, req: &AdoptRequest) -> Result<VersionView, Fail> {
        self.call(self.post(path::ADOPT, req), "adopt").await
    }

    /// The signing keys.
    pub async fn keys(&self) -> Result<KeyList, Fail> {
        self.call(self.get(path::KEYS), "keys").await
    }

    /// Rotates or retires a signing key.
    pub async fn change_keys(&self, change: &KeyChange) -> Result<KeyList, Fail> {
        self.call(self.post(path::KEYS, change), "key change").await
    }

    /// Every edge against the committed version.
    pub async fn status(&self) -> Result<StatusView, Fail> {
        self.call(self.get(path::STATUS), "status").await
    }

    /// Registered edges.
    pub async fn edges(&self) -> Result<EdgeList, Fail> {
        self.call(self.get(path::EDGES), "edges").await
    }

    /// Registers an edge.
    pub async fn add_edge(&self, url: &str) -> Result<EdgeAdded, Fail> {
        let req = EdgeRequest {
            url: url.to_owned(),
        };
        self.call(self.post(path::EDGES, &req), "edge add").await
    }

    /// Forgets an edge.
    pub async fn remove_edge(&self, url: &str) -> Result<EdgeRemoved, Fail> {
        let req = EdgeRequest {
            url: url.to_owned(),
        };
        let builder = self
            .http
            .delete(format!("{}{}", self.base, path::EDGES))
            .query(&req);
        self.call(builder, "edge remove").await
    }

    /// Who did what, newest first.
    pub async fn audit(&self) -> Result<AuditPage, Fail> {
        self.call(self.get(path::AUDIT), "audit").await
    }

    /// Starts a plan.
    pub async fn start_plan(&self, req: &StartPlan) -> Result<PlanView, Fail> {
        self.call(self.post(path::PLANS, req), "plan start").await
    }

    /// Plans, newest first.
    pub async fn plans(&self, q: &PlanQuery) -> Result<PlanList, Fail> {
        self.call(self.get(path::PLANS).query(q), "plans").await
    }

    /// Plan `id`.
    pub async fn plan(&self, id: i64) -> Result<PlanView, Fail> {
        self.call(self.get(&path::plan(id)), "plan").await
    }

    /// What happened to plan `id`.
    pub async fn plan_events(&self, id: i64) -> Result<PlanEvents, Fail> {
        self.call(self.get(&path::plan_events(id)), "plan events")
            .await
    }

    /// `pause`, `resume`, `promote`, `abort` or `retry` plan `id`.
    pub async fn plan_command(&self, id: i64, command: &str) -> Result<PlanView, Fail> {
        let builder = self
            .http
            .post(format!("{}{}", self.base, path::plan_command(id, command)));
        self.call(builder, command).await
    }

    /// Stored check templates.
    pub async fn templates(&self) -> Result<TemplateList, Fail> {
        self.call(self.get(path::TEMPLATES), "templates").await
    }

    /// Stores template `name`.
    pub async fn put_template(&self, name: &str, doc: &CheckDoc) -> Result<(), Fail> {
        let builder = self
            .http
            .put(format!("{}{}", self.base, path::template(name)))
            .json(doc);
        self.call(builder, "template put").await
    }

    /// Removes template `name`.
    pub async fn delete_template(&self, name: &str) -> Result<(), Fail> {
        let builder = self
            .http
            .delete(format!("{}{}", self.base, path::template(name)));
        self.call(builder, "template remove").await
    }
}
