//! Body types of the request path: streamed both ways, never buffered.
//!
//! [`RequestBody`] forwards the caller's body to the upstream and fails the stream as soon as it
//! passes the route's limit (invariant 9). [`ResponseBody`] is either the upstream's body, streamed,
//! or a small gateway-made body (problem+json, admin answers).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Boxed error of bodies on the request path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The streamed request body passed the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyLimitExceeded {
    /// The limit.
    pub limit: u64,
}

/// The caller's body on its way upstream, with a byte limit.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    replay: Option<Bytes>,
    seen: u64,
    limit: u64,
    counter: Arc<AtomicU64>,
}

impl RequestBody {
    /// Wraps `inner`, failing once more than `limit` bytes have passed.
    pub fn new(inner: Incoming, limit: u64) -> RequestBody {
        RequestBody { inner: Some(inner), replay: None, seen: 0, limit, counter: Arc::default() }
    }
    /// A body kept in memory, sent again on a retry.
    pub fn replay(b: Bytes) -> RequestBody {
        RequestBody {
            inner: None,
            replay: Some(b).filter(|b| !b.is_empty()),
            seen: 0,
            limit: u64::MAX,
            counter: Arc::default(),
        }
    }
    /// An empty body (for upgrade requests, whose bytes flow after the 101).
    pub fn empty() -> RequestBody {
        RequestBody { inner: None, replay: None, seen: 0, limit: 0, counter: Arc::default() }
    }
    /// A shared count of the bytes that have passed, for the request's record.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(this.replay.take().map(|b| Ok(Frame::data(b))));
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    this.counter.store(this.seen, Ordering::Relaxed);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded { limit: this.limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(i) => i.is_end_stream(),
            None => self.replay.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(i) => i.size_hint(),
            None => SizeHint::with_exact(self.replay.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A response body: the upstream's, streamed, or a gateway-made one.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from the upstream.
    Upstream(Incoming),
    /// Streamed from the upstream, counted in flight to its endpoint until the body ends.
    Guarded(Incoming, crate::upstream::resilience::InFlight),
    /// Made by the gateway (`None` once sent).
    Full(Option<Bytes>),
    /// The part of the upstream's body the gateway read, then the rest streamed.
    Resumed(Option<Bytes>, Incoming, crate::upstream::resilience::InFlight),
    /// Produced over time by the gateway (the admin tap's event stream).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// What the gateway read of a body (to store it, when it turned out too large), then the rest.
    Prefixed(Option<Bytes>, Box<ResponseBody>),
}

impl ResponseBody {
    /// A gateway-made body.
    pub fn full(b: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Full(Some(b.into()))
    }
    /// No body.
    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }
}

/// Reads `body` whole when it holds at most `cap` bytes; otherwise what was read and the rest.
pub async fn read_up_to(mut body: ResponseBody, cap: u64) -> Result<Result<Bytes, ResponseBody>, BoxError> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > cap {
                return Ok(Err(ResponseBody::Prefixed(Some(buf.freeze()), Box::new(body))));
            }
        }
    }
    Ok(Ok(buf.freeze()))
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ResponseBody::Upstream(b) | ResponseBody::Guarded(b, _) => {
                Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError)
            }
            ResponseBody::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            ResponseBody::Resumed(first, rest, _) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(rest).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            },
            ResponseBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            ResponseBody::Prefixed(first, rest) => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(&mut **rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) | ResponseBody::Guarded(b, _) => b.is_end_stream(),
            ResponseBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            ResponseBody::Resumed(first, rest, _) => first.is_none() && rest.is_end_stream(),
            ResponseBody::Channel(_) => false,
            ResponseBody::Prefixed(first, rest) => first.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) | ResponseBody::Guarded(b, _) => b.size_hint(),
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Resumed(..) => SizeHint::default(),
            ResponseBody::Channel(_) | ResponseBody::Prefixed(..) => SizeHint::default(),
        }
    }
}
