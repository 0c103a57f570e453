//! Create, replace, patch and delete with the real registry's rules: server-owned metadata
//! (uid, creationTimestamp, resourceVersion) survives whatever the client sends, an update carrying
//! a stale resourceVersion is a 409, the main resource cannot change `.status` and the status
//! subresource can change nothing else, and an update that changes nothing writes nothing (no new
//! resourceVersion, no watch event), exactly as on a cluster.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::meta::{self, meta_str};
use super::patch;
use super::resources::{self, ResId, Resource};
use super::store::{Key, Store};

/// Where a request points: resource, namespace ("" when cluster-scoped), name.
pub fn key(res: ResId, ns: Option<&str>, name: &str) -> Key {
    let ns = if Resource::get(res).namespaced {
        ns.unwrap_or("default")
    } else {
        ""
    };
    (res, ns.to_string(), name.to_string())
}

/// The key of an object named by `kind` alone (the sync test API); "Event" means core/v1.
pub fn key_for_kind(kind: &str, ns: Option<&str>, name: &str) -> Option<Key> {
    let res = resources::RESOURCES.iter().position(|r| r.kind == kind)?;
    Some(key(res, ns, name))
}

fn commit(store: &mut Store, key: Key, obj: Value, dry_run: bool) -> Arc<Value> {
    if dry_run { Arc::new(obj) } else { store.write(key, obj) }
}

/// Copies the server-owned metadata of `old` onto `new`.
fn keep_server_meta(new: &mut Value, old: &Value, res: &Resource) -> ApiResult<()> {
    let meta = meta::metadata_mut(new, res)?;
    for field in ["uid", "creationTimestamp", "resourceVersion"] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => meta.insert(field.to_string(), v.clone()),
            None => meta.remove(field),
        };
    }
    Ok(())
}

/// Rejects a body whose uid or resourceVersion does not match the stored object.
fn check_preconditions(body: &Value, old: &Value, res: &Resource, name: &str) -> ApiResult<()> {
    if let Some(uid) = meta_str(body, "uid").filter(|u| !u.is_empty())
        && Some(uid) != meta_str(old, "uid")
    {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {:?}",
            meta_str(old, "uid")
        );
        return Err(ApiError::conflict(res, name, &why));
    }
    if let Some(rv) = meta_str(body, "resourceVersion").filter(|r| !r.is_empty())
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::modified(res, name));
    }
    Ok(())
}

