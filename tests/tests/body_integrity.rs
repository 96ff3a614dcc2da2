//! Body integrity, both ways, through rollout-host running the shipped
//! component: a body that breaks on one side reaches the other side broken
//! (the connection cut, the message unfinished), never as a shorter message
//! that ends properly; no transfer coding is dropped on the way; and an
//! origin connection whose body broke is never used again.
//!
//! Clients and origins are raw TCP, so the exact bytes each side got are
//! what the assertions read. No config is pushed: every request goes to the
//! bootstrap origin, with nothing held back for failover.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_host::{MemoryKv, RunningEdge};
use rollout_tests::{EdgeSetup, start_edge};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The longest any one step may take.
const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ HTTP/1.1 messages

/// A message's start line and header fields (names lowercased).
#[derive(Debug, Clone)]
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The status of a response.
    fn status(&self) -> Option<u16> {
        self.start.split(' ').nth(1)?.parse().ok()
    }

    /// The target of a request.
    fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }
}

/// How far the bytes of one message go.
#[derive(Debug)]
enum Parsed {
    /// A whole message, properly ended, `len` bytes long.
    Complete {
        head: Head,
        body: Vec<u8>,
        len: usize,
    },
    /// It has not ended (yet); the head, when that much arrived.
    Partial(Option<Head>),
    /// Its framing is broken.
    Bad(String),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A chunked body at the start of `buf`: `(body, bytes used)`, `None` while
/// it has not ended.
fn chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(end) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[at..at + end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = if !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            usize::from_str_radix(size_text, 16).map_err(|e| format!("chunk size: {e}"))?
        } else {
            return Err(format!("bad chunk size line {line:?}"));
        };
        at += end + 2;
        if size == 0 {
            loop {
                let Some(end) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
}

/// Parses the message at the start of `buf`. `response`: a response, whose
/// body without a length runs to the close (`eof`: the connection closed).
fn parse(buf: &[u8], response: bool, eof: bool) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Partial(None);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let head = Head { start, headers };
    let at = end + 4;
    let rest = &buf[at..];
    let codings = head.get("transfer-encoding").join(",").to_ascii_lowercase();
    let length = head
        .get("content-length")
        .first()
        .map(|v| v.parse::<usize>());
    let bodiless = response
        && head
            .status()
            .is_some_and(|s| s < 200 || s == 204 || s == 304);
    if bodiless {
        return Parsed::Complete {
            head,
            body: Vec::new(),
            len: at,
        };
    }
    if !codings.is_empty() {
        if codings.rsplit(',').next().map(str::trim) == Some("chunked") {
            return match chunked(rest) {
                Ok(Some((body, used))) => Parsed::Complete {
                    head,
                    body,
                    len: at + used,
                },
                Ok(None) => Parsed::Partial(Some(head)),
                Err(e) => Parsed::Bad(e),
            };
        }
        if !response {
            return Parsed::Bad(format!("request coded {codings:?}"));
        }
    } else if let Some(length) = length {
        let Ok(length) = length else {
            return Parsed::Bad("bad content-length".into());
        };
        if rest.len() < length {
            return Parsed::Partial(Some(head));
        }
        return Parsed::Complete {
            head,
            body: rest[..length].to_vec(),
            len: at + length,
        };
    } else if !response {
        return Parsed::Complete {
            head,
            body: Vec::new(),
            len: at,
        };
    }
    if eof {
        Parsed::Complete {
            head,
            body: rest.to_vec(),
            len: buf.len(),
        }
    } else {
        Parsed::Partial(Some(head))
    }
}

fn show(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(600)]).into_owned();
    if bytes.len() > 600 {
        format!("{shown:?}... ({} bytes)", bytes.len())
    } else {
        format!("{shown:?}")
    }
}

// ------------------------------------------------------------ a raw origin

/// What one connection to an origin carried.
#[derive(Debug, Clone, Default)]
struct ConnLog {
    /// Every byte the edge sent on it.
    bytes: Vec<u8>,
    /// The targets of the requests it carried whole, in order.
    requests: Vec<String>,
    /// The edge closed it (or it broke).
    closed: bool,
}

/// What the origin answers to a request for a target: the raw bytes, and
/// whether it closes the connection after them.
type Script = Arc<dyn Fn(&str) -> (Vec<u8>, bool) + Send + Sync>;

/// A loopback origin on raw TCP: answers each whole request with its script,
/// keeps connections alive unless the script closes them, and records every
/// connection and every byte.
#[derive(Debug)]
struct RawOrigin {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<ConnLog>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `200 ok`, kept alive.
fn ok(_: &str) -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        false,
    )
}

