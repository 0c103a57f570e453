//! What a Service asks of its traffic besides addresses: which clients may connect
//! (`spec.loadBalancerSourceRanges`, which kube-proxy cannot enforce here: the LB host, not the
//! client, connects to the node), how long an idle connection lives and a connect may take, when a
//! UDP exchange is over, and whether the upstreams are the nodes or the Service's pods. Read into
//! typed values here (`IpNet`, whole seconds), so a config file only ever sees those: a value that
//! does not parse is an error naming its field, and the Service keeps its last committed files
//! (a malformed source range must never turn into an open listener).

use std::fmt;

use ipnet::IpNet;

use crate::annotations::{field, keyword};
use crate::model::ServiceInput;
use crate::names::ServiceKey;
use crate::problem::Problem;

/// The standard annotation for source ranges, read when `spec.loadBalancerSourceRanges` is empty.
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
pub const IDLE_TIMEOUT: &str = "flipbit.io/idle-timeout";
pub const CONNECT_TIMEOUT: &str = "flipbit.io/connect-timeout";
pub const UDP_RESPONSES: &str = "flipbit.io/udp-responses";
pub const BACKENDS: &str = "flipbit.io/backends";

/// Bounds of the settings, inclusive: an idle TCP connection may be held up to a day, a connect
/// may take up to ten minutes, a UDP exchange may end after up to 1,000 answers.
pub const IDLE_TIMEOUT_RANGE: (u32, u32) = (1, 86_400);
pub const CONNECT_TIMEOUT_RANGE: (u32, u32) = (1, 600);
pub const UDP_RESPONSES_RANGE: (u32, u32) = (1, 1_000);

/// A whole number of seconds, written `<n>s` in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub u32);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// Where a Service's upstreams are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backends {
    /// The eligible nodes, at the Service's node ports (kube-proxy forwards to the pods).
    #[default]
    Nodes,
    /// The Service's ready endpoints, at their target ports: for pod networks the LB hosts can
    /// route to; no node port and no kube-proxy hop.
    Pods,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Traffic {
    /// Client ranges allowed to connect; empty: every client. Network addresses (host bits
    /// cleared), sorted, without repeats.
    pub source_ranges: Vec<IpNet>,
    /// `flipbit.io/idle-timeout`: how long a TCP connection may stay idle.
    pub idle_timeout: Option<Seconds>,
    /// `flipbit.io/connect-timeout`: how long a connect to an upstream may take.
    pub connect_timeout: Option<Seconds>,
    /// `flipbit.io/udp-responses`: a UDP session ends after this many answers.
    pub udp_responses: Option<u32>,
    pub backends: Backends,
}

impl Traffic {
    /// True when anything here needs a setting of its own in the Service's files (the output
    /// format that can say it, and the per-service rendering on shared-listeners hosts).
    pub fn is_tuned(&self) -> bool {
        !self.source_ranges.is_empty()
            || self.idle_timeout.is_some()
            || self.connect_timeout.is_some()
            || self.udp_responses.is_some()
    }
}

