//! Support for the end-to-end tests: loopback origins that echo what reached
//! them, signed envelopes, and edges running the built component.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use rollout_core::{ConfigDoc, Digest, EnvelopeDoc, SecretKey};
use rollout_host::{AllowList, Edge, KvBackend, MemoryKv, Metrics, RunningEdge, Runtime};
use sha2::{Digest as _, Sha256};

/// The component under test: `$ROLLOUT_COMPONENT`, or the workspace's release build.
pub fn component_path() -> PathBuf {
    match std::env::var_os("ROLLOUT_COMPONENT") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rollout_host::COMPONENT_PATH),
    }
}

/// The compiled component, loaded once per test binary.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| match Runtime::load(&component_path()) {
            Ok(r) => Arc::new(r),
            Err(e) => panic!("{e:#}\n(these tests run the built edge component)"),
        })
        .clone()
}

/// A loopback origin that answers with JSON describing the request it got.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has served.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts an origin that names itself `name` in every answer.
    ///
    /// Paths: `/big/N` answers N deterministic bytes (SHA-256 in
    /// `x-body-sha256`); `/status/N` answers status N; anything else echoes
    /// method, path, headers and the request body's SHA-256 as JSON.
    pub async fn start(name: &'static str) -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        answer(name, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Origin { addr, hits, task }
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Deterministic bytes for large bodies.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

async fn answer(
    name: &'static str,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<OriginBody>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(n) = path
        .strip_prefix("/big/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let body = pattern(n);
        let digest = hex::encode(Sha256::digest(&body));
        // Sent in 64 KiB frames so the edge relays a stream, not one buffer.
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
            .chunks(64 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        let mut resp = hyper::Response::new(stream.boxed());
        resp.headers_mut()
            .insert("x-body-sha256", digest.parse().expect("hex header"));
        resp.headers_mut()
            .insert("x-origin", name.parse().expect("name header"));
        return Ok(resp);
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (n, v) in req.headers() {
        headers
            .entry(n.to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "origin": name,
        "method": method,
        "path": path_and_query,
        "headers": headers,
        "body_sha256": hex::encode(Sha256::digest(&body)),
        "body_len": body.len(),
    });
    let mut resp = hyper::Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    resp.headers_mut()
        .insert("x-origin", name.parse().expect("name header"));
    Ok(resp)
}

/// The signing key the test edges trust.
pub fn secret() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

/// A config splitting one default route between `old` and `new` by
/// `header:x-user-id`, with debug headers on; `extra` is merged into the route.
pub fn config(old: &str, new: &str, weight: f64, extra: serde_json::Value) -> ConfigDoc {
    let mut route = serde_json::json!({
        "id": "web",
        "old": old,
        "new": new,
        "new_weight": weight,
        "key": ["header:x-user-id", "cookie:rollout_id"],
        "assign_cookie": true,
    });
    if let (Some(r), Some(e)) = (route.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    serde_json::from_value(
        serde_json::json!({"schema": 1, "debug_headers": true, "routes": [route]}),
    )
    .expect("test config is well-formed")
}

/// A signed envelope: the body and its `rollout-signature` value, stamped
/// now as the control service stamps every push.
pub fn envelope(version: u64, config: ConfigDoc) -> (Vec<u8>, String) {
    let body = EnvelopeDoc {
        version,
        parent: None,
        issued_at: "2026-11-27T08:00:00Z".into(),
        actor: "test".into(),
        reason: format!("test version {version}"),
        config,
        keys: None,
    }
    .to_body();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = secret()
        .stamp(&secret().sign(&body), &Digest::of(&body), now)
        .expect("a key stamps its own signature");
    (body, signature)
}

/// The digest the edge reports for an envelope body.
pub fn digest(body: &[u8]) -> String {
    Digest::of(body).to_string()
}

/// Options for a test edge.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    /// `old_origin` variable (bootstrap); `None` leaves it unset.
    pub bootstrap: Option<String>,
    /// Allowed outbound origins.
    pub allow: Vec<String>,
}

/// Starts an edge with the test public key and `kv` as its store.
pub async fn start_edge(setup: EdgeSetup, kv: Arc<dyn KvBackend>) -> RunningEdge {
    start_edge_with_metrics(setup, kv, None).await
}

/// [`start_edge`], recording into `metrics` when given.
pub async fn start_edge_with_metrics(
    setup: EdgeSetup,
    kv: Arc<dyn KvBackend>,
    metrics: Option<Arc<Metrics>>,
) -> RunningEdge {
    RunningEdge::start_with_metrics(
        runtime(),
        test_edge(setup, kv),
        "127.0.0.1:0".parse().expect("addr"),
        metrics,
    )
    .await
    .expect("edge starts")
}

/// An edge with the test public key and `kv` as its store, not yet serving.
pub fn test_edge(setup: EdgeSetup, kv: Arc<dyn KvBackend>) -> Edge {
    let mut variables =
        HashMap::from([("public_key".to_owned(), secret().public_key().to_string())]);
    if let Some(b) = setup.bootstrap {
        variables.insert("old_origin".to_owned(), b);
    }
    Edge {
        kv,
        variables,
        allow: AllowList::new(&setup.allow).expect("allow list"),
    }
}

/// A metrics listener serving in the background; stops when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsEndpoint {
    /// Serves `metrics` on a free loopback port.
    pub async fn start(metrics: Arc<Metrics>) -> MetricsEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let addr = listener.local_addr().expect("metrics addr");
        let task = tokio::spawn(rollout_host::serve_metrics(metrics, listener));
        MetricsEndpoint { addr, task }
    }

    /// `GET /metrics`: the exposition text, after checking its content type.
    pub async fn scrape(&self, client: &reqwest::Client) -> String {
        let resp = client
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("scrape reaches the metrics listener");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "content-type"),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        resp.text().await.expect("exposition text")
    }
}

