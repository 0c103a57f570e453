//! What the cluster is told, written off the decision path. The cycle only hands its wishes to
//! the [`Outbox`] (a few map operations under a lock, never a request), and a writer task of its
//! own sends them with bounded concurrency, so a slow, failing or rate-limiting API server can
//! delay a status or an Event but never a commit: with 10,000 Services a first cycle used to send
//! 10,000 status patches and 30,000 Events inline, and no decision ran for 20 s.
//!
//! - Status is coalesced per Service: only the latest wish is sent; one equal to what was last
//!   written (and the Service not changed since) is not sent again; a newer wish replaces a queued
//!   one and skips its backoff; at most one patch per Service is in flight, so they never race.
//! - Events are coalesced per Service per reason (one Event names all the Service's hosts), and
//!   rate-limited like client-go's event recorder: a token bucket per Service (burst 25, then one
//!   per 5 minutes: `EventSourceObjectSpamFilter`; over it an Event is dropped) and a global one
//!   (over it Events wait). Status goes first; Events take at most [`EVENT_SLOTS`] of the slots.
//! - Failed writes are retried with exponential backoff per Service (status until it succeeds or
//!   is superseded; an Event [`EVENT_ATTEMPTS`] times). A Service that is gone (404) is dropped.
//! - Only the Lease holder writes: when it loses the Lease everything pending is dropped and
//!   writes in flight are aborted; the first cycle of a new term decides afresh.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use flipbit_core::names::ServiceKey;
use flipbit_core::text::escaped;

use super::metrics::{Metrics, WriteKind};

/// Writes in flight at once (status and Events together): enough to hide a few ms of API latency
/// per request, few enough that the API server's priority-and-fairness never sees a flood.
pub const CONCURRENCY: usize = 16;
/// At most this many of the slots carry Events, so status (what `kubectl get svc` shows) is never
/// queued behind a burst of Events.
pub const EVENT_SLOTS: usize = 4;
/// First retry of a failed write after this long, doubling up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An Event that failed this often (about 2.5 minutes with the backoff, as client-go's 12 tries)
/// is given up, logged and counted: it is news, not state.
const EVENT_ATTEMPTS: u32 = 12;
/// client-go's spam filter per involved object: 25 at once, then one per 5 minutes.
const SPAM_BURST: f64 = 25.0;
const SPAM_PER_SECOND: f64 = 1.0 / 300.0;
/// All Events together: 200 at once, then 50 a second (10,000 first allocations take ~3 minutes
/// and never hold back status, which has slots of its own).
const GLOBAL_BURST: f64 = 200.0;
const GLOBAL_PER_SECOND: f64 = 50.0;
/// Per-Service spam buckets kept before full (idle) ones are forgotten (client-go keeps an LRU of
/// 4096); more when that many are in use.
const SPAM_BUCKETS: usize = 4096;
/// events.k8s.io/v1 refuses a note longer than this (bytes).
const NOTE_MAX: usize = 1024;

/// The addresses a Service's `status.loadBalancer.ingress` should hold.
pub type Ingress = BTreeSet<IpAddr>;

/// What the cycle found for one Service's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusWish {
    /// The Service already shows what it should: nothing to write, and nothing to remember.
    Shown,
    /// It should show `ingress`; `seen` is the resourceVersion the cycle read it at, so a wish
    /// equal to the last one written is not sent again until the Service changes.
    Show { ingress: Ingress, seen: Option<String> },
}

