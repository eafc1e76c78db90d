//! The admin listener: `/healthz`, `/readyz` and `/metrics`, never on the public listener.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::gateway::Gateway;
use crate::server::RequestBody;

pub async fn handle(current: Arc<ArcSwap<Gateway>>, req: Request<RequestBody>) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let gw = current.load();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if gw.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: issuer keys not loaded yet\n",
        ),
        "/metrics" => {
            let mut resp = text(StatusCode::OK, gw.metrics().render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