/// Reads the traffic settings of `svc`; every problem found, each naming its field.
pub fn parse(key: &ServiceKey, svc: &ServiceInput) -> Result<Traffic, Vec<Problem>> {
    let mut errors = Vec::new();
    let mut out = Traffic::default();
    let (ranges, field_of): (Vec<&str>, Box<dyn Fn(usize) -> String>) = if svc.load_balancer_source_ranges.is_empty() {
        let value = svc.annotations.get(SOURCE_RANGES_ANNOTATION).map_or("", String::as_str);
        let ranges = value.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
        (ranges, Box::new(|_| field(SOURCE_RANGES_ANNOTATION)))
    } else {
        let ranges = svc.load_balancer_source_ranges.iter().map(|r| r.trim()).collect();
        (ranges, Box::new(|i| format!("spec.loadBalancerSourceRanges[{i}]")))
    };
    for (i, range) in ranges.iter().enumerate() {
        match range.parse::<IpNet>() {
            Ok(net) => out.source_ranges.push(net.trunc()),
            Err(_) => errors.push(Problem::service_error(
                key,
                field_of(i),
                format!("{range:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32; no client range is served until it is"),
            )),
        }
    }
    out.source_ranges.sort();
    out.source_ranges.dedup();
    let seconds = |name: &str, (min, max): (u32, u32), errors: &mut Vec<Problem>| {
        let value = svc.annotations.get(name)?;
        match parse_seconds(value).filter(|s| (min..=max).contains(s)) {
            Some(s) => Some(Seconds(s)),
            None => {
                errors.push(Problem::service_error(
                    key,
                    field(name),
                    format!(
                        "{value:?} is not a duration from {min}s to {max}s (write 30s, 5m, 2h or a number of seconds)"
                    ),
                ));
                None
            }
        }
    };
    out.idle_timeout = seconds(IDLE_TIMEOUT, IDLE_TIMEOUT_RANGE, &mut errors);
    out.connect_timeout = seconds(CONNECT_TIMEOUT, CONNECT_TIMEOUT_RANGE, &mut errors);
    if let Some(value) = svc.annotations.get(UDP_RESPONSES) {
        let (min, max) = UDP_RESPONSES_RANGE;
        match value.trim().parse::<u32>().ok().filter(|n| (min..=max).contains(n)) {
            Some(n) => out.udp_responses = Some(n),
            None => errors.push(Problem::service_error(
                key,
                field(UDP_RESPONSES),
                format!("{value:?} is not a whole number from {min} to {max}"),
            )),
        }
    }
    if let Some(value) = svc.annotations.get(BACKENDS) {
        match keyword(value, &[("nodes", Backends::Nodes), ("pods", Backends::Pods)]) {
            Ok(backends) => out.backends = backends,
            Err(message) => errors.push(Problem::service_error(key, field(BACKENDS), message)),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// `30`, `30s`, `5m` or `2h` as seconds.
fn parse_seconds(text: &str) -> Option<u32> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u32 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(annotations: &[(&str, &str)], ranges: &[&str]) -> ServiceInput {
        ServiceInput {
            namespace: "web".into(),
            name: "shop".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            load_balancer_source_ranges: ranges.iter().map(|r| (*r).to_owned()).collect(),
            ..ServiceInput::default()
        }
    }

    fn key() -> ServiceKey {
        "web/shop".parse().unwrap()
    }

    #[test]
    fn source_ranges_come_from_the_field_else_the_annotation() {
        let t = parse(
            &key(),
            &svc(&[], &["203.0.113.7/24", "2001:db8::/32", "203.0.113.0/24"]),
        )
        .unwrap();
        let want: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert_eq!(t.source_ranges, want);
        let t = parse(
            &key(),
            &svc(&[(SOURCE_RANGES_ANNOTATION, "127.9.0.0/16, 127.10.0.1/32")], &[]),
        )
        .unwrap();
        assert_eq!(t.source_ranges.len(), 2);
        // The field wins over the annotation.
        let t = parse(
            &key(),
            &svc(&[(SOURCE_RANGES_ANNOTATION, "127.9.0.0/16")], &["127.8.0.0/16"]),
        )
        .unwrap();
        assert_eq!(t.source_ranges, vec!["127.8.0.0/16".parse::<IpNet>().unwrap()]);
        assert!(parse(&key(), &svc(&[], &[])).unwrap().source_ranges.is_empty());
    }

    #[test]
    fn a_malformed_range_is_an_error_naming_the_field() {
        let errors = parse(&key(), &svc(&[], &["127.9.0.0/16", "127.8.0.0/16; allow all"])).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.loadBalancerSourceRanges[1]");
        let errors = parse(&key(), &svc(&[(SOURCE_RANGES_ANNOTATION, "everyone")], &[])).unwrap_err();
        assert_eq!(
            errors[0].field,
            "metadata.annotations[\"service.beta.kubernetes.io/load-balancer-source-ranges\"]"
        );
    }

    #[test]
    fn timeouts_and_responses_are_bounded() {
        let t = parse(
            &key(),
            &svc(
                &[
                    (IDLE_TIMEOUT, "5m"),
                    (CONNECT_TIMEOUT, "3"),
                    (UDP_RESPONSES, "1"),
                    (BACKENDS, "pods"),
                ],
                &[],
            ),
        )
        .unwrap();
        assert_eq!(t.idle_timeout, Some(Seconds(300)));
        assert_eq!(t.connect_timeout, Some(Seconds(3)));
        assert_eq!(t.udp_responses, Some(1));
        assert_eq!(t.backends, Backends::Pods);
        assert!(t.is_tuned());
        assert_eq!(Seconds(300).to_string(), "300s");
        for (name, bad) in [
            (IDLE_TIMEOUT, "0"),
            (IDLE_TIMEOUT, "2d"),
            (IDLE_TIMEOUT, "25h"),
            (CONNECT_TIMEOUT, "11m"),
            (CONNECT_TIMEOUT, "5s;"),
            (UDP_RESPONSES, "0"),
            (UDP_RESPONSES, "1001"),
            (BACKENDS, "both"),
        ] {
            let errors = parse(&key(), &svc(&[(name, bad)], &[])).unwrap_err();
            assert_eq!(errors[0].field, field(name), "{name}={bad}");
        }
        assert!(!parse(&key(), &svc(&[], &[])).unwrap().is_tuned());
    }
}
