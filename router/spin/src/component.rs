//! The wasi:http handler. Spin gives every request a fresh instance, so the
//! active config is read per request from the key-value store in its compact,
//! pre-validated form: a decode, never a parse or a signature check.

use futures::{SinkExt, StreamExt};
use rollout_core::config::Failover;
use rollout_core::edge::{self, AppliedReply, PushReply, StoredActive, receive_push};
use rollout_core::http::Hop;
use rollout_core::{
    Applied, Arm, MAX_ENVELOPE_BYTES, Origin, PublicKey, Request, SIGNATURE_HEADER, decide,
};
use spin_sdk::http::{
    ErrorCode, Headers, IncomingRequest, IncomingResponse, Method, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme, SendError,
};
use spin_sdk::key_value::Store;

use crate::plan::{self, HeaderList, Outcome};

/// Spin variable holding the public key pushes must be signed with.
const VAR_PUBLIC_KEY: &str = "public_key";
/// Spin variable holding the origin to use while no config is applied.
const VAR_BOOTSTRAP_ORIGIN: &str = "old_origin";

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let path_with_query = req.path_with_query().unwrap_or_else(|| "/".to_owned());
    let path = path_with_query
        .split_once('?')
        .map_or(path_with_query.as_str(), |(p, _)| p);
    if path == edge::ADMIN_PATH {
        admin(req, out).await;
    } else {
        route(req, out, &path_with_query).await;
    }
}

fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The stored active config's bytes; read with [`StoredActive::parse`].
pub(crate) fn load_stored(store: Option<&Store>) -> Option<Vec<u8>> {
    store?.get(edge::KV_ACTIVE).ok()?
}

/// No config, or one that does not decode: everything goes to the bootstrap
/// origin. Never a 5xx because of config.
fn bootstrap_plan() -> Option<Plan> {
    let origin = spin_sdk::variables::get(VAR_BOOTSTRAP_ORIGIN).ok()?;
    Some(Plan {
        origin: Origin::parse(&origin).ok()?,
        outcome: Outcome::bootstrap(),
        failover: None,
    })
}

fn random_id() -> Option<[u8; 16]> {
    wasi::random::random::get_random_bytes(16).try_into().ok()
}

/// Where one request goes.
struct Plan {
    origin: Origin,
    outcome: Outcome,
    /// The old origin and policy, when a failed request to new may be retried there.
    failover: Option<(Origin, Failover)>,
}

fn plan_request(
    req: &IncomingRequest,
    headers: &[(String, Vec<u8>)],
    method: &str,
    path_with_query: &str,
) -> Option<Plan> {
    let store = Store::open_default().ok();
    let bytes = load_stored(store.as_ref());
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    let text_headers: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), std::str::from_utf8(v).ok()?)))
        .collect();
    let client_ip = header(headers, "spin-client-addr").map(plan::client_ip);
    let authority = req.authority().unwrap_or_default();
    let request = Request {
        method,
        host: &authority,
        path,
        query,
        headers: &text_headers,
        client_ip: client_ip.as_deref(),
        mint: random_id(),
    };
    // Only the route this request takes is decoded.
    let Some(stored) = bytes.as_deref().and_then(StoredActive::parse) else {
        return bootstrap_plan();
    };
    let Some(config) = stored.config_for(&request) else {
        return bootstrap_plan();
    };
    let decision = decide(&config, &request);
    Some(Plan {
        origin: decision.origin.clone(),
        outcome: Outcome::of(&decision, stored.applied().version, config.debug_headers()),
        failover: decision
            .failover(method)
            .map(|f| (decision.route.old().clone(), f.clone())),
    })
}

