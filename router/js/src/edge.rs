//! Core's edge machines in the shapes JavaScript holds: header values as
//! byte strings (one character per byte, U+0000..=U+00FF, as the Fetch
//! standard's `ByteString` and Node's `latin1` header decoding both give
//! them), answers and outbound requests as plain objects. Host-independent,
//! so it is tested natively; the bindings only wrap it.

use rollout_core::edge::admin::{self, AdminStep, Push, PushStep, Swap};
use rollout_core::edge::request::{
    self, After, AllowList, Forward, OriginError, RawRequest, Target,
};
use rollout_core::edge::{Answer, Held};
use serde::{Deserialize, Serialize};

/// A header list as JavaScript holds it: `[[name, byteString], ...]`.
pub type Pairs = Vec<(String, String)>;

/// Bytes from a byte string. A character above U+00FF cannot have come off
/// the wire; it becomes `?` rather than a second byte.
pub fn bytes_of(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// The byte string of `bytes`.
pub fn byte_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn to_raw(pairs: &Pairs) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.clone(), bytes_of(v)))
        .collect()
}

fn to_pairs(list: &[(String, Vec<u8>)]) -> Pairs {
    list.iter()
        .map(|(n, v)| (n.clone(), byte_string(v)))
        .collect()
}

/// A request as a JavaScript transport reads it off the wire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFacts {
    /// Method as sent.
    pub method: String,
    /// Request target as sent (Node's `req.url`), or path and query.
    pub target: String,
    /// The authority, when the runtime reports it instead of Host headers.
    #[serde(default)]
    pub authority: Option<String>,
    /// Every header line, in order, values as byte strings.
    #[serde(default)]
    pub headers: Pairs,
    /// Client address, without port.
    #[serde(default)]
    pub client_ip: Option<String>,
    /// Whether the client spoke TLS.
    #[serde(default)]
    pub https: bool,
}

/// A response the edge gives itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerJs {
    /// Status.
    pub status: u16,
    /// Headers, values as byte strings.
    pub headers: Pairs,
    /// The body (the edge's own answers are UTF-8 text or JSON).
    pub body: String,
}

impl From<Answer> for AnswerJs {
    fn from(a: Answer) -> AnswerJs {
        AnswerJs {
            status: a.status,
            headers: to_pairs(&a.headers),
            body: String::from_utf8_lossy(&a.body).into_owned(),
        }
    }
}

/// The request to send to an origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboundJs {
    /// Method.
    pub method: String,
    /// `scheme://host[:port]` of the origin.
    pub origin: String,
    /// Path and query, exactly as the client sent them.
    pub path: String,
    /// Headers, values as byte strings. The transport adds only Host and
    /// framing (content-length / transfer-encoding) of its own.
    pub headers: Pairs,
}

