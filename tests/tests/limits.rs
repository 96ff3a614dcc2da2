//! rollout-host's limits (`rollout_host::Limits`), each taken to its end with
//! small settings: the instance cap and its admin reserve, the connection
//! cap, the header and body timeouts, the header size, the origin body
//! timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rollout_host::{Limits, MemoryKv, Metrics, RunningEdge};
use rollout_tests::*;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The tests in this file share one component pool (one `Runtime` per test
/// binary); the one that empties it runs alone.
static POOL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// An edge in front of `old` (bootstrap) and `new` under `limits`.
async fn limited_edge(
    old: &Origin,
    new: &Origin,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
) -> RunningEdge {
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    edge_with(setup, limits, metrics).await
}

/// An edge set up by `setup` under `limits`.
async fn edge_with(setup: EdgeSetup, limits: Limits, metrics: Option<Arc<Metrics>>) -> RunningEdge {
    RunningEdge::start_with_limits(
        runtime(),
        test_edge(setup, Arc::new(MemoryKv::default())),
        "127.0.0.1:0".parse().expect("addr"),
        metrics,
        limits,
    )
    .await
    .expect("edge starts")
}

/// A client that gives up after a few seconds rather than hang a test.
fn quick_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Opens a connection to `edge` and sends `bytes`.
async fn send(edge: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(edge).await.expect("connect to the edge");
    tcp.write_all(bytes).await.expect("send to the edge");
    tcp
}

/// A POST of `len` declared bytes that sends only `sent` of them.
fn stalled_upload(path: &str, len: usize, sent: usize) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: edge.test\r\nx-user-id: u\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes();
    request.extend(pattern(sent));
    request
}

