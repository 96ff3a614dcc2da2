//! The raw-request corpus (`core/tests/vectors/requests.json`) against
//! rollout-host running the shipped component.
//!
//! Each case is written to the edge as raw bytes on a fresh TCP connection;
//! the runner checks the status and headers the client got back and, through
//! recording origins on raw TCP (so nothing normalises what arrives), exactly
//! what each origin received. Every failing case is collected and reported in
//! one assertion at the end. The file's `description` defines the format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_core::ConfigDoc;
use rollout_host::MemoryKv;
use rollout_tests::{EdgeSetup, client, envelope, push, secret, start_edge};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How long one request may take before the runner gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Header names the transport owns: never compared in an origin's header list.
const TRANSPORT: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
];

// ------------------------------------------------------------ recording origins

/// One request as an origin read it off the wire.
#[derive(Debug, Clone)]
struct Recorded {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// Set when the request could not be parsed; what was read is in `body`.
    error: Option<String>,
}

/// A loopback HTTP/1.1 server that records every request and answers
/// `ok <name>` (status NNN for a target holding `/status/NNN`, except on old).
#[derive(Debug)]
struct Recorder {
    name: &'static str,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_one(name, tcp, shared.clone()));
            }
        });
        Recorder {
            name,
            addr,
            log,
            task,
        }
    }

    fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.log.lock().expect("origin log"))
    }
}

/// Why a connection that carried no request at all is not recorded.
const CLOSED_EMPTY: &str = "closed before a request line";

/// The status an origin answers for `target`.
fn status_for(name: &str, target: &[u8]) -> u16 {
    if name == "old" {
        return 200;
    }
    let text = String::from_utf8_lossy(target);
    text.find("/status/")
        .and_then(|at| text.get(at + 8..at + 11))
        .and_then(|n| n.parse::<u16>().ok())
        .filter(|n| (100..=999).contains(n))
        .unwrap_or(200)
}

/// Reads one request, records it, answers and closes the connection.
async fn serve_one(name: &'static str, tcp: TcpStream, log: Arc<Mutex<Vec<Recorded>>>) {
    let mut reader = BufReader::new(tcp);
    let recorded = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut reader)).await {
        Ok(Ok(r)) => r,
        Ok(Err((error, partial))) => Recorded {
            method: Vec::new(),
            target: Vec::new(),
            headers: Vec::new(),
            body: partial,
            error: Some(error),
        },
        Err(_) => Recorded {
            method: Vec::new(),
            target: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            error: Some("timed out reading the request".into()),
        },
    };
    if recorded.error.as_deref() == Some(CLOSED_EMPTY) {
        // A connection opened and closed without a byte: nothing was sent.
        return;
    }
    let status = status_for(name, &recorded.target);
    // `/conn-named`: the answer names a header in Connection and forges an
    // edge header, neither of which may reach the client.
    let connection = if recorded
        .target
        .windows(b"/conn-named".len())
        .any(|w| w == b"/conn-named")
    {
        "connection: close, x-secret\r\nx-secret: s\r\nx-rollout-version: 999"
    } else {
        "connection: close"
    };
    log.lock().expect("origin log").push(recorded);
    let body = format!("ok {name}");
    let response = format!(
        "HTTP/1.1 {status} Status\r\ncontent-type: text/plain\r\nx-origin: {name}\r\ncontent-length: {}\r\n{connection}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = reader.into_inner();
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// One line up to and including `\n`, without the line end.
async fn line(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    if reader.read_until(b'\n', &mut buf).await? == 0 {
        return Ok(None);
    }
    if buf.ends_with(b"\n") {
        buf.pop();
    }
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    Ok(Some(buf))
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Recorded, (String, Vec<u8>)> {
    let io = |e: std::io::Error| (e.to_string(), Vec::new());
    let Some(request_line) = line(reader).await.map_err(io)? else {
        return Err((CLOSED_EMPTY.into(), Vec::new()));
    };
    let mut parts = request_line.splitn(3, |b| *b == b' ');
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(("bad request line".into(), request_line));
    };
    let (method, target) = (method.to_vec(), target.to_vec());
    let mut headers = Vec::new();
    loop {
        let Some(l) = line(reader).await.map_err(io)? else {
            return Err(("closed inside the header block".into(), request_line));
        };
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|b| *b == b':') else {
            return Err(("header line without a colon".into(), l));
        };
        let name = l[..colon].to_ascii_lowercase();
        let value = l[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    let value_of = |n: &str| {
        headers
            .iter()
            .filter(|(h, _)| h == n.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let chunked = value_of("transfer-encoding")
        .last()
        .is_some_and(|v| v.trim_end().ends_with("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let Some(size_line) = line(reader).await.map_err(io)? else {
                return Err(("closed inside a chunked body".into(), body));
            };
            let size_text = String::from_utf8_lossy(&size_line);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return Err((format!("bad chunk size {size_text:?}"), body));
            };
            if size == 0 {
                // Trailers, up to the empty line.
                while let Some(t) = line(reader).await.map_err(io)? {
                    if t.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            reader
                .read_exact(&mut chunk)
                .await
                .map_err(|e| (e.to_string(), body.clone()))?;
            body.extend_from_slice(&chunk);
            let _ = line(reader).await.map_err(io)?;
        }
    } else if let Some(len) = value_of("content-length").first() {
        let Ok(len) = len.trim().parse::<usize>() else {
            return Err((format!("bad content-length {len:?}"), Vec::new()));
        };
        body = vec![0; len];
        reader
            .read_exact(&mut body)
            .await
            .map_err(|e| (format!("body: {e}"), Vec::new()))?;
    }
    Ok(Recorded {
        method,
        target,
        headers,
        body,
        error: None,
    })
}

/// `host:port` of a loopback port nobody listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

// ------------------------------------------------------------ the corpus

fn corpus() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/vectors/requests.json"
    );
    let text = std::fs::read_to_string(path).expect("core/tests/vectors/requests.json");
    serde_json::from_str(&text).expect("requests.json is JSON")
}

/// Placeholder values: `{{edge}}` etc. to `host:port`.
#[derive(Debug)]
struct Places(Vec<(String, String)>);

impl Places {
    fn text(&self, s: &str) -> String {
        self.0
            .iter()
            .fold(s.to_owned(), |acc, (k, v)| acc.replace(k.as_str(), v))
    }

    fn bytes(&self, b: &[u8]) -> Vec<u8> {
        let mut out = b.to_vec();
        for (k, v) in &self.0 {
            out = replace_bytes(&out, k.as_bytes(), v.as_bytes());
        }
        out
    }

    /// Every string inside `v`, substituted.
    fn json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), self.json(x))).collect())
            }
            other => other.clone(),
        }
    }
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("request_base64: {:?} is not base64", c as char));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Bytes for a message: text when UTF-8, else escaped.
fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("b\"{}\"", b.escape_ascii()),
    }
}

