//! What keeps an edge answering when clients are slow or many: header and
//! body timeouts, request bodies read in the host before an instance is
//! taken, and caps on instances and connections that answer `503` with
//! `retry-after` instead of failing.
//!
//! A component instance is the scarce thing (the pool holds
//! [`POOL_INSTANCES`]); a connection, a few KiB of buffer and a timer are
//! cheap. So a request waits for its head and (small) body holding only the
//! latter, and takes an instance once it can be answered without waiting on
//! the client again.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::Metrics;

/// Component instances the host's pooling allocator holds; the instance cap
/// stays below it.
pub const POOL_INSTANCES: u32 = 256;

/// Longest timeout the host applies; longer settings are cut to it (a timer
/// that far out is as good as none, and the deadline arithmetic stays finite).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// hyper's smallest read buffer.
const MIN_READ_BUFFER: usize = 8 * 1024;

/// How long a connection over the cap may take to send the head its `503`
/// answers.
const REFUSED_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Limits that keep one edge answering under slow or numerous clients.
///
/// Every cap degrades to `503 Service Unavailable` with `retry-after`, never
/// to a `500`. The defaults ([`Limits::default`]) suit one rollout-host
/// process; tests pass smaller ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Component instances in flight at once, requests to the admin endpoint
    /// included. Default 240, below the pool's [`POOL_INSTANCES`] so that
    /// the pool itself does not run out (it still can when several edges
    /// share one [`Runtime`](crate::Runtime); that is a `503` too). A request
    /// over the cap gets `503` with `retry-after` at once (no queue).
    pub max_instances: usize,
    /// Of `max_instances`, how many only requests to the admin endpoint
    /// (`/.well-known/rollout/config`) may take, so that pushes and
    /// rollbacks land while traffic holds every other instance. Only a
    /// request whose body was read whole (up to `buffer_body_bytes`) may take
    /// one, so slow uploads to the admin path cannot hold them. Default 8.
    pub admin_reserved: usize,
    /// Client connections served at once. Default 4096. Past it, up to an
    /// eighth more (at least 16) are read just far enough to answer `503`
    /// with `retry-after` and `connection: close` (one second for the head);
    /// any connection past that is closed at once, unanswered.
    pub max_connections: usize,
    /// How long a connection may take to deliver a complete request head,
    /// counted from when it starts waiting for one: from the accept for the
    /// first request, from the end of the previous response on a kept-alive
    /// connection. So it is also how long a kept-alive connection may sit
    /// idle. A connection that runs out of it is closed without an answer.
    /// Default 20 s.
    pub header_timeout: Duration,
    /// Longest wait for the next part of a request body. A body that stalls
    /// gets `408` (with `connection: close`) if nothing of the request has
    /// gone to an origin yet; otherwise the connection is cut. Default 30 s.
    pub body_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; a larger
    /// one gets `431` and the connection is closed. Default 32 KiB.
    pub max_header_bytes: usize,
    /// Request bodies that declare at most this many bytes, or that are
    /// chunked and end within them, are read in full before an instance is
    /// taken; the component gets them complete. Longer bodies stream to the
    /// component as they arrive, holding an instance. Default 64 KiB, what
    /// the component holds back for failover (`REPLAY_LIMIT`).
    pub buffer_body_bytes: usize,
    /// The `retry-after` sent with every `503` from these limits (whole
    /// seconds, at least 1). Default 1 s.
    pub retry_after: Duration,
    /// Longest wait for the next part of an origin's response body. Past
    /// it the body fails: the client's response is cut (never ended as if
    /// complete), the origin connection is closed, and the instance is
    /// free again. Default 60 s.
    pub origin_body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_instances: 240,
            admin_reserved: 8,
            max_connections: 4096,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            buffer_body_bytes: rollout_core::edge::request::REPLAY_LIMIT,
            retry_after: Duration::from_secs(1),
            origin_body_timeout: Duration::from_secs(60),
        }
    }
}

/// Which limit turned a request or connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// No instance free (the cap, or the pool itself).
    Instances,
    /// Too many open connections.
    Connections,
}

