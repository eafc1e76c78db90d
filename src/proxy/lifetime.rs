//! Ending a GET's event stream once the credential that opened it is no longer accepted.
//!
//! A token is checked when a request arrives. A standalone SSE stream (GET) can stay open for
//! hours after that, so without an end it would outlive the token, and a revoked client would
//! go on receiving the server's messages. MCP clients open the stream again when it ends, and
//! that request is authenticated afresh. A POST's stream is left to run: it carries the answer
//! to a call that the token was valid for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::IntCounter;
use tokio::time::{Instant, Sleep};
use tracing::info;

use super::headers::{EVENT_STREAM, content_type_is};
use crate::body::{Body, BoxError};

/// What to report when a stream is ended.
pub struct Expiry {
    pub route: Arc<str>,
    pub request_id: HeaderValue,
    pub counter: IntCounter,
}

pub fn is_event_stream(resp: &Response<Body>) -> bool {
    resp.status().is_success() && content_type_is(resp.headers(), EVENT_STREAM)
}

/// Ends `resp`'s body at `until`: what the upstream sends later never reaches the client.
pub fn end_at(resp: Response<Body>, until: SystemTime, expiry: Expiry) -> Response<Body> {
    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
    let (parts, inner) = resp.into_parts();
    let body = EndsAt {
        inner,
        deadline: Box::pin(tokio::time::sleep(left)),
        expiry: Some(expiry),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

struct EndsAt {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    /// `None` once the deadline has ended the stream.
    expiry: Option<Expiry>,
}

impl HttpBody for EndsAt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(expiry) = &this.expiry else {
            return Poll::Ready(None);
        };
        // The deadline first: no frame goes out after it, however busy the upstream is. The
        // clock is read as well, because the timer fires only on the millisecond after it.
        let due = this.deadline.deadline() <= Instant::now();
        if due || this.deadline.as_mut().poll(cx).is_ready() {
            expiry.counter.inc();
            info!(
                request.id = expiry.request_id.to_str().unwrap_or(""),
                route.id = &*expiry.route,
                "event stream ended: the credential that opened it expired"
            );
            this.expiry = None;
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.expiry.is_none() || self.inner.is_end_stream()
    }

    /// Unknown: the stream may end before the upstream's body does.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use http::header;

    fn event_stream(chunks: &[&'static str]) -> Response<Body> {
        let frames = chunks
            .iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
        Response::builder()
            .header(header::CONTENT_TYPE, "Text/Event-Stream; charset=utf-8")
            .body(body.boxed_unsync())
            .unwrap()
    }

    fn expiry() -> Expiry {
        Expiry {
            route: Arc::from("r"),
            request_id: HeaderValue::from_static("req-1"),
            counter: IntCounter::new("expired", "test").unwrap(),
        }
    }

    #[test]
    fn only_successful_event_streams_are_recognised() {
        assert!(is_event_stream(&event_stream(&[])));
        let mut failed = event_stream(&[]);
        *failed.status_mut() = http::StatusCode::BAD_GATEWAY;
        assert!(!is_event_stream(&failed));
        let json = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(crate::body::empty())
            .unwrap();
        assert!(!is_event_stream(&json));
    }

    #[tokio::test]
    async fn a_credential_that_outlives_the_stream_changes_nothing() {
        // Year 2100: the furthest `exp` the gateway keeps (see `unix_time`).
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        let e = expiry();
        let counter = e.counter.clone();
        let resp = end_at(event_stream(&["data: 1\n\n", "data: 2\n\n"]), until, e);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "data: 1\n\ndata: 2\n\n");
        assert_eq!(counter.get(), 0);
    }

    #[tokio::test]
    async fn a_credential_already_past_ends_the_stream_before_any_event() {
        let e = expiry();
        let counter = e.counter.clone();
        let past = SystemTime::now() - Duration::from_secs(1);
        let resp = end_at(event_stream(&["data: 1\n\n"]), past, e);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
        assert_eq!(counter.get(), 1);
    }
}
