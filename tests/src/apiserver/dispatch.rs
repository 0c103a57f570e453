//! From a routed request to the store: which verbs each kind of path takes (others are 405), what
//! body and media types they accept (others are 400/415), and the status codes of success (201 for
//! a create, 200 otherwise), as on a real server.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::ACCEPT;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::crud::{self, Replaced};
use super::discovery;
use super::error::{ApiError, ApiResult};
use super::http::{self, Body};
use super::list;
use super::patch;
use super::query::Query;
use super::resources::{ResId, Resource};
use super::route::{self, Route};
use super::store::Key;
use super::table;
use super::watch;
use super::{Shared, StatusPatch, StatusWrites, lock};

pub async fn dispatch(shared: &Arc<Shared>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    if lock(&shared.store).unavailable {
        return Err(ApiError::unavailable());
    }
    let path = req.uri().path().to_string();
    let route = route::parse(&path)
        .filter(|r| shared.serves_route(r))
        .ok_or_else(|| ApiError::not_found_path(&path))?;
    if is_status_write(&route, req.method()) {
        gate(shared).await?;
    }
    let tables = req.method() == Method::GET && matches!(route, Route::Collection { .. } | Route::Object { .. });
    let format = negotiate(&req, tables)?;
    let q = Query::parse(req.uri().query().unwrap_or(""));
    let get_only = |doc: Value| {
        if req.method() == Method::GET {
            Ok(http::json(200, &doc))
        } else {
            Err(ApiError::method_not_allowed(req.method().as_str(), &path))
        }
    };
    match route {
        Route::Version => get_only(discovery::version()),
        Route::Health if req.method() == Method::GET => Ok(http::text("ok")),
        Route::Health => Err(ApiError::method_not_allowed(req.method().as_str(), &path)),
        Route::CoreVersions => get_only(discovery::core_versions(&shared.addr.to_string())),
        Route::Groups => get_only(discovery::groups(|g| shared.serves_group(g))),
        Route::Group(g) => get_only(discovery::group(g)),
        Route::ResourceList { group, version } => get_only(discovery::resource_list(group, version)),
        Route::Collection { res, ns } => collection(shared, req, res, ns, &q, &path, format).await,
        Route::Object { res, ns, name, status } => {
            object(
                shared,
                req,
                crud::key(res, ns.as_deref(), &name),
                status,
                &q,
                &path,
                format,
            )
            .await
        }
    }
}

/// A write of Service status or of an Event: what [`StatusWrites`] governs.
fn is_status_write(route: &Route, method: &Method) -> bool {
    let writes = matches!(*method, Method::POST | Method::PATCH | Method::PUT);
    match route {
        Route::Object { res, status: true, .. } => {
            Resource::get(*res).kind == "Service" && matches!(*method, Method::PATCH | Method::PUT)
        }
        Route::Collection { res, .. } | Route::Object { res, .. } => writes && Resource::get(*res).kind == "Event",
        _ => false,
    }
}

/// Counts a held request while it waits, also when its client hangs up.
struct Held<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Applies the [`StatusWrites`] mode to a status or Event write: returns when it may be served.
async fn gate(shared: &Arc<Shared>) -> ApiResult<()> {
    let mut mode = shared.status_writes.subscribe();
    loop {
        let now = *mode.borrow_and_update();
        match now {
            StatusWrites::Normal => return Ok(()),
            StatusWrites::Delay(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
            StatusWrites::Fail(code) => {
                let reason = StatusWrites::reason(code).unwrap_or("InternalError");
                return Err(ApiError::new(
                    code,
                    reason,
                    "status and Event writes fail on this test API server (set_status_writes)",
                ));
            }
            StatusWrites::Hold => {
                shared.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _held = Held(&shared.held);
                if mode.changed().await.is_err() {
                    return Err(ApiError::unavailable());
                }
            }
        }
    }
}

/// What a GET answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    /// `meta.k8s.io/v1` Table (kubectl get).
    Table,
}

