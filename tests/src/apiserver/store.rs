//! Objects, the one global resourceVersion counter, and the change history, behind one lock.
//!
//! Every write and every watch subscription happens under that lock, so a watch that replays the
//! history and then follows live changes can neither miss nor repeat one. The history keeps each
//! change's previous object too, which lets a LIST be served at an older resourceVersion (the
//! consistent snapshot that `continue` pagination promises) and lets label-filtered watches turn a
//! change into ADDED/DELETED when an object starts or stops matching, as the real watch cache does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::resources::ResId;

/// (resource, namespace or "" for cluster-scoped, name). Its order is the order of LIST results.
pub type Key = (ResId, String, String);

/// How many changes the history keeps before it forgets the oldest (like etcd compaction).
const MAX_HISTORY: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as watchers see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub kind: ChangeType,
    /// The new object; for a deletion, the last state stamped with the deletion's resourceVersion.
    pub object: Arc<Value>,
    /// The object before this change (None when it was created).
    pub prev: Option<Arc<Value>>,
}

/// What a watch stream's task receives.
#[derive(Debug)]
pub enum WatchMsg {
    Change(Arc<Change>),
    /// The history was compacted at this resourceVersion: answer 410 and end.
    Expired(u64),
    /// The server became unavailable: end the stream.
    Close,
}

struct Subscriber {
    res: ResId,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

#[derive(Default)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Change>>,
    /// The history holds every change with a resourceVersion above this.
    compacted: u64,
    subscribers: Vec<Subscriber>,
    pub unavailable: bool,
}

fn stamp_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.objects.get(key).cloned()
    }

    /// Current objects of a resource, in key order, optionally in one namespace.
    pub fn list(&self, res: ResId, ns: Option<&str>) -> Vec<(Key, Arc<Value>)> {
        self.objects
            .range((res, String::new(), String::new())..)
            .take_while(|(k, _)| k.0 == res)
            .filter(|(k, _)| ns.is_none_or(|ns| k.1 == ns))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The objects of a resource as they were at resourceVersion `rv`, rebuilt by undoing newer
    /// changes. 410 when the history no longer reaches back that far.
    pub fn list_at(&self, res: ResId, ns: Option<&str>, rv: u64) -> ApiResult<Vec<(Key, Arc<Value>)>> {
        self.reaches(rv, |compacted| {
            format!("The resourceVersion for the provided list is too old: {rv} (compacted at {compacted})")
        })?;
        let mut state: BTreeMap<Key, Arc<Value>> = self.list(res, ns).into_iter().collect();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.key.0 != res || ns.is_some_and(|ns| change.key.1 != ns) {
                continue;
            }
            match &change.prev {
                Some(prev) => state.insert(change.key.clone(), prev.clone()),
                None => state.remove(&change.key),
            };
        }
        Ok(state.into_iter().collect())
    }

    /// Stores `obj` under `key` with a new resourceVersion and tells watchers.
    pub fn write(&mut self, key: Key, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        stamp_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        let prev = self.objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            rv: self.rv,
            key,
            kind,
            object: obj.clone(),
            prev,
        });
        obj
    }

    /// Removes the object under `key` (returning its last state) and tells watchers.
    pub fn remove(&mut self, key: &Key) -> Option<Arc<Value>> {
        let prev = self.objects.remove(key)?;
        self.rv += 1;
        let mut gone = (*prev).clone();
        stamp_rv(&mut gone, self.rv);
        let change = Change {
            rv: self.rv,
            key: key.clone(),
            kind: ChangeType::Deleted,
            object: Arc::new(gone),
            prev: Some(prev.clone()),
        };
        self.record(change);
        Some(prev)
    }

    /// Whether the store can answer as of `rv`: an error when `rv` is ahead of it, a 410 with the
    /// message `expired` makes of the compaction point when its history no longer reaches back
    /// to `rv` (list and watch word it differently, as the real API server does).
    fn reaches(&self, rv: u64, expired: impl FnOnce(u64) -> String) -> ApiResult<()> {
        if rv > self.rv {
            return Err(too_large(rv, self.rv));
        }
        if rv < self.compacted {
            return Err(ApiError::expired(expired(self.compacted)));
        }
        Ok(())
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.subscribers
            .retain(|s| s.res != change.key.0 || s.tx.send(WatchMsg::Change(change.clone())).is_ok());
        self.history.push_back(change);
        while self.history.len() > MAX_HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// The changes of a resource after `rv` plus a receiver for the ones to come, taken together
    /// so nothing falls between them. 410 when changes after `rv` were forgotten.
    pub fn subscribe(
        &mut self,
        res: ResId,
        rv: u64,
    ) -> ApiResult<(Vec<Arc<Change>>, mpsc::UnboundedReceiver<WatchMsg>)> {
        self.reaches(rv, |compacted| format!("too old resource version: {rv} ({compacted})"))?;
        let replay = self
            .history
            .iter()
            .filter(|c| c.rv > rv && c.key.0 == res)
            .cloned()
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(Subscriber { res, tx });
        Ok((replay, rx))
    }

    /// Forgets the history: open watches get a 410 and end; older resourceVersions are gone.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
        for s in self.subscribers.drain(..) {
            let _ = s.tx.send(WatchMsg::Expired(self.compacted));
        }
    }

    pub fn set_unavailable(&mut self, on: bool) {
        self.unavailable = on;
        if on {
            for s in self.subscribers.drain(..) {
                let _ = s.tx.send(WatchMsg::Close);
            }
        }
    }

    /// Ends every open watch stream (the server is shutting down).
    pub fn close_watches(&mut self) {
        for s in self.subscribers.drain(..) {
            let _ = s.tx.send(WatchMsg::Close);
        }
    }
}

/// What the real server answers (after waiting) for a resourceVersion it has not reached.
fn too_large(asked: u64, current: u64) -> ApiError {
    ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {asked}, current: {current}"),
    )
}
