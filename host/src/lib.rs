//! rollout-host: runs the rollout edge component locally the way Spin does,
//! so tests, benchmarks and `rollout up` need no Spin install.
//!
//! wasmtime with wasi:http (WASI 0.2), a fresh instance per request from a
//! pre-instantiated component (Spin's model, and why the edge keeps its config
//! in the key-value store), `fermyon:spin/key-value` backed by memory or a
//! SQLite file, `fermyon:spin/variables` from the caller, and outbound HTTP
//! only to allowed origins. Production runs on Spin or another wasi:http host.

mod integrity;
mod keyvalue;
pub mod kv;
mod limits;
mod metrics;
mod outbound;
mod spin;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use rollout_core::edge::ADMIN_PATH;
use tokio::net::{TcpListener, TcpStream};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use kv::{KvBackend, MemoryKv, SqliteKv};
pub use limits::{Limits, POOL_INSTANCES, raise_open_file_limit};
pub use metrics::{Metrics, serve_metrics};
pub use outbound::{AllowList, InvalidAllowEntry};

/// The command that builds the component this host runs.
pub const BUILD_COMMAND: &str = "cargo build --release --target wasm32-wasip2 -p rollout-router";

/// Where the release build of the component lands, relative to the workspace.
pub const COMPONENT_PATH: &str = "target/wasm32-wasip2/release/rollout_router.wasm";

/// The command that builds the kernel component (tests and benchmarks only).
pub const KERNEL_BUILD_COMMAND: &str =
    "cargo build --release --target wasm32-wasip2 -p rollout-kernel";

/// Where the release build of the kernel component lands, relative to the workspace.
pub const KERNEL_PATH: &str = "target/wasm32-wasip2/release/rollout_kernel.wasm";

/// A compiled component, ready to instantiate once per request.
pub struct Runtime {
    pre: ProxyPre<HostState>,
    path: PathBuf,
    /// The component's environment (wasi:cli/environment), NAME=VALUE pairs.
    env: Vec<(String, String)>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn engine() -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    // A wasip2 Rust component holds a few core instances, memories and
    // tables; these totals allow a few hundred requests in flight while
    // reserving far less address space than the defaults.
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(2048)
        .total_memories(512)
        .total_tables(2048)
        .total_stacks(256)
        .max_memory_size(256 << 20)
        .max_core_instances_per_component(32)
        .max_tables_per_component(32)
        .max_memories_per_component(8)
        // Every request gets a fresh instance. By default a freed slot is
        // reset with madvise, which on a multi-threaded host means a TLB
        // shootdown across cores for every request, then page faults to
        // bring the pages back. Keeping the low pages resident and resetting
        // only the ones a request dirtied (PAGEMAP_SCAN, Linux >= 6.7, else
        // memset) avoids both.
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(256 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    profiler(&mut config);
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(pooled) => {
            // Some sandboxes cap virtual address space; run unpooled there.
            tracing::warn!("pooling allocator unavailable ({pooled}); instantiating on demand");
            let mut unpooled = Config::new();
            profiler(&mut unpooled);
            Engine::new(&unpooled).map_err(anyhow::Error::from)
        }
    }
}

/// With the `profiling` feature, `ROLLOUT_HOST_PROFILER=perfmap` (or
/// `jitdump`, `vtune`) tells wasmtime to describe the code it compiles to
/// that profiler, so `perf` names the guest's functions.
#[cfg(feature = "profiling")]
fn profiler(config: &mut Config) {
    let strategy = match std::env::var("ROLLOUT_HOST_PROFILER").as_deref() {
        Ok("perfmap") => wasmtime::ProfilingStrategy::PerfMap,
        Ok("jitdump") => wasmtime::ProfilingStrategy::JitDump,
        Ok("vtune") => wasmtime::ProfilingStrategy::VTune,
        Ok(other) => {
            tracing::warn!("ROLLOUT_HOST_PROFILER={other:?} is none of perfmap, jitdump, vtune");
            return;
        }
        Err(_) => return,
    };
    config.profiler(strategy);
}

