//! The wasi:http handler: transport around `rollout_core::edge`. Every rule
//! (which requests are refused, where one goes, what the origin gets, when
//! to fail over, what a push does and what is stored) comes from core's
//! request and admin machines; this file moves bytes between them and
//! wasi:http, the key-value store and the variables.
//!
//! Spin gives every request a fresh instance, so what the edge applied is
//! read per request from the store: one value, its compact form decoded for
//! the one route the request takes.

use std::task::Poll;

use futures::StreamExt;
use futures::stream::LocalBoxStream;
use rollout_core::edge::admin::{self, AdminStep, PushStep, Swap};
use rollout_core::edge::request::{self, After, Forward, OriginError, RawRequest, Target};
use rollout_core::edge::{Answer, Held, KV_ACTIVE};
use spin_executor::CancelOnDropToken;
use spin_sdk::http::{
    ErrorCode, Headers, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme, SendError,
};
use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::keyvalue::{atomics, store as keyvalue};
use wasi::io::streams::{OutputStream, StreamError};

/// Spin variable holding the public key pushes must be signed with.
const VAR_PUBLIC_KEY: &str = "public_key";
/// Spin variable holding the origin to use while no config is applied.
const VAR_BOOTSTRAP_ORIGIN: &str = "old_origin";
/// The store Spin gives every component, under both key-value interfaces.
const STORE: &str = "default";

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let method = method_name(req.method());
    let target = req.path_with_query().unwrap_or_default();
    let authority = req.authority();
    let headers = req.headers().entries();
    let client_ip = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("spin-client-addr"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(request::client_ip_of);
    let raw = RawRequest {
        method: &method,
        target: &target,
        authority: authority.as_deref(),
        headers: &headers,
        client_ip: client_ip.as_deref(),
        https: matches!(req.scheme(), Some(Scheme::Https)),
    };
    match request::receive(&raw) {
        Err(answer) => reply(out, answer).await,
        Ok(Target::Admin) => {
            admin(&method, &headers, req.into_body_stream().boxed_local(), out).await
        }
        Ok(Target::Proxy(inbound)) => {
            let store = Store::open_default().ok();
            let value = store.as_ref().and_then(|s| s.get(KV_ACTIVE).ok().flatten());
            let held = Held::read(value.as_deref());
            // Read only when no config routes the request.
            let bootstrap = || spin_sdk::variables::get(VAR_BOOTSTRAP_ORIGIN).ok();
            let forward = match inbound.forward(&held, bootstrap, random_id()) {
                Ok(forward) => forward,
                Err(answer) => return reply(out, answer).await,
            };
            if let Held::Rederived { value: rederived } = &held {
                write_back(value.as_deref(), rederived);
            }
            proxy(forward, req.into_body_stream().boxed_local(), out).await;
        }
    }
}

fn random_id() -> Option<[u8; 16]> {
    wasi::random::random::get_random_bytes(16).try_into().ok()
}

/// Stores a frame re-derived from an older compact form, if the store still
/// holds what this request read. Best effort: the next request re-derives.
fn write_back(read: Option<&[u8]>, rederived: &[u8]) {
    let Ok(bucket) = keyvalue::open(STORE) else {
        return;
    };
    let Ok(cas) = atomics::Cas::new(&bucket, KV_ACTIVE) else {
        return;
    };
    if cas.current().ok().flatten().as_deref() == read {
        let _ = atomics::swap(cas, rederived);
    }
}

/// A request body as wasi:http streams it.
type BodyStream = LocalBoxStream<'static, Result<Vec<u8>, wasi::io::error::Error>>;

/// The method's name, without `Display` (its formatting machinery costs
/// more per fresh instance than the match).
fn method_name(method: Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => return other,
    }
    .to_owned()
}

