//! The CLI's side of the API, and the exit codes it ends with.

use serde_json::Value;

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
    /// No such version, edge or time.
    pub const NOT_FOUND: u8 = 7;
}

/// A command that failed, with its exit code.
#[derive(Debug)]
pub struct Fail {
    /// Exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl Fail {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
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
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Fail> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            Fail::new(
                exit::FAILED,
                format!("cannot reach the control service at {}: {e}", self.base),
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let message = json
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| json.to_string(), str::to_owned);
        let code = match status {
            400 | 422 => exit::INVALID,
            401 | 403 => exit::DENIED,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            _ => exit::FAILED,
        };
        Err(Fail::new(code, format!("{status}: {message}")))
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Value, Fail> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Fail> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The current version number (0 when none was issued).
    pub async fn current_version(&self) -> Result<u64, Fail> {
        match self.get("/v1/current").await {
            Ok(v) => Ok(v["version"].as_u64().unwrap_or(0)),
            Err(f) if f.code == exit::NOT_FOUND => Ok(0),
            Err(f) => Err(f),
        }
    }
}
