//! Streaming body wrappers: they pass frames through untouched and count bytes for the metrics record.
//! Nothing is buffered, so request and response sizes are unbounded and memory stays flat; for a
//! request the API logs with payloads, the first `--log-max-payload` bytes are copied aside (a tee).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::telemetry::analytics::{PendingRecord, RequestStats};
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
    /// Streamed from the client as it arrives.
    Stream(Incoming),
    /// Already in memory (empty, or buffered so failover can send it again), sent in one frame.
    Bytes(Option<Bytes>),
}

impl RequestBody {
    /// Wraps the client's body; with `capture`, its first `capture` bytes are kept for the log.
    pub fn new(inner: Incoming, capture: Option<usize>) -> (RequestBody, Arc<RequestStats>) {
        let stats = Arc::new(RequestStats {
            capture: capture.map(|max| (max, std::sync::Mutex::new(CappedBody::default()))),
            ..RequestStats::default()
        });
        if inner.is_end_stream() {
            // Clients may never poll an empty body, so it is "ended" from the start.
            stats.ended.store(true, Ordering::Relaxed);
        }
        (RequestBody { inner: RequestInner::Stream(inner), stats: stats.clone() }, stats)
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
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            RequestInner::Bytes(content) => return Poll::Ready(content.take().map(|c| Ok(Frame::data(c)))),
            RequestInner::Stream(inner) => inner,
        };
        match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
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
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                this.stats.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestInner::Stream(inner) => inner.is_end_stream(),
            RequestInner::Bytes(content) => content.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestInner::Stream(inner) => inner.size_hint(),
            RequestInner::Bytes(content) => SizeHint::with_exact(content.as_ref().map_or(0, |c| c.len() as u64)),
        }
    }
}

#[derive(Debug)]
enum Inner {
    /// A body the gateway made (mock, errors): sent in one frame.
    Full(Option<Bytes>),
    /// The endpoint's response body, streamed.
    Upstream(Incoming),
}

/// Every response the proxy sends. It holds the request's metrics record, emitted exactly once when
/// the body ends, fails or is dropped (client gone), and the in-flight gauge guard.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    record: Option<PendingRecord>,
    /// A sampled request's trace: its SERVER span ends with the body.
    trace: Option<Box<crate::telemetry::trace::RequestTrace>>,
    _in_flight: InFlight,
}

impl ResponseBody {
    pub fn full(content: Bytes, record: Option<PendingRecord>, in_flight: InFlight) -> ResponseBody {
        ResponseBody {
            inner: Inner::Full(Some(content).filter(|c| !c.is_empty())),
            record,
            trace: None,
            _in_flight: in_flight,
        }
    }

    pub fn upstream(body: Incoming, record: Option<PendingRecord>, in_flight: InFlight) -> ResponseBody {
        ResponseBody { inner: Inner::Upstream(body), record, trace: None, _in_flight: in_flight }
    }

    /// Ends `trace` (its SERVER span) when this body ends.
    pub fn attach_trace(&mut self, trace: Box<crate::telemetry::trace::RequestTrace>) {
        self.trace = Some(trace);
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
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
