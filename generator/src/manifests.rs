//! Reads a folder of Kubernetes YAML as `kubectl get -o yaml` writes it: single objects, `List`s,
//! multi-document files. A Service whose object is malformed but whose name can be read is kept
//! on its last state; anything whose identity cannot be read stops the run, because going on
//! would withdraw Services that merely failed to parse.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
/// Keyed by whole manifest texts (10,000 `List` items at 10k Services): foldhash, not SipHash.
type HashMap<K, V> = foldhash::HashMap<K, V>;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use flipbit_core::model::{EndpointSliceInput, NodeInput, ServiceInput, Snapshot, UnreadableService};
use flipbit_core::names::ServiceKey;
use flipbit_core::problem::{Problem, Severity, Subject};

use crate::convert;

mod seen;
pub use seen::{FileSeen, Identity, content_sum, now_ns};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {message}; nothing was committed, since the cluster snapshot would be incomplete")]
    Unreadable { path: String, message: String },
}

/// The snapshot, plus problems with single objects that were skipped.
pub fn load_dir(dir: &Path) -> Result<(Snapshot, Vec<Problem>), ManifestError> {
    load_dir_cached(dir, ParseCache::default()).map(|(snapshot, problems, _)| (snapshot, problems))
}

/// A unit's text, shared rather than copied where it is named twice (`seen::BySum` names all
/// 50,000 of a large `List` by checksum).
pub type UnitText = std::sync::Arc<str>;

/// What one unit of text (a whole file, or one item of a `List` file) gave when it read cleanly:
/// no problem, nothing unreadable. Only such units are kept, so what is kept never names the
/// place it was read at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    pub services: Vec<ServiceInput>,
    pub nodes: Vec<NodeInput>,
    pub endpoint_slices: Vec<EndpointSliceInput>,
}

/// Parse results by the exact text they came from (compared whole, not by a hash), like git's
/// index for a work tree: `render` keeps it in its cache dir so a folder where one Service changed
/// is not parsed again, even when all Services are items of one `List` file. Whole files and
/// `List` items are kept apart: the same text reads differently as one or the other.
#[derive(Debug, Clone, Default)]
pub struct ParseCache {
    pub files: HashMap<UnitText, Parsed>,
    pub items: HashMap<UnitText, Parsed>,
    /// What each manifest file (by path) was when its units were read (see `seen`).
    pub seen: HashMap<String, FileSeen>,
    /// After a load: how many units were read afresh or went, and files recorded anew or gone
    /// (0: the cache is as it was).
    pub changed: usize,
}

