//! The wasm-bindgen surface. Every function converts JavaScript values to
//! the types of [`crate::plan`] and core, calls them, and converts back; a
//! refusal becomes a JavaScript `Error` whose message is the native one.
//!
//! Plain objects cross the boundary as JSON (the runtime's own
//! `JSON.parse` / `JSON.stringify`), so what JavaScript sees is exactly what
//! serde_json writes natively.

use rollout_core::edge::Active;
use rollout_core::edge::{
    ADMIN_PATH, AppliedReply, KV_ACTIVE, KV_ENVELOPE, KV_SIGNATURE, receive_push,
};
use rollout_core::{
    Admission, Applied, Config, Digest, Envelope, MAX_ENVELOPE_BYTES, PublicKey, SIGNATURE_HEADER,
    admit as core_admit, bucket_of,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::prelude::*;

use crate::plan::{self, HeaderList, HopFacts, InputError, Outcome};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn json_parse(text: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = JSON, js_name = stringify, catch)]
    fn json_stringify(value: &JsValue) -> Result<Option<String>, JsValue>;
}

fn error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn from_js<T: DeserializeOwned>(
    value: &JsValue,
    wrap: fn(String) -> InputError,
) -> Result<T, JsError> {
    let text = json_stringify(value)
        .map_err(|_| error(wrap("not JSON-serialisable".into())))?
        .ok_or_else(|| error(wrap("missing".into())))?;
    serde_json::from_str(&text).map_err(|e| error(wrap(e.to_string())))
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(value).map_err(error)?;
    json_parse(&text).map_err(|_| JsError::new("JSON.parse refused the edge's own JSON"))
}

/// A compiled config, ready to route requests: built once per applied
/// version, used for every request after.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Router {
    active: Active,
}

#[wasm_bindgen]
impl Router {
    /// Verifies `signature` (the `rollout-signature` header value) over the
    /// envelope body with `publicKey` (`ed25519:<base64>`), then parses,
    /// validates and compiles its config.
    #[wasm_bindgen(js_name = fromEnvelope)]
    pub fn from_envelope(
        body: &[u8],
        signature: &str,
        public_key: &str,
    ) -> Result<Router, JsError> {
        let key: PublicKey = public_key.parse().map_err(error)?;
        let envelope = Envelope::open(body, signature, &key).map_err(error)?;
        Ok(Router {
            active: Active {
                applied: envelope.applied(),
                config: envelope.config,
            },
        })
    }

    /// Decodes the compact form an admin push stored (see `receivePush`).
    /// It was verified and validated when it was stored, so this only decodes.
    #[wasm_bindgen(js_name = fromCompact)]
    pub fn from_compact(bytes: &[u8]) -> Result<Router, JsError> {
        Active::from_compact(bytes)
            .map(|active| Router { active })
            .ok_or_else(|| JsError::new("stored config is not in the compact form"))
    }

    /// Compiles an unsigned config document (JSON text), as version 0: for
    /// tests and for deployments that ship the config with the code.
    #[wasm_bindgen(js_name = fromConfig)]
    pub fn from_config(json: &str) -> Result<Router, JsError> {
        let config = Config::from_json(json.as_bytes()).map_err(error)?;
        Ok(Router {
            active: Active {
                applied: Applied {
                    version: 0,
                    digest: Digest::of(json.as_bytes()),
                },
                config,
            },
        })
    }

    /// The applied version (a JavaScript number: exact below 2^53).
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> f64 {
        self.active.applied.version as f64
    }

    /// The envelope digest, 64 hex digits.
    #[wasm_bindgen(getter)]
    pub fn digest(&self) -> String {
        self.active.applied.digest.to_string()
    }

    /// The compact form, for storing.
    #[wasm_bindgen(js_name = toCompact)]
    pub fn to_compact(&self) -> Vec<u8> {
        self.active.to_compact()
    }

    /// Decides a request. `facts` is `{method, host, path, query?, headers?:
    /// [[name, value]], client_ip?, mint?: "32 hex digits"}`; the result is a
    /// plain object `{route, arm, origin, bucket, reason, key, flags,
    /// set_cookie, version, debug_headers, failover}`.
    pub fn route(&self, facts: JsValue) -> Result<JsValue, JsError> {
        let facts: plan::Facts = from_js(&facts, InputError::Facts)?;
        to_js(&plan::route(&self.active, &facts).map_err(error)?)
    }
}

/// The bucket of `key` under `salt`, `0 ..= 999999`.
#[wasm_bindgen]
pub fn bucket(salt: &str, key: &str) -> u32 {
    bucket_of(salt, key).get()
}

/// The version rule: `current` and `incoming` are `{version, digest}`
/// (`current` may be null). Returns `"apply"`, `"already-applied"` or `"reject"`.
#[wasm_bindgen]
pub fn admit(current: JsValue, incoming: JsValue) -> Result<String, JsError> {
    let current: Option<Applied> = if current.is_null() || current.is_undefined() {
        None
    } else {
        Some(from_js(&current, |e| {
            InputError::Outcome(format!("current: {e}"))
        })?)
    };
    let incoming: Applied = from_js(&incoming, |e| InputError::Outcome(format!("incoming: {e}")))?;
    Ok(match core_admit(current, incoming) {
        Admission::Apply => "apply",
        Admission::AlreadyApplied => "already-applied",
        Admission::Reject { .. } => "reject",
    }
    .to_owned())
}

