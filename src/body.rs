//! The response/request body type used throughout, and bounded reading of request bodies.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};

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
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    Box::pin(async move {
        match limited.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ReadError::TooLarge { limit })
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    })
}
