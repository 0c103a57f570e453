//! What a manifest read as ([`Parsed`]), as the cache keeps it: length-prefixed fields rather
//! than JSON, because a warm render reads 10,000 of them at 10k Services (50,000 at 50k) and
//! JSON was the largest part of loading the cache. Services and nodes, nearly all of it, are
//! written field by field (destructured whole, so a new field fails to compile here until it is
//! kept); EndpointSlices, rare in a folder of manifests, stay JSON.

use std::collections::BTreeMap;

use flipbit_core::model::{NodeInput, PortInput, ServiceInput};

use super::{Reader, put_bytes};
use crate::manifests::{FileSeen, Identity, Parsed};

pub(super) fn put(out: &mut Vec<u8>, parsed: &Parsed) {
    let Parsed {
        services,
        nodes,
        endpoint_slices,
    } = parsed;
    put_list(out, services, put_service);
    put_list(out, nodes, put_node);
    if endpoint_slices.is_empty() {
        out.push(0);
    } else {
        out.push(1);
        // Serializing plain structs of strings and numbers does not fail.
        put_bytes(out, &serde_json::to_vec(endpoint_slices).unwrap_or_default());
    }
}

pub(super) fn get(r: &mut Reader<'_>) -> Result<Parsed, String> {
    // Fields are read in the order they are written: a struct literal evaluates in source order.
    Ok(Parsed {
        services: get_list(r, get_service)?,
        nodes: get_list(r, get_node)?,
        endpoint_slices: match r.take(1)?[0] {
            1 => serde_json::from_slice(r.sized()?).map_err(|e| format!("EndpointSlices: {e}"))?,
            _ => Vec::new(),
        },
    })
}

fn put_node(
    out: &mut Vec<u8>,
    NodeInput {
        name,
        labels,
        ready,
        unschedulable,
        internal_ips,
    }: &NodeInput,
) {
    put_str(out, name);
    put_map(out, labels);
    out.push(u8::from(*ready) | (u8::from(*unschedulable) << 1));
    put_strs(out, internal_ips);
}

fn get_node(r: &mut Reader<'_>) -> Result<NodeInput, String> {
    let name = get_str(r)?;
    let labels = get_map(r)?;
    let flags = r.take(1)?[0];
    Ok(NodeInput {
        name,
        labels,
        ready: flags & 1 != 0,
        unschedulable: flags & 2 != 0,
        internal_ips: get_strs(r)?,
    })
}

fn put_port(
    out: &mut Vec<u8>,
    PortInput {
        name,
        protocol,
        port,
        node_port,
    }: &PortInput,
) {
    put_opt(out, name.as_deref());
    put_opt(out, protocol.as_deref());
    out.extend_from_slice(&port.to_le_bytes());
    match node_port {
        Some(n) => {
            out.push(1);
            out.extend_from_slice(&n.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn get_port(r: &mut Reader<'_>) -> Result<PortInput, String> {
    Ok(PortInput {
        name: get_opt(r)?,
        protocol: get_opt(r)?,
        port: i32::from_le_bytes(r.array()?),
        node_port: match r.take(1)?[0] {
            0 => None,
            _ => Some(i32::from_le_bytes(r.array()?)),
        },
    })
}

fn put_service(out: &mut Vec<u8>, svc: &ServiceInput) {
    let ServiceInput {
        namespace,
        name,
        service_type,
        load_balancer_class,
        annotations,
        ports,
        external_traffic_policy,
        created,
        ip_families,
        external_ips,
        load_balancer_source_ranges,
        session_affinity,
        labels,
    } = svc;
    put_str(out, namespace);
    put_str(out, name);
    put_str(out, service_type);
    put_opt(out, load_balancer_class.as_deref());
    put_map(out, annotations);
    put_list(out, ports, put_port);
    put_opt(out, external_traffic_policy.as_deref());
    match created {
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.as_nanosecond().to_le_bytes());
        }
        None => out.push(0),
    }
    put_strs(out, ip_families);
    put_strs(out, external_ips);
    put_strs(out, load_balancer_source_ranges);
    put_opt(out, session_affinity.as_deref());
    put_map(out, labels);
}

fn get_service(r: &mut Reader<'_>) -> Result<ServiceInput, String> {
    // Fields are read in the order they are written: a struct literal evaluates in source order.
    Ok(ServiceInput {
        namespace: get_str(r)?,
        name: get_str(r)?,
        service_type: get_str(r)?,
        load_balancer_class: get_opt(r)?,
        annotations: get_map(r)?,
        ports: get_list(r, get_port)?,
        external_traffic_policy: get_opt(r)?,
        created: match r.take(1)?[0] {
            0 => None,
            _ => {
                let nanos = i128::from_le_bytes(r.array()?);
                Some(jiff::Timestamp::from_nanosecond(nanos).map_err(|e| e.to_string())?)
            }
        },
        ip_families: get_strs(r)?,
        external_ips: get_strs(r)?,
        load_balancer_source_ranges: get_strs(r)?,
        session_affinity: get_opt(r)?,
        labels: get_map(r)?,
    })
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn get_len(r: &mut Reader<'_>) -> Result<usize, String> {
    Ok(u32::from_le_bytes(r.array()?) as usize)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, String> {
    let bytes = r.sized()?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| "text that is not UTF-8".to_owned())
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn get_opt(r: &mut Reader<'_>) -> Result<Option<String>, String> {
    match r.take(1)?[0] {
        0 => Ok(None),
        _ => get_str(r).map(Some),
    }
}

/// A count, then each item as `put_item` writes it.
fn put_list<T>(out: &mut Vec<u8>, items: &[T], put_item: impl Fn(&mut Vec<u8>, &T)) {
    put_len(out, items.len());
    for item in items {
        put_item(out, item);
    }
}

/// What [`put_list`] wrote (the count bounds only the first allocation: a damaged count fails
/// on the bytes it runs out of, not on memory).
fn get_list<T>(r: &mut Reader<'_>, get_item: impl Fn(&mut Reader<'_>) -> Result<T, String>) -> Result<Vec<T>, String> {
    let n = get_len(r)?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        out.push(get_item(r)?);
    }
    Ok(out)
}

fn put_strs(out: &mut Vec<u8>, v: &[String]) {
    put_list(out, v, |out, s| put_str(out, s));
}

fn get_strs(r: &mut Reader<'_>) -> Result<Vec<String>, String> {
    get_list(r, get_str)
}

fn put_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    put_len(out, map.len());
    for (k, v) in map {
        put_str(out, k);
        put_str(out, v);
    }
}

fn get_map(r: &mut Reader<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for _ in 0..get_len(r)? {
        map.insert(get_str(r)?, get_str(r)?);
    }
    Ok(map)
}

/// What a manifest file was when it was read (`manifests::FileSeen`).
pub(super) fn put_seen(out: &mut Vec<u8>, seen: &FileSeen) {
    let FileSeen {
        identity,
        seen_at,
        content,
        units,
    } = seen;
    let Identity {
        size,
        mtime_ns,
        ctime_ns,
        ino,
        dev,
    } = identity;
    for n in [*size, *ino, *dev] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&mtime_ns.to_le_bytes());
    out.extend_from_slice(&ctime_ns.to_le_bytes());
    out.extend_from_slice(&seen_at.to_le_bytes());
    out.extend_from_slice(&content.to_le_bytes());
    put_list(out, units, |out, (whole, sum)| {
        out.push(u8::from(*whole));
        out.extend_from_slice(&sum.to_le_bytes());
    });
}

