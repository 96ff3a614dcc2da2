//! The wasm-bindgen surface. Every function converts JavaScript values to
//! the types of [`crate::edge`], [`crate::plan`] and core, calls them, and converts back; a
//! refusal becomes a JavaScript `Error` whose message is the native one.
//!
//! Plain objects cross the boundary as JSON (the runtime's own
//! `JSON.parse` / `JSON.stringify`), so what JavaScript sees is exactly what
//! serde_json writes natively.

use rollout_core::edge::admin::{Push, Swap};
use rollout_core::edge::request::{After, AllowList, Forward, REPLAY_LIMIT};
use rollout_core::edge::{ADMIN_PATH, Active, KV_ACTIVE};
use rollout_core::{
    Admission, Applied, Config, Digest, Envelope, MAX_ENVELOPE_BYTES, PublicKey, SIGNATURE_HEADER,
    admit as core_admit, bucket_of,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::prelude::*;

use crate::edge::{self, Pairs, RawFacts, Routed};
use crate::plan::{self, InputError};

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

/// The request machine's first steps for one request: `facts` is
/// `{method, target, authority?, headers: [[name, byteString]], client_ip?,
/// https?}` as read off the wire; `stored` the value under the store key
/// (`constants().kvActive`), `bootstrap` the old origin to use without a
/// config, `mint` 32 hex digits of randomness.
#[wasm_bindgen(js_name = routeRequest)]
pub fn route_request(
    facts: JsValue,
    stored: Option<Vec<u8>>,
    bootstrap: Option<String>,
    mint: Option<String>,
) -> Result<Routing, JsError> {
    let facts: RawFacts = from_js(&facts, InputError::Facts)?;
    let mint = mint
        .map(|m| {
            let mut bytes = [0u8; 16];
            hex::decode_to_slice(&m, &mut bytes).map(|()| bytes)
        })
        .transpose()
        .map_err(|_| error(InputError::Mint))?;
    let routing = edge::route(&facts, stored.as_deref(), bootstrap.as_deref(), mint);
    Ok(Routing {
        routed: Some(routing.routed),
        rewrite: routing.rewrite,
    })
}

/// Where a request goes: an answer, the admin endpoint, or a [`ForwardJs`].
#[wasm_bindgen]
#[derive(Debug)]
pub struct Routing {
    routed: Option<Routed>,
    rewrite: Option<Vec<u8>>,
}

#[wasm_bindgen]
impl Routing {
    /// `{status, headers, body}` when the edge answers itself; else undefined.
    #[wasm_bindgen(getter)]
    pub fn answer(&self) -> Result<JsValue, JsError> {
        match &self.routed {
            Some(Routed::Answer(a)) => to_js(a),
            _ => Ok(JsValue::UNDEFINED),
        }
    }

    /// Whether this is for the admin endpoint.
    #[wasm_bindgen(getter)]
    pub fn admin(&self) -> bool {
        matches!(self.routed, Some(Routed::Admin))
    }

    /// The value to compare-and-swap in for the stored one when it held a
    /// compact form older than this build's; undefined otherwise.
    #[wasm_bindgen(getter)]
    pub fn rewrite(&self) -> Option<Vec<u8>> {
        self.rewrite.clone()
    }

    /// The request to send, once; undefined otherwise.
    #[wasm_bindgen(js_name = takeForward)]
    pub fn take_forward(&mut self) -> Option<ForwardJs> {
        match self.routed.take() {
            Some(Routed::Forward(f)) => Some(ForwardJs(*f)),
            other => {
                self.routed = other;
                None
            }
        }
    }
}

/// The outbound allow-list (`ROLLOUT_ALLOWED_ORIGINS`): origins separated by
/// spaces or commas.
#[wasm_bindgen]
#[derive(Debug)]
pub struct AllowedOrigins(AllowList);

#[wasm_bindgen]
impl AllowedOrigins {
    /// Parses the list; throws naming the entry that is not an origin.
    #[wasm_bindgen(constructor)]
    pub fn new(list: &str) -> Result<AllowedOrigins, JsError> {
        AllowList::parse(list).map(AllowedOrigins).map_err(error)
    }
}

/// A request to send to an origin, and the rules for its result.
#[wasm_bindgen(js_name = Forward)]
#[derive(Debug)]
pub struct ForwardJs(Forward);

#[wasm_bindgen(js_class = Forward)]
impl ForwardJs {
    /// `{method, origin, path, headers}`: add only Host and framing.
    #[wasm_bindgen(getter)]
    pub fn request(&self) -> Result<JsValue, JsError> {
        to_js(&edge::outbound(&self.0))
    }

    /// Bytes of body to hold back so failover can replay it; undefined when
    /// the request is never sent twice.
    #[wasm_bindgen(getter, js_name = replayLimit)]
    pub fn replay_limit(&self) -> Option<u32> {
        self.0
            .replay_limit()
            .map(|l| u32::try_from(l).unwrap_or(u32::MAX))
    }

    /// Whether the allow-list lets this request out.
    #[wasm_bindgen(js_name = permittedBy)]
    pub fn permitted_by(&self, allow: &AllowedOrigins) -> bool {
        edge::permitted(&allow.0, &self.0)
    }

    /// The verdict on the origin's result: `status` when it answered, else
    /// `error` and whether nothing reached it (`connect`). `replayable`: the
    /// whole body was held (or there was none).
    pub fn after(
        &self,
        status: Option<u16>,
        error: Option<String>,
        connect: bool,
        replayable: bool,
    ) -> AfterJs {
        let result = edge::result(status, error, connect);
        AfterJs(Some(edge::after(&self.0, &result, replayable)))
    }

    /// The client's headers for the origin's `[[name, byteString]]`.
    #[wasm_bindgen(js_name = responseHeaders)]
    pub fn response_headers(&self, headers: JsValue) -> Result<JsValue, JsError> {
        let headers: Pairs = from_js(&headers, InputError::Outcome)?;
        to_js(&edge::response_headers(&self.0, &headers))
    }

    /// Whether a response with `status` has a body to relay.
    #[wasm_bindgen(js_name = relaysBody)]
    pub fn relays_body(&self, status: u16) -> bool {
        self.0.relays_body(status)
    }

    /// The 400 answer when this request (a GET or HEAD) must not carry the
    /// body it came with; undefined when a body is fine.
    #[wasm_bindgen(js_name = refusesBody)]
    pub fn refuses_body(&self) -> Result<JsValue, JsError> {
        match self.0.refuses_body() {
            Some(a) => to_js(&edge::AnswerJs::from(a)),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// The 400 answer for a request body that broke while it was held.
    #[wasm_bindgen(js_name = unreadableBody)]
    pub fn unreadable_body(&self) -> Result<JsValue, JsError> {
        to_js(&edge::AnswerJs::from(self.0.unreadable_body()))
    }

    /// The 502 answer for an origin that gave no usable response.
    pub fn failed(&self, why: &str) -> Result<JsValue, JsError> {
        to_js(&edge::AnswerJs::from(self.0.failed(why)))
    }
}

/// What to do once the origin answered.
#[wasm_bindgen(js_name = After)]
#[derive(Debug)]
pub struct AfterJs(Option<After>);

#[wasm_bindgen(js_class = After)]
impl AfterJs {
    /// Relay the origin's response.
    #[wasm_bindgen(getter)]
    pub fn relay(&self) -> bool {
        matches!(self.0, Some(After::Relay))
    }

    /// The answer to give instead; undefined otherwise.
    #[wasm_bindgen(getter)]
    pub fn answer(&self) -> Result<JsValue, JsError> {
        match &self.0 {
            Some(After::Answer(a)) => to_js(&edge::AnswerJs::from(a.clone())),
            _ => Ok(JsValue::UNDEFINED),
        }
    }

    /// The request to send to old instead, once; undefined otherwise.
    #[wasm_bindgen(js_name = takeRetry)]
    pub fn take_retry(&mut self) -> Option<ForwardJs> {
        match self.0.take() {
            Some(After::Retry(f)) => Some(ForwardJs(*f)),
            other => {
                self.0 = other;
                None
            }
        }
    }
}

/// The admin machine's first step: `stored` is the value under the store key
/// (`storeError` when it could not be read), `publicKey` the edge's bootstrap
/// key setting (undefined when unset), `now` the edge's clock in Unix
/// seconds (`Date.now() / 1000`).
#[wasm_bindgen(js_name = adminBegin)]
pub fn admin_begin(
    method: &str,
    headers: JsValue,
    stored: Option<Vec<u8>>,
    store_error: Option<String>,
    public_key: Option<String>,
    now: f64,
) -> Result<AdminJs, JsError> {
    let headers: Pairs = from_js(&headers, InputError::Facts)?;
    let stored = match &store_error {
        Some(e) => Err(e.as_str()),
        None => Ok(stored.as_deref()),
    };
    let key = public_key.as_deref().ok_or("not set");
    // A clock before 1970 or not a number reads as 0: every stamp is then
    // stale, so a misreporting clock refuses pushes rather than replays.
    let now = if now.is_finite() && now > 0.0 {
        now as u64
    } else {
        0
    };
    Ok(AdminJs(edge::admin_begin(
        method, &headers, stored, key, now,
    )))
}

/// An admin request: answered, or a push whose body is to be read.
#[wasm_bindgen(js_name = Admin)]
#[derive(Debug)]
pub struct AdminJs(Result<Box<Push>, edge::AnswerJs>);

#[wasm_bindgen(js_class = Admin)]
impl AdminJs {
    /// The answer, when there is nothing to read; undefined otherwise.
    #[wasm_bindgen(getter)]
    pub fn answer(&self) -> Result<JsValue, JsError> {
        match &self.0 {
            Err(a) => to_js(a),
            Ok(_) => Ok(JsValue::UNDEFINED),
        }
    }

    /// The push, when its body is to be read: its limit, and `finish(body)`.
    #[wasm_bindgen(getter)]
    pub fn limit(&self) -> Option<u32> {
        self.0
            .as_ref()
            .ok()
            .map(|p| u32::try_from(p.limit()).unwrap_or(u32::MAX))
    }

    /// The answer for a body over the limit.
    #[wasm_bindgen(js_name = tooLarge)]
    pub fn too_large(&self) -> Result<JsValue, JsError> {
        match &self.0 {
            Ok(p) => to_js(&edge::AnswerJs::from(p.too_large())),
            Err(a) => to_js(a),
        }
    }

    /// The answer for a body that could not be read.
    pub fn unreadable(&self) -> Result<JsValue, JsError> {
        match &self.0 {
            Ok(p) => to_js(&edge::AnswerJs::from(p.unreadable())),
            Err(a) => to_js(a),
        }
    }

    /// The push rule for the whole `body`.
    pub fn finish(self, body: &[u8]) -> PushStepJs {
        match self.0 {
            Ok(push) => PushStepJs(edge::push_step(push.finish(body))),
            Err(a) => PushStepJs(Err(a)),
        }
    }
}

/// A push's next step: an answer, or a value to compare-and-swap in.
#[wasm_bindgen(js_name = PushStep)]
#[derive(Debug)]
pub struct PushStepJs(Result<Swap, edge::AnswerJs>);

#[wasm_bindgen(js_class = PushStep)]
impl PushStepJs {
    /// The answer; undefined when there is a value to store first.
    #[wasm_bindgen(getter)]
    pub fn answer(&self) -> Result<JsValue, JsError> {
        match &self.0 {
            Err(a) => to_js(a),
            Ok(_) => Ok(JsValue::UNDEFINED),
        }
    }

    /// The value to store under the store key, only if it still holds what
    /// was read; undefined when there is nothing to store.
    #[wasm_bindgen(getter)]
    pub fn value(&self) -> Option<Vec<u8>> {
        self.0.as_ref().ok().map(|s| s.value.clone())
    }

    /// The answer once the value is stored.
    pub fn done(self) -> Result<JsValue, JsError> {
        match self.0 {
            Ok(swap) => to_js(&edge::AnswerJs::from(swap.done())),
            Err(a) => to_js(&a),
        }
    }

    /// The answer when the store refused the write.
    pub fn failed(self, current: Option<Vec<u8>>, why: &str) -> Result<JsValue, JsError> {
        match self.0 {
            Ok(swap) => to_js(&edge::AnswerJs::from(swap.failed(current.as_deref(), why))),
            Err(a) => to_js(&a),
        }
    }

    /// The key held `now` instead of what was read: decide again.
    pub fn conflict(self, now: Option<Vec<u8>>) -> PushStepJs {
        match self.0 {
            Ok(swap) => PushStepJs(edge::push_step(swap.conflict(now.as_deref()))),
            Err(a) => PushStepJs(Err(a)),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Constants {
    admin_path: &'static str,
    signature_header: &'static str,
    max_envelope_bytes: usize,
    kv_active: &'static str,
    replay_limit: usize,
}

/// The names every edge shares: admin path, signature header, body limit,
/// store key and the failover replay limit.
#[wasm_bindgen]
pub fn constants() -> Result<JsValue, JsError> {
    to_js(&Constants {
        admin_path: ADMIN_PATH,
        signature_header: SIGNATURE_HEADER,
        max_envelope_bytes: MAX_ENVELOPE_BYTES,
        kv_active: KV_ACTIVE,
        replay_limit: REPLAY_LIMIT,
    })
}