async fn route(req: IncomingRequest, out: ResponseOutparam, path_with_query: &str) {
    let method = req.method();
    let method_name = method.to_string();
    let headers = req.headers().entries();
    let Some(mut plan) = plan_request(&req, &headers, &method_name, path_with_query) else {
        let msg =
            "rollout edge: no config applied and no valid old_origin variable to fall back to\n";
        return respond(out, 502, &edge_headers(&Outcome::bootstrap()), msg).await;
    };
    let authority = req.authority().unwrap_or_default();
    let client_ip = header(&headers, "spin-client-addr").map(plan::client_ip);
    let proto = match req.scheme() {
        Some(Scheme::Https) => "https",
        _ => "http",
    };
    let hop = Hop {
        client_ip: client_ip.as_deref(),
        host: &authority,
        proto,
    };
    let head_only = matches!(method, Method::Head);

    // A request body is streamed, so it can be sent only once: failover is for
    // requests without one.
    let body = has_body(&method, &headers).then_some(req);
    if body.is_some() {
        plan.failover = None;
    }
    let out_headers = plan::request_headers(&headers, &plan.outcome, hop);
    let first = send(&plan.origin, &method, path_with_query, &out_headers, body).await;

    let retry = match (&first, &plan.failover) {
        (Ok(resp), Some((_, policy))) => policy.retries_status(resp.status()),
        (Err(e), Some((_, policy))) => policy.connect_error && is_connect_error(e),
        _ => false,
    };
    let (result, outcome) = match (retry, plan.failover) {
        (true, Some((old, _))) => {
            let outcome = Outcome {
                arm: Arm::Old,
                ..plan.outcome
            };
            let out_headers = plan::request_headers(&headers, &outcome, hop);
            (
                send(&old, &method, path_with_query, &out_headers, None).await,
                outcome,
            )
        }
        _ => (first, plan.outcome),
    };
    match result {
        Ok(resp) => forward(resp, out, &outcome, head_only).await,
        Err(e) => {
            let msg = format!(
                "rollout edge: origin {} ({}) failed: {}\n",
                outcome.arm,
                arm_origin_label(&outcome),
                describe(&e)
            );
            respond(out, 502, &edge_headers(&outcome), &msg).await;
        }
    }
}

fn arm_origin_label(outcome: &Outcome) -> &'static str {
    if outcome.version == 0 {
        "bootstrap"
    } else {
        "config"
    }
}

fn describe(e: &SendError) -> String {
    match e {
        SendError::Http(code) => format!("{code:?}"),
        other => other.to_string(),
    }
}

/// Whether a failure happened before the origin answered at all.
fn is_connect_error(e: &SendError) -> bool {
    matches!(
        e,
        SendError::Http(
            ErrorCode::DnsTimeout
                | ErrorCode::DnsError(_)
                | ErrorCode::DestinationNotFound
                | ErrorCode::DestinationUnavailable
                | ErrorCode::DestinationIpProhibited
                | ErrorCode::DestinationIpUnroutable
                | ErrorCode::ConnectionRefused
                | ErrorCode::ConnectionTerminated
                | ErrorCode::ConnectionTimeout
                | ErrorCode::ConnectionLimitReached
                | ErrorCode::TlsProtocolError
                | ErrorCode::TlsCertificateError
                | ErrorCode::TlsAlertReceived(_)
                | ErrorCode::HttpRequestDenied
        )
    )
}

/// Whether the request carries a body to stream. wasmtime hides
/// `transfer-encoding`, so a chunked upload shows as a body-bearing method
/// without `content-length`.
fn has_body(method: &Method, headers: &[(String, Vec<u8>)]) -> bool {
    match header(headers, "content-length") {
        Some(len) => len.trim() != "0",
        None => !matches!(
            method,
            Method::Get | Method::Head | Method::Options | Method::Delete | Method::Trace
        ),
    }
}

async fn send(
    origin: &Origin,
    method: &Method,
    path_with_query: &str,
    headers: &HeaderList,
    body: Option<IncomingRequest>,
) -> Result<IncomingResponse, SendError> {
    let fields = Headers::from_list(headers)
        .map_err(|e| SendError::RequestConversion(format!("headers: {e:?}").into()))?;
    let request = OutgoingRequest::new(fields);
    let scheme = match origin.scheme() {
        rollout_core::config::Scheme::Http => Scheme::Http,
        rollout_core::config::Scheme::Https => Scheme::Https,
    };
    let set = [
        request.set_method(method),
        request.set_scheme(Some(&scheme)),
        request.set_authority(Some(&origin.authority())),
        request.set_path_with_query(Some(path_with_query)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(SendError::RequestConversion("request line refused".into()));
    }
    let Some(incoming) = body else {
        return spin_sdk::http::send::<_, IncomingResponse>(request).await;
    };
    // The body sink is taken before the request is sent, and filled while the
    // send runs: the host buffers only a couple of chunks.
    let mut sink = request.take_body();
    let upload = async move {
        let mut stream = incoming.into_body_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            if sink.send(chunk).await.is_err() {
                break;
            }
        }
        // Dropping the sink finishes the body.
    };
    let (_, response) =
        futures::join!(upload, spin_sdk::http::send::<_, IncomingResponse>(request));
    response
}