/// What becomes of a newly accepted connection.
pub(crate) enum Admission {
    /// Served; the permit is held as long as the connection is open.
    Serve(OwnedSemaphorePermit),
    /// Over the cap: answered `503` and closed.
    Refuse(OwnedSemaphorePermit),
    /// Far over the cap: closed at once.
    Close,
}

/// One set of [`Limits`] in force, shared by every listener and thread that
/// serves one edge.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: Limits,
    /// Instances any request may take.
    instances: Arc<Semaphore>,
    /// Instances only admin requests may take.
    reserved: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    /// Connections past the cap that still get a `503`.
    refusals: Arc<Semaphore>,
    /// How served connections are read.
    http1: hyper::server::conn::http1::Builder,
    /// How refused connections are read.
    refused_http1: hyper::server::conn::http1::Builder,
}

/// Instance permits that stay free when a spare instance is made; below
/// this many, every request instantiates its own, as without spares.
pub(crate) const SPARE_HEADROOM: usize = 8;

fn permits(n: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Gate {
        let mut limits = limits;
        limits.header_timeout = limits.header_timeout.min(MAX_TIMEOUT);
        limits.body_timeout = limits.body_timeout.min(MAX_TIMEOUT);
        limits.retry_after = limits.retry_after.min(MAX_TIMEOUT);
        limits.origin_body_timeout = limits.origin_body_timeout.min(MAX_TIMEOUT);
        if limits.max_instances > POOL_INSTANCES as usize {
            tracing::warn!(
                "max_instances {} is over the pool's {POOL_INSTANCES}; past that, requests get 503",
                limits.max_instances
            );
        }
        let reserved = limits.admin_reserved.min(limits.max_instances);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(limits.header_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(MIN_READ_BUFFER));
        let mut refused_http1 = http1.clone();
        refused_http1
            .keep_alive(false)
            .header_read_timeout(limits.header_timeout.min(REFUSED_HEADER_TIMEOUT));
        Gate {
            instances: permits(limits.max_instances - reserved),
            reserved: permits(reserved),
            connections: permits(limits.max_connections),
            refusals: permits((limits.max_connections / 8).max(16)),
            http1,
            refused_http1,
            limits,
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How a served connection is read.
    pub(crate) fn http1(&self) -> &hyper::server::conn::http1::Builder {
        &self.http1
    }

    /// A permit to instantiate the component, held until the instance is
    /// gone; `None` when none is free. Admin requests may also take the
    /// reserved ones.
    pub(crate) fn instance(&self, admin: bool) -> Option<OwnedSemaphorePermit> {
        match self.instances.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if admin => self.reserved.clone().try_acquire_owned().ok(),
            Err(_) => None,
        }
    }

    /// A permit for an instance made ahead of its request, only while more
    /// than [`SPARE_HEADROOM`] stay free: each serving thread keeps one, and
    /// a request short of a permit first drops them (`Site::permit`), so
    /// they are never why a request is shed.
    pub(crate) fn spare_instance(&self) -> Option<OwnedSemaphorePermit> {
        if self.instances.available_permits() <= SPARE_HEADROOM {
            return None;
        }
        self.instances.clone().try_acquire_owned().ok()
    }

    /// Whether a newly accepted connection is served, refused or closed.
    pub(crate) fn admit(&self) -> Admission {
        if let Ok(permit) = self.connections.clone().try_acquire_owned() {
            return Admission::Serve(permit);
        }
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => Admission::Refuse(permit),
            Err(_) => Admission::Close,
        }
    }

    /// The `503` a limit answers with.
    pub(crate) fn busy(&self, close: bool) -> hyper::Response<HyperOutgoingBody> {
        let mut resp = crate::text_response(503, "rollout edge: busy; retry later\n");
        let seconds = self.limits.retry_after.as_secs().max(1);
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        if close {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        resp
    }

    /// Serves a connection over the cap: its first request gets a `503`,
    /// then it is closed.
    pub(crate) async fn refuse(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        metrics: Option<Arc<Metrics>>,
        permit: OwnedSemaphorePermit,
    ) {
        let gate = self.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let resp = gate.busy(true);
            if let Some(metrics) = &metrics {
                metrics.record_shed(Shed::Connections);
                if req.uri().path() != rollout_core::edge::ADMIN_PATH {
                    metrics.record_response(resp.status(), resp.headers());
                }
            }
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let conn = self
            .refused_http1
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
        if let Err(e) = conn.await {
            tracing::debug!("refused connection from {peer}: {e}");
        }
        drop(permit);
    }
}

/// The `408` for a request body that stalled before anything of it went to
/// an origin. The rest of the body never comes, so the connection closes.
pub(crate) fn timed_out() -> hyper::Response<HyperOutgoingBody> {
    let mut resp = crate::text_response(408, "rollout edge: the request body timed out\n");
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// The service error that makes hyper close a connection without (further)
/// answer: its request body stalled after part of the request reached an
/// origin, so neither a response nor the rest of the request can be trusted.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body stalled after the request went to an origin")]
pub(crate) struct Cut;

/// A stand-in response marked [`Cut`]: the connection is closed instead.
pub(crate) fn cut() -> hyper::Response<HyperOutgoingBody> {
    let mut resp = crate::text_response(408, "");
    resp.extensions_mut().insert(Cut);
    resp
}

/// A deadline `after` from now, or as far out as tokio's timers go.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + MAX_TIMEOUT)
}

/// A body (a client's request body, or an origin's response body) that
/// fails with a read timeout when the next frame does not come within
/// `idle` of being asked for. Time the reader spends not asking (an origin
/// slow to take a request body, a client slow to read a response) does not
/// count. The timeout is an error, never an end: a stalled body must not be
/// taken for a complete one.
pub(crate) struct TimedBody {
    inner: Incoming,
    idle: Duration,
    /// Made on the first wait, then reset; a body that is always ready
    /// never allocates one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current wait.
    armed: bool,
    /// Whether the body timed out.
    stalled: bool,
    /// Told when the body times out, for those who watch it.
    report: Option<watch::Sender<bool>>,
}

impl TimedBody {
    /// `inner`, failing once a frame takes longer than `idle`.
    pub(crate) fn new(inner: Incoming, idle: Duration) -> TimedBody {
        TimedBody {
            inner,
            idle,
            timer: None,
            armed: false,
            stalled: false,
            report: None,
        }
    }

    /// [`TimedBody::new`], with a receiver that turns `true` when the body
    /// has timed out.
    fn watched(inner: Incoming, idle: Duration) -> (TimedBody, watch::Receiver<bool>) {
        let (report, rx) = watch::channel(false);
        let body = TimedBody {
            report: Some(report),
            ..TimedBody::new(inner, idle)
        };
        (body, rx)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(wasmtime_wasi_http::Error::from)));
        }
        let timer = match &mut this.timer {
            Some(timer) => {
                if !this.armed {
                    timer.as_mut().reset(deadline(this.idle));
                }
                timer
            }
            None => this
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline(this.idle)))),
        };
        this.armed = true;
        if timer.as_mut().poll(cx).is_ready() {
            this.stalled = true;
            if let Some(report) = &this.report {
                report.send_replace(true);
            }
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        !self.stalled && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What [`read`] tells `call` about a body that still streams from the
/// client: whether it stalled, and whether any request went to an origin.
#[derive(Debug)]
pub(crate) struct Watch {
    stalled: watch::Receiver<bool>,
    /// Set by the outbound hooks when a request leaves for an origin.
    pub(crate) sent: Arc<AtomicBool>,
}

impl Watch {
    /// Whether the body has stalled.
    pub(crate) fn has_stalled(&self) -> bool {
        *self.stalled.borrow()
    }

    /// Whether anything of the request went to an origin.
    pub(crate) fn was_sent(&self) -> bool {
        self.sent.load(Ordering::Relaxed)
    }

    /// Resolves when the body stalls; never, once the body can no longer
    /// stall (it ended, or its reader dropped it).
    pub(crate) async fn stalled(&mut self) {
        let stalled = self.stalled.wait_for(|s| *s).await.is_ok();
        if !stalled {
            std::future::pending::<()>().await;
        }
    }
}

/// The request body a component gets: what the host read ahead, then
/// whatever the client still sends.
pub(crate) struct RequestBody {
    held: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<TimedBody>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(Ok(Frame::data(held))));
        }
        if let Some(rest) = &mut this.rest {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.as_ref().map_or(0, |h| h.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(held),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(held));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(held));
                }
                hint
            }
        }
    }
}