/// POST: a new object; 409 when the name is taken.
pub fn create(store: &mut Store, res: ResId, ns: &str, mut body: Value, dry_run: bool) -> ApiResult<Arc<Value>> {
    let r = Resource::get(res);
    meta::check_type_and_namespace(&mut body, r, ns)?;
    let name = match (meta_str(&body, "name"), meta_str(&body, "generateName")) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => meta::generated_name(prefix),
        _ => {
            return Err(ApiError::invalid(
                r,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    meta::check_name(r, &name)?;
    if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let key = key(res, Some(ns), &name);
    if store.get(&key).is_some() {
        return Err(ApiError::already_exists(r, &name));
    }
    let m = meta::metadata_mut(&mut body, r)?;
    m.insert("name".into(), Value::String(name));
    m.insert("uid".into(), Value::String(meta::new_uid()));
    m.insert("creationTimestamp".into(), Value::String(meta::now()));
    if r.status_subresource
        && let Some(map) = body.as_object_mut()
    {
        // Status is the controllers' to write, through the status subresource.
        map.insert("status".into(), json!({}));
    }
    Ok(commit(store, key, body, dry_run))
}

/// What a PUT did.
pub enum Replaced {
    Updated(Arc<Value>),
    Created(Arc<Value>),
}

/// PUT of the object or (with `status`) of its status subresource.
pub fn replace(store: &mut Store, key: Key, mut body: Value, status: bool, dry_run: bool) -> ApiResult<Replaced> {
    let r = Resource::get(key.0);
    let name = key.2.clone();
    meta::check_type_and_namespace(&mut body, r, &key.1)?;
    if meta_str(&body, "name") != Some(name.as_str()) {
        let got = meta_str(&body, "name").unwrap_or("");
        return Err(ApiError::bad_request(format!(
            "the name of the object ({got}) does not match the name on the URL ({name})"
        )));
    }
    let Some(old) = store.get(&key) else {
        if r.create_on_update && !status && meta_str(&body, "resourceVersion").is_none_or(str::is_empty) {
            return create(store, key.0, &key.1, body, dry_run).map(Replaced::Created);
        }
        return Err(ApiError::not_found(r, &name));
    };
    check_preconditions(&body, &old, r, &name)?;
    let new = updated(&old, body, r, status)?;
    Ok(Replaced::Updated(write_if_changed(store, key, &old, new, dry_run)))
}

/// PATCH (merge patch) of the object or of its status subresource.
pub fn patch(store: &mut Store, key: Key, patch_body: &Value, status: bool, dry_run: bool) -> ApiResult<Arc<Value>> {
    let r = Resource::get(key.0);
    let name = key.2.clone();
    let old = store.get(&key).ok_or_else(|| ApiError::not_found(r, &name))?;
    if !patch_body.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    check_preconditions(patch_body, &old, r, &name)?;
    let mut patched = (*old).clone();
    patch::merge(&mut patched, patch_body);
    meta::check_type_and_namespace(&mut patched, r, &key.1)?;
    if meta_str(&patched, "name") != Some(name.as_str()) {
        return Err(ApiError::bad_request("metadata.name cannot be changed by a patch"));
    }
    let new = updated(&old, patched, r, status)?;
    Ok(write_if_changed(store, key, &old, new, dry_run))
}

/// The object an update stores: the request's object with server metadata kept and, for
/// resources with a status subresource, only `.status` (status) or all but `.status` (main).
fn updated(old: &Value, mut new: Value, r: &Resource, status: bool) -> ApiResult<Value> {
    keep_server_meta(&mut new, old, r)?;
    if !r.status_subresource {
        return Ok(new);
    }
    let (mut base, from) = if status { (old.clone(), new) } else { (new, old.clone()) };
    if let Some(map) = base.as_object_mut() {
        match from.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
    Ok(base)
}

fn write_if_changed(store: &mut Store, key: Key, old: &Arc<Value>, new: Value, dry_run: bool) -> Arc<Value> {
    if new == **old {
        old.clone()
    } else {
        commit(store, key, new, dry_run)
    }
}

/// DELETE, honouring `preconditions` of a DeleteOptions body.
pub fn delete(store: &mut Store, key: &Key, options: &Value, dry_run: bool) -> ApiResult<Arc<Value>> {
    let r = Resource::get(key.0);
    let old = store.get(key).ok_or_else(|| ApiError::not_found(r, &key.2))?;
    let pre = options.get("preconditions").cloned().unwrap_or(Value::Null);
    check_preconditions(&json!({ "metadata": pre }), &old, r, &key.2)?;
    if !dry_run {
        store.remove(key);
    }
    Ok(old)
}

/// The test API's create-or-replace: the whole object as given (status included), keeping uid
/// and creationTimestamp of the object it replaces.
pub fn apply(store: &mut Store, mut obj: Value) -> ApiResult<Arc<Value>> {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let res = resources::by_kind(av, kind)
        .ok_or_else(|| ApiError::bad_request(format!("this server does not serve apiVersion {av:?} kind {kind:?}")))?;
    let r = Resource::get(res);
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    meta::check_name(r, &name)?;
    let ns = meta_str(&obj, "namespace")
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    meta::check_type_and_namespace(&mut obj, r, &ns)?;
    let key = key(res, Some(&ns), &name);
    match store.get(&key) {
        Some(old) => {
            keep_server_meta(&mut obj, &old, r)?;
            Ok(write_if_changed(store, key, &old, obj, false))
        }
        None => {
            let m = meta::metadata_mut(&mut obj, r)?;
            m.insert("uid".into(), Value::String(meta::new_uid()));
            m.insert("creationTimestamp".into(), Value::String(meta::now()));
            Ok(store.write(key, obj))
        }
    }
}