impl RawOrigin {
    async fn start(script: impl Fn(&str) -> (Vec<u8>, bool) + Send + Sync + 'static) -> RawOrigin {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let shared = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let index = {
                    let mut conns = shared.lock().expect("origin log");
                    conns.push(ConnLog::default());
                    conns.len() - 1
                };
                tokio::spawn(serve(tcp, index, shared.clone(), script.clone()));
            }
        });
        RawOrigin { addr, conns, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn conns(&self) -> Vec<ConnLog> {
        self.conns.lock().expect("origin log").clone()
    }

    /// Waits until `done` holds for what the origin saw; panics after [`WAIT`].
    async fn wait_for(&self, what: &str, done: impl Fn(&[ConnLog]) -> bool) -> Vec<ConnLog> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let conns = self.conns();
            if done(&conns) {
                return conns;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the origin never saw {what}: {}",
                describe(&conns)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn describe(conns: &[ConnLog]) -> String {
    let each: Vec<String> = conns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "\n  connection {i}: requests {:?}, closed {}, bytes {}",
                c.requests,
                c.closed,
                show(&c.bytes)
            )
        })
        .collect();
    format!("{} connection(s){}", conns.len(), each.concat())
}

async fn serve(mut tcp: TcpStream, index: usize, log: Arc<Mutex<Vec<ConnLog>>>, script: Script) {
    let mut buf = Vec::new();
    let mut at = 0;
    let mut read = vec![0; 64 * 1024];
    loop {
        while let Parsed::Complete { head, len, .. } = parse(&buf[at..], false, false) {
            at += len;
            let target = head.target().to_owned();
            log.lock().expect("origin log")[index]
                .requests
                .push(target.clone());
            let (reply, close) = script(&target);
            if tcp.write_all(&reply).await.is_err() || close {
                let _ = tcp.shutdown().await;
                // Whatever the edge still sends is recorded until it closes.
                close_after_reading(tcp, index, &log).await;
                return;
            }
        }
        match tcp.read(&mut read).await {
            Ok(0) | Err(_) => {
                log.lock().expect("origin log")[index].closed = true;
                return;
            }
            Ok(n) => {
                buf.extend_from_slice(&read[..n]);
                log.lock().expect("origin log")[index]
                    .bytes
                    .extend_from_slice(&read[..n]);
            }
        }
    }
}

async fn close_after_reading(mut tcp: TcpStream, index: usize, log: &Mutex<Vec<ConnLog>>) {
    let mut read = vec![0; 64 * 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut read)).await {
            Ok(Ok(n)) if n > 0 => log.lock().expect("origin log")[index]
                .bytes
                .extend_from_slice(&read[..n]),
            _ => break,
        }
    }
    log.lock().expect("origin log")[index].closed = true;
}

/// Asserts that no connection carried a request to `target` whole.
fn assert_never_whole(conns: &[ConnLog], target: &str) {
    for (i, conn) in conns.iter().enumerate() {
        assert!(
            !conn.requests.iter().any(|t| t == target),
            "the origin received {target} as a complete request on connection {i}: {}",
            describe(conns)
        );
    }
}

// ------------------------------------------------------------ clients

/// An edge in front of `origin`, with no config: everything goes there.
async fn edge_before(origin: &RawOrigin) -> RunningEdge {
    let setup = EdgeSetup {
        bootstrap: Some(origin.url()),
        allow: vec![origin.url()],
    };
    start_edge(setup, Arc::new(MemoryKv::default())).await
}

/// Reads what the edge sends until it closes the connection (or breaks it).
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the edge closes the connection");
    out
}

/// Sends `request` on a fresh connection, half-closes it when `half_close`
/// (the client is gone before its body ended) and reads to the close.
async fn exchange(edge: SocketAddr, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut tcp = TcpStream::connect(edge).await.expect("connect to the edge");
    // The edge may answer and close before it has read everything.
    let _ = tcp.write_all(request).await;
    if half_close {
        let _ = tcp.shutdown().await;
    }
    read_to_close(&mut tcp).await
}

/// A plain GET for `target`, `Connection: close`.
async fn get(edge: SocketAddr, target: &str) -> Vec<u8> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: {edge}\r\nConnection: close\r\n\r\n");
    exchange(edge, request.as_bytes(), false).await
}