async fn forward(
    resp: IncomingResponse,
    out: ResponseOutparam,
    outcome: &Outcome,
    head_only: bool,
) {
    let status = resp.status();
    let headers = plan::response_headers(&resp.headers().entries(), outcome);
    let Ok(fields) = Headers::from_list(&headers) else {
        return respond(
            out,
            502,
            &edge_headers(outcome),
            "rollout edge: origin sent headers that cannot be relayed\n",
        )
        .await;
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        return respond(
            out,
            502,
            &edge_headers(outcome),
            "rollout edge: origin sent an invalid status\n",
        )
        .await;
    }
    if head_only || status == 204 || status == 304 {
        out.set(response);
        return;
    }
    let mut sink = response.take_body();
    out.set(response);
    let mut stream = resp.take_body_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        if sink.send(chunk).await.is_err() {
            break;
        }
    }
}

fn edge_headers(outcome: &Outcome) -> HeaderList {
    plan::edge_response_headers(outcome)
}

async fn respond(out: ResponseOutparam, status: u16, extra: &HeaderList, body: &str) {
    let mut headers = extra.clone();
    headers.push(("content-type".into(), b"text/plain; charset=utf-8".to_vec()));
    reply(out, status, headers, body.as_bytes().to_vec()).await;
}

async fn reply(out: ResponseOutparam, status: u16, headers: HeaderList, body: Vec<u8>) {
    let fields = Headers::from_list(&headers).unwrap_or_else(|_| Headers::new());
    let response = OutgoingResponse::new(fields);
    // Every status passed here is a constant between 200 and 503.
    let _ = response.set_status_code(status);
    let _ = out.set_with_body(response, body).await;
}

async fn reply_json(out: ResponseOutparam, status: u16, json: Vec<u8>) {
    let headers = vec![
        ("content-type".to_owned(), b"application/json".to_vec()),
        ("cache-control".to_owned(), b"no-store".to_vec()),
    ];
    reply(out, status, headers, json).await;
}

fn nack_json(current: Option<Applied>, error: &str) -> Vec<u8> {
    PushReply::nack(current, error).to_json()
}

/// `GET` / `PUT /.well-known/rollout/config`.
async fn admin(req: IncomingRequest, out: ResponseOutparam) {
    let store = match Store::open_default() {
        Ok(s) => s,
        Err(e) => {
            return reply_json(
                out,
                503,
                nack_json(None, &format!("key-value store unavailable: {e}")),
            )
            .await;
        }
    };
    let stored = load_stored(Some(&store));
    let current = stored
        .as_deref()
        .and_then(StoredActive::parse)
        .map(|s| s.applied());
    match req.method() {
        Method::Get | Method::Head => {
            reply_json(out, 200, AppliedReply::of(current).to_json()).await
        }
        Method::Put => push(req, out, &store, current).await,
        _ => {
            let headers = vec![("allow".to_owned(), b"GET, PUT".to_vec())];
            reply(out, 405, headers, b"method not allowed\n".to_vec()).await;
        }
    }
}

async fn push(
    req: IncomingRequest,
    out: ResponseOutparam,
    store: &Store,
    current: Option<Applied>,
) {
    let headers = req.headers().entries();
    let declared = header(&headers, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_ENVELOPE_BYTES as u64) {
        let error = format!("body is over the limit of {MAX_ENVELOPE_BYTES} bytes");
        return reply_json(out, 413, nack_json(current, &error)).await;
    }
    let key = match spin_sdk::variables::get(VAR_PUBLIC_KEY).map(|k| k.parse::<PublicKey>()) {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => {
            return reply_json(
                out,
                503,
                nack_json(current, &format!("public_key variable: {e}")),
            )
            .await;
        }
        Err(e) => {
            return reply_json(
                out,
                503,
                nack_json(current, &format!("public_key variable: {e}")),
            )
            .await;
        }
    };
    let signature = header(&headers, SIGNATURE_HEADER).map(str::to_owned);

    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return reply_json(
                out,
                400,
                nack_json(current, "request body could not be read"),
            )
            .await;
        };
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ENVELOPE_BYTES {
            let error = format!("body is over the limit of {MAX_ENVELOPE_BYTES} bytes");
            return reply_json(out, 413, nack_json(current, &error)).await;
        }
    }

    let outcome = receive_push(current, &body, signature.as_deref(), &key);
    if let Some(active) = &outcome.apply {
        // The envelope first, the active key last: readers switch only when
        // the compact form lands, in one write.
        let written = store
            .set(edge::KV_ENVELOPE, &body)
            .and_then(|()| {
                store.set(
                    edge::KV_SIGNATURE,
                    signature.as_deref().unwrap_or_default().as_bytes(),
                )
            })
            .and_then(|()| store.set(edge::KV_ACTIVE, &active.to_compact()));
        if let Err(e) = written {
            return reply_json(
                out,
                503,
                nack_json(current, &format!("key-value store write failed: {e}")),
            )
            .await;
        }
    }
    reply_json(out, outcome.http_status, outcome.body()).await;
}
