//! Bodies the component writes end cleanly only while its instance stands.
//!
//! wasmtime-wasi-http ends an outgoing body (a response to the client, a
//! request to an origin) when the component calls `finish`, and fails it
//! when the component drops it unfinished. But when the whole store goes
//! (the component trapped, or the host stopped its task) before either
//! happened, the body just ends, as if finished: hyper would write the last
//! chunk, and the other side would take a cut message for a complete one.
//! [`Instance`] tells those apart. A guard that the store drops before its
//! resource table marks the instance failed unless its call returned, and a
//! body that ends after that fails instead, so hyper cuts the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

const RUNNING: u8 = 0;
const RETURNED: u8 = 1;
const FAILED: u8 = 2;

/// How one request's instance ended, shared by the bodies it writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Instance(Arc<AtomicU8>);

impl Instance {
    /// The component's call returned: bodies it left unfinished end as they
    /// are.
    pub(crate) fn returned(&self) {
        let _ = self
            .0
            .compare_exchange(RUNNING, RETURNED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// A guard for the store's data, declared before its resource table.
    pub(crate) fn guard(&self) -> Guard {
        Guard(self.clone())
    }

    fn failed(&self) -> bool {
        self.0.load(Ordering::SeqCst) == FAILED
    }

    /// `body`, failing instead of ending once the instance failed.
    pub(crate) fn body(&self, body: HyperOutgoingBody) -> HyperOutgoingBody {
        Guarded {
            inner: body,
            instance: self.clone(),
        }
        .boxed_unsync()
    }
}

/// Marks the instance failed when dropped before its call returned.
#[derive(Debug)]
pub(crate) struct Guard(Instance);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = (self.0)
            .0
            .compare_exchange(RUNNING, FAILED, Ordering::SeqCst, Ordering::SeqCst);
    }
}

struct Guarded {
    inner: HyperOutgoingBody,
    instance: Instance,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.instance.failed() => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn body() -> HyperOutgoingBody {
        Full::new(Bytes::from_static(b"abc"))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    async fn read(body: HyperOutgoingBody) -> Result<Vec<u8>, wasmtime_wasi_http::Error> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_body_ends_only_while_its_instance_stands_or_after_it_returned() {
        let running = Instance::default();
        let _guard = running.guard();
        assert_eq!(read(running.body(body())).await.ok(), Some(b"abc".to_vec()));

        let returned = Instance::default();
        let guard = returned.guard();
        returned.returned();
        drop(guard);
        assert_eq!(
            read(returned.body(body())).await.ok(),
            Some(b"abc".to_vec())
        );

        let failed = Instance::default();
        drop(failed.guard());
        assert!(read(failed.body(body())).await.is_err());
    }
}