/// Why a body could not be read ahead.
#[derive(Debug)]
pub(crate) enum Unread {
    /// It stalled for longer than the body timeout.
    Stalled,
    /// The client broke it off or framed it wrongly.
    Broken(wasmtime_wasi_http::Error),
}

/// Reads a client's request body ahead, under the body timeout, as far as
/// `limits` say: whole when it declares at most `buffer_body_bytes` or is
/// chunked and ends within them. A longer body comes back with what was read
/// and the rest still streaming, and with a [`Watch`] on it.
pub(crate) async fn read(
    body: Incoming,
    limits: &Limits,
) -> Result<(RequestBody, Option<Watch>), Unread> {
    if body.is_end_stream() {
        let empty = RequestBody {
            held: None,
            trailers: None,
            rest: None,
        };
        return Ok((empty, None));
    }
    let limit = limits.buffer_body_bytes as u64;
    let streams = body.size_hint().lower() > limit;
    let (mut timed, rx) = TimedBody::watched(body, limits.body_timeout);
    let mut held = BytesMut::new();
    let mut trailers = None;
    if !streams {
        loop {
            match timed.frame().await {
                None => {
                    let body = RequestBody {
                        held: (!held.is_empty()).then(|| held.freeze()),
                        trailers,
                        rest: None,
                    };
                    return Ok((body, None));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        held.extend_from_slice(&data);
                        if held.len() as u64 > limit {
                            break;
                        }
                    }
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Some(Err(e)) => {
                    return Err(if timed.stalled {
                        Unread::Stalled
                    } else {
                        Unread::Broken(e)
                    });
                }
            }
        }
    }
    let watch = Watch {
        stalled: rx,
        sent: Arc::new(AtomicBool::new(false)),
    };
    let body = RequestBody {
        held: (!held.is_empty()).then(|| held.freeze()),
        trailers: None,
        rest: Some(timed),
    };
    Ok((body, Some(watch)))
}

