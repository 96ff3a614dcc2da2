//! The `wasi:http/incoming-handler` export: send the request on to `ORIGIN`,
//! relay the answer. Every wasi:http call that can fail is checked: outside
//! input never traps the guest; what cannot be forwarded gets a 502.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Bytes asked for per read or splice; the host hands over what it has, up
/// to this.
const CHUNK: u64 = 64 * 1024;

/// The headers wasi:http hosts refuse from a guest (wasmtime-wasi-http's
/// `DEFAULT_FORBIDDEN_HEADERS`): the hop-by-hop ones, and `host`, which the
/// request's authority sets.
const FORBIDDEN: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

struct Passthrough;

impl Guest for Passthrough {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = request.method();
        let head_only = matches!(method, Method::Head);
        match forward(&request, &method) {
            Ok(response) => relay(response, head_only, out),
            Err(why) => bad_gateway(out, why),
        }
    }
}

wasi::http::proxy::export!(Passthrough);

/// `scheme://host[:port]` (a trailing `/` allowed): the scheme and authority.
fn parse_origin(origin: &str) -> Option<(Scheme, &str)> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return None;
    };
    Some((scheme, authority))
}

/// A mutable copy of `fields` without the headers hosts forbid.
fn copy_headers(fields: &Fields) -> Fields {
    let mut entries = fields.entries();
    entries.retain(|(name, _)| !FORBIDDEN.iter().any(|f| name.eq_ignore_ascii_case(f)));
    match Fields::from_list(&entries) {
        Ok(copy) => copy,
        Err(_) => {
            // A host that refuses more than wasmtime does: one by one,
            // keeping what it takes.
            let copy = Fields::new();
            for (name, value) in &entries {
                let _ = copy.append(name, value);
            }
            copy
        }
    }
}

/// Sends the request to `ORIGIN`, streaming its body, and waits for the
/// origin's answer (its head; the body is relayed as it comes).
fn forward(request: &IncomingRequest, method: &Method) -> Result<IncomingResponse, &'static str> {
    let origin = std::env::var("ORIGIN").map_err(|_| "ORIGIN is not set")?;
    let (scheme, authority) = parse_origin(&origin).ok_or("ORIGIN is not scheme://host[:port]")?;
    let outgoing = OutgoingRequest::new(copy_headers(&request.headers()));
    let set = [
        outgoing.set_method(method),
        outgoing.set_scheme(Some(&scheme)),
        outgoing.set_authority(Some(authority)),
        outgoing.set_path_with_query(request.path_with_query().as_deref()),
    ];
    if set.iter().any(Result::is_err) {
        return Err("the request line cannot be forwarded");
    }
    let body = request.consume().map_err(|()| "the request body is gone")?;
    let input = body.stream().map_err(|()| "the request body is gone")?;
    // Most requests have no body: one read tells, and such a request goes
    // out without one (no chunked framing for an empty GET).
    let first = match input.blocking_read(CHUNK) {
        Ok(chunk) => Some(chunk),
        Err(StreamError::Closed) => None,
        Err(StreamError::LastOperationFailed(_)) => return Err("reading the request body failed"),
    };
    let refused = |_| "the origin cannot be reached";
    let future = match first {
        None => outgoing_handler::handle(outgoing, None).map_err(refused)?,
        Some(first) => {
            // Sent first, then filled: the host buffers only a few chunks.
            let sink = outgoing
                .body()
                .map_err(|()| "the request body cannot be forwarded")?;
            let future = outgoing_handler::handle(outgoing, None).map_err(refused)?;
            let output = sink
                .write()
                .map_err(|()| "the request body cannot be forwarded")?;
            let sent = write_all(&output, &first).and_then(|()| pump(&input, &output));
            drop(output);
            // Unfinished (dropped), the body is aborted: the origin sees the
            // request cut, never a shorter one properly ended.
            sent.map_err(|()| "the request body could not be forwarded")?;
            OutgoingBody::finish(sink, None).map_err(|_| "the request body was cut short")?;
            future
        }
    };
    drop(input);
    drop(body);
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response),
        _ => Err("the origin did not answer"),
    }
}

/// Relays the origin's status, headers and body (streamed) to the client.
fn relay(response: IncomingResponse, head_only: bool, out: ResponseOutparam) {
    let status = response.status();
    let outgoing = OutgoingResponse::new(copy_headers(&response.headers()));
    if outgoing.set_status_code(status).is_err() {
        return bad_gateway(out, "the origin's status cannot be relayed");
    }
    if head_only || matches!(status, 100..=199 | 204 | 304) {
        // No body: its headers (a Content-Length among them) describe it.
        ResponseOutparam::set(out, Ok(outgoing));
        return;
    }
    let Ok(sink) = outgoing.body() else {
        return bad_gateway(out, "the origin's body cannot be relayed");
    };
    let Ok(body) = response.consume() else {
        return bad_gateway(out, "the origin's body is gone");
    };
    let Ok(input) = body.stream() else {
        return bad_gateway(out, "the origin's body is gone");
    };
    ResponseOutparam::set(out, Ok(outgoing));
    let Ok(output) = sink.write() else {
        return;
    };
    let relayed = pump(&input, &output);
    drop(output);
    drop(input);
    drop(body);
    if relayed.is_ok() {
        let _ = OutgoingBody::finish(sink, None);
    }
    // Else `sink` is dropped unfinished: the host cuts the response, so the
    // client sees it broken, not complete and shorter.
}

/// Moves `input` into `output` until `input` ends (or `output` closes),
/// host-side: no bytes pass through the guest.
fn pump(input: &InputStream, output: &OutputStream) -> Result<(), ()> {
    loop {
        match output.blocking_splice(input, CHUNK) {
            Ok(_) => {}
            Err(StreamError::Closed) => return Ok(()),
            Err(StreamError::LastOperationFailed(_)) => return Err(()),
        }
    }
}

/// Writes all of `bytes`, waiting while the host's buffer is full.
fn write_all(output: &OutputStream, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        let room = match output.check_write() {
            Ok(0) => {
                output.subscribe().block();
                continue;
            }
            Ok(room) => usize::try_from(room).unwrap_or(usize::MAX),
            Err(_) => return Err(()),
        };
        let (now, rest) = bytes.split_at(room.min(bytes.len()));
        output.write(now).map_err(|_| ())?;
        bytes = rest;
    }
    Ok(())
}

/// `502` with `why` as a short text body.
fn bad_gateway(out: ResponseOutparam, why: &str) {
    let headers = Fields::from_list(&[(
        "content-type".to_owned(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(502);
    let sink = response.body();
    ResponseOutparam::set(out, Ok(response));
    let Ok(sink) = sink else {
        return;
    };
    if let Ok(output) = sink.write() {
        let _ = write_all(&output, format!("bad gateway: {why}\n").as_bytes());
    }
    let _ = OutgoingBody::finish(sink, None);
}
