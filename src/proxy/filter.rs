//! Applying list filtering to an upstream response: JSON bodies are read (bounded) and rewritten,
//! SSE bodies are filtered event by event as they stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::headers::{EVENT_STREAM, content_type_is};
use super::sse::{SseFilter, filter_list_json};
use crate::body::{Body, BoxError, full, read_limited};
use crate::jsonrpc::RawIdBuf;
use crate::policy::{ListKind, Policy, ScopeSet};

/// Largest list response (JSON body or single SSE event) the gateway will inspect; a larger one
/// is replaced by an error rather than passed through unfiltered.
pub const MAX_LIST_RESPONSE: usize = 8 << 20;

/// Rewrites a list response so it shows only items the caller may use.
pub async fn filter_response(
    resp: Response<Body>,
    target: RawIdBuf,
    kind: ListKind,
    policy: Arc<Policy>,
    granted: ScopeSet,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    if content_type_is(&parts.headers, EVENT_STREAM) {
        let filter = SseFilter::new(target, kind, policy, granted, MAX_LIST_RESPONSE);
        return Response::from_parts(
            parts,
            FilteredSse {
                inner: body,
                filter: Some(filter),
            }
            .boxed_unsync(),
        );
    }
    if !content_type_is(&parts.headers, "application/json") {
        return Response::from_parts(parts, body);
    }
    let body = match read_limited(body, MAX_LIST_RESPONSE as u64).await {
        Ok(bytes) => match filter_list_json(&bytes, kind, &policy, granted) {
            Some(rewritten) => rewritten,
            None => bytes,
        },
        Err(_) => crate::jsonrpc::jsonrpc_error_body(
            Some(target.as_raw_id()),
            crate::jsonrpc::INTERNAL_ERROR,
            super::sse::FILTER_FAILED_MESSAGE,
        ),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(len) = HeaderValue::from_str(&body.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
    }
    Response::from_parts(parts, full(body))
}

pin_project_lite::pin_project! {
    /// Streams an SSE body through the filter: every complete event leaves as soon as it has
    /// arrived; only the event answering the list request is rewritten.
    struct FilteredSse {
        #[pin]
        inner: Body,
        filter: Option<SseFilter>,
    }
}

impl HttpBody for FilteredSse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(filter) = this.filter.as_mut() else {
                return this.inner.as_mut().poll_frame(cx);
            };
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = filter.push(&data);
                        // Once the list response has gone by, later chunks skip the filter.
                        if filter.is_passthrough() {
                            *this.filter = None;
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let rest = filter.finish();
                    *this.filter = None;
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
