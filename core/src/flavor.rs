//! What each LB flavour can carry, decided before addresses are given out: a HAProxy host serves
//! TCP only, so a Service's UDP ports are skipped there with a warning (never silently), and a
//! Service with no TCP port gets no address on such a host, so DNS never names an address that
//! would not answer.

use crate::config::{Config, Flavor, LbHost};
use crate::exposure::{ExposedService, Protocol};
use crate::problem::Problem;

/// (Here rather than in `config`, which then needs nothing from `exposure`: no import circle.)
impl Flavor {
    /// True when this flavour can carry `protocol`.
    pub fn serves(&self, protocol: Protocol) -> bool {
        *self == Flavor::Nginx || protocol == Protocol::Tcp
    }
}

/// True when `host` can serve at least one of `svc`'s ports, so it should hold an address for it.
pub fn host_serves(host: &LbHost, svc: &ExposedService) -> bool {
    svc.ports.iter().any(|p| host.flavor.serves(p.protocol))
}

/// One warning per LB host of `svc` (its `flipbit.io/load-balancers`, or every host) whose flavour
/// cannot carry some of its ports, naming the ports and what the Service keeps there.
pub fn unserved_ports(svc: &ExposedService, config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let hosts = config
        .lb_hosts
        .iter()
        .filter(|h| svc.settings.lb_hosts.as_ref().is_none_or(|set| set.contains(&h.name)));
    for host in hosts {
        let skipped: Vec<String> = svc
            .ports
            .iter()
            .filter(|p| !host.flavor.serves(p.protocol))
            .map(|p| format!("{}/{}", p.protocol, p.port))
            .collect();
        if skipped.is_empty() {
            continue;
        }
        let keeps = if host_serves(host, svc) {
            "its TCP ports are served there"
        } else {
            "the Service gets no address and no DNS record there"
        };
        out.push(Problem::service_warning(
            &svc.key,
            "spec.ports",
            format!(
                "{} not served on LB host {} ({} carries TCP only); {keeps}",
                skipped.join(", "),
                host.name,
                flavor_name(host.flavor),
            ),
        ));
    }
    out
}

/// The ports of `svc` that `flavor` serves, and the ones it skips (as `UDP/53`).
pub fn split_ports(svc: &ExposedService, flavor: Flavor) -> (Vec<crate::exposure::ServicePort>, Vec<String>) {
    let (served, skipped): (Vec<_>, Vec<_>) = svc.ports.iter().copied().partition(|p| flavor.serves(p.protocol));
    (
        served,
        skipped.iter().map(|p| format!("{}/{}", p.protocol, p.port)).collect(),
    )
}

fn flavor_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Nginx => "nginx",
        Flavor::Haproxy => "HAProxy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposure::Protocol;

    fn svc(ports: &[(Protocol, u16)]) -> ExposedService {
        let ports: Vec<_> = ports
            .iter()
            .map(|&(protocol, port)| (protocol, port, 30000 + port))
            .collect();
        crate::exposure::test_service("apps/game", &ports)
    }

    const MIXED: &str = "zone: k8s.example.test\nlbHosts:\n  - name: lb-1\n    pools: [127.1.1.0/24]\n  - name: lb-3\n    flavor: haproxy\n    pools: [127.1.7.0/24]\n";

    #[test]
    fn udp_ports_are_warned_on_haproxy_hosts_only() {
        let config = Config::parse(MIXED).unwrap();
        let mixed = svc(&[(Protocol::Tcp, 53), (Protocol::Udp, 53)]);
        let warnings = unserved_ports(&mixed, &config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0].to_string(),
            "warning: Service apps/game: spec.ports: UDP/53 not served on LB host lb-3 (HAProxy carries TCP only); its TCP ports are served there"
        );
        assert!(config.lb_hosts.iter().all(|h| host_serves(h, &mixed)));

        let udp_only = svc(&[(Protocol::Udp, 53), (Protocol::Udp, 5353)]);
        let warnings = unserved_ports(&udp_only, &config);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .message
                .starts_with("UDP/53, UDP/5353 not served on LB host lb-3")
                && warnings[0].message.ends_with("no address and no DNS record there"),
            "{}",
            warnings[0]
        );
        assert!(host_serves(&config.lb_hosts[0], &udp_only));
        assert!(!host_serves(&config.lb_hosts[1], &udp_only));
        assert!(unserved_ports(&svc(&[(Protocol::Tcp, 80)]), &config).is_empty());
    }

    #[test]
    fn a_service_that_does_not_use_the_haproxy_host_gets_no_warning() {
        let config = Config::parse(MIXED).unwrap();
        let mut only_lb1 = svc(&[(Protocol::Udp, 53)]);
        only_lb1.settings.lb_hosts = Some(["lb-1".parse().unwrap()].into());
        assert!(unserved_ports(&only_lb1, &config).is_empty());
    }

    #[test]
    fn split_ports_keeps_tcp_on_haproxy() {
        let mixed = svc(&[(Protocol::Tcp, 53), (Protocol::Udp, 53)]);
        let (served, skipped) = split_ports(&mixed, Flavor::Haproxy);
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].protocol, Protocol::Tcp);
        assert_eq!(skipped, vec!["UDP/53".to_owned()]);
        assert_eq!(split_ports(&mixed, Flavor::Nginx).0.len(), 2);
    }
}
