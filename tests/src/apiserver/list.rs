//! LIST with honest pagination: the first page fixes a resourceVersion, and every `continue` page
//! is read from the store as it was at that version (rebuilt from the change history), so a client
//! paging through a changing collection sees one consistent snapshot, and gets 410 when the
//! history was compacted in between, like etcd.

use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::resources::{ResId, Resource};
use super::select::Selector;
use super::store::Store;

/// The opaque `continue` token: the snapshot's resourceVersion and the last key returned, as hex
/// of a small JSON document.
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let doc = json!({"rv": rv, "ns": ns, "name": name}).to_string();
    doc.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    let doc: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        doc["rv"].as_u64()?,
        doc["ns"].as_str()?.to_string(),
        doc["name"].as_str()?.to_string(),
    ))
}

/// Serves GET on a collection without `watch`.
pub fn list(store: &Store, res: ResId, ns: Option<&str>, q: &Query) -> ApiResult<Value> {
    let r = Resource::get(res);
    let selector = Selector::parse(q.get("labelSelector"), q.get("fieldSelector"))?;
    let limit = q.number("limit")?.filter(|l| *l > 0);
    let rv_param = q.get("resourceVersion").filter(|v| !v.is_empty());
    let rv_match = q.get("resourceVersionMatch").filter(|v| !v.is_empty());
    let (snapshot_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if rv_param.is_some_and(|v| v != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, cns, cname) = decode_continue(token)
                .ok_or_else(|| ApiError::bad_request(format!("invalid continue token {token:?}")))?;
            (rv, Some((cns, cname)))
        }
        None => {
            let asked = q.resource_version()?;
            let rv = match (rv_match, asked) {
                (Some(_), None) if rv_param.is_none() => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (Some("Exact"), Some(n)) => n,
                (Some("Exact"), None) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
                (Some("NotOlderThan") | None, Some(n)) if n > store.rv() => {
                    return Err(ApiError::new(
                        504,
                        "Timeout",
                        format!("Too large resource version: {n}, current: {}", store.rv()),
                    ));
                }
                (Some("NotOlderThan") | None, _) => store.rv(),
                (Some(other), _) => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported resourceVersionMatch {other:?}: only \"Exact\" and \"NotOlderThan\""
                    )));
                }
            };
            (rv, None)
        }
    };
    let snapshot = if snapshot_rv == store.rv() {
        store.list(res, ns)
    } else {
        store
            .list_at(res, ns, snapshot_rv)
            .map_err(|e| match (&after, e.code) {
                (Some(_), 410) => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
                ),
                _ => e,
            })?
    };
    let mut matching = snapshot
        .into_iter()
        .filter(|((_, kns, kname), _)| after.as_ref().is_none_or(|(ans, aname)| (kns, kname) > (ans, aname)))
        .filter(|(_, obj)| selector.matches(obj))
        .peekable();
    let mut items = Vec::new();
    let mut last = None;
    while let Some((key, obj)) = matching.next_if(|_| limit.is_none_or(|l| (items.len() as u64) < l)) {
        items.push((*obj).clone());
        last = Some(key);
    }
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": snapshot_rv.to_string()});
    if remaining > 0
        && let Some((_, lns, lname)) = last
    {
        metadata["continue"] = Value::String(encode_continue(snapshot_rv, &lns, &lname));
        if selector.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    Ok(json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_round_trips() {
        let t = encode_continue(42, "ns", "a.b");
        assert_eq!(decode_continue(&t), Some((42, "ns".into(), "a.b".into())));
        assert_eq!(decode_continue("zz"), None);
    }
}