/// The first acceptable entry of the Accept header, in the client's order (kubectl and kube-rs
/// list preferences in order and use no q-values). Tables only where `tables` (GET of a list or
/// an object); partial-object metadata and protobuf are never produced: 406 when nothing else
/// is acceptable.
fn negotiate(req: &Request<Incoming>, tables: bool) -> ApiResult<Format> {
    let Some(accept) = req.headers().get(ACCEPT).and_then(|a| a.to_str().ok()) else {
        return Ok(Format::Json);
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<&str> = parts.filter(|p| !p.starts_with("q=")).collect();
        let json = matches!(media.as_str(), "application/json" | "application/*" | "*/*" | "");
        if json && params.is_empty() {
            return Ok(Format::Json);
        }
        let mut table_params = params.clone();
        table_params.sort_unstable();
        if json && tables && table_params == ["as=Table", "g=meta.k8s.io", "v=v1"] {
            return Ok(Format::Table);
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!("only application/json (and Tables for kubectl get) is served by this test API server, not {accept:?}"),
    ))
}

/// 415 unless a create/replace body is JSON (a missing Content-Type defaults to JSON, as on the
/// real server).
fn check_json(req: &Request<Incoming>) -> ApiResult<()> {
    match http::media_type(req).as_deref() {
        None | Some("application/json") => Ok(()),
        Some(other) => Err(ApiError::unsupported_media_type(other, "application/json")),
    }
}

async fn collection(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    res: ResId,
    ns: Option<String>,
    q: &Query,
    path: &str,
    format: Format,
) -> ApiResult<Response<Body>> {
    match *req.method() {
        Method::GET if q.flag("watch")? => Ok(http::stream(watch::start(
            shared,
            res,
            ns.as_deref(),
            q,
            format == Format::Table,
        )?)),
        Method::GET => {
            let list = list::list(&lock(&shared.store), res, ns.as_deref(), q)?;
            match format {
                Format::Json => Ok(http::json(200, &list)),
                Format::Table => {
                    let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
                    Ok(http::json(
                        200,
                        &table::table(Resource::get(res), items, list["metadata"].clone()),
                    ))
                }
            }
        }
        Method::POST if ns.is_some() || !Resource::get(res).namespaced => {
            check_json(&req)?;
            q.check_field_validation()?;
            let dry_run = q.dry_run()?;
            let body = http::parse_json(&http::read_body(req).await?)?;
            let ns = ns.unwrap_or_default();
            let created = crud::create(&mut lock(&shared.store), res, &ns, body, dry_run)?;
            Ok(http::json(201, &created))
        }
        _ => Err(ApiError::method_not_allowed(req.method().as_str(), path)),
    }
}

async fn object(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    key: Key,
    status: bool,
    q: &Query,
    path: &str,
    format: Format,
) -> ApiResult<Response<Body>> {
    let r = Resource::get(key.0);
    match *req.method() {
        Method::GET if q.flag("watch")? => Err(ApiError::bad_request(
            "watch on an object path is not supported; watch the collection with fieldSelector=metadata.name=NAME",
        )),
        Method::GET => {
            let obj = lock(&shared.store)
                .get(&key)
                .ok_or_else(|| ApiError::not_found(r, &key.2))?;
            match format {
                Format::Json => Ok(http::json(200, &obj)),
                Format::Table => {
                    let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                    Ok(http::json(200, &table::table(r, std::slice::from_ref(&obj), meta)))
                }
            }
        }
        Method::PUT => {
            check_json(&req)?;
            q.check_field_validation()?;
            let dry_run = q.dry_run()?;
            let body = http::parse_json(&http::read_body(req).await?)?;
            match crud::replace(&mut lock(&shared.store), key, body, status, dry_run)? {
                Replaced::Updated(obj) => Ok(http::json(200, &obj)),
                Replaced::Created(obj) => Ok(http::json(201, &obj)),
            }
        }
        Method::PATCH => {
            let content_type = http::media_type(&req);
            patch::check_content_type(content_type.as_deref())?;
            q.check_field_validation()?;
            let dry_run = q.dry_run()?;
            let body = http::parse_json(&http::read_body(req).await?)?;
            let (ns, name) = (key.1.clone(), key.2.clone());
            let patched = crud::patch(&mut lock(&shared.store), key, &body, status, dry_run)?;
            if status {
                let content_type = content_type.unwrap_or_default();
                lock(&shared.status_patches).push(StatusPatch {
                    namespace: ns,
                    name,
                    content_type,
                    body,
                });
            }
            Ok(http::json(200, &patched))
        }
        Method::DELETE if !status => {
            let dry_run = q.dry_run()?;
            let bytes = http::read_body(req).await?;
            let options = if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                http::parse_json(&bytes)?
            };
            let deleted = crud::delete(&mut lock(&shared.store), &key, &options, dry_run)?;
            Ok(http::json(200, &deleted))
        }
        _ => Err(ApiError::method_not_allowed(req.method().as_str(), path)),
    }
}
