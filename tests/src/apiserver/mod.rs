//! An in-process Kubernetes API server for tests, speaking the real wire protocol over plain
//! HTTP/1.1 on 127.0.0.1, because no kube-apiserver can be installed here and the generator must
//! be tested as it runs: the real binary, kube-rs's client and `watcher`, through a kubeconfig.
//!
//! It is strict rather than convenient: what it does not implement fails loudly with the status a
//! real server would use for it (404 for unknown paths, 405 for verbs, 415 for patch types, 400 for
//! selectors it cannot evaluate), and what it implements behaves like the real thing (one global
//! resourceVersion, LIST pagination over a consistent snapshot, watch replay from a
//! resourceVersion, 410 after compaction, bookmarks, no-op updates that write nothing). Tests drive
//! it from sync code: the server runs its own tokio runtime on a background thread.
//!
//! The kinds served are one table (`resources.rs`): what the generator reads and writes, and what
//! the cluster bundle (deploy/kubernetes) installs, all stored alike by group/version/kind.
//!
//! Known gaps: Namespaces are objects, but a namespaced object may be created in a namespace that
//! has none (no NamespaceLifecycle admission); no finalizers or garbage collection; no defaulting
//! (no clusterIP or nodePort allocation, no Deployment defaults, no `metadata.generation`) and no
//! validation beyond names and metadata (no per-kind rules, no schemas, so `fieldValidation=Strict`
//! is refused and a Secret's `stringData` is kept as sent rather than folded into `data`); no
//! managedFields; no OpenAPI, so kubectl create/replace/apply need `--validate=false` (they then
//! send `fieldValidation=Ignore`), and a kubectl apply that changes a live object, `kubectl patch`
//! without `--type=merge` and `kubectl apply --server-side` send strategic merge or apply patches
//! and get 415 (a first apply creates, a repeated one finds nothing to patch, and both work); and
//! core/v1 and events.k8s.io/v1 Events are stored separately (no conversion between the two).
//!
//! [`ApiServer::set_status_writes`] makes writes of Service status and of Events slow, held or
//! failing (and only those), so a test can show that a controller's decisions never wait on them.
//!
//! kube 5 clients retry 503 by default (15 times, exponential backoff from 5 ms), so a request
//! made during [`ApiServer::set_unavailable`] waits for the outage to end rather than failing,
//! unless the client sets `Config::default_retry = false`.

mod crud;
mod discovery;
mod dispatch;
mod error;
mod http;
mod list;
mod meta;
mod patch;
mod query;
mod resources;
mod route;
mod select;
mod store;
mod table;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use store::Store;

pub use error::ApiError;

/// One request as the server saw it, in arrival order of completion of its response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string, "" when there was none.
    pub query: String,
    pub status: u16,
}

/// An accepted PATCH of `services/{name}/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPatch {
    pub namespace: String,
    pub name: String,
    pub content_type: String,
    pub body: Value,
}

/// How the server answers writes of `services/{name}/status` (PATCH, PUT) and of Events (POST,
/// PATCH, PUT; core/v1 and events.k8s.io/v1); every other request is served as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusWrites {
    #[default]
    Normal,
    /// Served after this long (an API server a few ms away, or a slow etcd).
    Delay(Duration),
    /// Not answered until the mode changes (then served by the new mode);
    /// [`ApiServer::held_status_writes`] counts those waiting.
    Hold,
    /// Answered with this code and its real Status reason: 429, 500, 503 or 504.
    Fail(u16),
}

impl StatusWrites {
    /// The Status reason of a failure code, as the real server names it; None for a code this
    /// server does not fake.
    pub(crate) fn reason(code: u16) -> Option<&'static str> {
        match code {
            429 => Some("TooManyRequests"),
            500 => Some("InternalError"),
            503 => Some("ServiceUnavailable"),
            504 => Some("Timeout"),
            _ => None,
        }
    }
}

/// State shared by the HTTP side and the sync test API.
pub(crate) struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<RequestRecord>>,
    status_patches: Mutex<Vec<StatusPatch>>,
    pub(crate) status_writes: tokio::sync::watch::Sender<StatusWrites>,
    /// Status and Event writes waiting in [`StatusWrites::Hold`].
    pub(crate) held: AtomicUsize,
    bookmark_interval: Mutex<Duration>,
    addr: SocketAddr,
    /// The API groups served ("" is core): [`resources::DEFAULT_GROUPS`] and those enabled.
    groups: Vec<&'static str>,
}

impl Shared {
    pub(crate) fn serves_group(&self, group: &str) -> bool {
        self.groups.contains(&group)
    }

    /// Whether a routed path lies in a served group (else it is a 404, as on a cluster without it).
    pub(crate) fn serves_route(&self, route: &route::Route) -> bool {
        use route::Route;
        match route {
            Route::Group(g) | Route::ResourceList { group: g, .. } => self.serves_group(g),
            Route::Collection { res, .. } | Route::Object { res, .. } => {
                self.serves_group(resources::Resource::get(*res).group)
            }
            Route::Version | Route::Health | Route::CoreVersions | Route::Groups => true,
        }
    }
}