/// Asserts that what the client read is no complete response: the edge cut
/// the message (or never began it) instead of ending it.
fn assert_cut(raw: &[u8]) -> Option<Head> {
    println!("client got {}", show(raw));
    match parse(raw, true, true) {
        Parsed::Complete { head, body, .. } => panic!(
            "the client got a complete response ({}, body {}) from a broken one: {}",
            head.start,
            show(&body),
            show(raw)
        ),
        Parsed::Partial(head) => head,
        Parsed::Bad(why) => panic!("the edge sent broken framing ({why}): {}", show(raw)),
    }
}

/// Asserts that the client did not get a success for a request whose body
/// broke: a 4xx answer, or the connection cut.
fn assert_refused(raw: &[u8]) {
    match parse(raw, true, true) {
        Parsed::Complete { head, .. } => {
            let status = head.status().unwrap_or(0);
            assert!(
                (400..500).contains(&status),
                "the client got {status} for a body that broke: {}",
                show(raw)
            );
        }
        Parsed::Partial(head) => assert!(
            head.is_none(),
            "the client got part of a response: {}",
            show(raw)
        ),
        Parsed::Bad(why) => panic!("the edge sent broken framing ({why}): {}", show(raw)),
    }
}

/// The complete response the client read.
fn complete(raw: &[u8]) -> (Head, Vec<u8>) {
    match parse(raw, true, true) {
        Parsed::Complete { head, body, .. } => (head, body),
        other => panic!("expected a complete response, got {other:?}: {}", show(raw)),
    }
}

// ------------------------------------------------------------ client to origin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_chunked_request_and_response_pass_through_properly_ended() {
    let origin = RawOrigin::start(|_| {
        let reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        (reply.to_vec(), false)
    })
    .await;
    let edge = edge_before(&origin).await;
    let request = format!(
        "POST /whole HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        edge.addr
    );
    let (head, body) = complete(&exchange(edge.addr, request.as_bytes(), false).await);
    assert_eq!(head.status(), Some(200), "{head:?}");
    assert_eq!(body, b"hello world");
    let conns = origin.conns();
    let sent: Vec<&ConnLog> = conns.iter().filter(|c| !c.bytes.is_empty()).collect();
    assert_eq!(sent.len(), 1, "{}", describe(&conns));
    let Parsed::Complete { body, .. } = parse(&sent[0].bytes, false, false) else {
        panic!("the origin got no whole request: {}", describe(&conns));
    };
    assert_eq!(body, b"hello world", "{}", describe(&conns));
}

