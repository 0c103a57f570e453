//! PATCH bodies. Only JSON merge patch (RFC 7386) is implemented, because it is what kube-rs's
//! `Patch::Merge` and its events `Recorder` send. Strategic merge and server-side apply need the
//! schemas and managed-fields bookkeeping of the real server; faking them would let a client pass
//! here and fail on a cluster, so they (and JSON patch) are refused with a 415 that says so.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// Checks the Content-Type of a PATCH; only merge patch is accepted.
pub fn check_content_type(content_type: Option<&str>) -> ApiResult<()> {
    let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media.as_deref() {
        Some(MERGE_PATCH) => Ok(()),
        other => Err(ApiError::unsupported_media_type(
            other.unwrap_or("no Content-Type"),
            "application/merge-patch+json for PATCH (strategic merge, JSON patch and server-side apply are not implemented)",
        )),
    }
}

/// Applies an RFC 7386 merge patch to `target`: objects merge key by key, `null` removes a key,
/// anything else (arrays included) replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
        assert!(check_content_type(Some("application/merge-patch+json; charset=utf-8")).is_ok());
        let err = check_content_type(Some("application/apply-patch+yaml")).unwrap_err();
        assert_eq!(err.code, 415);
    }
}