#[cfg(not(feature = "profiling"))]
fn profiler(_: &mut Config) {
    if std::env::var_os("ROLLOUT_HOST_PROFILER").is_some() {
        tracing::warn!(
            "ROLLOUT_HOST_PROFILER is ignored: this rollout-host was built without the `profiling` feature"
        );
    }
}

/// Compiles the component at `path` and links everything this host provides
/// (WASI, wasi:http, Spin's key-value and variables, wasi:keyvalue) against it.
fn link(path: &Path, build: &str) -> anyhow::Result<InstancePre<HostState>> {
    if !path.is_file() {
        bail!(
            "component {} not found: build it with `{build}`",
            path.display()
        );
    }
    let engine = engine()?;
    let component = Component::from_file(&engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} is not a loadable WebAssembly component", path.display()))?;
    let mut linker = Linker::<HostState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    spin::key_value::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    spin::variables::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    keyvalue::store::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    keyvalue::atomics::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "{} imports something this host does not provide",
                path.display()
            )
        })
}

impl Runtime {
    /// Compiles the component at `path` and links it against the host.
    pub fn load(path: &Path) -> anyhow::Result<Runtime> {
        let pre = link(path, BUILD_COMMAND)?;
        let pre = ProxyPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "{} does not export wasi:http/incoming-handler",
                    path.display()
                )
            })?;
        Ok(Runtime {
            pre,
            path: path.to_owned(),
            env: Vec::new(),
        })
    }

    /// The component sees `env` as its environment (wasi:cli/environment),
    /// as `environment` in a Spin manifest or `wasmtime serve --env` give it.
    #[must_use]
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Runtime {
        self.env = env;
        self
    }

    /// The imports and exports of the loaded component, by name.
    pub fn interface_names(&self) -> (Vec<String>, Vec<String>) {
        let engine = self.pre.engine();
        let ty = self.pre.instance_pre().component().component_type();
        let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        (imports, exports)
    }
}

mod kernel_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rollout:edge/kernel-exports",
        exports: { default: async },
    });
}

/// The kernel component (`bench/kernel`, world `kernel-component`), compiled
/// and linked against the same host imports as the edge, ready to instantiate.
/// Tests and benchmarks call its `rollout:edge/kernel` export; the shipped
/// edge does not have it.
pub struct KernelComponent {
    pre: kernel_bindings::KernelExportsPre<HostState>,
    path: PathBuf,
}

impl std::fmt::Debug for KernelComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelComponent")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KernelComponent {
    /// Compiles the kernel component at `path` (see [`KERNEL_PATH`]).
    pub fn load(path: &Path) -> anyhow::Result<KernelComponent> {
        // The edge's engine and imports, pooling allocator included, so the
        // guest runs as the edge's does (on-demand allocation makes a
        // store-reading call measurably slower).
        let pre = link(path, KERNEL_BUILD_COMMAND)?;
        let pre = kernel_bindings::KernelExportsPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} does not export rollout:edge/kernel", path.display()))?;
        Ok(KernelComponent {
            pre,
            path: path.to_owned(),
        })
    }

    /// A fresh instance with an empty store and no variables.
    pub async fn instantiate(&self) -> anyhow::Result<Kernel> {
        self.instantiate_with(Arc::new(MemoryKv::default())).await
    }

    /// A fresh instance whose key-value store is `kv`: pass an edge's store
    /// and `route-repeat` reads the config that edge applied.
    pub async fn instantiate_with(&self, kv: Arc<dyn KvBackend>) -> anyhow::Result<Kernel> {
        let edge = Arc::new(Edge {
            kv,
            variables: HashMap::new(),
            allow: AllowList::default(),
        });
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(edge, None, None, &[], Limits::default().origin_body_timeout),
        );
        let exports = self.pre.instantiate_async(&mut store).await?;
        Ok(Kernel { store, exports })
    }

    /// The imports and exports of the kernel component, by name.
    pub fn interface_names(&self) -> (Vec<String>, Vec<String>) {
        let engine = self.pre.engine();
        let ty = self.pre.instance_pre().component().component_type();
        let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        (imports, exports)
    }
}

/// An instance of the kernel component, for calling its `rollout:edge/kernel` export.
pub struct Kernel {
    store: Store<HostState>,
    exports: kernel_bindings::KernelExports,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").finish_non_exhaustive()
    }
}

