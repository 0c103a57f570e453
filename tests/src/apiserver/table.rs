//! Server-side printing (`meta.k8s.io/v1` Table), which kubectl asks for on `kubectl get`. Without
//! it kubectl prints only NAME and AGE; with it a manual check shows what a test is about, e.g.
//! the EXTERNAL-IP the generator wrote into a Service's status. The columns follow the real
//! server's printers for these kinds (wide-only columns left out).

use serde_json::{Value, json};

use super::resources::Resource;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Like apimachinery's `duration.HumanDuration`.
fn human(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match () {
        _ if secs < 0 => "0s".into(),
        _ if secs < 120 => format!("{secs}s"),
        _ if m < 10 && secs % 60 != 0 => format!("{m}m{}s", secs % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(ts: Option<&str>) -> String {
    match ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn service_cells(o: &Value) -> Vec<String> {
    let kind = s(o, &["spec", "type"]).unwrap_or("ClusterIP");
    let mut external: Vec<&str> = arr(o, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for ing in arr(o, &["status", "loadBalancer", "ingress"]) {
        external.extend(s(ing, &["ip"]).or(s(ing, &["hostname"])));
    }
    let external = match (kind, external.is_empty()) {
        ("LoadBalancer", true) => "<pending>".to_string(),
        ("ExternalName", _) => s(o, &["spec", "externalName"]).unwrap_or("").to_string(),
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = arr(o, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = p.get("port").map(Value::to_string).unwrap_or_default();
            let proto = s(p, &["protocol"]).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_u64) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    let cluster_ip = or_none(s(o, &["spec", "clusterIP"]).unwrap_or("").to_string());
    vec![kind.to_string(), cluster_ip, external, or_none(ports.join(","))]
}

fn node_cells(o: &Value) -> Vec<String> {
    let ready = arr(o, &["status", "conditions"])
        .iter()
        .find(|c| s(c, &["type"]) == Some("Ready"));
    let mut status = match ready.and_then(|c| s(c, &["status"])) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o.get("spec").and_then(|sp| sp.get("unschedulable")) == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let labels = o
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    let roles: Vec<&str> = labels
        .into_iter()
        .flat_map(|l| l.keys())
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    vec![
        status,
        or_none(roles.join(",")),
        age(s(o, &["metadata", "creationTimestamp"])),
        {
            s(o, &["status", "nodeInfo", "kubeletVersion"])
                .unwrap_or("")
                .to_string()
        },
    ]
}

/// Column names and the cells (after NAME) of one object; AGE is last unless placed here.
fn columns(r: &Resource) -> (&'static [&'static str], bool) {
    match r.kind {
        "Service" => (&["Type", "Cluster-IP", "External-IP", "Port(s)"], true),
        "Node" => (&["Status", "Roles", "Age", "Version"], false),
        "EndpointSlice" => (&["AddressType", "Endpoints"], true),
        "Lease" => (&["Holder"], true),
        "Event" => (&["Type", "Reason", "Object", "Message"], true),
        _ => (&[], true),
    }
}

fn cells(r: &Resource, o: &Value) -> Vec<String> {
    match r.kind {
        "Service" => service_cells(o),
        "Node" => node_cells(o),
        "EndpointSlice" => {
            let addrs: Vec<&str> = arr(o, &["endpoints"])
                .iter()
                .flat_map(|e| arr(e, &["addresses"]))
                .filter_map(Value::as_str)
                .collect();
            vec![
                s(o, &["addressType"]).unwrap_or("").to_string(),
                or_none(addrs.join(",")),
            ]
        }
        "Lease" => vec![or_none(s(o, &["spec", "holderIdentity"]).unwrap_or("").to_string())],
        "Event" => {
            let about = o.get("regarding").or(o.get("involvedObject")).unwrap_or(&Value::Null);
            let object = format!(
                "{}/{}",
                s(about, &["kind"]).unwrap_or("").to_lowercase(),
                s(about, &["name"]).unwrap_or("")
            );
            let note = s(o, &["note"]).or(s(o, &["message"])).unwrap_or("");
            vec![
                s(o, &["type"]).unwrap_or("").into(),
                s(o, &["reason"]).unwrap_or("").into(),
                object,
                note.into(),
            ]
        }
        _ => vec![],
    }
}

/// A Table of `objects`, rows carrying each object's metadata (kubectl's `includeObject=Metadata`
/// default, which it needs for the NAMESPACE column).
pub fn table(r: &Resource, objects: &[Value], list_meta: Value) -> Value {
    let (names, age_last) = columns(r);
    let mut defs =
        vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0})];
    let more = names.iter().chain(age_last.then_some(&"Age"));
    defs.extend(more.map(|n| json!({"name": n, "type": "string", "format": "", "description": n, "priority": 0})));
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = vec![s(o, &["metadata", "name"]).unwrap_or("").to_string()];
            row.extend(cells(r, o));
            if age_last {
                row.push(age(s(o, &["metadata", "creationTimestamp"])));
            }
            let metadata = o.get("metadata").cloned().unwrap_or(Value::Null);
            let object = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
            json!({"cells": row, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(13), "13s");
        assert_eq!(human(312), "5m12s");
        assert_eq!(human(3600 * 5 + 60), "5h1m");
        assert_eq!(human(86400 * 3), "3d");
    }

    #[test]
    fn service_row() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
                         "status": {"loadBalancer": {"ingress": [{"ip": "127.1.1.1"}]}}});
        assert_eq!(
            service_cells(&svc),
            ["LoadBalancer", "<none>", "127.1.1.1", "80:30080/TCP"]
        );
    }
}