/// An Event the cycle wants recorded on a Service.
#[derive(Debug, Clone)]
pub struct EventWish {
    pub key: ServiceKey,
    pub regarding: ObjectReference,
    pub warning: bool,
    pub reason: &'static str,
    /// Parts of the note, joined with "; " (merged, without repeats, with a pending one).
    pub parts: Vec<String>,
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self { tokens: burst, at: now }
    }

    fn refill(&mut self, burst: f64, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    /// Takes a token, or says when the next one comes.
    fn take(&mut self, burst: f64, rate: f64, now: Instant) -> Result<(), Instant> {
        self.refill(burst, rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// A queued status patch.
#[derive(Debug, Clone)]
struct StatusJob {
    ingress: Ingress,
    seen: Option<String>,
    attempts: u32,
    /// In backoff until then (its entry in `delayed` is live only while this matches).
    due: Option<Instant>,
    /// In `ready` or `delayed`.
    queued: bool,
}

/// A status patch in flight.
#[derive(Debug, Clone)]
struct Sending {
    ingress: Ingress,
    seen: Option<String>,
    attempts: u32,
}

/// A queued Event.
#[derive(Debug, Clone)]
pub struct EventJob {
    wish: EventWish,
    /// Chosen once, so a retry of a create that did land is a 409 rather than a duplicate.
    name: String,
    first_seen: jiff::Timestamp,
    attempts: u32,
    due: Option<Instant>,
}

type EventKey = (ServiceKey, &'static str);

/// Ready keys in order, and keys in backoff by due time.
#[derive(Debug)]
struct Lane<K> {
    ready: VecDeque<K>,
    delayed: BinaryHeap<Reverse<(Instant, u64, K)>>,
    seq: u64,
}

impl<K: Ord> Default for Lane<K> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K: Ord + Clone> Lane<K> {
    fn delay(&mut self, key: K, due: Instant) {
        self.seq += 1;
        self.delayed.push(Reverse((due, self.seq, key)));
    }

    /// Keys whose backoff ended by `now`, with the due time they were delayed to.
    fn due(&mut self, now: Instant) -> Vec<(K, Instant)> {
        let mut out = Vec::new();
        while self.delayed.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
            if let Some(Reverse((t, _, k))) = self.delayed.pop() {
                out.push((k, t));
            }
        }
        out
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((t, _, _))| *t)
    }
}

/// What to send next.
#[derive(Debug)]
pub enum Next {
    Status { key: ServiceKey, ingress: Ingress },
    Event(Box<EventJob>),
}

/// The pending writes: pure bookkeeping, no I/O, so it is tested on its own with given times.
#[derive(Debug, Default)]
pub struct Queue {
    status: HashMap<ServiceKey, StatusJob>,
    sending: HashMap<ServiceKey, Sending>,
    /// The last status written per Service and the resourceVersion its wish was made at; cleared
    /// once the watch shows it.
    written: HashMap<ServiceKey, (Ingress, Option<String>)>,
    status_lane: Lane<ServiceKey>,
    events: HashMap<EventKey, EventJob>,
    event_lane: Lane<EventKey>,
    events_sending: usize,
    spam: HashMap<ServiceKey, Bucket>,
    /// The size of `spam` at which full (idle) buckets are forgotten next.
    spam_prune_at: usize,
    global: Option<Bucket>,
    /// Bumped whenever everything is dropped (a change of leadership).
    epoch: u64,
    /// Events refused by the per-Service spam filter or given up, for the metrics.
    pub dropped_events: u64,
    seq: u64,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The Service (or its namespace) is gone: nothing left to tell.
    Gone,
    Failed(String),
}

impl Queue {
    /// Status patches and Events waiting or in flight.
    pub fn pending(&self) -> usize {
        self.status.len() + self.sending.len() + self.events.len() + self.events_sending
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Drops everything pending (writes in flight are aborted by the caller).
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending();
        let epoch = self.epoch + 1;
        *self = Queue {
            epoch,
            dropped_events: self.dropped_events,
            ..Queue::default()
        };
        dropped
    }

    /// The cycle's wish for one Service's status.
    pub fn status(&mut self, key: &ServiceKey, wish: StatusWish) {
        let (ingress, seen) = match wish {
            StatusWish::Shown => {
                // Shown (by us or anyone): later drift is news again, and any queued wish is moot.
                if !self.written.is_empty() {
                    self.written.remove(key);
                }
                if !self.status.is_empty() {
                    self.status.remove(key);
                }
                return;
            }
            StatusWish::Show { ingress, seen } => (ingress, seen),
        };
        if self.written.get(key).is_some_and(|(w, s)| *w == ingress && *s == seen) {
            return; // written, and the watch has not caught up yet
        }
        if self.sending.get(key).is_some_and(|s| s.ingress == ingress) {
            // Being sent; a different wish queued meanwhile is outdated again.
            self.status.remove(key);
            return;
        }
        match self.status.get_mut(key) {
            Some(job) if job.ingress == ingress => job.seen = seen,
            Some(job) => {
                job.ingress = ingress;
                job.seen = seen;
                job.attempts = 0;
                // A newer wish does not wait out the older one's backoff.
                if job.due.take().is_some() || !job.queued {
                    job.queued = true;
                    self.status_lane.ready.push_back(key.clone());
                }
            }
            None => {
                self.status.insert(
                    key.clone(),
                    StatusJob {
                        ingress,
                        seen,
                        attempts: 0,
                        due: None,
                        queued: true,
                    },
                );
                self.status_lane.ready.push_back(key.clone());
            }
        }
    }

    /// Forgets queued status wishes of Services that no longer exist.
    pub fn retain_services(&mut self, exists: impl Fn(&ServiceKey) -> bool) {
        self.status.retain(|k, _| exists(k));
        self.written.retain(|k, _| exists(k));
    }

    /// The cycle's Event; merged into a pending one of the same Service and reason, else
    /// admitted by the Service's spam bucket (false: dropped).
    pub fn event(&mut self, wish: EventWish, now: Instant) -> bool {
        let key = (wish.key.clone(), wish.reason);
        if let Some(job) = self.events.get_mut(&key) {
            for part in wish.parts {
                if !job.wish.parts.contains(&part) {
                    job.wish.parts.push(part);
                }
            }
            job.wish.warning |= wish.warning;
            job.wish.regarding = wish.regarding;
            return true;
        }
        if self.spam.len() >= self.spam_prune_at {
            self.spam.retain(|_, b| {
                b.refill(SPAM_BURST, SPAM_PER_SECOND, now);
                b.tokens < SPAM_BURST
            });
            // Not again before the map doubles: 50,000 first allocations in one cycle would
            // otherwise scan all buckets for every Event (quadratic: 16 s at 50k).
            self.spam_prune_at = SPAM_BUCKETS.max(2 * self.spam.len());
        }
        let bucket = self
            .spam
            .entry(wish.key.clone())
            .or_insert_with(|| Bucket::full(SPAM_BURST, now));
        if bucket.take(SPAM_BURST, SPAM_PER_SECOND, now).is_err() {
            self.dropped_events += 1;
            tracing::debug!(service = %wish.key, reason = wish.reason, "Event dropped by the per-Service rate limit");
            return false;
        }
        self.seq += 1;
        let name = format!(
            "{}.{:x}{:04x}",
            wish.key.name,
            jiff::Timestamp::now().as_nanosecond(),
            self.seq & 0xffff
        );
        self.events.insert(
            key.clone(),
            EventJob {
                wish,
                name,
                first_seen: jiff::Timestamp::now(),
                attempts: 0,
                due: None,
            },
        );
        self.event_lane.ready.push_back(key);
        true
    }

    /// The next write to start, given `in_flight` writes now; or when to look again (a backoff
    /// ending, the global Event bucket refilling), or neither when there is nothing to do.
    pub fn next(&mut self, in_flight: usize, now: Instant) -> Result<Next, Option<Instant>> {
        self.promote(now);
        if in_flight >= CONCURRENCY {
            return Err(None); // a finished write wakes the writer
        }
        while let Some(key) = self.status_lane.ready.pop_front() {
            let Some(job) = self.status.get_mut(&key) else { continue };
            if job.due.is_some() {
                continue; // stale: back in backoff
            }
            job.queued = false;
            if self.sending.contains_key(&key) {
                continue; // one patch per Service at a time; its end queues this again
            }
            let Some(job) = self.status.remove(&key) else { continue };
            let ingress = job.ingress.clone();
            self.sending.insert(
                key.clone(),
                Sending {
                    ingress: job.ingress,
                    seen: job.seen,
                    attempts: job.attempts,
                },
            );
            return Ok(Next::Status { key, ingress });
        }
        let mut wake = self.next_due();
        if self.events_sending < EVENT_SLOTS && !self.event_lane.ready.is_empty() {
            let global = self.global.get_or_insert_with(|| Bucket::full(GLOBAL_BURST, now));
            match global.take(GLOBAL_BURST, GLOBAL_PER_SECOND, now) {
                Err(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
                Ok(()) => {
                    while let Some(key) = self.event_lane.ready.pop_front() {
                        if self.events.get(&key).is_some_and(|j| j.due.is_none())
                            && let Some(job) = self.events.remove(&key)
                        {
                            self.events_sending += 1;
                            return Ok(Next::Event(Box::new(job)));
                        }
                    }
                    // Only stale keys: give the token back.
                    if let Some(g) = &mut self.global {
                        g.tokens += 1.0;
                    }
                }
            }
        }
        Err(wake)
    }

    fn next_due(&self) -> Option<Instant> {
        match (self.status_lane.next_due(), self.event_lane.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves writes whose backoff ended to the back of their ready queue.
    fn promote(&mut self, now: Instant) {
        for (key, at) in self.status_lane.due(now) {
            if let Some(job) = self.status.get_mut(&key)
                && job.due == Some(at)
            {
                job.due = None;
                self.status_lane.ready.push_back(key);
            }
        }
        for (key, at) in self.event_lane.due(now) {
            if let Some(job) = self.events.get_mut(&key)
                && job.due == Some(at)
            {
                job.due = None;
                self.event_lane.ready.push_back(key);
            }
        }
    }

    /// A status patch ended. True when it failed and will be retried.
    pub fn status_done(&mut self, key: &ServiceKey, outcome: &Outcome, now: Instant) -> bool {
        let Some(sent) = self.sending.remove(key) else {
            return false; // dropped by a reset meanwhile
        };
        let newer = self.status.get_mut(key);
        match outcome {
            Outcome::Written => {
                match newer {
                    Some(job) if job.ingress == sent.ingress => {
                        self.status.remove(key);
                    }
                    Some(job) if !job.queued => {
                        job.queued = true;
                        self.status_lane.ready.push_back(key.clone());
                    }
                    _ => {}
                }
                self.written.insert(key.clone(), (sent.ingress, sent.seen));
                false
            }
            Outcome::Gone => {
                self.status.remove(key);
                self.written.remove(key);
                false
            }
            Outcome::Failed(_) => {
                self.written.remove(key);
                match newer {
                    // A newer wish goes out at once, not after this one's backoff.
                    Some(job) => {
                        if !job.queued {
                            job.queued = true;
                            self.status_lane.ready.push_back(key.clone());
                        }
                    }
                    None => {
                        let due = now + backoff(sent.attempts);
                        self.status.insert(
                            key.clone(),
                            StatusJob {
                                ingress: sent.ingress,
                                seen: sent.seen,
                                attempts: sent.attempts + 1,
                                due: Some(due),
                                queued: true,
                            },
                        );
                        self.status_lane.delay(key.clone(), due);
                    }
                }
                true
            }
        }
    }

    /// An Event write ended without an answer (its task panicked): it is given up.
    pub fn event_abandoned(&mut self) {
        self.events_sending = self.events_sending.saturating_sub(1);
        self.dropped_events += 1;
    }

    /// An Event create ended. True when it failed and will be retried.
    pub fn event_done(&mut self, mut job: EventJob, outcome: &Outcome, now: Instant) -> bool {
        self.events_sending = self.events_sending.saturating_sub(1);
        let Outcome::Failed(_) = outcome else { return false };
        job.attempts += 1;
        if job.attempts >= EVENT_ATTEMPTS {
            self.dropped_events += 1;
            tracing::warn!(service = %job.wish.key, reason = job.wish.reason, "an Event failed {EVENT_ATTEMPTS} times; given up");
            return false;
        }
        let key = (job.wish.key.clone(), job.wish.reason);
        let due = now + backoff(job.attempts - 1);
        match self.events.get_mut(&key) {
            // Newer news of the same cause is pending: it carries this one's parts too.
            Some(newer) => {
                let mut parts = std::mem::take(&mut job.wish.parts);
                for p in std::mem::take(&mut newer.wish.parts) {
                    if !parts.contains(&p) {
                        parts.push(p);
                    }
                }
                newer.wish.parts = parts;
            }
            None => {
                job.due = Some(due);
                self.events.insert(key.clone(), job);
                self.event_lane.delay(key, due);
            }
        }
        true
    }
}

fn backoff(attempts: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1u32 << attempts.min(16)).min(BACKOFF_MAX)
}

/// The note of an Event: its parts, cut at [`NOTE_MAX`] bytes on a character boundary.
fn note(parts: &[String]) -> String {
    let mut note = parts.join("; ");
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// The queue shared by the cycle (which fills it) and the writer task (which drains it).
pub struct Outbox {
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Outbox {
    /// Runs `f` on the queue and wakes the writer: the cycle's whole hand-over, one lock.
    pub fn submit<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        let r = f(&mut self.lock());
        self.wake.notify_one();
        r
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who writes, as whom.
pub struct Writer {
    pub client: Client,
    pub identity: String,
    pub leading: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

/// Starts the writer task; the cycle submits to the returned outbox.
pub fn spawn(writer: Writer) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox {
        queue: Mutex::new(Queue::default()),
        wake: Notify::new(),
    });
    tokio::spawn(run(outbox.clone(), writer));
    outbox
}

enum Done {
    Status(ServiceKey, Outcome),
    Event(Box<EventJob>, Outcome),
}

/// What a task in flight writes, to settle its bookkeeping should it end without an answer.
enum Task {
    Status(ServiceKey),
    Event,
}

async fn run(outbox: Arc<Outbox>, mut w: Writer) {
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut ids: HashMap<tokio::task::Id, Task> = HashMap::new();
    let mut leading = false;
    let mut written = (0u64, 0u64);
    let mut dropped_events = 0u64;
    loop {
        let now_leading = *w.leading.borrow_and_update();
        let lost = leading && !now_leading;
        leading = now_leading;
        if lost {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            ids.clear();
            written = (0, 0);
        }
        if !leading {
            // Also what a cycle that had begun before the loss submitted after it. (A gain keeps
            // the queue: the term's first cycle may have filled it before this task woke.)
            let mut queue = outbox.lock();
            if lost || queue.pending() > 0 {
                let dropped = queue.reset();
                tracing::info!(dropped, "not leading; pending status writes and Events dropped");
            }
        }
        let mut wake = None;
        {
            let mut queue = outbox.lock();
            if leading {
                wake = start_writes(&mut queue, &mut tasks, &mut ids, &w);
            }
            w.metrics.status_writes_pending.set(queue.pending() as i64);
            w.metrics
                .events_dropped
                .inc_by(queue.dropped_events.saturating_sub(dropped_events));
            dropped_events = queue.dropped_events;
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = outbox.wake.notified() => {}
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let now = Instant::now();
                let mut queue = outbox.lock();
                match joined {
                    Ok((id, Done::Status(key, outcome))) => {
                        ids.remove(&id);
                        if let Outcome::Failed(e) = &outcome {
                            w.metrics.status_write_failures.get_or_create(&WriteKind::status()).inc();
                            tracing::warn!(service = %key, error = %escaped(e), "status patch failed; retrying with backoff");
                        } else {
                            written.0 += 1;
                        }
                        queue.status_done(&key, &outcome, now);
                    }
                    Ok((id, Done::Event(job, outcome))) => {
                        ids.remove(&id);
                        if let Outcome::Failed(e) = &outcome {
                            w.metrics.status_write_failures.get_or_create(&WriteKind::event()).inc();
                            tracing::warn!(service = %job.wish.key, reason = job.wish.reason, error = %escaped(e), "publishing an Event failed");
                        } else {
                            written.1 += 1;
                        }
                        queue.event_done(*job, &outcome, now);
                    }
                    // A task that panicked (a bug): settle what it held, as a failed write.
                    Err(e) => match ids.remove(&e.id()) {
                        Some(Task::Status(key)) => {
                            queue.status_done(&key, &Outcome::Failed(e.to_string()), now);
                        }
                        Some(Task::Event) => queue.event_abandoned(),
                        None => {}
                    },
                }
                if queue.pending() == 0 && written != (0, 0) {
                    tracing::info!(status_patches = written.0, events = written.1, "status and Events written");
                    written = (0, 0);
                }
            }
            changed = w.leading.changed() => {
                if changed.is_err() {
                    return; // the election ended: the process is going away
                }
            }
            _ = sleep => {}
        }
    }
}

/// Starts what the queue has to send while slots are free; returns when to look again.
fn start_writes(
    queue: &mut Queue,
    tasks: &mut JoinSet<Done>,
    ids: &mut HashMap<tokio::task::Id, Task>,
    w: &Writer,
) -> Option<Instant> {
    loop {
        match queue.next(tasks.len(), Instant::now()) {
            Ok(Next::Status { key, ingress }) => {
                // The write's lines name the Service through its span.
                let span = tracing::info_span!("status", service = %key);
                let handle = tasks.spawn(patch_status(w.client.clone(), key.clone(), ingress).instrument(span));
                ids.insert(handle.id(), Task::Status(key));
            }
            Ok(Next::Event(job)) => {
                let span = tracing::info_span!("event", service = %job.wish.key, reason = job.wish.reason);
                let handle = tasks.spawn(create_event(w.client.clone(), w.identity.clone(), job).instrument(span));
                ids.insert(handle.id(), Task::Event);
            }
            Err(at) => return at,
        }
    }
}

/// Sends a write and leaves its answer unread: decoding 50,000 Services echoed back by status
/// patches costs CPU the next decision could use, and the watch brings the same objects anyway.
async fn send(client: &Client, request: hyper::Request<Vec<u8>>) -> Result<(), kube::Error> {
    client.request_text(request).await.map(|_| ())
}

/// Classifies a write's error: 404 means the object (or its namespace) is gone.
fn outcome(result: Result<(), kube::Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Written,
        Err(kube::Error::Api(e)) if e.code == 404 => Outcome::Gone,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn patch_status(client: Client, key: ServiceKey, ingress: Ingress) -> Done {
    let value = if ingress.is_empty() {
        serde_json::Value::Null
    } else {
        json!(
            ingress
                .iter()
                .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect::<Vec<_>>()
        )
    };
    let patch = json!({"status": {"loadBalancer": {"ingress": value}}});
    let request = kube::core::Request::new(Service::url_path(&(), Some(key.namespace.as_str())))
        .patch_subresource(
            "status",
            key.name.as_str(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .map_err(kube::Error::BuildRequest);
    let result = match request {
        Ok(request) => send(&client, request).await,
        Err(e) => Err(e),
    };
    if result.is_ok() {
        tracing::debug!(addresses = ?ingress, "status updated");
    }
    let outcome = outcome(result);
    Done::Status(key, outcome)
}

async fn create_event(client: Client, identity: String, job: Box<EventJob>) -> Done {
    let event = Event {
        metadata: ObjectMeta {
            name: Some(job.name.clone()),
            namespace: Some(job.wish.key.namespace.to_string()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(job.first_seen)),
        action: Some("Reconcile".into()),
        reason: Some(job.wish.reason.into()),
        note: Some(note(&job.wish.parts)),
        regarding: Some(job.wish.regarding.clone()),
        reporting_controller: Some("flipbit-generator".into()),
        reporting_instance: Some(identity),
        type_: Some(if job.wish.warning { "Warning" } else { "Normal" }.into()),
        ..Event::default()
    };
    let request = serde_json::to_vec(&event)
        .map_err(kube::Error::SerdeError)
        .and_then(|body| {
            kube::core::Request::new(Event::url_path(&(), Some(job.wish.key.namespace.as_str())))
                .create(&PostParams::default(), body)
                .map_err(kube::Error::BuildRequest)
        });
    let result = match request {
        Ok(request) => match send(&client, request).await {
            // A retry of a create that landed: the name is the Event's own.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            r => r,
        },
        Err(e) => Err(e),
    };
    let outcome = outcome(result);
    Done::Event(job, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("web", name).expect("valid key")
    }

    fn ips(list: &[&str]) -> Ingress {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    fn show(list: &[&str], rv: &str) -> StatusWish {
        StatusWish::Show {
            ingress: ips(list),
            seen: Some(rv.into()),
        }
    }

    fn wish(name: &str, reason: &'static str, part: &str) -> EventWish {
        EventWish {
            key: key(name),
            regarding: ObjectReference::default(),
            warning: false,
            reason,
            parts: vec![part.into()],
        }
    }

    fn take_status(q: &mut Queue, now: Instant) -> Option<(ServiceKey, Ingress)> {
        match q.next(0, now) {
            Ok(Next::Status { key, ingress }) => Some((key, ingress)),
            Ok(Next::Event(_)) => panic!("an Event before status"),
            Err(_) => None,
        }
    }

    #[test]
    fn only_the_latest_wish_is_sent_and_a_written_one_is_not_sent_again() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.status(&key("a"), show(&["10.0.0.1"], "1"));
        q.status(&key("a"), show(&["10.0.0.2"], "2"));
        assert_eq!(q.pending(), 1);
        let (k, ingress) = take_status(&mut q, now).expect("one patch");
        assert_eq!((k, ingress), (key("a"), ips(&["10.0.0.2"])));
        assert!(take_status(&mut q, now).is_none());
        assert!(!q.status_done(&key("a"), &Outcome::Written, now));
        // The watch has not caught up: the same wish at the same resourceVersion is not resent.
        q.status(&key("a"), show(&["10.0.0.2"], "2"));
        assert_eq!(q.pending(), 0);
        // Once shown, a later drift (someone else's write) is corrected again.
        q.status(&key("a"), StatusWish::Shown);
        q.status(&key("a"), show(&["10.0.0.2"], "5"));
        assert_eq!(q.pending(), 1);
    }

    #[test]
    fn one_patch_per_service_in_flight_and_a_newer_wish_follows_it() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.status(&key("a"), show(&["10.0.0.1"], "1"));
        assert!(take_status(&mut q, now).is_some());
        q.status(&key("a"), show(&["10.0.0.3"], "2"));
        assert!(take_status(&mut q, now).is_none(), "a second patch raced the first");
        q.status_done(&key("a"), &Outcome::Written, now);
        assert_eq!(take_status(&mut q, now), Some((key("a"), ips(&["10.0.0.3"]))));
    }

    #[test]
    fn a_failed_patch_backs_off_but_a_newer_wish_goes_at_once() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.status(&key("a"), show(&["10.0.0.1"], "1"));
        take_status(&mut q, now);
        assert!(q.status_done(&key("a"), &Outcome::Failed("500".into()), now));
        match q.next(0, now) {
            Err(Some(at)) => assert_eq!(at, now + BACKOFF_FIRST),
            other => panic!("expected a backoff, got {other:?}"),
        }
        assert_eq!(
            take_status(&mut q, now + BACKOFF_FIRST),
            Some((key("a"), ips(&["10.0.0.1"])))
        );
        assert!(q.status_done(&key("a"), &Outcome::Failed("500".into()), now));
        match q.next(0, now) {
            Err(Some(at)) => assert_eq!(at, now + 2 * BACKOFF_FIRST),
            other => panic!("expected a longer backoff, got {other:?}"),
        }
        q.status(&key("a"), show(&["10.0.0.9"], "3"));
        assert_eq!(take_status(&mut q, now), Some((key("a"), ips(&["10.0.0.9"]))));
        q.status_done(&key("a"), &Outcome::Gone, now);
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn concurrency_is_bounded_and_status_goes_before_events() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.event(wish("a", "AddressAllocated", "x"), now);
        for i in 0..(CONCURRENCY + 3) {
            q.status(&key(&format!("s{i}")), show(&["10.0.0.1"], "1"));
        }
        let mut started = 0;
        while let Ok(next) = q.next(started, now) {
            assert!(matches!(next, Next::Status { .. }));
            started += 1;
        }
        assert_eq!(started, CONCURRENCY);
    }

    #[test]
    fn events_merge_per_service_and_reason_and_are_rate_limited() {
        let mut q = Queue::default();
        let now = Instant::now();
        assert!(q.event(wish("a", "AddressAllocated", "10.0.0.1 on LB host lb-a"), now));
        assert!(q.event(wish("a", "AddressAllocated", "10.0.1.1 on LB host lb-b"), now));
        assert!(q.event(wish("a", "AddressAllocated", "10.0.1.1 on LB host lb-b"), now));
        assert!(q.event(wish("a", "OnHold", "held"), now));
        assert_eq!(q.pending(), 2);
        match q.next(0, now) {
            Ok(Next::Event(job)) => {
                assert_eq!(
                    note(&job.wish.parts),
                    "10.0.0.1 on LB host lb-a; 10.0.1.1 on LB host lb-b"
                );
                q.event_done(*job, &Outcome::Written, now);
            }
            other => panic!("expected an Event, got {other:?}"),
        }
        // The per-Service bucket: 25 Events, then dropped until it refills (one per 5 minutes).
        let mut q = Queue::default();
        let admitted = (0..30)
            .filter(|i| {
                let w = wish("b", "AddressAllocated", &i.to_string());
                let ok = q.event(w, now);
                // Send each at once so the next is a new Event, not a merge.
                if let Ok(Next::Event(job)) = q.next(0, now) {
                    q.event_done(*job, &Outcome::Written, now);
                }
                ok
            })
            .count();
        assert_eq!(admitted, 25);
        assert_eq!(q.dropped_events, 5);
        let later = now + Duration::from_secs(301);
        assert!(q.event(wish("b", "AddressAllocated", "again"), later));
    }

    #[test]
    fn the_global_bucket_makes_events_wait_not_vanish() {
        let mut q = Queue::default();
        let now = Instant::now();
        let n = GLOBAL_BURST as usize + 10;
        for i in 0..n {
            q.event(wish(&format!("s{i}"), "AddressAllocated", "x"), now);
        }
        let mut sent = 0;
        let wake = loop {
            match q.next(0, now) {
                Ok(Next::Event(job)) => {
                    sent += 1;
                    q.event_done(*job, &Outcome::Written, now);
                }
                Ok(Next::Status { .. }) => panic!("no status was queued"),
                Err(at) => break at,
            }
        };
        assert_eq!(sent, GLOBAL_BURST as usize);
        let at = wake.expect("a time to look again");
        assert!(at > now && at <= now + Duration::from_millis(100), "{:?}", at - now);
        assert!(matches!(q.next(0, at), Ok(Next::Event(_))));
    }

    #[test]
    fn a_failing_event_is_retried_then_given_up() {
        let mut q = Queue::default();
        let mut now = Instant::now();
        q.event(wish("a", "AddressAllocated", "x"), now);
        for attempt in 1..=EVENT_ATTEMPTS {
            let job = loop {
                match q.next(0, now) {
                    Ok(Next::Event(job)) => break job,
                    Err(Some(at)) => now = at,
                    other => panic!("attempt {attempt}: {other:?}"),
                }
            };
            let retried = q.event_done(*job, &Outcome::Failed("500".into()), now);
            assert_eq!(retried, attempt < EVENT_ATTEMPTS);
        }
        assert_eq!(q.pending(), 0);
        assert_eq!(q.dropped_events, 1);
    }

    #[test]
    fn a_reset_drops_everything_and_moves_the_epoch() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.status(&key("a"), show(&["10.0.0.1"], "1"));
        q.status(&key("b"), show(&["10.0.0.2"], "1"));
        take_status(&mut q, now);
        q.event(wish("a", "AddressAllocated", "x"), now);
        assert_eq!(q.reset(), 3);
        assert_eq!((q.pending(), q.epoch()), (0, 1));
        // A write that ends after the reset changes nothing.
        assert!(!q.status_done(&key("a"), &Outcome::Failed("aborted".into()), now));
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn spam_buckets_are_pruned_only_as_the_map_doubles() {
        let mut q = Queue::default();
        let now = Instant::now();
        let mut prunes = 0;
        let mut last = 0;
        for i in 0..20_000 {
            q.event(wish(&format!("s{i}"), "AddressAllocated", "x"), now);
            if q.spam_prune_at != last {
                prunes += 1;
                last = q.spam_prune_at;
            }
        }
        // Every bucket is in use (24 of 25 tokens): none is forgotten, and the map is scanned
        // a handful of times, not once per Event.
        assert_eq!(q.spam.len(), 20_000);
        assert!(prunes <= 5, "{prunes} prunes");
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        let parts = vec!["é".repeat(600)];
        let n = note(&parts);
        assert!(n.len() <= NOTE_MAX && n.ends_with("..."));
    }
}