/// How a client's upload breaks.
#[derive(Debug, Clone, Copy)]
enum Break {
    /// These bytes follow what was sent whole (a malformed chunk size).
    With(&'static [u8]),
    /// The client stops sending (half-closes) before the body ended.
    Stop,
}

/// Sends a POST to `target` whose body breaks, twice: small (`hello`, sent
/// in one write) and large (100 000 bytes, more than anything a host holds
/// back, sent whole first, so the origin already has the request streaming
/// when it breaks). Asserts each time that the client got no success, that
/// the origin never received the request whole, and, for the large one,
/// that the origin's connection carrying it was closed with the request
/// unfinished.
async fn upload_breaks(target: &str, content_length: Option<usize>, how: Break) {
    let origin = RawOrigin::start(ok).await;
    let edge = edge_before(&origin).await;
    for size in [5, 100_000] {
        let data = if size == 5 {
            b"hello".to_vec()
        } else {
            vec![b'a'; size]
        };
        let (framing, body) = match content_length {
            Some(length) => (format!("Content-Length: {}\r\n", length * size / 5), data),
            None => {
                let mut body = format!("{size:x}\r\n").into_bytes();
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
                ("Transfer-Encoding: chunked\r\n".to_owned(), body)
            }
        };
        let mut request = format!(
            "POST {target}?size={size} HTTP/1.1\r\nHost: {}\r\n{framing}Connection: close\r\n\r\n",
            edge.addr
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let mut client = TcpStream::connect(edge.addr).await.expect("connect");
        if size == 5 {
            if let Break::With(more) = how {
                request.extend_from_slice(more);
            }
            let _ = client.write_all(&request).await;
        } else {
            client.write_all(&request).await.expect("send the request");
            let head = format!("POST {target}?size={size}");
            origin
                .wait_for("the upload begin", |c| {
                    c.iter().any(|c| find(&c.bytes, head.as_bytes()).is_some())
                })
                .await;
            if let Break::With(more) = how {
                let _ = client.write_all(more).await;
            }
        }
        if let Break::Stop = how {
            let _ = client.shutdown().await;
        }
        let raw = read_to_close(&mut client).await;
        println!("{target}, {size} bytes: the client got {}", show(&raw));
        let conns = origin
            .wait_for("every connection closed", |c| c.iter().all(|c| c.closed))
            .await;
        println!(
            "{target}, {size} bytes: the origin saw {}",
            describe(&conns)
        );
        assert_never_whole(&conns, &format!("{target}?size={size}"));
        for conn in &conns {
            let request = match find(&conn.bytes, b"POST ") {
                Some(at) => &conn.bytes[at..],
                None => continue,
            };
            assert!(
                matches!(parse(request, false, false), Parsed::Partial(Some(_))),
                "the origin got the upload other than cut: {}",
                describe(&conns)
            );
        }
        if size > 5 {
            assert!(
                conns.iter().any(|c| !c.bytes.is_empty()),
                "the large upload never reached the origin"
            );
        }
        assert_refused(&raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_size_reaches_the_origin_as_a_cut_request() {
    upload_breaks("/malformed", None, Break::With(b"ZZ\r\nmore\r\n0\r\n\r\n")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_cut_before_its_last_chunk_reaches_the_origin_cut() {
    upload_breaks("/cut-chunked", None, Break::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_request_cut_short_reaches_the_origin_cut() {
    // Content-Length twice what is sent.
    upload_breaks("/cut-length", Some(10), Break::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_transfer_coding_other_than_chunked_is_501_and_never_forwarded() {
    let origin = RawOrigin::start(ok).await;
    let edge = edge_before(&origin).await;
    // (Transfer-Encoding lines, the status the client gets.) A list that
    // does not end in chunked cannot be framed at all: hyper answers 400
    // (RFC 9112 §6.3) before the edge runs.
    let cases: &[(&[&str], u16)] = &[
        (&["gzip, chunked"], 501),
        (&["chunked, chunked"], 501),
        (&["identity, chunked"], 501),
        (&["gzip", "chunked"], 501),
        (&["GZIP, Chunked"], 501),
        (&["gzip"], 400),
    ];
    for (lines, want) in cases {
        let fields: String = lines
            .iter()
            .map(|l| format!("Transfer-Encoding: {l}\r\n"))
            .collect();
        let request = format!(
            "POST /coded HTTP/1.1\r\nHost: {}\r\n{fields}Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            edge.addr
        );
        let raw = exchange(edge.addr, request.as_bytes(), false).await;
        let (head, _) = complete(&raw);
        assert_eq!(head.status(), Some(*want), "{lines:?}: {}", show(&raw));
    }
    assert!(
        origin.conns().is_empty(),
        "a coded request reached the origin: {}",
        describe(&origin.conns())
    );
    // chunked alone, in any case, is framing the edge passes on.
    let request = format!(
        "POST /plain HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
        edge.addr
    );
    let (head, body) = complete(&exchange(edge.addr, request.as_bytes(), false).await);
    assert_eq!((head.status(), body.as_slice()), (Some(200), &b"ok"[..]));
    let conns = origin.conns();
    assert_eq!(conns.len(), 1, "{}", describe(&conns));
    assert_eq!(conns[0].requests, ["/plain"], "{}", describe(&conns));
}

// ------------------------------------------------------------ origin to client

/// An origin whose every answer is `reply`, closing the connection after it
/// when `close`.
async fn answering(reply: &'static [u8], close: bool) -> RawOrigin {
    RawOrigin::start(move |_| (reply.to_vec(), close)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_closing_before_its_content_length_reaches_the_client_cut() {
    let origin = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello", true).await;
    let edge = edge_before(&origin).await;
    let raw = get(edge.addr, "/short").await;
    let head = assert_cut(&raw);
    if let Some(head) = head {
        assert_eq!(head.status(), Some(200), "{}", show(&raw));
        assert_eq!(head.get("content-length"), ["100"], "{}", show(&raw));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_response_reaches_the_client_cut() {
    let origin = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n",
        false,
    )
    .await;
    let edge = edge_before(&origin).await;
    let raw = get(edge.addr, "/malformed").await;
    if let Some(head) = assert_cut(&raw) {
        assert_eq!(head.status(), Some(200), "{}", show(&raw));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_response_cut_before_its_last_chunk_reaches_the_client_cut() {
    let origin = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        true,
    )
    .await;
    let edge = edge_before(&origin).await;
    let raw = get(edge.addr, "/cut").await;
    if let Some(head) = assert_cut(&raw) {
        assert_eq!(head.status(), Some(200), "{}", show(&raw));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_response_coded_beyond_chunked_is_a_502_never_relayed_stripped() {
    for (reply, close) in [
        (
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                [..],
            false,
        ),
        // Not ending in chunked: the body runs to the close.
        (
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nhello"[..],
            true,
        ),
    ] {
        let origin = answering(reply, close).await;
        let edge = edge_before(&origin).await;
        let raw = get(edge.addr, "/coded").await;
        let (head, body) = complete(&raw);
        assert_eq!(head.status(), Some(502), "{}: {}", show(reply), show(&raw));
        assert!(
            !body.windows(5).any(|w| w == b"hello"),
            "the coded body was relayed: {}",
            show(&raw)
        );
    }
}

// ------------------------------------------------------------ the origin pool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_connection_whose_request_body_broke_is_never_used_again() {
    let origin = RawOrigin::start(ok).await;
    let edge = edge_before(&origin).await;
    let (_, body) = complete(&get(edge.addr, "/first").await);
    assert_eq!(body, b"ok");

    // A chunked upload: one whole chunk, then (once the origin holds part
    // of it, on the pooled connection) a malformed chunk size.
    let mut client = TcpStream::connect(edge.addr).await.expect("connect");
    let chunk = vec![b'a'; 100_000];
    let mut request = format!(
        "POST /broken HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        edge.addr,
        chunk.len()
    )
    .into_bytes();
    request.extend_from_slice(&chunk);
    request.extend_from_slice(b"\r\n");
    client.write_all(&request).await.expect("send the head");
    origin
        .wait_for("part of the upload", |c| {
            c.iter().any(|c| find(&c.bytes, b"POST /broken").is_some())
        })
        .await;
    let _ = client.write_all(b"ZZ\r\n").await;
    let raw = read_to_close(&mut client).await;
    let conns = origin
        .wait_for("the broken upload's connection closed", |c| {
            c.iter()
                .any(|c| c.closed && find(&c.bytes, b"POST /broken").is_some())
        })
        .await;
    assert_never_whole(&conns, "/broken");
    assert_refused(&raw);

    let (_, body) = complete(&get(edge.addr, "/after").await);
    assert_eq!(body, b"ok");
    let conns = origin.conns();
    let broken = conns
        .iter()
        .position(|c| find(&c.bytes, b"POST /broken").is_some())
        .expect("the upload reached the origin");
    let after = conns
        .iter()
        .position(|c| c.requests.iter().any(|t| t == "/after"))
        .expect("the next request reached the origin");
    assert_ne!(
        broken,
        after,
        "the next request went on the connection whose upload broke: {}",
        describe(&conns)
    );
    assert_eq!(
        conns[after].requests,
        ["/after"],
        "the next request arrives on a fresh connection: {}",
        describe(&conns)
    );
    // What the broken connection carried: /first whole, then the upload's
    // head and part of its body, never its end.
    let log = &conns[broken];
    assert_eq!(log.requests, ["/first"], "{}", describe(&conns));
    let upload = &log.bytes[find(&log.bytes, b"POST /broken").unwrap_or(0)..];
    assert!(
        matches!(parse(upload, false, false), Parsed::Partial(Some(_))),
        "the broken upload as the origin read it: {}",
        describe(&conns)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_connection_whose_response_body_broke_is_never_used_again() {
    let origin = RawOrigin::start(|target| {
        if target == "/broken" {
            // A malformed chunk size, and the connection left open.
            let reply =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n";
            (reply.to_vec(), false)
        } else {
            ok(target)
        }
    })
    .await;
    let edge = edge_before(&origin).await;
    let (_, body) = complete(&get(edge.addr, "/first").await);
    assert_eq!(body, b"ok");
    assert_cut(&get(edge.addr, "/broken").await);
    let (_, body) = complete(&get(edge.addr, "/after").await);
    assert_eq!(body, b"ok");
    let conns = origin
        .wait_for("the broken response's connection closed", |c| {
            c.iter()
                .any(|c| c.closed && c.requests.iter().any(|t| t == "/broken"))
        })
        .await;
    let broken = conns
        .iter()
        .position(|c| c.requests.iter().any(|t| t == "/broken"))
        .expect("the request reached the origin");
    let after = conns
        .iter()
        .position(|c| c.requests.iter().any(|t| t == "/after"))
        .expect("the next request reached the origin");
    assert_eq!(
        conns[broken].requests,
        ["/first", "/broken"],
        "{}",
        describe(&conns)
    );
    assert_eq!(
        conns[after].requests,
        ["/after"],
        "the next request arrives on a fresh connection: {}",
        describe(&conns)
    );
}