/// The value of `series` (name and labels exactly as rendered) in an
/// exposition, as an integer; panics when absent or not an integer.
pub fn sample(exposition: &str, series: &str) -> u64 {
    let value = exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{exposition}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{series} is {value:?}, not an integer"))
}

/// Starts an edge in front of `old` and `new` with an in-memory store.
pub async fn edge_for(old: &Origin, new: &Origin) -> RunningEdge {
    let setup = EdgeSetup {
        bootstrap: Some(old.url()),
        allow: vec![old.url(), new.url()],
    };
    start_edge(setup, Arc::new(MemoryKv::default())).await
}

/// An HTTP client that never pools across tests and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// PUTs an envelope to an edge's admin endpoint: (status, JSON reply).
pub async fn push(
    client: &reqwest::Client,
    edge: SocketAddr,
    body: Vec<u8>,
    signature: &str,
) -> (u16, serde_json::Value) {
    let resp = client
        .put(format!("http://{edge}{}", rollout_core::edge::ADMIN_PATH))
        .header(rollout_core::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .expect("push reaches the edge");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("admin replies JSON"))
}

/// What the edge reports as applied: (version, digest).
pub async fn applied(client: &reqwest::Client, edge: SocketAddr) -> (u64, Option<String>) {
    let json: serde_json::Value = client
        .get(format!("http://{edge}{}", rollout_core::edge::ADMIN_PATH))
        .send()
        .await
        .expect("get reaches the edge")
        .json()
        .await
        .expect("json");
    (
        json["version"].as_u64().unwrap_or(0),
        json["digest"].as_str().map(str::to_owned),
    )
}

/// GETs `path` through the edge as user `key`.
pub async fn get_as(
    client: &reqwest::Client,
    edge: SocketAddr,
    path: &str,
    key: &str,
) -> reqwest::Response {
    client
        .get(format!("http://{edge}{path}"))
        .header("x-user-id", key)
        .send()
        .await
        .expect("request reaches the edge")
}

/// GETs `/` through the edge as user `key`: (arm header, origin that answered).
pub async fn arm_for(client: &reqwest::Client, edge: SocketAddr, key: &str) -> (String, String) {
    let resp = get_as(client, edge, "/", key).await;
    let arm = header(&resp, "x-rollout-arm");
    let origin = header(&resp, "x-origin");
    (arm, origin)
}

/// A response header as text ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
