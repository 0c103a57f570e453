//! Discovery documents, generated from the resource table so they advertise exactly what is
//! served: kubectl resolves `svc`, `no`, `ev` and `get all` through them, and a resource or verb
//! missing here is one this server will refuse.
//!
//! Only the legacy (unaggregated) forms are served, always as `application/json`; client-go sees
//! that the response is not an `APIGroupDiscoveryList` and falls back to them, as it does against
//! older clusters.

use serde_json::{Value, json};

use super::resources::{self, RESOURCES, STATUS_VERBS, VERBS};

/// The version this server claims; kubectl only warns about skew.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-flipbit-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = {
        let mut vs: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.version)
            .collect();
        vs.dedup();
        vs.into_iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect()
    };
    json!({
        "name": group,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
        "versions": versions,
    })
}

/// `/apis`: the groups of the table that `served` says are served.
pub fn groups(served: impl Fn(&str) -> bool) -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| served(g))
        .map(group_doc)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`
pub fn group(group: &str) -> Value {
    let mut doc = group_doc(group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    doc
}

/// `/api/v1` or `/apis/{group}/{version}`
pub fn resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut doc = json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            doc["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            doc["categories"] = json!(r.categories);
        }
        list.push(doc);
        if r.status_subresource {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}
