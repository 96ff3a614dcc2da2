//! An edge with default limits keeps serving while a thousand slow clients
//! hold connections open.
//!
//! 800 connections send `POST /` with `Content-Length: 100` and then only 4
//! bytes of body; 200 send part of a request head. None of them finishes.
//! Meanwhile ordinary GETs must keep reaching the origin (200) and a signed
//! push to the admin endpoint must be applied. An edge that instantiates the
//! component for a request before its body is in would give every slow
//! upload an instance, run out of them (the pool holds 256) and answer
//! everything else `500` until the slow clients leave.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rollout_tests::*;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const SLOW_UPLOADS: usize = 800;
const SLOW_HEADS: usize = 200;
const ORDINARY: usize = 200;

/// Raises this process's soft limit on open files to at least `want` (both
/// ends of every connection are in this process), within the hard limit.
fn raise_open_files(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let current = current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let target = maximum.map_or(want, |max| max.min(want));
    let raised = Rlimit {
        current: Some(target),
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
        Err(_) => current,
    }
}

/// Opens a connection to `edge` and sends `bytes`, then leaves it open.
async fn slow(edge: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(edge).await.expect("connect to the edge");
    tcp.write_all(bytes).await.expect("send to the edge");
    tcp
}

/// How many of `conns` are still open with nothing received: the edge is
/// still waiting on them.
fn still_waiting(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 1];
    conns
        .iter()
        .filter(|c| {
            matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_leave_traffic_and_pushes_answered() {
    let files = raise_open_files(8192);
    let needed = 2 * (SLOW_UPLOADS + SLOW_HEADS) as u64 + 200;
    assert!(
        files >= needed,
        "this test needs {needed} open files (both ends of each connection); the limit is {files}"
    );
    let started = Instant::now();
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let edge = edge_for(&old, &new).await;

    let upload =
        b"POST / HTTP/1.1\r\nhost: edge.test\r\nx-user-id: slow\r\ncontent-length: 100\r\n\r\nabcd";
    let head = b"GET / HTTP/1.1\r\nhost: edge.test\r\nx-user-id: sl";
    let mut uploads = Vec::with_capacity(SLOW_UPLOADS);
    for _ in 0..SLOW_UPLOADS {
        uploads.push(slow(edge.addr, upload).await);
    }
    let mut heads = Vec::with_capacity(SLOW_HEADS);
    for _ in 0..SLOW_HEADS {
        heads.push(slow(edge.addr, head).await);
    }
    // Let the edge accept and start on all of them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // (status, x-origin, body when not 200), or why there was no answer.
    type Answer = Result<(u16, String, String), String>;
    let answers: Vec<Answer> = futures_util::stream::iter(0..ORDINARY)
        .map(|i| {
            let request = client
                .get(format!("http://{}/page/{i}", edge.addr))
                .header("x-user-id", format!("user-{i}"))
                .send();
            async move {
                let resp = request.await.map_err(|e| e.to_string())?;
                let (status, origin) = (resp.status().as_u16(), header(&resp, "x-origin"));
                let text = match status {
                    200 => String::new(),
                    _ => resp.text().await.unwrap_or_default(),
                };
                Ok((status, origin, text))
            }
        })
        .buffered(8)
        .collect()
        .await;
    let served = answers
        .iter()
        .filter(|a| matches!(a, Ok((200, origin, _)) if origin == "old"))
        .count();

    let (body, signature) = envelope(1, config(&old.url(), &new.url(), 0.0, json!({})));
    let pushed = client
        .put(format!(
            "http://{}{}",
            edge.addr,
            rollout_core::edge::ADMIN_PATH
        ))
        .header(rollout_core::SIGNATURE_HEADER, signature)
        .body(body.clone())
        .send()
        .await;
    let (push_status, push_reply) = match pushed {
        Ok(resp) => (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    };
    let applied = if push_status == 200 {
        applied(&client, edge.addr).await
    } else {
        (0, None)
    };

    let (waiting_uploads, waiting_heads) = (still_waiting(&uploads), still_waiting(&heads));
    let mut failures: Vec<String> = answers
        .iter()
        .filter_map(|a| match a {
            Ok((200, origin, _)) if origin == "old" => None,
            Ok((status, origin, text)) => {
                Some(format!("{status} (x-origin {origin:?}) {:?}", text.trim()))
            }
            Err(e) => Some(e.clone()),
        })
        .collect();
    failures.dedup();
    println!(
        "{} slow connections ({SLOW_UPLOADS} uploads of 4 of 100 bytes, {SLOW_HEADS} half heads); \
         {waiting_uploads} uploads and {waiting_heads} heads still waiting at the end; \
         {served} of {ORDINARY} ordinary GETs answered 200 by the origin; push: {push_status}; \
         {:.1} s",
        SLOW_UPLOADS + SLOW_HEADS,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        served, ORDINARY,
        "ordinary requests failed while slow clients held connections: {failures:?}"
    );
    assert_eq!(push_status, 200, "the push was not applied: {push_reply}");
    assert_eq!(applied, (1, Some(digest(&body))), "the edge holds the push");
    // The slow clients were still connected throughout: the edge waited on
    // them without letting them hold anything scarce.
    assert_eq!(waiting_uploads, SLOW_UPLOADS, "slow uploads still waiting");
    assert_eq!(waiting_heads, SLOW_HEADS, "slow heads still waiting");
}