/// Locks ignoring poisoning: a test that panicked while holding a lock must not hide its own
/// failure behind a second panic here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running server; dropping it stops it.
pub struct ApiServer {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds 127.0.0.1 on a free port and serves from a background thread, with the API groups
    /// the generator uses ([`resources::DEFAULT_GROUPS`]). Panics when the socket or the runtime
    /// cannot be created (a broken test machine).
    pub fn start() -> ApiServer {
        Self::start_with_groups(&[])
    }

    /// [`ApiServer::start`], also serving the API `groups` (e.g. "apps",
    /// "rbac.authorization.k8s.io"), as kube-apiserver's `--runtime-config` enables groups.
    /// Panics on a group the resource table does not have (a bug in the test).
    pub fn start_with_groups(groups: &[&str]) -> ApiServer {
        let mut served: Vec<&'static str> = resources::DEFAULT_GROUPS.to_vec();
        for group in groups {
            let known = resources::groups().into_iter().find(|g| g == group);
            served.push(known.unwrap_or_else(|| panic!("the test API server has no API group {group:?}")));
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the test API server");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            requests: Mutex::default(),
            status_patches: Mutex::default(),
            status_writes: tokio::sync::watch::Sender::new(StatusWrites::Normal),
            held: AtomicUsize::new(0),
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
            addr,
            groups: served,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test API server runtime");
        let (tx, rx) = oneshot::channel();
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("apiserver-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => http::serve(listener, served, rx).await,
                        Err(e) => eprintln!("test API server: {e}"),
                    }
                });
                // Dropping the runtime cancels open connections and watch streams.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawning the test API server thread");
        ApiServer {
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig whose current context points at this server, with a credential-less user and
    /// namespace "default".
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: flipbit-test\n  cluster:\n    server: {}\n\
             users:\n- name: flipbit-test\n  user: {{}}\ncontexts:\n- name: flipbit-test\n  context:\n    \
             cluster: flipbit-test\n    user: flipbit-test\n    namespace: default\n\
             current-context: flipbit-test\npreferences: {{}}\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// Creates or replaces an object by (apiVersion+kind, namespace, name), status included, and
    /// returns it as stored. Namespaced objects without a namespace go to "default". Panics on an
    /// object this server cannot store (a bug in the test).
    pub fn apply(&self, obj: Value) -> Value {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if let Some(res) = resources::by_kind(av, obj.get("kind").and_then(Value::as_str).unwrap_or(""))
            && !self.shared.serves_group(resources::Resource::get(res).group)
        {
            panic!("ApiServer::apply: {av} is not served here; start the server with start_with_groups");
        }
        let mut store = lock(&self.shared.store);
        match crud::apply(&mut store, obj) {
            Ok(stored) => (*stored).clone(),
            Err(e) => panic!("ApiServer::apply: {e}"),
        }
    }

    /// Deletes an object (kind as in `kind:`; "Event" means core/v1). False when it was absent.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let Some(key) = crud::key_for_kind(kind, namespace, name) else {
            return false;
        };
        lock(&self.shared.store).remove(&key).is_some()
    }

    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = crud::key_for_kind(kind, namespace, name)?;
        lock(&self.shared.store).get(&key).map(|v| (*v).clone())
    }

    /// Forgets the change history: open watches get ERROR 410 and end; a watch or paginated LIST
    /// from an older resourceVersion gets 410 too, so clients must relist.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// While on, every request gets a 503 Status and open watches end.
    pub fn set_unavailable(&self, on: bool) {
        lock(&self.shared.store).set_unavailable(on);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    pub fn status_patches(&self) -> Vec<StatusPatch> {
        lock(&self.shared.status_patches).clone()
    }

    /// The accepted status patches from the `from`-th on (for polling many without copying all).
    pub fn status_patches_since(&self, from: usize) -> Vec<StatusPatch> {
        lock(&self.shared.status_patches)
            .get(from..)
            .map(<[StatusPatch]>::to_vec)
            .unwrap_or_default()
    }

    /// How writes of Service status and of Events are answered from now on (held ones included).
    /// Panics on a failure code the server does not fake (a bug in the test).
    pub fn set_status_writes(&self, mode: StatusWrites) {
        if let StatusWrites::Fail(code) = mode {
            assert!(
                StatusWrites::reason(code).is_some(),
                "set_status_writes: Fail({code}) is not faked; use 429, 500, 503 or 504"
            );
        }
        self.shared.status_writes.send_replace(mode);
    }

    /// Status and Event writes waiting in [`StatusWrites::Hold`] now.
    pub fn held_status_writes(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Event objects currently stored, core/v1 then events.k8s.io/v1.
    pub fn events(&self) -> Vec<Value> {
        let store = lock(&self.shared.store);
        resources::RESOURCES
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == "Event")
            .flat_map(|(id, _)| store.list(id, None))
            .map(|(_, v)| (*v).clone())
            .collect()
    }

    /// How often watches with allowWatchBookmarks get a BOOKMARK (default 1 s); applies to
    /// watches opened afterwards.
    pub fn set_bookmark_interval(&self, d: Duration) {
        *lock(&self.shared.bookmark_interval) = d;
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        lock(&self.shared.store).close_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("url", &self.url()).finish()
    }
}
