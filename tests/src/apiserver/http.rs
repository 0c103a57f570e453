//! The HTTP/1.1 side: accepting connections, reading bodies, turning results and [`ApiError`]s
//! into responses, and logging every request with the status it got (what `requests()` returns,
//! so tests can assert how a client behaved, e.g. that it relisted after a 410).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};
use super::watch::ChunkBody;
use super::{RequestRecord, Shared, dispatch, lock};

/// What handlers answer: a whole JSON document or a watch stream.
pub type Body = Either<Full<Bytes>, ChunkBody>;

/// The largest request body accepted, as on the real server.
const MAX_BODY: usize = 3 * 1024 * 1024;

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            // A client that hangs up mid-request is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let response = dispatch::dispatch(shared, req).await.unwrap_or_else(|e| error(&e));
    lock(&shared.requests).push(RequestRecord {
        method,
        path,
        query,
        status: response.status().as_u16(),
    });
    response
}

/// A JSON response.
pub fn json(status: u16, doc: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(bytes))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn text(body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

pub fn error(e: &ApiError) -> Response<Body> {
    json(e.code, &e.status())
}

/// A watch stream: 200, JSON lines, chunked (no length is known).
pub fn stream(body: ChunkBody) -> Response<Body> {
    let mut resp = Response::new(Either::Right(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The request's Content-Type media type (parameters dropped), lowercased.
pub fn media_type(req: &Request<Incoming>) -> Option<String> {
    let ct = req.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Reads the whole body (up to [`MAX_BODY`]).
pub async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "the request body is larger than 3 MiB",
        )),
        Err(e) => Err(ApiError::bad_request(format!("reading the request body: {e}"))),
    }
}

/// A JSON document from a body; malformed or empty is a 400.
pub fn parse_json(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; a JSON object was expected",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode the request body as JSON: {e}")))
}
