//! The response/request body type used throughout, and bounded reading of request bodies.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body: upstream responses pass through as they arrive, without buffering.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body could not be read")]
    Io(#[source] BoxError),
}

/// Reads a whole body, refusing it as soon as it passes `limit` bytes so that a peer can never
/// make the gateway hold more than `limit` bytes of it.
///
/// Boxed on purpose: the generic error bound, evaluated inside the higher-ranked `Send` check of
/// the request future, trips a known compiler limitation (rust-lang/rust#102211); a boxed
/// `Send` future keeps the bound local.
pub fn read_limited<B>(
    body: B,
    limit: u64,
) -> Pin<Box<dyn Future<Output = Result<Bytes, ReadError>> + Send>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(async move {
        let mut body = std::pin::pin!(body);
        // A body in one frame (any usual request) comes back as that frame, without a copy.
        let mut first = Bytes::new();
        let mut joined: Option<BytesMut> = None;
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ReadError::Io(e.into()))?;
            // Trailers carry nothing a JSON-RPC body needs.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limit {
                return Err(ReadError::TooLarge { limit });
            }
            match &mut joined {
                Some(buf) => buf.extend_from_slice(&data),
                None if first.is_empty() => first = data,
                None => {
                    let mut buf = BytesMut::with_capacity(first.len() + data.len());
                    buf.extend_from_slice(&first);
                    buf.extend_from_slice(&data);
                    joined = Some(buf);
                }
            }
            // Once a sized body has delivered its last byte, asking for the end-of-stream frame
            // would only wait for hyper's next turn (a second wake-up of the connection task
            // per request: tests/load/README.md, seventh session).
            if body.is_end_stream() {
                break;
            }
        }
        Ok(joined.map_or(first, BytesMut::freeze))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn frames(parts: &[&'static str]) -> impl http_body::Body<Data = Bytes, Error = BoxError> {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        frames.push(Ok(Frame::trailers(http::HeaderMap::new())));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn frames_are_joined_and_trailers_ignored() {
        let one = read_limited(frames(&["{\"a\":1}"]), 100).await.unwrap();
        assert_eq!(one, "{\"a\":1}");
        let many = read_limited(frames(&["{\"a\"", ":", "1}"]), 7)
            .await
            .unwrap();
        assert_eq!(many, "{\"a\":1}");
        let empty = read_limited(frames(&[]), 0).await.unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused() {
        let err = read_limited(frames(&["{\"a\"", ":", "1}"]), 6).await;
        assert!(matches!(err, Err(ReadError::TooLarge { limit: 6 })));
        let err = read_limited(frames(&["12345678"]), 7).await;
        assert!(matches!(err, Err(ReadError::TooLarge { limit: 7 })));
    }
}
