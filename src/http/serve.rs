//! The hyper 1 accept loop and the response builders every handler uses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::app::{Body, Ctx};
use crate::problem::ApiError;

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

pub fn full(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body)
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    full(status, Some("application/json"), body.into())
}

pub fn empty(status: StatusCode) -> Response<Body> {
    full(status, None, Bytes::new())
}

/// Seconds a client told 503 is asked to wait before it retries (`Retry-After`).
pub(super) const RETRY_AFTER_SECS: &str = "1";

pub fn problem(e: &ApiError) -> Response<Body> {
    let mut resp = full(e.kind.status(), Some("application/problem+json"), e.body());
    if let Some(allow) = e.allow {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if e.kind.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    resp
}

/// Accepts connections until shutdown, then drains in-flight requests for at most the shutdown
/// grace and drops the connections still open: when this returns, no connection task holds the
/// context (and with it the log). Connections beyond the cap get a 503 and are closed.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.config.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // One task per connection (at most the connection cap), reaped as they end.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ctx.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(permit) = ctx.connection_permit() else {
            ctx.metrics.connections_rejected.increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let svc_ctx = ctx.clone();
        let service = service_fn(move |req| {
            let ctx = svc_ctx.clone();
            async move { Ok::<_, Infallible>(super::routes::handle(ctx, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(ctx.config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace period elapsed with requests still in flight; dropping them"
        );
    }
    connections.shutdown().await;
}

/// Answers a connection over the cap with a 503 problem and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let body = ApiError::unavailable("connection limit reached; retry later").body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: {RETRY_AFTER_SECS}\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}