pub(super) fn get_seen(r: &mut Reader<'_>) -> Result<FileSeen, String> {
    let mut u64s = [0u64; 3];
    for n in &mut u64s {
        *n = u64::from_le_bytes(r.array()?);
    }
    let [size, ino, dev] = u64s;
    Ok(FileSeen {
        identity: Identity {
            size,
            mtime_ns: i128::from_le_bytes(r.array()?),
            ctime_ns: i128::from_le_bytes(r.array()?),
            ino,
            dev,
        },
        seen_at: i128::from_le_bytes(r.array()?),
        content: u128::from_le_bytes(r.array()?),
        units: get_list(r, |r| Ok((r.take(1)?[0] != 0, u64::from_le_bytes(r.array()?))))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flipbit_core::model::{EndpointInput, EndpointSliceInput};

    /// Every field set (and unset) reads back as written.
    #[test]
    fn a_parse_result_reads_back_as_written() {
        let full = ServiceInput {
            namespace: "shop".into(),
            name: "web".into(),
            service_type: "LoadBalancer".into(),
            load_balancer_class: Some("flipbit.io/nginx".into()),
            annotations: BTreeMap::from([("flipbit.io/balance".into(), "least-conn".into())]),
            ports: vec![
                PortInput {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: 80,
                    node_port: Some(30080),
                },
                PortInput {
                    name: None,
                    protocol: None,
                    port: -1,
                    node_port: None,
                },
            ],
            external_traffic_policy: Some("Local".into()),
            created: Some(jiff::Timestamp::from_second(1_800_000_000).expect("a time")),
            ip_families: vec!["IPv4".into(), "IPv6".into()],
            external_ips: vec!["192.0.2.1".into()],
            load_balancer_source_ranges: vec!["127.0.0.0/8".into()],
            session_affinity: Some("ClientIP".into()),
            labels: BTreeMap::from([("team".into(), "a".into())]),
        };
        let parsed = Parsed {
            services: vec![full, ServiceInput::default()],
            nodes: vec![
                NodeInput {
                    name: "n1".into(),
                    labels: BTreeMap::from([("flipbit.io/lb-backend".into(), "true".into())]),
                    ready: true,
                    unschedulable: true,
                    internal_ips: vec!["127.0.0.10".into()],
                },
                NodeInput::default(),
            ],
            endpoint_slices: vec![EndpointSliceInput {
                namespace: "shop".into(),
                service_name: "web".into(),
                ready_nodes: vec!["n1".into()],
                address_type: "IPv4".into(),
                ports: Vec::new(),
                endpoints: vec![EndpointInput::default()],
            }],
        };
        for p in [parsed, Parsed::default()] {
            let mut bytes = Vec::new();
            put(&mut bytes, &p);
            let mut r = Reader { bytes: &bytes, at: 0 };
            assert_eq!(get(&mut r).expect("reads back"), p);
            assert_eq!(r.at, bytes.len());
        }
    }
}