/// A response as the client read it.
#[derive(Debug)]
struct Response {
    status: Option<u16>,
    headers: Vec<(String, Vec<u8>)>,
    raw_head: String,
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = &raw[..end];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().and_then(|l| {
        let l = std::str::from_utf8(l).ok()?;
        let mut parts = l.split(' ');
        parts
            .next()
            .filter(|v| v.starts_with("HTTP/"))
            .and(parts.next())
            .and_then(|s| s.parse().ok())
    });
    let headers = lines
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase(),
                l[colon + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect();
    Response {
        status,
        headers,
        raw_head: String::from_utf8_lossy(head).into_owned(),
    }
}

/// Writes `request` on a fresh connection and reads until the edge closes.
async fn exchange(edge: SocketAddr, request: &[u8]) -> Result<Vec<u8>, String> {
    let run = async {
        let mut tcp = TcpStream::connect(edge)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // The edge may answer and close before it has read everything (a
        // 400); what it sent back is still read below.
        let _ = tcp.write_all(request).await;
        let mut out = Vec::new();
        match tcp.read_to_end(&mut out).await {
            // A reset after a response still leaves that response to check.
            Err(e) if out.is_empty() => Err(format!("read: {e}")),
            _ => Ok(out),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(format!("no end of response within {REQUEST_TIMEOUT:?}")))
}

/// A header list keyed by lowercased name, values joined by ", " in order;
/// `None` for a name whose expected value may be anything.
type HeaderSet = BTreeMap<String, Option<Vec<u8>>>;

fn join(set: &mut HeaderSet, name: String, value: Option<Vec<u8>>) {
    match (set.get_mut(&name), value) {
        (Some(Some(have)), Some(v)) => {
            have.extend_from_slice(b", ");
            have.extend_from_slice(&v);
        }
        (Some(slot), _) => *slot = None,
        (None, v) => {
            set.insert(name, v);
        }
    }
}

fn recorded_set(r: &Recorded) -> HeaderSet {
    let mut set = HeaderSet::new();
    for (n, v) in &r.headers {
        let name = String::from_utf8_lossy(n).to_ascii_lowercase();
        if !TRANSPORT.contains(&name.as_str()) {
            join(&mut set, name, Some(v.clone()));
        }
    }
    set
}

fn expected_set(headers: &Value) -> Result<HeaderSet, String> {
    let mut set = HeaderSet::new();
    for pair in headers.as_array().ok_or("headers is not a list")? {
        let (Some(name), Some(value)) = (pair.get(0).and_then(Value::as_str), pair.get(1)) else {
            return Err(format!("bad header pair {pair}"));
        };
        let value = match value {
            Value::Null => None,
            Value::String(s) => Some(s.as_bytes().to_vec()),
            other => return Err(format!("bad header value {other}")),
        };
        join(&mut set, name.to_ascii_lowercase(), value);
    }
    Ok(set)
}

fn show_set(set: &HeaderSet) -> String {
    set.iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}: {}", show(v)),
            None => format!("{n}: <any>"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs between an expected origin request and a recorded one.
fn compare_request(want: &Value, got: &Recorded) -> Vec<String> {
    let mut diffs = Vec::new();
    if let Some(e) = &got.error {
        diffs.push(format!("unreadable request ({e}): {}", show(&got.body)));
        return diffs;
    }
    let s = |k: &str| want.get(k).and_then(Value::as_str).unwrap_or_default();
    if got.method != s("method").as_bytes() {
        diffs.push(format!(
            "method {} (want {:?})",
            show(&got.method),
            s("method")
        ));
    }
    if got.target != s("target").as_bytes() {
        diffs.push(format!(
            "target {} (want {:?})",
            show(&got.target),
            s("target")
        ));
    }
    let hosts: Vec<&[u8]> = got
        .headers
        .iter()
        .filter(|(n, _)| n == b"host")
        .map(|(_, v)| v.as_slice())
        .collect();
    if hosts != [s("host").as_bytes()] {
        let hosts: Vec<String> = hosts.iter().map(|h| show(h)).collect();
        diffs.push(format!(
            "host [{}] (want {:?})",
            hosts.join(", "),
            s("host")
        ));
    }
    match expected_set(want.get("headers").unwrap_or(&Value::Null)) {
        Err(e) => diffs.push(format!("corpus: {e}")),
        Ok(want_set) => {
            let got_set = recorded_set(got);
            let mut extra = Vec::new();
            let mut missing = Vec::new();
            let mut wrong = Vec::new();
            for (n, v) in &got_set {
                match want_set.get(n) {
                    None => extra.push(format!(
                        "{n}: {}",
                        v.as_deref().map(show).unwrap_or_default()
                    )),
                    Some(Some(w)) if Some(w) != v.as_ref() => wrong.push(format!(
                        "{n}: {} (want {})",
                        v.as_deref().map(show).unwrap_or_default(),
                        show(w)
                    )),
                    Some(_) => {}
                }
            }
            for n in want_set.keys() {
                if !got_set.contains_key(n) {
                    missing.push(n.clone());
                }
            }
            if !extra.is_empty() {
                diffs.push(format!("unexpected headers [{}]", extra.join("; ")));
            }
            if !missing.is_empty() {
                diffs.push(format!("missing headers [{}]", missing.join(", ")));
            }
            if !wrong.is_empty() {
                diffs.push(format!("wrong header values [{}]", wrong.join("; ")));
            }
            if !diffs.is_empty() && (!extra.is_empty() || !missing.is_empty()) {
                diffs.push(format!(
                    "(received: {}; wanted: {})",
                    show_set(&got_set),
                    show_set(&want_set)
                ));
            }
        }
    }
    if got.body != s("body").as_bytes() {
        diffs.push(format!("body {} (want {:?})", show(&got.body), s("body")));
    }
    diffs
}

fn describe(r: &Recorded) -> String {
    match &r.error {
        Some(e) => format!("<unreadable: {e}>"),
        None => format!("{} {}", show(&r.method), show(&r.target)),
    }
}

/// Runs one case: the list of what differed (empty when it passed).
async fn run_case(
    case: &Value,
    edge: SocketAddr,
    places: &Places,
    origins: &[Recorder],
) -> Vec<String> {
    let mut diffs = Vec::new();
    let request = match (
        case.get("request").and_then(Value::as_str),
        case.get("request_base64").and_then(Value::as_str),
    ) {
        (Some(text), None) => places.bytes(text.as_bytes()),
        (None, Some(b64)) => places.bytes(&base64_decode(b64)),
        _ => return vec!["corpus: needs exactly one of request, request_base64".into()],
    };
    for o in origins {
        o.take();
    }
    let reply = exchange(edge, &request).await;
    // Anything an origin is still receiving lands before it is looked at.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let recorded: Vec<(&str, Vec<Recorded>)> = origins.iter().map(|o| (o.name, o.take())).collect();

    let want_status = case.get("status").and_then(Value::as_u64);
    match reply {
        Err(e) => diffs.push(format!("no response: {e}")),
        Ok(raw) => {
            let resp = parse_response(&raw);
            if resp.status.map(u64::from) != want_status {
                let first = resp
                    .raw_head
                    .lines()
                    .next()
                    .unwrap_or("<nothing>")
                    .to_owned();
                diffs.push(format!(
                    "status {} (want {}); response began {first:?}",
                    resp.status.map_or("none".into(), |s| s.to_string()),
                    want_status.map_or("?".into(), |s| s.to_string())
                ));
            }
            for name in case
                .get("response_headers_absent")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if resp
                    .headers
                    .iter()
                    .any(|(h, _)| h.eq_ignore_ascii_case(name))
                {
                    diffs.push(format!("response header {name} must not reach the client"));
                }
            }
            let wanted = places.json(case.get("response_headers").unwrap_or(&Value::Null));
            for pair in wanted.as_array().into_iter().flatten() {
                let (Some(n), Some(v)) = (
                    pair.get(0).and_then(Value::as_str),
                    pair.get(1).and_then(Value::as_str),
                ) else {
                    diffs.push(format!("corpus: bad response header {pair}"));
                    continue;
                };
                let got: Vec<&[u8]> = resp
                    .headers
                    .iter()
                    .filter(|(h, _)| h.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.as_slice())
                    .collect();
                if !got.contains(&v.as_bytes()) {
                    let got: Vec<String> = got.iter().map(|g| show(g)).collect();
                    diffs.push(format!(
                        "response header {n}: [{}] (want {v:?})",
                        got.join(", ")
                    ));
                }
            }
        }
    }

    let expected = places.json(case.get("origin").unwrap_or(&Value::Null));
    let expected: Vec<Value> = match expected {
        Value::Null => Vec::new(),
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        other => return vec![format!("corpus: bad origin {other}")],
    };
    for (name, got) in &recorded {
        let want: Vec<&Value> = expected
            .iter()
            .filter(|e| e.get("at").and_then(Value::as_str) == Some(name))
            .collect();
        if got.len() != want.len() {
            let seen: Vec<String> = got.iter().map(describe).collect();
            diffs.push(format!(
                "origin {name} received {} request(s) [{}], want {}",
                got.len(),
                seen.join(", "),
                want.len()
            ));
        }
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            for d in compare_request(w, g) {
                diffs.push(format!("origin {name} request {}: {d}", i + 1));
            }
        }
    }
    diffs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_build_answers_the_raw_request_corpus_the_same_way() {
    let corpus = corpus();
    let origins = vec![
        Recorder::start("old").await,
        Recorder::start("new").await,
        Recorder::start("outside").await,
    ];
    let closed = closed_port().await;
    let url = |a: &str| format!("http://{a}");
    let (old, new) = (origins[0].addr.to_string(), origins[1].addr.to_string());
    // The outside origin runs but is deliberately not on the allow-list.
    let setup = EdgeSetup {
        bootstrap: Some(url(&old)),
        allow: vec![url(&old), url(&new), url(&closed)],
    };
    let edge = start_edge(setup, Arc::new(MemoryKv::default())).await;
    let mut places = Places(vec![
        ("{{edge}}".into(), edge.addr.to_string()),
        ("{{old}}".into(), old),
        ("{{new}}".into(), new),
        ("{{outside}}".into(), origins[2].addr.to_string()),
        ("{{closed}}".into(), closed),
    ]);

    let config: ConfigDoc = serde_json::from_value(places.json(&corpus["config"]))
        .expect("the corpus config is a valid config document");
    let (body, signature) = envelope(1, config);
    let (status, reply) = push(&client(), edge.addr, body, &signature).await;
    assert_eq!(status, 200, "the corpus config is applied: {reply}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    places.0.extend([
        ("{{signature}}".into(), signature),
        ("{{read_stamp}}".into(), secret().read_stamp(now)),
        (
            "{{stale_read_stamp}}".into(),
            secret().read_stamp(now - 3600),
        ),
        (
            "{{stranger_read_stamp}}".into(),
            rollout_core::SecretKey::from_seed([2; 32]).read_stamp(now),
        ),
    ]);
    for o in &origins {
        o.take();
    }

    let cases = corpus["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("every case has a name");
        assert!(
            case["why"].as_str().is_some_and(|w| !w.is_empty()),
            "case {name:?} says why"
        );
        // Platform exceptions are for runtimes that answer before the edge's
        // code runs; rollout-host runs the component on every request.
        assert!(
            case["platform"].get("rollout-host").is_none(),
            "case {name:?}: rollout-host has no platform exceptions"
        );
        let diffs = run_case(case, edge.addr, &places, &origins).await;
        if diffs.is_empty() {
            println!("pass  {name}");
        } else {
            println!("FAIL  {name}");
            failures.push(format!("- {name}\n    {}", diffs.join("\n    ")));
        }
    }
    println!(
        "rollout-host: {} of {} corpus cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "rollout-host: {} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
