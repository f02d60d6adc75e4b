//! Streaming body wrappers: they pass frames through untouched and count bytes for the metrics record.
//! Nothing is buffered, so request and response sizes are unbounded and memory stays flat; for a
//! request the API logs with payloads, the first `--log-max-payload` bytes are copied aside (a tee).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::http::decompress::{UpstreamBody, UpstreamBodyError};
use crate::telemetry::analytics::{ClientFault, PendingRecord, RequestStats};
use crate::telemetry::logging::CappedBody;
use crate::telemetry::metrics::InFlight;

/// The client's request body on its way to the endpoint.
#[derive(Debug)]
pub struct RequestBody {
    inner: RequestInner,
    stats: Arc<RequestStats>,
}

#[derive(Debug)]
enum RequestInner {
    /// Streamed from the client as it arrives; `stall` runs while the endpoint waits for data that
    /// has not come.
    Stream { body: Incoming, limit: Duration, stall: Option<Pin<Box<Sleep>>> },
    /// Already in memory (empty, or buffered so failover can send it again), sent in one frame.
    Bytes(Option<Bytes>),
}

impl RequestBody {
    /// Wraps the client's body; with `capture`, its first `capture` bytes are kept for the log. A body
    /// that sends nothing for `limit` while it is read fails as [`ClientBodyError::Stalled`].
    pub fn new(inner: Incoming, capture: Option<usize>, limit: Duration) -> (RequestBody, Arc<RequestStats>) {
        let stats = Arc::new(RequestStats {
            capture: capture.map(|max| (max, std::sync::Mutex::new(CappedBody::default()))),
            ..RequestStats::default()
        });
        if inner.is_end_stream() {
            // Clients may never poll an empty body, so it is "ended" from the start.
            stats.ended.store(true, Ordering::Relaxed);
        }
        (RequestBody { inner: RequestInner::Stream { body: inner, limit, stall: None }, stats: stats.clone() }, stats)
    }

    /// A body without content (tests, and requests that have none).
    pub fn empty() -> RequestBody {
        RequestBody::buffered(Bytes::new())
    }

    /// A body already read (its bytes were counted when the client's body was read).
    pub fn buffered(content: Bytes) -> RequestBody {
        let stats = Arc::new(RequestStats::default());
        stats.ended.store(true, Ordering::Relaxed);
        RequestBody { inner: RequestInner::Bytes(Some(content).filter(|c| !c.is_empty())), stats }
    }

    /// What the body has done so far (bytes, end, a client fault).
    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.stats
    }

    /// The stall limit of a streamed body (`None` for one already in memory).
    pub fn stall_limit(&self) -> Option<Duration> {
        match &self.inner {
            RequestInner::Stream { limit, .. } => Some(*limit),
            RequestInner::Bytes(_) => None,
        }
    }
}

/// Why the client's body could not be read to its end: the client's doing, never the endpoint's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client's request body is malformed or was cut off: {0}")]
    Malformed(hyper::Error),
    #[error("the client sent no request body data for {0:?}")]
    Stalled(Duration),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        let (inner, limit, stall) = match &mut this.inner {
            RequestInner::Bytes(content) => return Poll::Ready(content.take().map(|c| Ok(Frame::data(c)))),
            RequestInner::Stream { body, limit, stall } => (body, *limit, stall),
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        let Poll::Ready(polled) = polled else {
            // The endpoint wants data the client has not sent: the stall clock runs from now (a
            // timer only for bodies that make the endpoint wait, not per frame).
            this.stats.starved.store(true, Ordering::Relaxed);
            let timer = stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            if timer.as_mut().poll(cx).is_ready() {
                this.stats.set_fault(ClientFault::Stalled);
                return Poll::Ready(Some(Err(ClientBodyError::Stalled(limit))));
            }
            return Poll::Pending;
        };
        if this.stats.starved.swap(false, Ordering::Relaxed) {
            *stall = None;
        }
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    this.stats.tee(data);
                }
                if inner.is_end_stream() {
                    this.stats.ended.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.stats.set_fault(ClientFault::Malformed);
                Poll::Ready(Some(Err(ClientBodyError::Malformed(e))))
            }
            None => {
                this.stats.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestInner::Stream { body, .. } => body.is_end_stream(),
            RequestInner::Bytes(content) => content.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestInner::Stream { body, .. } => body.size_hint(),
            RequestInner::Bytes(content) => SizeHint::with_exact(content.as_ref().map_or(0, |c| c.len() as u64)),
        }
    }
}

#[derive(Debug)]
enum Inner {
    /// A body the gateway made (mock, errors): sent in one frame.
    Full(Option<Bytes>),
    /// The endpoint's response body, streamed (decoded on the way when the endpoint compresses).
    Upstream(UpstreamBody),
}

/// Every response the proxy sends. It holds the request's metrics record, emitted exactly once when
/// the body ends, fails or is dropped (client gone), and the in-flight gauge guard.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    record: Option<PendingRecord>,
    /// A sampled request's trace: its SERVER span ends with the body.
    trace: Option<Box<crate::telemetry::trace::RequestTrace>>,
    /// The HTTP/2 stream this answers, open until the body is sent or abandoned.
    stream: Option<super::idle::OpenStream>,
    _in_flight: InFlight,
}

impl ResponseBody {
    pub fn full(content: Bytes, record: Option<PendingRecord>, in_flight: InFlight) -> ResponseBody {
        ResponseBody {
            inner: Inner::Full(Some(content).filter(|c| !c.is_empty())),
            record,
            trace: None,
            stream: None,
            _in_flight: in_flight,
        }
    }

    pub fn upstream(body: UpstreamBody, record: Option<PendingRecord>, in_flight: InFlight) -> ResponseBody {
        ResponseBody { inner: Inner::Upstream(body), record, trace: None, stream: None, _in_flight: in_flight }
    }

    /// Ends `trace` (its SERVER span) when this body ends.
    pub fn attach_trace(&mut self, trace: Box<crate::telemetry::trace::RequestTrace>) {
        self.trace = Some(trace);
    }

    /// Keeps `stream` counted as open (for the connection's idle timeout) until this body ends.
    pub fn hold_stream(&mut self, stream: super::idle::OpenStream) {
        self.stream = Some(stream);
    }

    fn count(&mut self, data: &[u8]) {
        if let Some(record) = self.record.as_mut() {
            record.response_data(data);
        }
    }

    /// Emits the record now rather than when hyper gets around to dropping the body.
    fn finish(&mut self) {
        drop(self.record.take());
        drop(self.trace.take());
        drop(self.stream.take());
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(content) => Poll::Ready(content.take().map(|c| Ok(Frame::data(c)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.count(data);
                }
                if this.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(content) => content.is_none(),
            Inner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(content) => SizeHint::with_exact(content.as_ref().map_or(0, |c| c.len() as u64)),
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}
