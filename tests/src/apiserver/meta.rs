//! Object metadata the server owns (uid, creationTimestamp, generated names) and the checks it
//! makes on the metadata a client sends, so a client bug (a wrong name, a foreign namespace) fails
//! here the way it would on a cluster instead of silently working.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use super::resources::Resource;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn random_u64() -> u64 {
    // Every RandomState is freshly keyed; hashing a sequence number keeps values distinct.
    RandomState::new().hash_one(SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A random (version 4) UUID, as the real server assigns to `metadata.uid`.
pub fn new_uid() -> String {
    let hi = random_u64();
    let lo = random_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0x0fff,
        0x8000 | (lo >> 48) & 0x3fff,
        lo & 0xffff_ffff_ffff
    )
}

/// Now, in the RFC 3339 seconds form of `metadata.creationTimestamp`.
pub fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// `generateName` plus five characters from the real server's alphabet.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    let mut out = prefix.to_string();
    for _ in 0..5 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

/// The object's `metadata`, created when missing; an error when it is not an object.
pub fn metadata_mut<'a>(obj: &'a mut Value, res: &Resource) -> ApiResult<&'a mut Map<String, Value>> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!("a {} must be a JSON object", res.kind)));
    };
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a JSON object".to_string()))
}

/// A string field of `metadata`, if present and a string.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// A DNS-1123 subdomain: what the real server requires of most object names.
pub fn check_name(res: &Resource, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res,
            name,
            "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ))
    }
}

/// Checks (and fills in when absent) `apiVersion`, `kind` and `metadata.namespace` of a request
/// body against the URL it was sent to.
pub fn check_type_and_namespace(obj: &mut Value, res: &Resource, ns: &str) -> ApiResult<()> {
    let api_version = res.api_version();
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!("a {} must be a JSON object", res.kind)));
    };
    for (field, want) in [("apiVersion", api_version.as_str()), ("kind", res.kind)] {
        match map.get(field) {
            None | Some(Value::Null) => {
                map.insert(field.to_string(), Value::String(want.to_string()));
            }
            Some(Value::String(got)) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "{field} {got} does not match the resource the request was sent to ({want})"
                )));
            }
        }
    }
    let meta = metadata_mut(obj, res)?;
    if res.namespaced {
        match meta.get("namespace") {
            None | Some(Value::Null) => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
            Some(Value::String(got)) if got == ns || got.is_empty() => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}
