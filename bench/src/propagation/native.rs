//! Native in-process edges for the fleet-size rows: a hyper server per edge
//! on loopback that answers the admin endpoint with the same core machines
//! the Spin component calls (`router/spin/src/component.rs`), with no Wasm
//! around them. Same checks (`request::receive`, `admin::begin` with the
//! wall clock), the same push rule (`Push::finish`, i.e. `receive_push`
//! with `Trust` holding the edge's keys and clock), the same stored value
//! (one frame under `KV_ACTIVE`, written by compare-and-swap in rollout-host's
//! in-memory store) and the same replies and status codes. Anything but the
//! admin endpoint is answered 501: these edges proxy nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use rollout_core::edge::admin::{self, AdminStep, PushStep, Swap};
use rollout_core::edge::request::{self, RawRequest, Target};
use rollout_core::edge::{Answer, KV_ACTIVE};
use rollout_host::KvBackend;

/// One native edge, serving until dropped.
#[derive(Debug)]
pub struct NativeEdge {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NativeEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NativeEdge {
    /// Serves an edge on a free loopback port with `kv` as its store (the
    /// fleet gives each edge rollout-host's in-memory store, empty),
    /// trusting `public_key` (the `public_key` variable of a Spin edge).
    pub async fn start(kv: Arc<dyn KvBackend>, public_key: String) -> anyhow::Result<NativeEdge> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let public_key: Arc<str> = public_key.into();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (kv, public_key) = (kv.clone(), public_key.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (kv, public_key) = (kv.clone(), public_key.clone());
                        async move {
                            let answer = handle(&*kv, &public_key, peer, req).await;
                            Ok::<_, std::convert::Infallible>(response(answer))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(NativeEdge { addr, task })
    }
}

fn response(answer: Answer) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.body)));
    // Every status the machines give is a constant between 200 and 503.
    *resp.status_mut() = hyper::StatusCode::from_u16(answer.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_bytes(&value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// What the component's `handle` does with a request, for the admin
/// endpoint: core's request checks, then core's admin machine.
async fn handle(
    kv: &dyn KvBackend,
    public_key: &str,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Answer {
    let method = req.method().as_str().to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let headers: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let client_ip = peer.ip().to_string();
    let raw = RawRequest {
        method: &method,
        target: &target,
        authority: None,
        headers: &headers,
        client_ip: Some(&client_ip),
        https: false,
    };
    match request::receive(&raw) {
        Err(answer) => answer,
        Ok(Target::Admin) => admin(kv, public_key, &method, &headers, req.into_body()).await,
        Ok(Target::Proxy(_)) => {
            Answer::text(501, "a native bench edge serves only the admin endpoint")
        }
    }
}

/// The component's `admin`: `GET` / `PUT` on the admin path, core's admin
/// machine over a compare-and-swap of the one stored value.
async fn admin(
    kv: &dyn KvBackend,
    public_key: &str,
    method: &str,
    headers: &[(String, Vec<u8>)],
    body: Incoming,
) -> Answer {
    let read = kv.get(KV_ACTIVE).map_err(|e| format!("{e:#}"));
    let stored = match &read {
        Ok(value) => Ok(value.as_deref()),
        Err(e) => Err(e.as_str()),
    };
    // The wall clock, for push stamps, read as the component reads it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let push = match admin::begin(method, headers, stored, Ok(public_key), now) {
        AdminStep::Answer(answer) => return answer,
        AdminStep::ReadBody(push) => push,
    };
    let body = match read_limited(body, push.limit()).await {
        Ok(Some(body)) => body,
        Ok(None) => return push.too_large(),
        Err(()) => return push.unreadable(),
    };
    // `begin` answered 503 already when the store could not be read.
    let Ok(read) = read else {
        return Answer::text(500, "key-value store unavailable");
    };
    match push.finish(&body) {
        PushStep::Answer(answer) => answer,
        PushStep::Swap(swap) => swap_in(kv, read, swap),
    }
}

/// Compare-and-swap until the push lands or the machine answers otherwise.
fn swap_in(kv: &dyn KvBackend, mut read: Option<Vec<u8>>, mut swap: Swap) -> Answer {
    loop {
        match kv.compare_and_swap(KV_ACTIVE, read.as_deref(), &swap.value) {
            Ok(Ok(())) => return swap.done(),
            Err(e) => return swap.failed(read.as_deref(), &format!("{e:#}")),
            Ok(Err(now)) => {
                read = now;
                match swap.conflict(read.as_deref()) {
                    PushStep::Answer(answer) => return answer,
                    PushStep::Swap(again) => swap = again,
                }
            }
        }
    }
}

/// The whole body; `None` when it is over `limit` bytes (reading stops there).
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Option<Vec<u8>>, ()> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.map_err(|_| ())?.into_data() {
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                return Ok(None);
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_host::MemoryKv;

    /// Status and JSON reply of one request (`age_s` left out: it moves
    /// with the clock).
    async fn ask(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let resp = req.send().await.expect("the edge answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let mut json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        if let Some(o) = json.as_object_mut() {
            o.remove("age_s");
        }
        (status, json)
    }

    /// The native edge answers the admin endpoint as the component in
    /// rollout-host does, request for request, and stores the same bytes.
    #[tokio::test]
    async fn answers_and_stores_as_the_component_does() {
        let key = rollout_tests::secret().public_key().to_string();
        let (wasm_kv, native_kv): (Arc<dyn KvBackend>, Arc<dyn KvBackend>) =
            (Arc::new(MemoryKv::default()), Arc::new(MemoryKv::default()));
        let wasm = rollout_tests::start_edge(
            rollout_tests::EdgeSetup {
                bootstrap: None,
                allow: Vec::new(),
            },
            wasm_kv.clone(),
        )
        .await;
        let native = NativeEdge::start(native_kv.clone(), key)
            .await
            .expect("edge");
        let client = rollout_tests::client();
        let doc = |w| {
            rollout_tests::config(
                "http://o.example",
                "http://n.example",
                w,
                serde_json::json!({}),
            )
        };
        let (v2, s2) = rollout_tests::envelope(2, doc(10.0));
        let (v1, s1) = rollout_tests::envelope(1, doc(0.0));
        let (v3, _) = rollout_tests::envelope(3, doc(20.0));
        let put = |addr: SocketAddr, body: Vec<u8>, signature: Option<&str>| {
            let req = client
                .put(format!("http://{addr}{}", rollout_core::edge::ADMIN_PATH))
                .body(body);
            match signature {
                Some(s) => req.header(rollout_core::SIGNATURE_HEADER, s.to_owned()),
                None => req,
            }
        };
        let admin = |addr: SocketAddr| format!("http://{addr}{}", rollout_core::edge::ADMIN_PATH);
        let mut statuses = Vec::new();
        for step in 0..9 {
            let mut answers = Vec::new();
            for addr in [wasm.addr, native.addr] {
                let req = match step {
                    0 => client.get(admin(addr)),
                    1 | 2 => put(addr, v2.clone(), Some(&s2)),
                    3 => client.get(admin(addr)),
                    4 => put(addr, v1.clone(), Some(&s1)),
                    5 => put(addr, v3.clone(), Some(&s2)),
                    6 => put(addr, v3.clone(), None),
                    7 => put(
                        addr,
                        vec![b' '; rollout_core::MAX_ENVELOPE_BYTES + 1],
                        Some(&s2),
                    ),
                    _ => client.delete(admin(addr)),
                };
                answers.push(ask(req).await);
            }
            assert_eq!(answers[0], answers[1], "step {step}");
            statuses.push(answers[0].0);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 409, 401, 401, 413, 405]);
        let stored = |kv: &Arc<dyn KvBackend>| kv.get(KV_ACTIVE).expect("read").expect("a value");
        assert_eq!(stored(&wasm_kv), stored(&native_kv));
    }
}