impl Kernel {
    /// The kernel component's bucket for `key` under `salt`.
    pub async fn bucket(&mut self, salt: &str, key: &str) -> anyhow::Result<u32> {
        let kernel = self.exports.rollout_edge_kernel();
        Ok(kernel.call_bucket(&mut self.store, salt, key).await?)
    }

    /// The bucket computed `times` times inside the component.
    pub async fn bucket_repeat(
        &mut self,
        salt: &str,
        key: &str,
        times: u32,
    ) -> anyhow::Result<u32> {
        let kernel = self.exports.rollout_edge_kernel();
        Ok(kernel
            .call_bucket_repeat(&mut self.store, salt, key, times)
            .await?)
    }

    /// A request's routing work (store, decode, decide) `times` times inside
    /// the component; the last arm, or the component's error.
    pub async fn route_repeat(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(String, String)],
        times: u32,
    ) -> anyhow::Result<Result<String, String>> {
        let kernel = self.exports.rollout_edge_kernel();
        Ok(kernel
            .call_route_repeat(&mut self.store, host, path, headers, times)
            .await?)
    }

    /// `decide` alone `times` times inside the component, on `config` (JSON)
    /// parsed once first; the last arm, or the config's error.
    pub async fn decide_repeat(
        &mut self,
        config: &str,
        host: &str,
        path: &str,
        headers: &[(String, String)],
        times: u32,
    ) -> anyhow::Result<Result<String, String>> {
        let kernel = self.exports.rollout_edge_kernel();
        Ok(kernel
            .call_decide_repeat(&mut self.store, config, host, path, headers, times)
            .await?)
    }
}

impl Runtime {
    /// Instantiates the edge component with an empty store and drops the
    /// instance without calling it: what each request's fresh instance costs.
    pub async fn instantiate_once(&self) -> anyhow::Result<()> {
        let edge = Arc::new(Edge {
            kv: Arc::new(MemoryKv::default()),
            variables: HashMap::new(),
            allow: AllowList::default(),
        });
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(edge, None, None, &[], Limits::default().origin_body_timeout),
        );
        self.pre.instantiate_async(&mut store).await?;
        Ok(())
    }
}