/// Where a request goes, as the first step says, and the frame to write
/// back when the store held an older compact form (see [`Held::Rederived`]).
#[derive(Debug)]
pub struct Routing {
    /// Where it goes.
    pub routed: Routed,
    /// Compare-and-swap this in for the value read, when there is one.
    pub rewrite: Option<Vec<u8>>,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Routed {
    /// Answer with this.
    Answer(AnswerJs),
    /// The admin endpoint.
    Admin,
    /// Send this.
    Forward(Box<Forward>),
}

/// The request machine's first two steps: checks, then the decision from the
/// stored value (`stored`), the bootstrap origin and 16 random bytes.
pub fn route(
    facts: &RawFacts,
    stored: Option<&[u8]>,
    bootstrap: Option<&str>,
    mint: Option<[u8; 16]>,
) -> Routing {
    let headers = to_raw(&facts.headers);
    let raw = RawRequest {
        method: &facts.method,
        target: &facts.target,
        authority: facts.authority.as_deref(),
        headers: &headers,
        client_ip: facts.client_ip.as_deref(),
        https: facts.https,
    };
    let (routed, held) = match request::receive(&raw) {
        Err(answer) => (Routed::Answer(answer.into()), None),
        Ok(Target::Admin) => (Routed::Admin, None),
        Ok(Target::Proxy(inbound)) => {
            let held = Held::read(stored);
            let routed = match inbound.forward(&held, || bootstrap.map(str::to_owned), mint) {
                Ok(forward) => Routed::Forward(Box::new(forward)),
                Err(answer) => Routed::Answer(answer.into()),
            };
            (routed, Some(held))
        }
    };
    let rewrite = match held {
        Some(Held::Rederived { value }) => Some(value),
        _ => None,
    };
    Routing { routed, rewrite }
}

/// The outbound request of `forward`.
pub fn outbound(forward: &Forward) -> OutboundJs {
    OutboundJs {
        method: forward.method.clone(),
        origin: forward.origin.to_string(),
        path: forward.path_with_query.clone(),
        headers: to_pairs(&forward.headers),
    }
}

/// Whether the allow-list (`ROLLOUT_ALLOWED_ORIGINS`) lets `forward` go out.
pub fn permitted(allow: &AllowList, forward: &Forward) -> bool {
    allow.permits(&forward.origin)
}

/// What the origin did: its status, or an error and whether nothing reached
/// it (`connect`).
pub fn result(
    status: Option<u16>,
    error: Option<String>,
    connect: bool,
) -> Result<u16, OriginError> {
    match (status, error) {
        (Some(status), _) => Ok(status),
        (None, why) => {
            let why = why.unwrap_or_else(|| "no response".to_owned());
            Err(if connect {
                OriginError::Connect(why)
            } else {
                OriginError::Other(why)
            })
        }
    }
}

/// The machine's verdict on the origin's result.
pub fn after(forward: &Forward, result: &Result<u16, OriginError>, replayable: bool) -> After {
    forward.after(result.as_ref().copied(), replayable)
}

/// The client's headers for the origin's `headers` under `forward`.
pub fn response_headers(forward: &Forward, headers: &Pairs) -> Pairs {
    to_pairs(&forward.response_headers(&to_raw(headers)))
}

/// The admin machine's first step.
pub fn admin_begin(
    method: &str,
    headers: &Pairs,
    stored: Result<Option<&[u8]>, &str>,
    public_key: Result<&str, &str>,
    now: u64,
) -> Result<Box<Push>, AnswerJs> {
    match admin::begin(method, &to_raw(headers), stored, public_key, now) {
        AdminStep::Answer(answer) => Err(answer.into()),
        AdminStep::ReadBody(push) => Ok(push),
    }
}

/// A push step as JavaScript takes it: an answer, or a value to swap in.
pub fn push_step(step: PushStep) -> Result<Swap, AnswerJs> {
    match step {
        PushStep::Answer(answer) => Err(answer.into()),
        PushStep::Swap(swap) => Ok(swap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_carry_every_byte_both_ways() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(bytes_of(&byte_string(&all)), all);
        assert_eq!(bytes_of("é"), [0xe9], "one character, one byte");
        assert_eq!(bytes_of("\u{20ac}"), b"?", "not a byte: refused, not split");
    }

    fn facts(target: &str, headers: &[(&str, &str)]) -> RawFacts {
        RawFacts {
            method: "GET".into(),
            target: target.into(),
            authority: None,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            client_ip: Some("192.0.2.1".into()),
            https: false,
        }
    }

    #[test]
    fn the_machine_answers_routes_and_forwards() {
        let host = [("host", "edge.example")];
        match route(&facts("/a/../b", &host), None, None, None).routed {
            Routed::Answer(a) => assert_eq!(a.status, 400),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            route(
                &facts("/.well-known/rollout/config", &host),
                None,
                None,
                None
            )
            .routed,
            Routed::Admin
        ));
        // UTF-8 bytes of é1 arrive as two byte-string characters each.
        let utf8 = byte_string("é1".as_bytes());
        let headers = [("host", "edge.example"), ("x-user-id", utf8.as_str())];
        let Routed::Forward(forward) = route(
            &facts("/x?y", &headers),
            None,
            Some("http://old.test"),
            None,
        )
        .routed
        else {
            panic!("bootstrap forward");
        };
        let out = outbound(&forward);
        assert_eq!(
            (out.origin.as_str(), out.path.as_str()),
            ("http://old.test", "/x?y")
        );
        assert!(
            out.headers
                .iter()
                .any(|(n, v)| n == "x-user-id" && *v == utf8)
        );
        let allow = AllowList::parse("http://other.test").expect("list");
        assert!(!permitted(&allow, &forward));
        let refused = result(None, Some("not allowed".into()), true);
        match after(&forward, &refused, true) {
            After::Answer(a) => assert_eq!(a.status, 502),
            other => panic!("{other:?}"),
        }
    }
}
