//! Which Services are ours (docs/design.md §2) and, for those, a validated, typed description of what
//! to expose. Everything downstream works on `ExposedService` only.

use std::collections::BTreeSet;
use std::fmt;

use crate::annotations::{self, Settings};
use crate::config::Config;
use crate::model::ServiceInput;
use crate::names::ServiceKey;
use crate::problem::{Problem, Severity, Subject};
use crate::traffic::Backends;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One Service port as the LB serves it: clients reach `port`, nodes answer on `node_port` (0 for
/// a Service whose upstreams are its pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: u16,
}

/// A Service we manage, fully validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExposedService {
    pub key: ServiceKey,
    /// Sorted by protocol, then port; no duplicates.
    pub ports: Vec<ServicePort>,
    pub settings: Settings,
    /// `externalTrafficPolicy: Local`: only nodes with a ready endpoint carry traffic.
    pub local_traffic: bool,
    /// `metadata.creationTimestamp`, for who keeps a shared address's ports.
    pub created: Option<jiff::Timestamp>,
    /// The address families it gets on each LB host that has pools of that family.
    pub ipv4: bool,
    pub ipv6: bool,
    /// `metadata.labels`, for pools that admit only some Services.
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Not ours: no message, no state.
    NotManaged,
    /// Ours and valid; the problems are warnings.
    Exposed(Box<ExposedService>, Vec<Problem>),
    /// Ours but invalid: skipped, keeps its last committed state.
    Invalid(ServiceKey, Vec<Problem>),
    /// Its namespace or name is not even a valid key; nothing can be kept for it.
    Unkeyed(Problem),
}