/// Stops a task when dropped, unless disarmed first.
pub(crate) struct StopOnDrop(Option<tokio::task::AbortHandle>);

impl StopOnDrop {
    pub(crate) fn new(task: tokio::task::AbortHandle) -> StopOnDrop {
        StopOnDrop(Some(task))
    }

    /// Lets the task run on.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A response body that fails, and stops the component's task, as soon as
/// the request body it answers stalls: hyper then closes the connection
/// mid-response rather than finish an answer to a request that never came
/// whole.
struct CutOnStall {
    inner: HyperOutgoingBody,
    stalled: Pin<Box<dyn Future<Output = ()> + Send>>,
    task: tokio::task::AbortHandle,
}

impl Body for CutOnStall {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.stalled.as_mut().poll(cx).is_ready() {
            self.task.abort();
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp`, cut off (and the component's task stopped) if the request body
/// under `watch` stalls while it is sent.
pub(crate) fn cut_on_stall(
    resp: hyper::Response<HyperOutgoingBody>,
    mut watch: Watch,
    task: tokio::task::AbortHandle,
) -> hyper::Response<HyperOutgoingBody> {
    resp.map(|inner| {
        CutOnStall {
            inner,
            stalled: Box::pin(async move { watch.stalled().await }),
            task,
        }
        .boxed_unsync()
    })
}

/// Raises this process's soft limit on open files to its hard limit (every
/// client connection, and every connection to an origin, is a file), and
/// returns the soft limit now in effect.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // `None` is unlimited; Linux still caps open files (fs.nr_open).
    let current = current.unwrap_or(u64::MAX);
    let target = maximum.unwrap_or(1 << 20);
    if current >= target {
        return current;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!("could not raise the open-file limit from {current}: {e}");
            current
        }
    }
}
