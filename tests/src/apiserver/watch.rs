//! WATCH: newline-delimited `{"type":..,"object":..}` events over a chunked response.
//!
//! It follows the real server's semantics that clients depend on: without a resourceVersion (or
//! with "0") the stream opens with a synthetic ADDED per current object; from resourceVersion N it
//! replays the history after N; a version older than the last compaction is an ERROR event with a
//! 410 Status (not an HTTP error), which is what makes kube's `watcher` relist. Label and field
//! selectors apply to every event, and a change that makes an object start or stop matching is
//! sent as ADDED or DELETED. Bookmarks carry the newest resourceVersion this stream has passed, so
//! a client resuming from one can neither miss nor repeat a change.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::resources::{ResId, Resource};
use super::select::Selector;
use super::store::{Change, ChangeType, WatchMsg};
use super::table;
use super::{Shared, lock};

/// The real server's default watch length when the client sets none (it picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// A response body fed line by line from the watch's task; its end ends the response.
pub struct ChunkBody(mpsc::Receiver<Bytes>);

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// Which events a stream sends and how it renders their objects.
struct Filter {
    ns: Option<String>,
    selector: Selector,
    /// Objects as one-row Tables (kubectl get --watch), for this resource.
    table: Option<&'static Resource>,
}

impl Filter {
    fn matches(&self, obj: &Value, ns: &str) -> bool {
        self.ns.as_deref().is_none_or(|want| want == ns) && self.selector.matches(obj)
    }

    fn object_line(&self, kind: &str, obj: &Value) -> Bytes {
        match self.table {
            None => line(kind, obj),
            Some(r) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                line(kind, &table::table(r, std::slice::from_ref(obj), meta))
            }
        }
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn bookmark(r: &Resource, rv: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta}),
    )
}

/// The event (if any) a change is for a stream with this filter.
fn event_for(change: &Change, filter: &Filter) -> Option<Bytes> {
    let ns = change.key.1.as_str();
    let now = filter.matches(&change.object, ns);
    let before = change.prev.as_deref().is_some_and(|p| filter.matches(p, ns));
    let kind = match (change.kind, before, now) {
        (ChangeType::Added, _, true) => "ADDED",
        (ChangeType::Modified, true, true) => "MODIFIED",
        (ChangeType::Modified, false, true) => "ADDED",
        (ChangeType::Modified, true, false) => "DELETED",
        (ChangeType::Deleted, true, _) => "DELETED",
        _ => return None,
    };
    Some(filter.object_line(kind, &change.object))
}

/// Validates the watch parameters and opens the stream (the caller answers 200 with it).
/// With `table`, event objects are one-row Tables (what kubectl get --watch asks for).
pub fn start(shared: &Arc<Shared>, res: ResId, ns: Option<&str>, q: &Query, table: bool) -> ApiResult<ChunkBody> {
    let r = Resource::get(res);
    let filter = Filter {
        ns: ns.map(str::to_string),
        selector: Selector::parse(q.get("labelSelector"), q.get("fieldSelector"))?,
        table: table.then_some(r),
    };
    let bookmarks = q.flag("allowWatchBookmarks")?;
    let send_initial = q.flag("sendInitialEvents")?;
    let rv_match = q.get("resourceVersionMatch").filter(|v| !v.is_empty());
    if send_initial && (rv_match != Some("NotOlderThan") || !bookmarks) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
        ));
    }
    if !send_initial && rv_match.is_some() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let timeout = q.number("timeoutSeconds")?.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let asked = q.resource_version()?;
    let interval = *lock(&shared.bookmark_interval);

    let mut initial = Vec::new();
    let mut store = lock(&shared.store);
    if store.unavailable {
        return Err(ApiError::unavailable());
    }
    let now = store.rv();
    let subscribed = match asked {
        // From "now": the current objects first, as synthetic ADDED events.
        None => store.subscribe(res, now).map(|(_, rx)| {
            for (key, obj) in store.list(res, filter.ns.as_deref()) {
                if filter.matches(&obj, &key.1) {
                    initial.push(filter.object_line("ADDED", &obj));
                }
            }
            if send_initial {
                initial.push(bookmark(r, now, true));
            }
            (now, rx)
        }),
        Some(rv) if send_initial => Err(ApiError::bad_request(format!(
            "sendInitialEvents from resourceVersion {rv} is not supported by this test API server; use \"\" or \"0\""
        ))),
        Some(rv) => store.subscribe(res, rv).map(|(replay, rx)| {
            initial.extend(replay.iter().filter_map(|c| event_for(c, &filter)));
            (replay.last().map_or(rv, |c| c.rv), rx)
        }),
    };
    drop(store);
    let (tx, body) = mpsc::channel(64);
    match subscribed {
        Ok((seen, rx)) => {
            let stream = Stream {
                r,
                filter,
                tx,
                seen,
                bookmarks,
                interval,
                timeout,
            };
            tokio::spawn(stream.run(initial, rx));
        }
        // Once a watch is accepted, version errors (410, too large) are ERROR events.
        Err(e) if e.code == 410 || e.code == 504 => {
            let _ = tx.try_send(line("ERROR", &e.status()));
        }
        Err(e) => return Err(e),
    }
    Ok(ChunkBody(body))
}

struct Stream {
    r: &'static Resource,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    /// The newest resourceVersion this stream has passed (sent or filtered out).
    seen: u64,
    bookmarks: bool,
    interval: Duration,
    timeout: Duration,
}

impl Stream {
    async fn run(mut self, initial: Vec<Bytes>, mut rx: mpsc::UnboundedReceiver<WatchMsg>) {
        for l in initial {
            if self.tx.send(l).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let start = tokio::time::Instant::now() + self.interval;
        let mut ticks = tokio::time::interval_at(start, self.interval.max(Duration::from_millis(10)));
        loop {
            let out = tokio::select! {
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = ticks.tick(), if self.bookmarks => bookmark(self.r, self.seen, false),
                msg = rx.recv() => match msg {
                    Some(WatchMsg::Change(change)) => {
                        self.seen = change.rv;
                        match event_for(&change, &self.filter) {
                            Some(l) => l,
                            None => continue,
                        }
                    }
                    Some(WatchMsg::Expired(at)) => {
                        let e = ApiError::expired(format!("too old resource version: {} ({at})", self.seen));
                        let _ = self.tx.send(line("ERROR", &e.status())).await;
                        return;
                    }
                    Some(WatchMsg::Close) | None => return,
                },
            };
            if self.tx.send(out).await.is_err() {
                return;
            }
        }
    }
}
