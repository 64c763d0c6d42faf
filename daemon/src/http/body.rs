//! Bodies of the HTTP API: bounded in size wherever tokend holds one whole, and in time
//! wherever tokend waits for the next piece of one.
//!
//! - [`Idle`] ends a body that stalls: when its sender has sent nothing for the idle time while
//!   its reader was waiting. A slow *reader* costs nothing here — time counts only while the
//!   reader asks — so a client that downloads slowly is never cut off, and a stalled upstream
//!   or client is.
//! - [`read_up_to`] reads a body into memory up to a limit, and hands back what it read and
//!   the rest when the body is longer: the proxy keeps small request bodies to replay them
//!   after a 401, and streams large ones.
//! - [`Outgoing`] is a proxied request's body — what was buffered, then the rest — and says
//!   when it has all been handed to the upstream connection, which is when the wait for the
//!   upstream's answer starts.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Any error a body may end with.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The response body type of every route.
pub(crate) type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body stalled: nothing arrived for the idle time.
#[derive(Debug)]
pub(crate) struct Stalled {
    /// Whose body it was: "the client" or "the API".
    pub sender: &'static str,
    /// How long it sent nothing.
    pub idle: Duration,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sent nothing for {}", self.sender, humantime::format_duration(self.idle))
    }
}

impl StdError for Stalled {}

/// A body that fails with [`Stalled`] when its sender sends nothing for `idle` while it is
/// being read.
pub(crate) struct Idle<B> {
    inner: B,
    sender: &'static str,
    idle: Duration,
    /// Allocated once and reset, since a long transfer waits for data many times.
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` runs: from the first poll that found no data to the next frame.
    armed: bool,
}

impl<B> Idle<B> {
    /// Wraps `inner`, sent by `sender`.
    pub(crate) fn new(inner: B, sender: &'static str, idle: Duration) -> Self {
        Idle { inner, sender, idle, timer: Box::pin(tokio::time::sleep(idle)), armed: false }
    }
}

impl<B> Body for Idle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    this.timer.as_mut().reset(Instant::now() + this.idle);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(Stalled { sender: this.sender, idle: this.idle }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What [`read_up_to`] read.
pub(crate) enum Read<B> {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// The body is longer than the limit: what was read so far, and the rest.
    Longer(Bytes, B),
}

/// Reads `body` into memory until it ends or more than `limit` bytes have arrived. Trailers
/// are dropped.
pub(crate) async fn read_up_to<B>(mut body: B, limit: usize) -> Result<Read<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let expected = body.size_hint().exact().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let mut buffer = Vec::with_capacity(expected.min(limit));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(Into::into)?.into_data() {
            buffer.extend_from_slice(&data);
            if buffer.len() > limit {
                return Ok(Read::Longer(buffer.into(), body));
            }
        }
    }
    Ok(Read::Whole(buffer.into()))
}

/// A proxied request's body: `buffered`, then `rest`. Tells `sent` once it has all been
/// handed over.
pub(crate) struct Outgoing<B> {
    buffered: Option<Bytes>,
    rest: Option<B>,
    /// The length in all, when the client said.
    length: Option<u64>,
    sent: Arc<Notify>,
}

impl<B> Outgoing<B> {
    /// A body held whole in memory.
    pub(crate) fn buffered(bytes: Bytes) -> Self {
        let sent = Arc::new(Notify::new());
        // Nothing to wait for: it goes out as soon as the request does.
        sent.notify_one();
        let length = Some(bytes.len() as u64);
        Outgoing { buffered: Some(bytes).filter(|b| !b.is_empty()), rest: None, length, sent }
    }

    /// A body of `read`, followed by `rest`; `length` bytes in all, if the client said.
    pub(crate) fn streaming(read: Bytes, rest: B, length: Option<u64>) -> Self {
        let sent = Arc::new(Notify::new());
        Outgoing { buffered: Some(read).filter(|b| !b.is_empty()), rest: Some(rest), length, sent }
    }

    /// Notified once the whole body has been handed over.
    pub(crate) fn sent(&self) -> Arc<Notify> {
        self.sent.clone()
    }
}

impl<B> Body for Outgoing<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(buffered) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(buffered))));
        }
        if let Some(rest) = &mut this.rest {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(frame)) => return Poll::Ready(Some(frame)),
                Poll::Ready(None) => {
                    this.rest = None;
                    this.sent.notify_one();
                }
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.rest.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A complete body from bytes: a JSON answer of tokend's own.
pub(crate) fn full(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole_and_a_longer_one_is_handed_back() {
        let body = http_body_util::Full::new(Bytes::from(vec![7u8; 100]));
        assert!(matches!(read_up_to(body, 100).await.unwrap(), Read::Whole(b) if b.len() == 100));
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
            (0..5).map(|_| Ok(Frame::data(Bytes::from(vec![1u8; 40])))).collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        match read_up_to(body, 100).await.unwrap() {
            Read::Longer(prefix, rest) => {
                assert_eq!(prefix.len(), 120);
                let rest = rest.collect().await.unwrap().to_bytes();
                assert_eq!(rest.len(), 80);
            }
            Read::Whole(_) => panic!("the body is longer than the limit"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_and_a_slow_reader_does_not_count() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let body = http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut body = Idle::new(body, "the API", Duration::from_secs(30));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a")))).await.unwrap();
        // The reader waits longer than the idle time before asking: nothing is counted.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "a");
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "the API sent nothing for 30s");
        drop(tx);
    }
}