/// Everything the edge sends on `tcp` until it closes the connection (EOF or
/// reset), and how long that took; panics if it is still open after 5 s.
async fn until_closed(tcp: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after 5 s; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `n` stalled uploads (see `stalled_upload`), each once the one
/// before has reached `origin`, so that on return each holds an instance.
/// An upload answered 503 (an instance still held by an earlier request
/// that is finishing) is sent again; panics if one takes over 5 s.
async fn hold_instances(edge: SocketAddr, origin: &Origin, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    while held.len() < n {
        let deadline = Instant::now() + Duration::from_secs(5);
        let before = origin.hits.load(Ordering::SeqCst);
        let mut tcp = send(edge, &stalled_upload("/upload", 200_000, 70_000)).await;
        loop {
            if origin.hits.load(Ordering::SeqCst) > before {
                held.push(tcp);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "upload {} of {n} did not reach the origin within 5 s",
                held.len() + 1
            );
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(10), tcp.read(&mut buf)).await {
                Err(_) => {}
                Ok(Ok(got)) if buf[..got].starts_with(b"HTTP/1.1 503") => break,
                Ok(got) => panic!(
                    "upload {} answered before it reached the origin: {got:?} {:?}",
                    held.len() + 1,
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
    }
    held
}

/// GETs `/` until the answer has `status`, for up to 5 s.
async fn await_status(client: &reqwest::Client, edge: SocketAddr, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = client
            .get(format!("http://{edge}/"))
            .header("x-user-id", "probe")
            .send()
            .await
            .map(|r| r.status().as_u16());
        if got.as_ref().ok() == Some(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} within 5 s (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_instance_taken_traffic_gets_503_and_pushes_still_land() {
    let _pool = POOL.read().await;
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let limits = Limits {
        max_instances: 4,
        admin_reserved: 1,
        ..Limits::default()
    };
    let metrics = Arc::new(Metrics::default());
    let edge = limited_edge(&old, &new, limits, Some(metrics.clone())).await;
    let client = quick_client();
    await_status(&client, edge.addr, 200).await;

    // Bodies over the 64 KiB read ahead stream to the component, which sends
    // them on; the origin waits for the rest, so each holds an instance.
    let uploads = hold_instances(edge.addr, &old, 3).await;
    await_status(&client, edge.addr, 503).await;

    let mut refused = 0;
    for i in 0..20 {
        let resp = client
            .get(format!("http://{}/page/{i}", edge.addr))
            .header("x-user-id", format!("user-{i}"))
            .send()
            .await
            .expect("the edge answers");
        assert_eq!(resp.status(), 503, "request {i} with every instance taken");
        assert_eq!(header(&resp, "retry-after"), "1");
        refused += 1;
    }

    // The admin endpoint has its reserved instance.
    let (body, signature) = envelope(1, config(&old.url(), &new.url(), 0.0, json!({})));
    let (status, reply) = push(&client, edge.addr, body.clone(), &signature).await;
    assert_eq!(
        status, 200,
        "push with every public instance taken: {reply}"
    );
    assert_eq!(
        applied(&client, edge.addr).await,
        (1, Some(digest(&body))),
        "the edge holds the push"
    );

    let shed = sample(
        &metrics.render(),
        r#"rollout_edge_shed_total{limit="instances"}"#,
    );
    assert!(shed >= refused, "{shed} counted, {refused} refused");

    // Once the slow clients leave, their instances are free again.
    drop(uploads);
    await_status(&client, edge.addr, 200).await;
    println!("instance cap 4 (1 for admin): {refused} GETs got 503 + retry-after, the push 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_gets_503_and_is_closed() {
    let _pool = POOL.read().await;
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let edge = limited_edge(&old, &new, limits, None).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(send(edge.addr, b"GET / HTTP/1.1\r\nhost: edge.test\r\n").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = send(edge.addr, b"GET / HTTP/1.1\r\nhost: edge.test\r\n\r\n").await;
    let (got, _) = until_closed(&mut extra).await;
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 503"), "{got}");
    assert!(got.contains("retry-after: 1\r\n"), "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");

    // A held connection that leaves makes room.
    drop(held.pop());
    await_status(&quick_client(), edge.addr, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_and_stalled_bodies_get_408_or_are_cut() {
    let _pool = POOL.read().await;
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let timeout = Duration::from_millis(300);
    let limits = Limits {
        header_timeout: timeout,
        body_timeout: timeout,
        ..Limits::default()
    };
    let edge = limited_edge(&old, &new, limits, None).await;
    let took_about_the_timeout = |took: Duration| took >= timeout / 2 && took < timeout * 8;

    // Part of a head: closed, unanswered.
    let mut tcp = send(edge.addr, b"GET / HTTP/1.1\r\nhost: edge.test\r\n").await;
    let (got, took) = until_closed(&mut tcp).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took_about_the_timeout(took),
        "partial head closed after {took:?}"
    );

    // A kept-alive connection that idles is closed after the same time.
    let mut tcp = send(edge.addr, b"GET / HTTP/1.1\r\nhost: edge.test\r\n\r\n").await;
    let (got, took) = until_closed(&mut tcp).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        took_about_the_timeout(took),
        "idle connection closed after {took:?}"
    );

    // A small body that stalls (read in the host): 408, then closed.
    let mut tcp = send(edge.addr, &stalled_upload("/", 100, 4)).await;
    let (got, took) = until_closed(&mut tcp).await;
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 408"), "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");
    assert!(took_about_the_timeout(took), "408 after {took:?}");

    // A large body that stalls before anything went to an origin (the admin
    // endpoint reads a push whole): 408.
    let mut put = format!(
        "PUT {} HTTP/1.1\r\nhost: edge.test\r\ncontent-length: 200000\r\n\r\n",
        rollout_core::edge::ADMIN_PATH
    )
    .into_bytes();
    put.extend(pattern(70_000));
    let mut tcp = send(edge.addr, &put).await;
    let (got, _) = until_closed(&mut tcp).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // A large body that stalls after the request went to the origin: the
    // connection is cut, unanswered.
    let hits = old.hits.load(Ordering::SeqCst);
    let mut tcp = send(edge.addr, &stalled_upload("/upload", 200_000, 70_000)).await;
    let (got, took) = until_closed(&mut tcp).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(took_about_the_timeout(took), "cut after {took:?}");
    assert_eq!(
        old.hits.load(Ordering::SeqCst),
        hits + 1,
        "the request reached the origin before its body stalled"
    );

    // A head over the size limit: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nhost: edge.test\r\nx-big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let mut tcp = send(edge.addr, big.as_bytes()).await;
    let (got, _) = until_closed(&mut tcp).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");

    // And the edge serves on.
    await_status(&quick_client(), edge.addr, 200).await;
}

/// An origin that answers `/stall` with a head and the first 5 of 100
/// promised bytes, and `/stall-chunked` with a chunked head and one chunk of
/// 5 bytes, then sends nothing more and never closes; every other path gets
/// a whole 200.
async fn stalling_origin() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                // One request per connection, answered once its head is in.
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (answer, stall): (&[u8], bool) = if head.starts_with(b"GET /stall ") {
                    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello", true)
                } else if head.starts_with(b"GET /stall-chunked ") {
                    let chunked =
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
                    (chunked, true)
                } else {
                    let whole =
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    (whole, false)
                };
                let _ = tcp.write_all(answer).await;
                if stall {
                    // Holds the connection open, silent, until the test ends.
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_body_that_stalls_is_cut_and_frees_its_instance() {
    let _pool = POOL.read().await;
    let (origin, _task) = stalling_origin().await;
    let url = format!("http://{origin}");
    let setup = EdgeSetup {
        bootstrap: Some(url.clone()),
        allow: vec![url],
    };
    // One instance for traffic: while the stalled response holds it, every
    // other request would get 503.
    let limits = Limits {
        max_instances: 2,
        admin_reserved: 1,
        origin_body_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let edge = edge_with(setup, limits, None).await;

    // Content-Length, and chunked: either way the client gets what the
    // origin sent and then a cut, never an ended message.
    for (path, sent) in [
        ("/stall", &b"hello"[..]),
        ("/stall-chunked", &b"5\r\nhello\r\n"[..]),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: edge.test\r\nx-user-id: u\r\n\r\n");
        let mut tcp = send(edge.addr, request.as_bytes()).await;
        let (got, took) = until_closed(&mut tcp).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4..];
        assert_eq!(
            body, sent,
            "{path}: what the origin sent, then the response cut"
        );
        assert!(
            took >= Duration::from_millis(900),
            "{path}: cut after the origin body timeout, not before: {took:?}"
        );
    }

    // The instance is free again: the next request is served, not shed.
    let client = quick_client();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let resp = client
            .get(format!("http://{}/next", edge.addr))
            .header("x-user-id", "u2")
            .send()
            .await
            .expect("the edge answers");
        if resp.status() == 200 {
            assert_eq!(resp.text().await.expect("body"), "ok");
            break;
        }
        assert_eq!(
            resp.status(),
            503,
            "only shed while the instance is torn down"
        );
        assert!(
            Instant::now() < deadline,
            "the stalled request still holds its instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_503_not_500() {
    let _pool = POOL.write().await;
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    // A cap above the pool, so the pool itself runs out.
    let limits = Limits {
        max_instances: 2 * rollout_host::POOL_INSTANCES as usize,
        admin_reserved: 0,
        ..Limits::default()
    };
    let edge = limited_edge(&old, &new, limits, None).await;
    let uploads = hold_instances(edge.addr, &old, rollout_host::POOL_INSTANCES as usize).await;
    let client = quick_client();
    await_status(&client, edge.addr, 503).await;
    let resp = client
        .get(format!("http://{}/", edge.addr))
        .header("x-user-id", "u")
        .send()
        .await
        .expect("the edge answers");
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), "1");
    drop(uploads);
    await_status(&client, edge.addr, 200).await;
}

/// A per-core edge (`threads` threads) in front of `old` (bootstrap) and
/// `new` under `limits`, and a client that opens a connection per request,
/// so SO_REUSEPORT spreads them over the threads. The threads serve until
/// the test binary exits.
fn per_core_edge(
    old: &Origin,
    new: &Origin,
    threads: usize,
    limits: Limits,
) -> (SocketAddr, reqwest::Client) {
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    let addr = rollout_host::serve_per_core_with(
        runtime(),
        Arc::new(test_edge(setup, Arc::new(MemoryKv::default()))),
        "127.0.0.1:0".parse().expect("addr"),
        threads,
        None,
        limits,
    )
    .expect("per-core edge starts");
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    (addr, fresh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_made_ahead_never_take_a_small_cap_from_another_thread() {
    let _pool = POOL.read().await;
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    // One instance for two serving threads: a thread that kept it made
    // ahead for its own next request would leave the other shedding all
    // its traffic.
    let limits = Limits {
        max_instances: 1,
        admin_reserved: 0,
        ..Limits::default()
    };
    let (addr, fresh) = per_core_edge(&old, &new, 2, limits);
    for i in 0..40 {
        let resp = fresh
            .get(format!("http://{addr}/page/{i}"))
            .header("x-user-id", format!("user-{i}"))
            .send()
            .await
            .expect("the edge answers");
        assert_eq!(resp.status(), 200, "request {i}, one at a time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_on_idle_threads_never_shed_requests_under_the_cap() {
    // Alone: sixteen serving threads and 24 held uploads would starve the
    // other tests' edges of the two cores.
    let _pool = POOL.write().await;
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    // 24 instances for 16 threads: once every thread has made one ahead,
    // 16 are spares and 8 (`SPARE_HEADROOM`) stay free. A thread's spare
    // serves only that thread, so uploads that SO_REUSEPORT puts on the
    // other threads must free those spares rather than be shed: all 24 are
    // served. (Without that, some are shed unless every one of the 16
    // threads happens to get an upload.)
    let limits = Limits {
        max_instances: 24,
        admin_reserved: 0,
        body_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let (addr, fresh) = per_core_edge(&old, &new, 16, limits);
    for i in 0..160 {
        let resp = fresh
            .get(format!("http://{addr}/page/{i}"))
            .header("x-user-id", format!("user-{i}"))
            .send()
            .await
            .expect("the edge answers");
        assert_eq!(resp.status(), 200);
    }
    // 24 uploads, each holding an instance: exactly the cap.
    let mut uploads = Vec::new();
    for _ in 0..24 {
        uploads.push(send(addr, &stalled_upload("/upload", 200_000, 70_000)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut shed = 0;
    for tcp in &mut uploads {
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), tcp.read(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 503")
        {
            shed += 1;
        }
    }
    assert_eq!(shed, 0, "uploads shed under the cap of 24");
}