impl ParseCache {
    pub fn len(&self) -> usize {
        self.files.len() + self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`load_dir`], reusing `cache` for units whose text is unchanged and for files that did not
/// change (see `seen`: those are not even read); also returns the cache of this folder's units
/// (units and files that went are dropped).
pub fn load_dir_cached(
    dir: &Path,
    mut cache: ParseCache,
) -> Result<(Snapshot, Vec<Problem>, ParseCache), ManifestError> {
    let files = files_in(dir)?;
    let mut snapshot = Snapshot::default();
    let mut problems = Vec::new();
    let mut kept = ParseCache::default();
    // The cache's texts by checksum, for files whose record names their units so.
    let by_sum = if cache.seen.is_empty() {
        seen::BySum::default()
    } else {
        seen::BySum::of(&cache)
    };
    for file in files {
        let where_ = file.display().to_string();
        let unreadable = |e: std::io::Error| ManifestError::Unreadable {
            path: where_.clone(),
            message: e.to_string(),
        };
        // The time first, then the identity, then the text: a file changed after its identity
        // was taken has another one next time.
        let seen_at = seen::now_ns();
        let identity = Identity::of(&std::fs::metadata(&file).map_err(unreadable)?);
        let before = cache.seen.remove(&where_);
        let mut part = Snapshot::default();
        let mut part_problems = Vec::new();
        let unread = before.as_ref().filter(|b| b.unchanged_without_reading(&identity));
        if let Some(before) = unread
            && let Some(texts) = by_sum.texts(&before.units)
            && take_known(&texts, &mut cache, &mut kept, &mut part)
        {
            kept.seen.insert(where_, before.clone());
            append_part(&mut snapshot, &mut problems, part, part_problems);
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(unreadable)?;
        let content = seen::content_sum(&text);
        if let Some(before) = before.as_ref().filter(|b| b.content == content)
            && let Some(texts) = by_sum.texts(&before.units)
            && take_known(&texts, &mut cache, &mut kept, &mut part)
        {
            // The same text (written again, or changed too recently to trust its identity). A
            // record that stays untrusted is kept as it is, so a run that changed nothing writes
            // nothing; one that would now be trusted is written once.
            let now = FileSeen {
                identity,
                seen_at,
                content,
                units: before.units.clone(),
            };
            let now = match before.identity == identity && !now.unchanged_without_reading(&identity) {
                true => before.clone(),
                false => now,
            };
            kept.changed += usize::from(now != *before);
            kept.seen.insert(where_, now);
            append_part(&mut snapshot, &mut problems, part, part_problems);
            continue;
        }
        let mut units = Some(Vec::new());
        let read = match list_items(&text).filter(|(rest, _)| list_header_ok(rest)) {
            Some((_, items)) => read_items(
                &where_,
                &items,
                &mut cache,
                &mut kept,
                &mut part,
                &mut part_problems,
                &mut units,
            )?,
            None => read_unit(
                &text,
                true,
                &mut cache.files,
                &mut kept,
                &mut part,
                &mut part_problems,
                &mut units,
                |s, p| read_file(&where_, &text, s, p).map(|()| true),
            )?,
        };
        if !read {
            // Any doubt about a `List` read item by item: the whole file, as before units existed.
            part = Snapshot::default();
            part_problems.clear();
            read_file(&where_, &text, &mut part, &mut part_problems)?;
            units = None;
        }
        // Only a file all of whose units are kept can be taken from them next time.
        if let Some(units) = units {
            let now = FileSeen {
                identity,
                seen_at,
                content,
                units,
            };
            kept.changed += usize::from(before.as_ref() != Some(&now));
            kept.seen.insert(where_, now);
        } else {
            kept.changed += usize::from(before.is_some());
        }
        append_part(&mut snapshot, &mut problems, part, part_problems);
    }
    kept.changed += cache.len() + cache.seen.len();
    Ok((snapshot, problems, kept))
}

fn append_part(
    snapshot: &mut Snapshot,
    problems: &mut Vec<Problem>,
    mut part: Snapshot,
    mut part_problems: Vec<Problem>,
) {
    snapshot.services.append(&mut part.services);
    snapshot.nodes.append(&mut part.nodes);
    snapshot.endpoint_slices.append(&mut part.endpoint_slices);
    snapshot.unreadable_services.append(&mut part.unreadable_services);
    problems.append(&mut part_problems);
}

/// A file's units by their texts, from `cache` (or `kept`, for a text the folder holds twice),
/// moved to `kept` and appended to `part`: what reading it would give, since only units that read
/// cleanly are kept. `false`, with nothing moved, when one of them is in neither.
fn take_known(texts: &[(bool, &str)], cache: &mut ParseCache, kept: &mut ParseCache, part: &mut Snapshot) -> bool {
    let known = |whole: bool, text: &str| {
        let (cache, kept) = if whole {
            (&cache.files, &kept.files)
        } else {
            (&cache.items, &kept.items)
        };
        cache.contains_key(text) || kept.contains_key(text)
    };
    if !texts.iter().all(|&(whole, text)| known(whole, text)) {
        return false;
    }
    for &(whole, text) in texts {
        let (cache, kept) = if whole {
            (&mut cache.files, &mut kept.files)
        } else {
            (&mut cache.items, &mut kept.items)
        };
        match cache.remove_entry(text) {
            Some((text, parsed)) => {
                append(part, parsed.clone());
                kept.insert(text, parsed);
            }
            None => {
                if let Some(parsed) = kept.get(text) {
                    append(part, parsed.clone());
                }
            }
        }
    }
    true
}

/// The items of a `List` file one by one; `Ok(false)` (and the caller reads the file whole) when
/// one is not exactly one YAML sequence entry or does not read (an anchor used across items reads
/// only in the whole file). The items kept are left in `kept` even then: they read the same.
fn read_items(
    where_: &str,
    items: &[&str],
    cache: &mut ParseCache,
    kept: &mut ParseCache,
    part: &mut Snapshot,
    problems: &mut Vec<Problem>,
    units: &mut Option<Vec<(bool, u64)>>,
) -> Result<bool, ManifestError> {
    for (i, item) in items.iter().enumerate() {
        let read = read_unit(item, false, &mut cache.items, kept, part, problems, units, |s, p| {
            let at = format!("{where_}: document 1: items[{i}]");
            read_item(&at, item, s, p).or(Ok(false))
        })?;
        if !read {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One unit (`whole`: a whole file, else a `List` item): from `cache` when its text is there,
/// else read by `read` and kept in `kept` when it read cleanly (no problem and nothing unreadable:
/// those name the place they were read at). Its checksum goes to `units` when it is kept; `units`
/// becomes `None` when it is not.
#[allow(clippy::too_many_arguments)]
fn read_unit(
    text: &str,
    whole: bool,
    cache: &mut HashMap<UnitText, Parsed>,
    kept: &mut ParseCache,
    part: &mut Snapshot,
    problems: &mut Vec<Problem>,
    units: &mut Option<Vec<(bool, u64)>>,
    read: impl FnOnce(&mut Snapshot, &mut Vec<Problem>) -> Result<bool, ManifestError>,
) -> Result<bool, ManifestError> {
    let changed = &mut kept.changed;
    let kept = if whole { &mut kept.files } else { &mut kept.items };
    let known = match cache.remove_entry(text) {
        Some(entry) => Some(entry),
        // The same text twice in the folder.
        None => kept.get_key_value(text).map(|(t, p)| (t.clone(), p.clone())),
    };
    if let Some((text, parsed)) = known {
        if let Some(units) = units {
            units.push((whole, seen::unit_sum(&text)));
        }
        append(part, parsed.clone());
        kept.insert(text, parsed);
        return Ok(true);
    }
    let mut fresh = Snapshot::default();
    let problems_before = problems.len();
    if !read(&mut fresh, problems)? {
        return Ok(false);
    }
    let clean = fresh.unreadable_services.is_empty() && problems.len() == problems_before;
    part.unreadable_services.append(&mut fresh.unreadable_services);
    let parsed = Parsed {
        services: fresh.services,
        nodes: fresh.nodes,
        endpoint_slices: fresh.endpoint_slices,
    };
    if clean {
        if let Some(units) = units {
            units.push((whole, seen::unit_sum(text)));
        }
        kept.insert(UnitText::from(text), parsed.clone());
    } else {
        *units = None;
    }
    *changed += 1;
    append(part, parsed);
    Ok(true)
}

fn append(snapshot: &mut Snapshot, parsed: Parsed) {
    snapshot.services.extend(parsed.services);
    snapshot.nodes.extend(parsed.nodes);
    snapshot.endpoint_slices.extend(parsed.endpoint_slices);
}

/// Every document of a file, as read before units existed (and still, for a file with any doubt).
fn read_file(
    where_: &str,
    text: &str,
    snapshot: &mut Snapshot,
    problems: &mut Vec<Problem>,
) -> Result<(), ManifestError> {
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ManifestError::Unreadable {
            path: where_.to_owned(),
            message: format!("document {}: not YAML: {e}", i + 1),
        })?;
        let at = format!("{where_}: document {}", i + 1);
        add(&at, value, snapshot, problems)?;
    }
    Ok(())
}

/// One item of a `List` read on its own: `Ok(false)` when its text is not exactly one sequence
/// entry (the file is then read whole).
fn read_item(
    at: &str,
    item: &str,
    snapshot: &mut Snapshot,
    problems: &mut Vec<Problem>,
) -> Result<bool, ManifestError> {
    let Ok(Value::Array(mut entries)) = serde_norway::from_str::<Value>(item) else {
        return Ok(false);
    };
    let (Some(value), true) = (entries.pop(), entries.is_empty()) else {
        return Ok(false);
    };
    add(at, value, snapshot, problems)?;
    Ok(true)
}

/// The texts of a `List` file's items when it has the plain shape `kubectl get -o yaml` writes:
/// top-level keys at column 0, one `items:` among them, its entries each starting with `- ` at
/// column 0; also the rest of the file with `items: []` in their place. `None` for anything else
/// (document markers, directives, an indented `items` list), which is read whole.
fn list_items(text: &str) -> Option<(String, Vec<&str>)> {
    if !text.ends_with('\n') {
        return None;
    }
    let mut rest = String::new();
    let mut items: Vec<&str> = Vec::new();
    let mut region: Option<usize> = None;
    let mut item_start: Option<usize> = None;
    let mut seen_items_key = false;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        if line.starts_with("---") || line.starts_with("...") || line.starts_with('%') {
            return None;
        }
        let col0 = !line.starts_with([' ', '\t', '\n', '\r', '#']);
        if region.is_some() {
            if line.starts_with("- ") || line.trim_end() == "-" {
                if let Some(s) = item_start {
                    items.push(&text[s..start]);
                }
                item_start = Some(start);
                continue;
            }
            if !col0 {
                if item_start.is_none() && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                    // An indented list: not the plain shape.
                    return None;
                }
                continue;
            }
            if let Some(s) = item_start.take() {
                items.push(&text[s..start]);
            }
            region = None;
        }
        if line.trim_end() == "items:" {
            if seen_items_key {
                return None;
            }
            seen_items_key = true;
            region = Some(start);
            rest.push_str("items: []\n");
            continue;
        }
        rest.push_str(line);
    }
    if let Some(s) = item_start {
        items.push(&text[s..]);
    }
    seen_items_key.then_some((rest, items))
}

/// True when the file outside its items reads as a `List` whose `items` are the ones
/// [`list_items`] cut out: a mapping with `kind: List` (or `...List`), `items: []`, and as many
/// keys as lines at column 0 (so no multi-line scalar spans the cut).
fn list_header_ok(rest: &str) -> bool {
    let Ok(Value::Object(map)) = serde_norway::from_str::<Value>(rest) else {
        return false;
    };
    let keys_at_col0 = rest
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t', '\r', '#']))
        .count();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    let empty_items = map.get("items").and_then(Value::as_array).is_some_and(Vec::is_empty);
    (kind == "List" || kind.ends_with("List")) && empty_items && keys_at_col0 == map.len()
}

/// The manifest files under `dir` (`.yaml`, `.yml`, `.json`, in sub-folders too), in the order
/// they are read.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let unreadable = |e: std::io::Error| ManifestError::Unreadable {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

fn add(at: &str, value: Value, snapshot: &mut Snapshot, problems: &mut Vec<Problem>) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if kind == "List" || kind.ends_with("List") {
        let items = value
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            add(&format!("{at}: items[{i}]"), item, snapshot, problems)?;
        }
        return Ok(());
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    match kind.as_str() {
        "Service" => {
            let Some(name) = name else {
                return Err(ManifestError::Unreadable {
                    path: at.to_owned(),
                    message: "a Service without metadata.name".into(),
                });
            };
            match serde_json::from_value::<Service>(value) {
                Ok(svc) => snapshot.services.push(convert::service(&svc)),
                Err(e) => match ServiceKey::new(&namespace, &name) {
                    Ok(key) => snapshot.unreadable_services.push(UnreadableService {
                        key,
                        message: format!("{at}: malformed Service: {e}"),
                    }),
                    Err(bad) => {
                        return Err(ManifestError::Unreadable {
                            path: at.to_owned(),
                            message: format!("malformed Service: {bad}"),
                        });
                    }
                },
            }
        }
        "Node" => match serde_json::from_value::<Node>(value) {
            Ok(node) => snapshot.nodes.push(convert::node(&node)),
            Err(e) => problems.push(Problem {
                severity: Severity::Warning,
                object: Subject::Node(name.unwrap_or_default()),
                field: String::new(),
                message: format!("{at}: malformed Node, given no traffic: {e}"),
            }),
        },
        "EndpointSlice" => match serde_json::from_value::<EndpointSlice>(value) {
            Ok(slice) => snapshot.endpoint_slices.extend(convert::endpoint_slice(&slice)),
            Err(e) => problems.push(Problem {
                severity: Severity::Warning,
                object: Subject::EndpointSlice {
                    namespace,
                    name: name.unwrap_or_default(),
                },
                field: String::new(),
                message: format!("{at}: malformed EndpointSlice, ignored: {e}"),
            }),
        },
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the folder reads as file by file, every document whole (as before units existed).
    fn whole(dir: &Path) -> Result<(Snapshot, Vec<Problem>), ManifestError> {
        let files = files_in(dir)?;
        let (mut snapshot, mut problems) = (Snapshot::default(), Vec::new());
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            read_file(&file.display().to_string(), &text, &mut snapshot, &mut problems)?;
        }
        Ok((snapshot, problems))
    }

