//! `/live`, `/ready` (first full sync of all three watchers done) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::metrics::Metrics;

#[derive(Default)]
pub struct Health {
    pub ready: AtomicBool,
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, health: Arc<Health>, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (health, metrics) = (health.clone(), metrics.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = answer(req.uri().path(), &health, &metrics);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn answer(path: &str, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/live" => (StatusCode::OK, "ok\n".to_owned()),
        "/ready" if health.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ready\n".to_owned()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first full sync\n".to_owned(),
        ),
        "/metrics" => (StatusCode::OK, metrics.encode()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