/// Decides whether `svc` is ours and validates it.
pub fn classify(svc: &ServiceInput, config: &Config) -> Exposure {
    let key = match ServiceKey::new(&svc.namespace, &svc.name) {
        Ok(key) => key,
        Err(e) => {
            return Exposure::Unkeyed(Problem {
                severity: Severity::Error,
                object: Subject::UnkeyedService {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                },
                field: "metadata".into(),
                message: e.to_string(),
            });
        }
    };
    let expose = match annotations::expose(&key, &svc.annotations) {
        Ok(v) => v,
        Err(p) => return Exposure::Invalid(key, vec![p]),
    };
    if expose == Some(false) {
        return Exposure::NotManaged;
    }
    let is_lb = svc.service_type == "LoadBalancer";
    let class_match = is_lb
        && match &svc.load_balancer_class {
            Some(class) => class == &config.load_balancer_class,
            None => config.manage_classless_load_balancers,
        };
    if !class_match && expose != Some(true) {
        return Exposure::NotManaged;
    }

    let mut errors = Vec::new();
    if !matches!(svc.service_type.as_str(), "NodePort" | "LoadBalancer") {
        errors.push(Problem::service_error(
            &key,
            "spec.type",
            format!(
                "{:?} has no node ports for the LB hosts to reach; use NodePort or LoadBalancer",
                svc.service_type
            ),
        ));
    }
    let traffic = match crate::traffic::parse(&key, svc) {
        Ok(t) => t,
        Err(mut e) => {
            errors.append(&mut e);
            crate::traffic::Traffic::default()
        }
    };
    let ports = match ports(&key, svc, traffic.backends) {
        Ok(p) => p,
        Err(mut e) => {
            errors.append(&mut e);
            Vec::new()
        }
    };
    let (settings, mut warnings) = annotations::settings(&key, &svc.annotations, config);
    warnings.extend(external_ips_warning(&key, svc));
    let settings = match settings {
        Ok(mut s) => {
            // sessionAffinity: ClientIP is consistent hashing on the client address, unless
            // flipbit.io/balance says otherwise.
            if svc.session_affinity.as_deref() == Some("ClientIP")
                && !svc.annotations.contains_key(annotations::BALANCE)
            {
                s.balance = annotations::Balance::Hash;
            }
            s.traffic = std::sync::Arc::new(traffic);
            Some(s)
        }
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    match settings {
        Some(settings) if errors.is_empty() => Exposure::Exposed(
            Box::new(ExposedService {
                key,
                ports,
                settings,
                local_traffic: svc.external_traffic_policy.as_deref() == Some("Local"),
                created: svc.created,
                ipv4: svc.ip_families.is_empty() || svc.ip_families.iter().any(|f| f == "IPv4"),
                ipv6: svc.ip_families.iter().any(|f| f == "IPv6"),
                labels: svc.labels.clone(),
            }),
            warnings,
        ),
        _ => {
            errors.extend(warnings);
            Exposure::Invalid(key, errors)
        }
    }
}

/// A warning for a managed Service that lists `spec.externalIPs`: Flipbit serves its own addresses
/// only, and a Service owner who set externalIPs expecting the load balancer to answer there
/// should learn where it does answer. (The addresses are counted, not quoted: they are the
/// owner's unvalidated text.)
fn external_ips_warning(key: &ServiceKey, svc: &ServiceInput) -> Option<Problem> {
    if svc.external_ips.is_empty() {
        return None;
    }
    let where_ = if svc.service_type == "LoadBalancer" {
        "its load-balancer addresses are in status.loadBalancer.ingress"
    } else {
        "its load-balancer addresses are in the state repo's ledger.yaml"
    };
    let count = svc.external_ips.len();
    let addresses = if count == 1 { "address" } else { "addresses" };
    Some(Problem::service_warning(
        key,
        "spec.externalIPs",
        format!("Flipbit does not serve externalIPs ({count} {addresses} listed, left to the cluster); {where_}"),
    ))
}

/// The Service's ports. With pod backends a port needs no node port (`node_port` 0: the
/// upstreams are the endpoints' own ports).
fn ports(key: &ServiceKey, svc: &ServiceInput, backends: Backends) -> Result<Vec<ServicePort>, Vec<Problem>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    if svc.ports.is_empty() {
        errors.push(Problem::service_error(key, "spec.ports", "the Service has no ports"));
    }
    for (i, p) in svc.ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => {
                errors.push(Problem::service_error(
                    key,
                    field("protocol"),
                    format!("{other:?} is not supported by nginx stream; only TCP and UDP are"),
                ));
                continue;
            }
        };
        let Ok(port) = u16::try_from(p.port)
            .map_err(drop)
            .and_then(|v| if v == 0 { Err(()) } else { Ok(v) })
        else {
            errors.push(Problem::service_error(
                key,
                field("port"),
                format!("{} is not a port number", p.port),
            ));
            continue;
        };
        let node_port = match p.node_port {
            None if backends == Backends::Pods => 0,
            None => {
                errors.push(Problem::service_error(
                    key,
                    field("nodePort"),
                    "the port has no node port (is allocateLoadBalancerNodePorts false?)",
                ));
                continue;
            }
            Some(n) => match u16::try_from(n) {
                Ok(v) if v != 0 => v,
                _ => {
                    errors.push(Problem::service_error(
                        key,
                        field("nodePort"),
                        format!("{n} is not a port number"),
                    ));
                    continue;
                }
            },
        };
        if !seen.insert((protocol, port)) {
            errors.push(Problem::service_error(
                key,
                field("port"),
                format!("{protocol}/{port} appears twice"),
            ));
            continue;
        }
        out.push(ServicePort {
            protocol,
            port,
            node_port,
        });
    }
    out.sort();
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// A plain exposed Service for unit tests: default settings, IPv4, cluster traffic policy.
#[cfg(test)]
pub(crate) fn test_service(key: &str, ports: &[(Protocol, u16, u16)]) -> ExposedService {
    ExposedService {
        key: key.parse().expect("a test key"),
        ports: ports
            .iter()
            .map(|&(protocol, port, node_port)| ServicePort {
                protocol,
                port,
                node_port,
            })
            .collect(),
        settings: crate::annotations::Settings::default(),
        local_traffic: false,
        created: None,
        ipv4: true,
        ipv6: false,
        labels: Default::default(),
    }
}