    fn same(a: &(Snapshot, Vec<Problem>), b: &(Snapshot, Vec<Problem>)) -> bool {
        a.0.services == b.0.services
            && a.0.nodes == b.0.nodes
            && a.0.endpoint_slices == b.0.endpoint_slices
            && a.0.unreadable_services == b.0.unreadable_services
            && a.1 == b.1
    }

    const SVC: &str = "- apiVersion: v1\n  kind: Service\n  metadata: {name: NAME, namespace: shop}\n  spec:\n    type: LoadBalancer\n    ports: [{port: 80, nodePort: 30080}]\n";

    fn items(names: &[&str]) -> String {
        names.iter().map(|n| SVC.replace("NAME", n)).collect()
    }

    /// Folders of every shape read the same item by item (cold and from the cache they leave) as
    /// whole; only plain `List`s are read item by item, and units that did not read cleanly are
    /// not kept.
    #[test]
    fn items_read_one_by_one_read_as_the_whole_file() {
        let cases = [
            // kubectl's shape: items first, kind and metadata after.
            format!("apiVersion: v1\nitems:\n{}kind: List\nmetadata:\n  resourceVersion: \"\"\n", items(&["a", "b"])),
            format!("apiVersion: v1\nkind: ServiceList\nitems:\n{}", items(&["a", "b", "a"])),
            // An anchor used across items reads only whole.
            "apiVersion: v1\nkind: List\nitems:\n- &svc {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {type: LoadBalancer, ports: [{port: 80, nodePort: 30080}]}}\n- *svc\n".to_owned(),
            // A malformed Service and one without a name: a problem, and an error.
            format!("apiVersion: v1\nkind: List\nitems:\n{}- apiVersion: v1\n  kind: Service\n  metadata: {{name: bad}}\n  spec: {{ports: 7}}\n", items(&["a"])),
            // Indented items, document markers, comments between items.
            "kind: List\nitems:\n  - {kind: Service, metadata: {name: a}}\n".to_owned(),
            format!("---\nkind: List\nitems:\n{}---\nkind: List\nitems: []\n", items(&["a"])),
            format!("kind: List\nitems:\n# one\n{}# two\n\n{}", items(&["a"]), items(&["b"])),
            // A quoted scalar spanning the cut must not fool the reader.
            format!("kind: List\ndescription: 'x\nitems:\n{}'\n", items(&["a"])),
            // A top-level sequence is not a List item.
            items(&["a"]),
        ];
        for (i, case) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("list.yaml"), case).expect("write");
            let one = "apiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: shop}\nspec: {type: LoadBalancer, ports: [{port: 80, nodePort: 30081}]}\n";
            std::fs::write(dir.path().join("one.yaml"), one).expect("write");
            let expected = whole(dir.path()).unwrap_or_else(|e| panic!("case {i}: {e}\n{case}"));
            let (s, p, cache) = load_dir_cached(dir.path(), ParseCache::default()).expect("cold");
            assert!(same(&expected, &(s, p)), "case {i}: cold\n{case}");
            let (s, p, again) = load_dir_cached(dir.path(), cache.clone()).expect("warm");
            assert!(same(&expected, &(s, p)), "case {i}: warm\n{case}");
            // Only units that did not read cleanly (and are not kept) are read again.
            assert!(again.changed <= cache.changed, "case {i}");
            // Files older than the racy window are taken from the cache unread: the same result.
            age(dir.path());
            let (_, _, trusted) = load_dir_cached(dir.path(), again).expect("aged");
            let (s, p, skipped) = load_dir_cached(dir.path(), trusted.clone()).expect("unread");
            assert!(same(&expected, &(s, p)), "case {i}: unread\n{case}");
            assert_eq!(skipped.seen, trusted.seen, "case {i}");
        }
    }

    #[test]
    fn a_plain_list_is_cut_into_its_items_and_a_warm_load_reads_nothing() {
        let text = format!("apiVersion: v1\nitems:\n{}kind: List\n", items(&["a", "b"]));
        let (rest, cut) = list_items(&text).expect("a plain List");
        assert!(list_header_ok(&rest), "{rest}");
        assert_eq!(cut, [SVC.replace("NAME", "a"), SVC.replace("NAME", "b")]);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("list.yaml"), &text).expect("write");
        let (_, _, cache) = load_dir_cached(dir.path(), ParseCache::default()).expect("cold");
        // Two items read, and the file's record.
        assert_eq!((cache.items.len(), cache.changed), (2, 3));
        let (s, _, warm) = load_dir_cached(dir.path(), cache).expect("warm");
        assert_eq!((s.services.len(), warm.changed), (2, 0));
        std::fs::write(dir.path().join("list.yaml"), text.replace("name: b", "name: c")).expect("write");
        let (s, _, changed) = load_dir_cached(dir.path(), warm).expect("one changed");
        assert_eq!(s.services[1].name, "c");
        // One item read afresh, one went, and the file's record anew.
        assert_eq!(changed.changed, 3);
    }

    /// Sets every file's modification time 10 s back, out of the racy window.
    fn age(dir: &Path) {
        for file in files_in(dir).expect("collect") {
            set_mtime(&file, std::time::SystemTime::now() - std::time::Duration::from_secs(10));
        }
    }

    fn set_mtime(path: &Path, t: std::time::SystemTime) {
        let f = std::fs::File::options().write(true).open(path).expect("open");
        f.set_modified(t).expect("set mtime");
    }

    fn mtime(path: &Path) -> std::time::SystemTime {
        std::fs::metadata(path).and_then(|m| m.modified()).expect("mtime")
    }

    /// A file rewritten with text of the same size and given its old modification time back is
    /// still read (within the racy window of its last read, and by its change time out of it); a
    /// file written again with the same text is not cut again; and one out of the window whose
    /// identity is unchanged is not read at all (git's rule: its identity is trusted).
    #[test]
    fn a_same_size_edit_in_the_racy_window_is_noticed_and_an_old_file_is_not_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("list.yaml");
        let text = format!("apiVersion: v1\nkind: List\nitems:\n{}", items(&["a", "b"]));
        std::fs::write(&file, &text).expect("write");
        let (_, _, cache) = load_dir_cached(dir.path(), ParseCache::default()).expect("cold");
        assert_eq!(cache.seen.len(), 1);
        let before = mtime(&file);
        std::fs::write(&file, text.replace("name: b", "name: c")).expect("same size");
        set_mtime(&file, before);
        let (s, _, cache) = load_dir_cached(dir.path(), cache).expect("racy");
        assert_eq!(s.services[1].name, "c", "the racy edit is read");
        assert_eq!(
            cache.changed, 3,
            "one item read afresh, one went, the file recorded anew"
        );

        // The same text written again: its identity changed, its content did not.
        std::fs::write(&file, text.replace("name: b", "name: c")).expect("again");
        set_mtime(&file, before + std::time::Duration::from_millis(500));
        let (s, _, cache) = load_dir_cached(dir.path(), cache).expect("rewritten");
        assert_eq!(s.services[1].name, "c");
        assert_eq!(cache.changed, 1, "only the file's record");

        // Out of the racy window: recorded as trusted once, then taken unread. Proof that it is not
        // read: a file read with the same text gets a new record (its new time of reading), one
        // taken unread keeps its record, so nothing changed.
        age(dir.path());
        let (_, _, cache) = load_dir_cached(dir.path(), cache).expect("aged");
        let (s, _, unread) = load_dir_cached(dir.path(), cache).expect("unread");
        assert_eq!((s.services[1].name.as_str(), unread.changed), ("c", 0));
        // A same-size edit given the trusted modification time back: the change time (which no
        // program can put back) differs, so it is read. Git's index would miss it.
        let trusted = mtime(&file);
        std::fs::write(&file, text.replace("name: b", "name: d")).expect("same size");
        set_mtime(&file, trusted);
        let (s, _, _) = load_dir_cached(dir.path(), unread).expect("mtime put back");
        assert_eq!(s.services[1].name, "d");
    }

    /// `spec.externalIPs` reaches the model, so the core can warn about it.
    #[test]
    fn external_ips_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: LoadBalancer\n  externalIPs: [203.0.113.7]\n  ports: [{port: 80, nodePort: 30080}]\n";
        std::fs::write(dir.path().join("svc.yaml"), service).expect("write");
        let (snapshot, problems) = load_dir(dir.path()).expect("load");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(snapshot.services[0].external_ips, ["203.0.113.7"]);
    }

    /// An EndpointSlice reaches the model whole enough for `flipbit.io/backends: pods`: its
    /// family, its ports by name, each endpoint's addresses and readiness (unknown stays unknown).
    #[test]
    fn endpoint_slices_are_read_with_ports_and_endpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  namespace: shop\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv6\nports: [{name: http, protocol: TCP, port: 8080}, {port: 9090}]\nendpoints:\n  - addresses: [\"fd00::4\"]\n    conditions: {ready: true}\n    nodeName: n1\n  - addresses: [\"fd00::5\"]\n    conditions: {ready: false}\n    nodeName: n2\n  - addresses: [\"fd00::6\"]\n";
        std::fs::write(dir.path().join("slice.yaml"), slice).expect("write");
        let (snapshot, problems) = load_dir(dir.path()).expect("load");
        assert!(problems.is_empty(), "{problems:?}");
        let s = &snapshot.endpoint_slices[0];
        assert_eq!((s.namespace.as_str(), s.service_name.as_str()), ("shop", "web"));
        assert_eq!(s.address_type, "IPv6");
        assert_eq!(s.ready_nodes, ["n1"]);
        let ports: Vec<_> = s
            .ports
            .iter()
            .map(|p| (p.name.as_deref(), p.protocol.as_deref(), p.port))
            .collect();
        assert_eq!(
            ports,
            [(Some("http"), Some("TCP"), Some(8080)), (None, None, Some(9090))]
        );
        let endpoints: Vec<_> = s.endpoints.iter().map(|e| (e.addresses.join(","), e.ready)).collect();
        assert_eq!(
            endpoints,
            [
                ("fd00::4".to_owned(), Some(true)),
                ("fd00::5".to_owned(), Some(false)),
                ("fd00::6".to_owned(), None)
            ]
        );
    }
}