fn method_of(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// The request body as far as the machine needs it read before sending:
/// the bytes held back, and whether the body ended within them.
struct Body {
    held: Vec<u8>,
    ended: bool,
    rest: Option<BodyStream>,
    /// Reading the rest failed while it was being sent: the origin got a
    /// cut request, and the client gets the machine's answer for a body that
    /// could not be read.
    broken: bool,
}

impl Body {
    /// Reads until the body ends or more than `limit` bytes are held (at
    /// least one chunk, so an empty body is known to be empty).
    async fn read(mut stream: BodyStream, limit: usize) -> Result<Body, ()> {
        let mut held = Vec::new();
        loop {
            match stream.next().await {
                None => {
                    return Ok(Body {
                        held,
                        ended: true,
                        rest: None,
                        broken: false,
                    });
                }
                Some(Ok(chunk)) => {
                    held.extend_from_slice(&chunk);
                    if held.len() > limit {
                        return Ok(Body {
                            held,
                            ended: false,
                            rest: Some(stream),
                            broken: false,
                        });
                    }
                }
                Some(Err(_)) => return Err(()),
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.ended && self.held.is_empty()
    }
}

async fn proxy(forward: Forward, stream: BodyStream, out: ResponseOutparam) {
    let limit = forward.replay_limit().unwrap_or(0);
    let Ok(mut body) = Body::read(stream, limit).await else {
        return reply(out, forward.unreadable_body()).await;
    };
    if !body.is_empty()
        && let Some(refused) = forward.refuses_body()
    {
        return reply(out, refused).await;
    }
    let first = send(&forward, &mut body).await;
    if body.broken {
        return reply(out, forward.unreadable_body()).await;
    }
    let (forward, result) = match forward.after(status_of(&first), body.ended) {
        After::Relay => (forward, first),
        After::Answer(answer) => return reply(out, answer).await,
        After::Retry(retry) => {
            drop(first);
            let result = send(&retry, &mut body).await;
            match retry.after(status_of(&result), false) {
                After::Answer(answer) => return reply(out, answer).await,
                _ => (*retry, result),
            }
        }
    };
    match result {
        Ok(resp) => relay(&forward, resp, out).await,
        Err(e) => reply(out, forward.failed(&e.to_string())).await,
    }
}

fn status_of(result: &Result<IncomingResponse, OriginError>) -> Result<u16, &OriginError> {
    result.as_ref().map(IncomingResponse::status)
}

fn origin_error(e: &SendError) -> OriginError {
    let text = match e {
        SendError::Http(code) => format!("{code:?}"),
        other => other.to_string(),
    };
    // Failures before the origin answered at all (the request may be sent
    // again); a denied request never left the edge.
    let connect = matches!(
        e,
        SendError::Http(
            ErrorCode::DnsTimeout
                | ErrorCode::DnsError(_)
                | ErrorCode::DestinationNotFound
                | ErrorCode::DestinationUnavailable
                | ErrorCode::DestinationIpProhibited
                | ErrorCode::DestinationIpUnroutable
                | ErrorCode::ConnectionRefused
                | ErrorCode::ConnectionTimeout
                | ErrorCode::ConnectionLimitReached
                | ErrorCode::TlsProtocolError
                | ErrorCode::TlsCertificateError
                | ErrorCode::TlsAlertReceived(_)
                | ErrorCode::HttpRequestDenied
        )
    );
    if connect {
        OriginError::Connect(text)
    } else {
        OriginError::Other(text)
    }
}

/// Sends `forward` with the body held so far; the first send also streams
/// whatever of the body was not held.
async fn send(forward: &Forward, body: &mut Body) -> Result<IncomingResponse, OriginError> {
    let refused = |why: &str| OriginError::Other(format!("request refused: {why}"));
    let fields = Headers::from_list(&forward.headers).map_err(|e| refused(&format!("{e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let scheme = match forward.origin.scheme() {
        rollout_core::config::Scheme::Http => Scheme::Http,
        rollout_core::config::Scheme::Https => Scheme::Https,
    };
    let set = [
        request.set_method(&method_of(&forward.method)),
        request.set_scheme(Some(&scheme)),
        request.set_authority(Some(&forward.origin.authority())),
        request.set_path_with_query(Some(&forward.path_with_query)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(refused("request line"));
    }
    if body.is_empty() {
        return spin_sdk::http::send::<_, IncomingResponse>(request)
            .await
            .map_err(|e| origin_error(&e));
    }
    // The body is taken before the request is sent, and filled while the
    // send runs: the host buffers only a couple of chunks.
    let Some(mut sink) = request.body().ok().and_then(BodyOut::new) else {
        return Err(refused("its body cannot be written"));
    };
    let held = body.held.clone();
    let rest = body.rest.take();
    let broken = &mut body.broken;
    let upload = async move {
        if sink.write(&held).await.is_err() {
            return;
        }
        if let Some(mut rest) = rest {
            while let Some(chunk) = rest.next().await {
                let Ok(chunk) = chunk else {
                    // Left unfinished: the origin sees the request cut, never
                    // a shorter one properly ended.
                    *broken = true;
                    return;
                };
                if sink.write(&chunk).await.is_err() {
                    return;
                }
            }
        }
        sink.finish();
    };
    let (_, response) =
        futures::join!(upload, spin_sdk::http::send::<_, IncomingResponse>(request));
    response.map_err(|e| origin_error(&e))
}

async fn relay(forward: &Forward, resp: IncomingResponse, out: ResponseOutparam) {
    let status = resp.status();
    let headers = forward.response_headers(&resp.headers().entries());
    let Ok(fields) = Headers::from_list(&headers) else {
        return reply(out, forward.failed("its headers cannot be relayed")).await;
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        return reply(out, forward.failed("its status is invalid")).await;
    }
    if !forward.relays_body(status) {
        out.set(response);
        return;
    }
    let Ok(sink) = response.body() else {
        return reply(out, forward.failed("its body cannot be relayed")).await;
    };
    let Ok(source) = resp.consume() else {
        return reply(out, forward.failed("its body is gone")).await;
    };
    let (Ok(input), Ok(output)) = (source.stream(), sink.write()) else {
        return reply(out, forward.failed("its body cannot be relayed")).await;
    };
    out.set(response);
    // The host moves the bytes (no copy through the guest), waiting for
    // each side as it must: nothing else of this request runs meanwhile.
    let relayed = loop {
        match output.blocking_splice(&input, RELAY_CHUNK) {
            Ok(_) => {}
            // The origin's body ended (or the client went away).
            Err(StreamError::Closed) => break true,
            // An origin body that broke (cut short, malformed framing)
            // leaves the client's unfinished: the client sees the message
            // cut, not ended.
            Err(StreamError::LastOperationFailed(_)) => break false,
        }
    };
    drop(output);
    drop(input);
    drop(source);
    if relayed {
        let _ = OutgoingBody::finish(sink, None);
    }
    // Else `sink` is dropped unfinished, which wasi:http takes for a
    // corrupted body: the host cuts the response.
}

/// Bytes the host may move per splice of a response body.
const RELAY_CHUNK: u64 = 64 * 1024;

/// An outgoing body (a request body to an origin) that ends properly only
/// when [`BodyOut::finish`]ed. Dropped unfinished, it is aborted: wasi:http
/// treats an outgoing-body dropped without `finish` as corrupted, and the
/// host then cuts the message (wasmtime-wasi-http hands hyper a body error;
/// hyper closes the connection without the message's end: no last chunk,
/// fewer bytes than the Content-Length). spin-sdk's body sink finishes the
/// body whenever it is dropped, which would turn a read error into a
/// shorter, complete message.
struct BodyOut {
    // Dropped in this order: a pollable before its stream, the stream before
    // its body.
    waiting: Option<CancelOnDropToken>,
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl BodyOut {
    fn new(body: OutgoingBody) -> Option<BodyOut> {
        let stream = body.write().ok()?;
        Some(BodyOut {
            waiting: None,
            stream: Some(stream),
            body: Some(body),
        })
    }

    /// Writes all of `chunk`, waiting while the host's buffer is full; an
    /// error when the receiving side is gone.
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> impl Future<Output = Result<(), ()>> + 'a {
        let mut offset = 0;
        futures::future::poll_fn(move |cx| {
            let BodyOut {
                waiting, stream, ..
            } = &mut *self;
            let Some(stream) = stream.as_ref() else {
                return Poll::Ready(Err(()));
            };
            while offset < chunk.len() {
                match stream.check_write() {
                    Ok(0) => {
                        let token = spin_executor::push_waker_and_get_token(
                            stream.subscribe(),
                            cx.waker().clone(),
                        );
                        *waiting = Some(token.into());
                        return Poll::Pending;
                    }
                    Ok(room) => {
                        let room = usize::try_from(room).unwrap_or(usize::MAX);
                        let end = offset + room.min(chunk.len() - offset);
                        if stream.write(&chunk[offset..end]).is_err() {
                            return Poll::Ready(Err(()));
                        }
                        offset = end;
                    }
                    Err(_) => return Poll::Ready(Err(())),
                }
            }
            Poll::Ready(Ok(()))
        })
    }

    /// Ends the body properly. A body with a Content-Length that was not
    /// written in full is aborted by the host instead.
    fn finish(mut self) {
        self.waiting = None;
        self.stream = None;
        if let Some(body) = self.body.take() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

async fn reply(out: ResponseOutparam, answer: Answer) {
    let fields = Headers::from_list(&answer.headers).unwrap_or_else(|_| Headers::new());
    let response = OutgoingResponse::new(fields);
    // Every status the machines give is a constant between 200 and 503.
    let _ = response.set_status_code(answer.status);
    let _ = out.set_with_body(response, answer.body).await;
}

/// `GET` / `PUT /.well-known/rollout/config`: core's admin machine over a
/// compare-and-swap of the one stored value.
async fn admin(
    method: &str,
    headers: &[(String, Vec<u8>)],
    stream: BodyStream,
    out: ResponseOutparam,
) {
    let opened = keyvalue::open(STORE)
        .and_then(|bucket| atomics::Cas::new(&bucket, KV_ACTIVE).map(|cas| (bucket, cas)));
    let (cas, read) = match opened.and_then(|(_, cas)| cas.current().map(|v| (cas, v))) {
        Ok((cas, read)) => (Some(cas), Ok(read)),
        Err(e) => (None, Err(format!("{e:?}"))),
    };
    let public_key = spin_sdk::variables::get(VAR_PUBLIC_KEY).map_err(|e| e.to_string());
    let stored = match &read {
        Ok(value) => Ok(value.as_deref()),
        Err(e) => Err(e.as_str()),
    };
    // The wall clock, for push stamps, in seconds since 1970 (wasi:clocks
    // counts no earlier). Asked of wasi:clocks directly: std's SystemTime
    // goes through wasi-libc's clock_gettime, which links the monotonic
    // clock too, an import every fresh instance would link for nothing.
    let now = wasi::clocks::wall_clock::now().seconds;
    let step = admin::begin(
        method,
        headers,
        stored,
        public_key.as_deref().map_err(String::as_str),
        now,
    );
    let push = match step {
        AdminStep::Answer(answer) => return reply(out, answer).await,
        AdminStep::ReadBody(push) => push,
    };
    let body = match read_limited(stream, push.limit()).await {
        Ok(Some(body)) => body,
        Ok(None) => return reply(out, push.too_large()).await,
        Err(()) => return reply(out, push.unreadable()).await,
    };
    let (Some(cas), Ok(read)) = (cas, read) else {
        return;
    };
    let answer = match push.finish(&body) {
        PushStep::Answer(answer) => answer,
        PushStep::Swap(swap) => swap_in(cas, read, swap),
    };
    reply(out, answer).await;
}

/// Compare-and-swap until the push lands or the machine answers otherwise.
fn swap_in(mut cas: atomics::Cas, mut read: Option<Vec<u8>>, mut swap: Swap) -> Answer {
    loop {
        let value = swap.value.clone();
        match atomics::swap(cas, &value) {
            Ok(()) => return swap.done(),
            Err(atomics::CasError::StoreError(e)) => {
                return swap.failed(read.as_deref(), &format!("{e:?}"));
            }
            Err(atomics::CasError::CasFailed(now)) => {
                read = match now.current() {
                    Ok(read) => read,
                    Err(e) => return swap.failed(None, &format!("{e:?}")),
                };
                cas = now;
                match swap.conflict(read.as_deref()) {
                    PushStep::Answer(answer) => return answer,
                    PushStep::Swap(again) => swap = again,
                }
            }
        }
    }
}

/// The whole body; `None` when it is over `limit` bytes (reading stops there).
async fn read_limited(mut stream: BodyStream, limit: usize) -> Result<Option<Vec<u8>>, ()> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|_| ())?);
        if body.len() > limit {
            return Ok(None);
        }
    }
    Ok(Some(body))
}