/// One edge: its store, its variables, where it may send requests.
pub struct Edge {
    /// The `default` key-value store.
    pub kv: Arc<dyn KvBackend>,
    /// Spin variables (`public_key`, `old_origin`, ...).
    pub variables: HashMap<String, String>,
    /// Origins outbound requests may go to.
    pub allow: AllowList,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("variables", &self.variables)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// What one request's instance sees.
pub(crate) struct HostState {
    /// First, so it is dropped before `table` ends the bodies held there.
    _ended: integrity::Guard,
    instance: integrity::Instance,
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: outbound::Hooks,
    edge: Arc<Edge>,
}

impl HostState {
    fn new(
        edge: Arc<Edge>,
        pool: Option<outbound::Pool>,
        metrics: Option<Arc<Metrics>>,
        env: &[(String, String)],
        origin_body_timeout: std::time::Duration,
    ) -> HostState {
        let instance = integrity::Instance::default();
        let mut hooks = outbound::Hooks::new(edge.clone(), pool, metrics, origin_body_timeout);
        hooks.guard_bodies(instance.clone());
        HostState {
            _ended: instance.guard(),
            instance,
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stderr().envs(env).build(),
            http: WasiHttpCtx::new(),
            hooks,
            edge,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Removes the headers a message's `Connection` header names (RFC 9110
/// §7.6.1): they belong to the hop it came on. wasi:http hides `Connection`
/// from the component, so only the host can do this, for requests and for
/// origins' responses alike. Host is never removed (it is no hop header, and
/// wasi:http needs it).
pub(crate) fn drop_connection_named(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty() && n != "host")
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
}

fn text_response(status: u16, body: &'static str) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(body.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Serves one request and, when metrics are kept, counts its response. An
/// error closes the connection unanswered.
async fn handle(
    site: Arc<Site>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> Result<hyper::Response<HyperOutgoingBody>, limits::Cut> {
    // Pushes and reads of the admin endpoint are the control plane talking,
    // not traffic: counting them would dilute the error rate a canary is
    // judged by.
    let public = site.metrics.is_some() && req.uri().path() != ADMIN_PATH;
    let resp = answer(site.clone(), req, peer).await;
    if resp.extensions().get::<limits::Cut>().is_some() {
        return Err(limits::Cut);
    }
    if let Some(metrics) = site.metrics.as_ref().filter(|_| public) {
        metrics.record_response(resp.status(), resp.headers());
    }
    Ok(resp)
}

/// Answers one request: a fresh instance, the request handed to the component.
/// A response carrying a [`limits::Cut`] extension is never sent: the
/// connection is closed instead.
async fn answer(
    site: Arc<Site>,
    mut req: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> hyper::Response<HyperOutgoingBody> {
    let gate = &*site.gate;
    // wasi:http hides Transfer-Encoding from the component, and hyper has
    // decoded `chunked` already: a `gzip, chunked` request would reach the
    // origin as plain chunked, its gzip coding dropped. Core's rule (501,
    // never forwarded) is kept here; the unread body ends the connection.
    // (A coding list that does not end in `chunked` never gets this far:
    // hyper answers it 400, RFC 9112 §6.3.)
    let codings = req.headers().get_all(hyper::header::TRANSFER_ENCODING);
    if !rollout_core::edge::request::only_chunked(codings.iter().map(|v| v.as_bytes())) {
        let mut resp = text_response(
            501,
            "rollout edge: transfer codings other than chunked are not implemented\n",
        );
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return resp;
    }
    // wasi:http hides Host from the component and reports one authority, so
    // only the host can see a second Host header; the edge's rule is 400.
    if req.headers().get_all(hyper::header::HOST).iter().count() > 1 {
        return text_response(400, "rollout edge: more than one Host header\n");
    }
    let Some(host) = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
    else {
        return text_response(400, "a Host header is required\n");
    };
    // Headers a client names in `Connection` belong to this hop (RFC 9110
    // §7.6.1). wasi:http hides `Connection` from the component, so only the
    // host that terminates the connection can drop them.
    drop_connection_named(req.headers_mut());
    // Spin sets these on every request, overwriting any a client sent.
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut full_url = String::with_capacity("http://".len() + host.len() + target.len());
    full_url.push_str("http://");
    full_url.push_str(&host);
    full_url.push_str(target);
    for (name, value) in [
        ("spin-client-addr", peer_text(peer)),
        ("spin-full-url", full_url),
    ] {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            req.headers_mut().insert(name, value);
        }
    }
    // A small body is read here, before an instance is taken, so a slow
    // upload holds a connection and a buffer but never an instance.
    let admin = req.uri().path() == ADMIN_PATH;
    let (parts, body) = req.into_parts();
    let (body, watch) = match limits::read(body, gate.limits()).await {
        Ok(read) => read,
        Err(limits::Unread::Stalled) => return limits::timed_out(),
        Err(limits::Unread::Broken(e)) => {
            tracing::debug!("request body from {peer} broke off: {e}");
            return text_response(400, "rollout edge: the request body could not be read\n");
        }
    };
    // The reserve is for pushes read whole: a slow upload to the admin path
    // must not be able to hold it.
    let ready = match site.take_spare() {
        Some(spare) => Ready::Spare(spare),
        None => match site.permit(admin && watch.is_none()) {
            Some(permit) => Ready::Permit(permit),
            None => return shed(gate, site.metrics.as_deref()),
        },
    };
    let req = hyper::Request::from_parts(parts, body);
    match call(site.clone(), req, ready, watch).await {
        Ok(resp) => resp,
        Err(Failure::Busy) => shed(gate, site.metrics.as_deref()),
        Err(Failure::Stalled { sent: false }) => limits::timed_out(),
        Err(Failure::Stalled { sent: true }) => limits::cut(),
        Err(Failure::Failed(e)) => {
            tracing::error!("edge component failed: {e:#}");
            text_response(
                500,
                "rollout edge: the component failed; see the host log\n",
            )
        }
    }
}

/// `ip:port` as `SocketAddr`'s `Display` writes it; IPv4 (every request
/// on most edges) without the formatting machinery, which costs more than
/// the rest of building the request's Spin headers.
fn peer_text(peer: SocketAddr) -> String {
    let SocketAddr::V4(v4) = peer else {
        return peer.to_string();
    };
    let mut text = String::with_capacity("255.255.255.255:65535".len());
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(digits.format(octet));
    }
    text.push(':');
    text.push_str(digits.format(v4.port()));
    text
}

/// The `503` for a request no instance was free for, counted.
fn shed(gate: &limits::Gate, metrics: Option<&Metrics>) -> hyper::Response<HyperOutgoingBody> {
    if let Some(metrics) = metrics {
        metrics.record_shed(limits::Shed::Instances);
    }
    gate.busy(false)
}

/// Why [`call`] has no response of the component's.
enum Failure {
    /// No instance was free in the pool.
    Busy,
    /// The request body stalled before the component answered; `sent` when
    /// part of the request had gone to an origin by then.
    Stalled { sent: bool },
    /// The component failed.
    Failed(anyhow::Error),
}

/// What ended the component's task without a response.
enum Stopped {
    /// The pool had no instance free.
    Busy,
    /// Instantiating or running the component failed.
    Failed(anyhow::Error),
}

/// What a request is served by: the instance its thread made ahead, or a
/// permit to make one.
enum Ready {
    Spare(Spare),
    Permit(tokio::sync::OwnedSemaphorePermit),
}

/// Hands `req` to a fresh instance (one made ahead, never called before, or
/// one made now), which holds its permit until its component returns.
/// `watch` is on a body that still streams from the client: if it stalls,
/// the instance is stopped.
async fn call(
    site: Arc<Site>,
    req: hyper::Request<limits::RequestBody>,
    ready: Ready,
    mut watch: Option<limits::Watch>,
) -> Result<hyper::Response<HyperOutgoingBody>, Failure> {
    let failed = |e: wasmtime::Error| Failure::Failed(anyhow::Error::from(e));
    let (mut store, made, permit) = match ready {
        Ready::Spare(spare) => (spare.store, Some(spare.proxy), spare.permit),
        Ready::Permit(permit) => (site.store(), None, permit),
    };
    if let Some(watch) = &watch {
        store.data_mut().hooks.report_sent(watch.sent.clone());
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(failed)?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(tx)
        .map_err(failed)?;
    let instance = store.data().instance.clone();
    // The task owns the store until the component returns, which may be after
    // the response head was sent while the body still streams.
    let serving = Serving::start(&site);
    let task = tokio::spawn(async move {
        let proxy = match made {
            Some(proxy) => proxy,
            None => match site.runtime.pre.instantiate_async(&mut store).await {
                Ok(proxy) => proxy,
                Err(e) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                    return Err(Stopped::Busy);
                }
                Err(e) => {
                    let e = anyhow::Error::from(e).context("instantiating the component");
                    return Err(Stopped::Failed(e));
                }
            },
        };
        let handled = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await;
        if handled.is_ok() {
            store.data().instance.returned();
        }
        // The component is done: its permit goes now, before the end of the
        // response can reach the client, so a client that sends its next
        // request at once finds it free (the pool has room above the cap
        // for instances waiting to be torn down).
        drop(permit);
        // The instance is torn down (its memory reset) and the next
        // request's made after this: first let the tasks it woke run, the
        // one writing the response among them, so neither is between the
        // origin's answer and the client.
        tokio::task::yield_now().await;
        drop(store);
        if serving.end() {
            site.refill().await;
        }
        handled.map_err(|e| Stopped::Failed(anyhow::Error::from(e).context("component trapped")))
    });
    // Until the response head is here, a dropped future means the client
    // went away: the instance would serve nobody, so it stops too.
    let stop = limits::StopOnDrop::new(task.abort_handle());
    // `None`: the body stalled first.
    let head = match &mut watch {
        None => Some(rx.await),
        Some(watch) => tokio::select! {
            biased;
            head = rx => Some(head),
            () = watch.stalled() => None,
        },
    };
    // Whatever the component answered, a stalled body is the client's
    // failure, and the instance has nothing left to do.
    let stalled = watch.as_ref().is_some_and(limits::Watch::has_stalled);
    let (Some(head), false) = (head, stalled) else {
        task.abort();
        let sent = watch.as_ref().is_some_and(limits::Watch::was_sent);
        return Err(Failure::Stalled { sent });
    };
    match head {
        Ok(Ok(resp)) => {
            stop.disarm();
            let resp = resp.map(|body| instance.body(body));
            Ok(match watch {
                Some(watch) => limits::cut_on_stall(resp, watch, task.abort_handle()),
                None => resp,
            })
        }
        Ok(Err(code)) => Err(Failure::Failed(anyhow::anyhow!(
            "component answered with error code {code:?}"
        ))),
        Err(_) => match task.await {
            Ok(Ok(())) => Err(Failure::Failed(anyhow::anyhow!(
                "component returned without setting a response"
            ))),
            Ok(Err(Stopped::Busy)) => Err(Failure::Busy),
            Ok(Err(Stopped::Failed(e))) => Err(Failure::Failed(e)),
            Err(e) => Err(Failure::Failed(
                anyhow::Error::from(e).context("component task failed"),
            )),
        },
    }
}

/// What one listener serves with: the component, the edge, its origin
/// connections, its metrics and limits, and an instance made ahead.
struct Site {
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    pool: outbound::Pool,
    metrics: Option<Arc<Metrics>>,
    gate: Arc<limits::Gate>,
    /// Where this listener keeps its instance made ahead: its slot among
    /// its edge's threads. Only where a listener has a thread of its own
    /// (one runtime per core); on a shared runtime the request may run on
    /// any thread anyway, and an edge started in a process with many others
    /// (tests, the benchmark's fleets) would hold one instance per edge out
    /// of the one pool they share.
    spare: Option<(Arc<Spares>, usize)>,
    /// Requests whose instance is running.
    serving: std::sync::atomic::AtomicUsize,
}

/// Counts one request in [`Site::serving`] until it ends or is dropped.
struct Serving(Option<Arc<Site>>);

impl Serving {
    fn start(site: &Arc<Site>) -> Serving {
        site.serving
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Serving(Some(site.clone()))
    }

    /// Ends the count; whether no other request is being served. Only then
    /// is a spare made: the thread would otherwise sit idle until the next
    /// request, and under load making it ahead only moves the same work
    /// further from where its memory is used, which costs throughput.
    fn end(mut self) -> bool {
        self.0.take().is_some_and(|site| {
            site.serving
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed)
                == 1
        })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(site) = self.0.take() {
            site.serving
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The instances the threads of one per-core edge made ahead, a slot per
/// thread: each made once its thread answered a request and serves no
/// other, so the next request there does not wait for it. One is never
/// called before it serves a request, and serves exactly one: every request
/// still gets a fresh instance. Shared, so that a thread short of an
/// instance frees the ones the others keep idle: a spare is never why a
/// request is shed.
struct Spares(std::sync::Mutex<Vec<Option<Spare>>>);

impl Spares {
    fn new(threads: usize) -> Arc<Spares> {
        Arc::new(Spares(std::sync::Mutex::new(
            (0..threads).map(|_| None).collect(),
        )))
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<Spare>>> {
        // Every change is whole before the lock is let go.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every spare, giving back their permits; how many there were.
    fn release(&self) -> usize {
        let freed: Vec<Spare> = self.slots().iter_mut().filter_map(Option::take).collect();
        freed.len()
    }
}

/// An instance made ahead of its request, with the permit it holds.
struct Spare {
    store: Store<HostState>,
    proxy: wasmtime_wasi_http::p2::bindings::Proxy,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Site {
    /// A store for one request's instance.
    fn store(&self) -> Store<HostState> {
        let state = HostState::new(
            self.edge.clone(),
            Some(self.pool.clone()),
            self.metrics.clone(),
            &self.runtime.env,
            self.gate.limits().origin_body_timeout,
        );
        Store::new(self.runtime.pre.engine(), state)
    }

    fn take_spare(&self) -> Option<Spare> {
        let (spares, slot) = self.spare.as_ref()?;
        spares.slots().get_mut(*slot)?.take()
    }

    /// A permit for a new instance. When none is free while other threads
    /// keep instances made ahead, those are dropped first.
    fn permit(&self, admin: bool) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.gate.instance(admin).or_else(|| {
            let (spares, _) = self.spare.as_ref()?;
            (spares.release() > 0).then(|| self.gate.instance(admin))?
        })
    }

    /// Makes this thread's spare instance if there is none and enough
    /// instances stay free (see `limits::SPARE_HEADROOM`). Failing to is not
    /// this request's failure: the next one instantiates its own and reports
    /// what goes wrong.
    async fn refill(&self) {
        let Some((spares, slot)) = &self.spare else {
            return;
        };
        if spares.slots().get(*slot).is_none_or(Option::is_some) {
            return;
        }
        let Some(permit) = self.gate.spare_instance() else {
            return;
        };
        let mut store = self.store();
        let Ok(proxy) = self.runtime.pre.instantiate_async(&mut store).await else {
            return;
        };
        let made = Spare {
            store,
            proxy,
            permit,
        };
        let mut slots = spares.slots();
        if let Some(empty @ None) = slots.get_mut(*slot) {
            *empty = Some(made);
        }
    }
}

/// The next connection on `listener`, waiting out failures to accept.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                // Out of file descriptors and the like: keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections on `listener` and serves them with the component, until
/// the returned future is dropped, which also closes every open connection.
pub async fn serve(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    listener: TcpListener,
) -> anyhow::Result<()> {
    serve_with_metrics(runtime, edge, listener, None).await
}

/// [`serve`], recording into `metrics` when given: every response on the
/// public path and every request to an origin.
pub async fn serve_with_metrics(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    listener: TcpListener,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<()> {
    serve_with(runtime, edge, listener, metrics, Limits::default()).await
}

/// [`serve_with_metrics`] under `limits` (timeouts, caps on instances and
/// connections; see [`Limits`]).
pub async fn serve_with(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    listener: TcpListener,
    metrics: Option<Arc<Metrics>>,
    limits: Limits,
) -> anyhow::Result<()> {
    let gate = Arc::new(limits::Gate::new(limits));
    serve_gated(runtime, edge, listener, metrics, gate, None).await
}

/// Serves `listener` under `gate`, which other listeners of the same edge
/// may share; with `spare`, keeping an instance made ahead in that slot (see
/// [`Spares`]).
async fn serve_gated(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    listener: TcpListener,
    metrics: Option<Arc<Metrics>>,
    gate: Arc<limits::Gate>,
    spare: Option<(Arc<Spares>, usize)>,
) -> anyhow::Result<()> {
    let site = Arc::new(Site {
        runtime,
        edge,
        pool: outbound::pool(),
        metrics,
        gate,
        spare,
        serving: std::sync::atomic::AtomicUsize::new(0),
    });
    let Site { metrics, gate, .. } = &*site;
    // Connections live in this set, so dropping the future closes them too:
    // a stopped edge answers nothing, not even on kept-alive connections.
    let mut connections = tokio::task::JoinSet::new();
    connections.spawn(keep_timers_due_soon());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = tcp.set_nodelay(true);
        let admitted = match gate.admit() {
            limits::Admission::Serve(permit) => permit,
            limits::Admission::Refuse(permit) => {
                let refused = gate.clone().refuse(tcp, peer, metrics.clone(), permit);
                connections.spawn(refused);
                continue;
            }
            limits::Admission::Close => {
                tracing::debug!("connection from {peer} closed: over the connection limit");
                if let Some(metrics) = &metrics {
                    metrics.record_shed(limits::Shed::Connections);
                }
                continue;
            }
        };
        let site = site.clone();
        connections.spawn(async move {
            let gate = site.gate.clone();
            let service = hyper::service::service_fn(move |req| handle(site.clone(), req, peer));
            let conn = gate
                .http1()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(admitted);
        });
    }
}

/// Never returns; keeps a timer due within [`TICK`] on this runtime.
///
/// Every request sets timers far in the future (the next request head's
/// 20 s, an origin's 60 s first byte). tokio wakes its driver (a write to an
/// eventfd, then an extra `epoll_wait`) whenever a new timer is due before
/// the earliest one the driver last slept towards, which with no shorter
/// timer around is once per request. With one due within a second, none of
/// those timers is ever the earliest: one wake-up a second replaces one per
/// request.
async fn keep_timers_due_soon() {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// See [`keep_timers_due_soon`]: shorter than any timeout a request sets.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves on `addr` with one thread per core: each thread runs its own
/// single-threaded runtime and accepts on its own `SO_REUSEPORT` listener,
/// so a request, its outbound connection and its body streams never wake
/// another thread. Returns the bound address (port 0 picks one) once every
/// thread listens; the threads serve until the process exits.
pub fn serve_per_core(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    addr: SocketAddr,
    threads: usize,
) -> anyhow::Result<SocketAddr> {
    serve_per_core_with_metrics(runtime, edge, addr, threads, None)
}

/// [`serve_per_core`], every thread recording into the one `metrics`.
pub fn serve_per_core_with_metrics(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    addr: SocketAddr,
    threads: usize,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<SocketAddr> {
    serve_per_core_with(runtime, edge, addr, threads, metrics, Limits::default())
}

/// [`serve_per_core_with_metrics`] under `limits`, which hold for all the
/// threads together (one instance cap, one connection cap).
pub fn serve_per_core_with(
    runtime: Arc<Runtime>,
    edge: Arc<Edge>,
    addr: SocketAddr,
    threads: usize,
    metrics: Option<Arc<Metrics>>,
    limits: Limits,
) -> anyhow::Result<SocketAddr> {
    let gate = Arc::new(limits::Gate::new(limits));
    // SO_REUSEPORT would let this edge share a port another process already
    // listens on, each getting part of the traffic: probe with a plain bind
    // first, so a taken port is an error as it is without SO_REUSEPORT.
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?);
    }
    let mut addr = addr;
    let threads = threads.max(1);
    let spares = Spares::new(threads);
    for i in 0..threads {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (runtime, edge, metrics) = (runtime.clone(), edge.clone(), metrics.clone());
        let gate = gate.clone();
        let spare = Some((spares.clone(), i));
        std::thread::Builder::new()
            .name(format!("rollout-edge-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match reuseport_listener(addr) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr().map_err(Into::into));
                    if let Err(e) = serve_gated(runtime, edge, listener, metrics, gate, spare).await
                    {
                        tracing::error!("edge thread {i} stopped: {e:#}");
                    }
                });
            })?;
        // The first thread resolves port 0; the others bind the same port.
        addr = ready_rx
            .recv()
            .context("an edge thread exited before listening")??;
    }
    Ok(addr)
}

fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(1024)?)
}

/// An edge serving in the background; stops when dropped.
#[derive(Debug)]
pub struct RunningEdge {
    /// The address it listens on.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningEdge {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn start(
        runtime: Arc<Runtime>,
        edge: Edge,
        addr: SocketAddr,
    ) -> anyhow::Result<RunningEdge> {
        RunningEdge::start_with_metrics(runtime, edge, addr, None).await
    }

    /// [`RunningEdge::start`], recording into `metrics` when given.
    pub async fn start_with_metrics(
        runtime: Arc<Runtime>,
        edge: Edge,
        addr: SocketAddr,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<RunningEdge> {
        RunningEdge::start_with_limits(runtime, edge, addr, metrics, Limits::default()).await
    }

    /// [`RunningEdge::start_with_metrics`] under `limits`.
    pub async fn start_with_limits(
        runtime: Arc<Runtime>,
        edge: Edge,
        addr: SocketAddr,
        metrics: Option<Arc<Metrics>>,
        limits: Limits,
    ) -> anyhow::Result<RunningEdge> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve_with(
            runtime,
            Arc::new(edge),
            listener,
            metrics,
            limits,
        ));
        Ok(RunningEdge { addr, task })
    }
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_reads_as_display_writes_it() {
        for peer in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:443",
            "[::1]:8080",
            "[2001:db8::7]:1",
        ] {
            let addr: SocketAddr = peer.parse().expect("address");
            assert_eq!(peer_text(addr), addr.to_string(), "{peer}");
            assert_eq!(peer_text(addr), peer);
        }
    }
}