/// Checks a config document; throws with the native message when invalid.
#[wasm_bindgen(js_name = validateConfig)]
pub fn validate_config(json: &str) -> Result<(), JsError> {
    Config::from_json(json.as_bytes())
        .map(|_| ())
        .map_err(error)
}

/// What the admin endpoint does with a push.
#[wasm_bindgen]
#[derive(Debug)]
pub struct PushResult {
    status: u16,
    body: String,
    active: Option<Vec<u8>>,
}

#[wasm_bindgen]
impl PushResult {
    /// HTTP status: 200, 400, 401, 409 or 413.
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The JSON reply body.
    #[wasm_bindgen(getter)]
    pub fn body(&self) -> String {
        self.body.clone()
    }

    /// The compact form to store under the active key when the push is to be
    /// applied; `undefined` otherwise. Store the envelope and signature first
    /// and this last: it is the switch.
    #[wasm_bindgen(getter)]
    pub fn active(&self) -> Option<Vec<u8>> {
        self.active.clone()
    }
}

/// The admin endpoint's rule (size, signature, validation, version) for a
/// push `body` with its `signature` header, given the stored compact form of
/// what is applied (`current`, or null). Throws only for a bad public key.
#[wasm_bindgen(js_name = receivePush)]
pub fn receive_push_js(
    current: Option<Vec<u8>>,
    body: &[u8],
    signature: Option<String>,
    public_key: &str,
) -> Result<PushResult, JsError> {
    let key: PublicKey = public_key.parse().map_err(error)?;
    let held = plan::current(current.as_deref());
    let outcome = receive_push(held, body, signature.as_deref(), &key);
    Ok(PushResult {
        status: outcome.http_status,
        body: plan::reply_text(outcome.body()),
        active: outcome.apply.as_ref().map(Active::to_compact),
    })
}

/// The JSON reply to a GET on the admin path.
#[wasm_bindgen(js_name = appliedReply)]
pub fn applied_reply(current: Option<Vec<u8>>) -> String {
    plan::reply_text(AppliedReply::of(plan::current(current.as_deref())).to_json())
}

/// A refusal (`nack`) naming `error`, for failures outside the push rule
/// (storage, configuration of the edge).
#[wasm_bindgen(js_name = nackReply)]
pub fn nack_reply(current: Option<Vec<u8>>, error: &str) -> String {
    plan::nack_reply(plan::current(current.as_deref()), error)
}

/// The 413 reply for a body over the limit.
#[wasm_bindgen(js_name = oversizedReply)]
pub fn oversized_reply(current: Option<Vec<u8>>) -> String {
    plan::oversized_reply(plan::current(current.as_deref()))
}

/// The outcome when no config is applied: everything to `origin` on old.
#[wasm_bindgen]
pub fn bootstrap(origin: &str) -> Result<JsValue, JsError> {
    to_js(&plan::bootstrap(origin).map_err(error)?)
}

/// The outcome for retrying on old after new failed; null when the outcome
/// does not allow failover.
#[wasm_bindgen(js_name = failedOver)]
pub fn failed_over(outcome: JsValue) -> Result<JsValue, JsError> {
    let outcome: Outcome = from_js(&outcome, InputError::Outcome)?;
    match plan::failed_over(&outcome) {
        Some(retry) => to_js(&retry),
        None => Ok(JsValue::NULL),
    }
}

/// Headers for the request to the origin, as `[[name, value]]`. `incoming`
/// is the client's headers as pairs, `hop` is `{client_ip, host, proto}`.
#[wasm_bindgen(js_name = originRequestHeaders)]
pub fn origin_request_headers(
    incoming: JsValue,
    outcome: JsValue,
    hop: JsValue,
) -> Result<JsValue, JsError> {
    let incoming: HeaderList = from_js(&incoming, InputError::Headers)?;
    let outcome: Outcome = from_js(&outcome, InputError::Outcome)?;
    let hop: HopFacts = from_js(&hop, InputError::Hop)?;
    to_js(&plan::origin_request_headers(
        &incoming,
        &outcome,
        hop.hop(),
    ))
}

/// Headers for the client: the origin's (as pairs), filtered, plus the edge's.
#[wasm_bindgen(js_name = clientResponseHeaders)]
pub fn client_response_headers(origin: JsValue, outcome: JsValue) -> Result<JsValue, JsError> {
    let origin: HeaderList = from_js(&origin, InputError::Headers)?;
    let outcome: Outcome = from_js(&outcome, InputError::Outcome)?;
    to_js(&plan::client_response_headers(&origin, &outcome))
}

/// The edge's own response headers, for responses it makes itself (502s).
#[wasm_bindgen(js_name = edgeResponseHeaders)]
pub fn edge_response_headers(outcome: JsValue) -> Result<JsValue, JsError> {
    let outcome: Outcome = from_js(&outcome, InputError::Outcome)?;
    to_js(&plan::edge_response_headers(&outcome))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Constants {
    admin_path: &'static str,
    signature_header: &'static str,
    max_envelope_bytes: usize,
    kv_active: &'static str,
    kv_envelope: &'static str,
    kv_signature: &'static str,
}

/// The names every edge shares: admin path, signature header, body limit and
/// store keys.
#[wasm_bindgen]
pub fn constants() -> Result<JsValue, JsError> {
    to_js(&Constants {
        admin_path: ADMIN_PATH,
        signature_header: SIGNATURE_HEADER,
        max_envelope_bytes: MAX_ENVELOPE_BYTES,
        kv_active: KV_ACTIVE,
        kv_envelope: KV_ENVELOPE,
        kv_signature: KV_SIGNATURE,
    })
}
