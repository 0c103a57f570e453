//! The addresses step (`--manage-addresses IFACE`, docs/design.md §5.7): on a flat L2 segment
//! a Service's address must be on an interface of the LB host for its neighbours to reach it.
//! After every successful load-balancer step, and before the post-apply probe and the DNS
//! step, the applier makes the interface hold exactly the addresses the release the load
//! balancer was confirmed to run serves ([`served`]), inside this host's pools:
//!
//! - a missing one is added as a host address (/32, /128) without a prefix route, marked with
//!   [`netlink::FLIPBIT_PROTO`], and announced ([`announce`]: gratuitous ARP, unsolicited
//!   neighbour advertisement); an IPv6 one first passes duplicate address detection, so an
//!   address another host of the segment holds fails the step instead of being taken from it;
//! - one of the applier's own that is no longer served is removed once no socket uses it
//!   ([`sockets`]): the reload that dropped it was confirmed before this step runs, and the
//!   load balancer's previous generation may still hold connections on it;
//! - an address without the mark is the operator's: never removed, never added again.
//!
//! Nothing is recorded: the plan is recomputed from the commit and the interface on every run,
//! so a run killed anywhere is completed by the next one. DNS never names an address before it
//! is on the interface, because this step runs first and a failure here fails the run.
//!
//! nginx (and HAProxy) must listen on an address before it is on the interface, for `nginx -t`
//! and the reload that precede this step: `net.ipv4.ip_nonlocal_bind` (and
//! `net.ipv6.ip_nonlocal_bind` for IPv6 pools) must be 1, which the step checks. The debug-only
//! failpoint `addresses-added` sits after the adds and announcements.

pub mod announce;
pub mod netlink;
pub mod plan;
pub mod served;
pub mod sockets;

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use flipbit_core::names::LbHostName;
use flipbit_core::pool::Pool;
use flipbit_store::Store;

use crate::journal::Release;
use crate::lb_step::config_at;
use netlink::{Link, Present, Rtnl};

/// How long IPv6 duplicate address detection may take: a random delay of up to a second, then
/// one probe and a second's wait by default.
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The interface `--manage-addresses` names: a valid Linux interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInterface(String);

impl FromStr for ManagedInterface {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() < 16
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
            ))
        }
    }
}

impl std::fmt::Display for ManagedInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one run changed on the interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub interface: String,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// No longer served, kept while a socket still uses them.
    pub draining: Vec<IpAddr>,
}

impl Changes {
    /// Something was added or removed: worth a line of the run's report (addresses kept while
    /// draining are not news on every run of a `watch`).
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

/// The run report's line: `addresses on seg: added 198.51.100.17; removed 198.51.100.18`.
impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ips: &[IpAddr]| ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
        write!(f, "addresses on {}:", self.interface)?;
        let parts = [
            ("added", &self.added),
            ("removed", &self.removed),
            ("kept while in use", &self.draining),
        ];
        let mut first = true;
        for (what, ips) in parts.iter().filter(|(_, ips)| !ips.is_empty()) {
            write!(f, "{} {what} {}", if first { "" } else { ";" }, list(ips))?;
            first = false;
        }
        if first {
            f.write_str(" unchanged")?;
        }
        Ok(())
    }
}

/// Makes `interface` hold the addresses `loaded` (the release `lb`'s load balancer was
/// confirmed to run) serves; see the module documentation.
pub fn reconcile(interface: &ManagedInterface, store: &Store, lb: &LbHostName, loaded: &Release) -> Result<Changes> {
    let config = config_at(store, loaded.commit)?;
    let mut changes = Changes {
        interface: interface.to_string(),
        ..Changes::default()
    };
    let Some(host) = config.host(lb) else {
        return Ok(changes);
    };
    let mut rtnl = Rtnl::open().map_err(|e| netlink_error(e, format!("--manage-addresses {interface}: netlink")))?;
    let link = usable_link(&mut rtnl, interface)?;
    nonlocal_bind(interface, &host.pools)?;
    let format = crate::verify::output_format(store, loaded.commit)?;
    let served = served::addresses(store, loaded, host, format)?;
    let present = rtnl
        .addresses(link.index)
        .map_err(|e| netlink_error(e, format!("reading the addresses of {interface}")))?;
    let plan = plan::plan(&served, &present, &host.pools);
    for ip in &plan.strays {
        tracing::warn!(%interface, address = %ip, "an address the applier added is outside this host's pools now; left alone: remove it by hand when nothing uses it");
    }
    let fresh: Vec<IpAddr> = plan
        .add
        .iter()
        .chain(plan.retry.iter().map(|p| &p.ip))
        .copied()
        .collect();
    if !fresh.is_empty() {
        // The announcing sockets first: a missing CAP_NET_RAW fails the step with nothing added.
        let announcer = announcer(interface, &link, &fresh)?;
        for address in &plan.retry {
            delete(&mut rtnl, interface, &link, address)?;
        }
        for ip in &fresh {
            match rtnl.add(link.index, *ip) {
                Ok(()) => changes.added.push(*ip),
                // Added by someone else since the interface was read: theirs.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    let what = format!("adding {ip}/{} to {interface}", netlink::host_prefix(*ip));
                    return Err(netlink_error(e, what));
                }
            }
        }
        let watch: Vec<IpAddr> = changes.added.iter().chain(&plan.settling).copied().collect();
        settle(&mut rtnl, interface, &link, &watch, &changes.added)?;
        for ip in &changes.added {
            if let Some(announcer) = &announcer {
                announcer
                    .announce(*ip)
                    .map_err(|e| raw_error(e, format!("announcing {ip} on {interface}")))?;
            }
            tracing::info!(%interface, address = %ip, announced = announcer.is_some(), "address added");
        }
        crate::failpoint::reached("addresses-added");
    } else if !plan.settling.is_empty() {
        settle(&mut rtnl, interface, &link, &plan.settling, &[])?;
    }
    if !plan.remove.is_empty() {
        let busy = sockets::in_use();
        for address in &plan.remove {
            if busy.contains(&address.ip) {
                changes.draining.push(address.ip);
                continue;
            }
            delete(&mut rtnl, interface, &link, address)?;
            tracing::info!(%interface, address = %address.ip, "address removed: its Service is no longer served here");
            changes.removed.push(address.ip);
        }
        if !changes.draining.is_empty() {
            tracing::debug!(%interface, addresses = ?changes.draining, "not served, kept while connections use them");
        }
    }
    Ok(changes)
}

/// The interface, when it exists and can carry traffic.
fn usable_link(rtnl: &mut Rtnl, interface: &ManagedInterface) -> Result<Link> {
    let link = rtnl
        .link(&interface.0)
        .map_err(|e| netlink_error(e, format!("--manage-addresses {interface}")))?
        .ok_or_else(|| anyhow!("--manage-addresses {interface}: no such interface on this host"))?;
    if !link.up {
        bail!("--manage-addresses {interface}: the interface is down (ip link set {interface} up)");
    }
    if !link.running {
        bail!("--manage-addresses {interface}: the interface has no carrier: its addresses would reach no one");
    }
    Ok(link)
}

/// Fails unless the load balancer can listen on pool addresses that are not on an interface
/// yet, for each family of `pools`.
fn nonlocal_bind(interface: &ManagedInterface, pools: &[Pool]) -> Result<()> {
    for (v6, family) in [(false, "ipv4"), (true, "ipv6")] {
        if !pools.iter().any(|p| p.is_v6() == v6) {
            continue;
        }
        let path = format!("/proc/sys/net/{family}/ip_nonlocal_bind");
        let value = std::fs::read_to_string(&path).with_context(|| {
            format!("--manage-addresses {interface}: reading {path} (is {family} disabled on this host?)")
        })?;
        if value.trim() != "1" {
            bail!(
                "--manage-addresses {interface}: net.{family}.ip_nonlocal_bind is {}: the load balancer must listen on a Service's address before the applier puts it on {interface}; set it to 1 (sysctl -w net.{family}.ip_nonlocal_bind=1, and in /etc/sysctl.d/)",
                value.trim()
            );
        }
    }
    Ok(())
}

/// The announcer for `fresh`, or `None` on an interface that resolves no neighbours.
fn announcer(interface: &ManagedInterface, link: &Link, fresh: &[IpAddr]) -> Result<Option<announce::Announcer>> {
    let Some(mac) = link.mac.filter(|_| !link.no_arp) else {
        return Ok(None);
    };
    let ipv6 = fresh.iter().any(IpAddr::is_ipv6);
    announce::Announcer::open(link.index, mac, ipv6)
        .map(Some)
        .map_err(|e| raw_error(e, format!("opening the sockets that announce addresses on {interface}")))
}

fn delete(rtnl: &mut Rtnl, interface: &ManagedInterface, link: &Link, address: &Present) -> Result<()> {
    match rtnl.delete(link.index, address.ip, address.prefix_len) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        Err(e) => Err(netlink_error(
            e,
            format!("removing {}/{} from {interface}", address.ip, address.prefix_len),
        )),
    }
}

/// Waits until the addresses in `watch` are usable (IPv6 duplicate address detection done), and
/// checks that the kernel kept the mark on those just `added`.
fn settle(
    rtnl: &mut Rtnl,
    interface: &ManagedInterface,
    link: &Link,
    watch: &[IpAddr],
    added: &[IpAddr],
) -> Result<()> {
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let present = rtnl
            .addresses(link.index)
            .map_err(|e| netlink_error(e, format!("reading the addresses of {interface}")))?;
        let find = |ip: &IpAddr| present.iter().find(|p| p.ip == *ip);
        let unmarked: Vec<&Present> = added.iter().filter_map(find).filter(|p| !p.ours()).collect();
        if !unmarked.is_empty() {
            for address in &unmarked {
                delete(rtnl, interface, link, address)?;
            }
            bail!(
                "--manage-addresses {interface}: this kernel does not keep an address's protocol (IFA_PROTO, Linux 6.1 and later), so the applier could not tell the addresses it adds from yours; removed {} again",
                unmarked.iter().map(|p| p.ip.to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        let mut tentative = BTreeSet::new();
        for ip in watch {
            match find(ip) {
                None => bail!("{ip} is not on {interface} right after it was added (removed by another program?)"),
                Some(p) if p.dad_failed => bail!(
                    "{ip} on {interface} failed duplicate address detection: another host on the segment uses it; it is not served from here until that host lets it go"
                ),
                Some(p) if p.tentative => {
                    tentative.insert(*ip);
                }
                Some(_) => {}
            }
        }
        if tentative.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} on {interface}: duplicate address detection did not finish within {} s",
                tentative.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", "),
                DAD_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A netlink failure, with what a refused permission needs.
fn netlink_error(e: io::Error, what: String) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ": managing addresses needs CAP_NET_ADMIN",
        _ => "",
    };
    anyhow!("{what}: {e}{hint}")
}

/// A raw socket failure, with what a refused permission needs. A sandbox that does not allow
/// the socket's address family (systemd's `RestrictAddressFamilies`) refuses it with
/// EAFNOSUPPORT, which otherwise reads as a kernel without packet sockets.
fn raw_error(e: io::Error, what: String) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ": announcing addresses needs CAP_NET_RAW",
        Some(libc::EAFNOSUPPORT) => {
            ": announcing addresses needs AF_PACKET sockets (a systemd unit's RestrictAddressFamilies= must allow them: docs/lb-host.md)"
        }
        _ => "",
    };
    anyhow!("{what}: {e}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_what_the_kernel_accepts() {
        for good in ["eth1", "enp3s0f1", "bond0.120", "a"] {
            assert!(good.parse::<ManagedInterface>().is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "eth1:0", "a/b", "with space", "sixteen-chars-xx"] {
            let err = bad.parse::<ManagedInterface>().unwrap_err();
            assert!(err.contains("is not an interface name"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_report_line_names_the_interface_and_each_change() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let mut changes = Changes {
            interface: "seg".into(),
            ..Changes::default()
        };
        assert!(!changes.changed());
        assert_eq!(changes.to_string(), "addresses on seg: unchanged");
        changes.draining = vec![ip("198.51.100.19")];
        assert!(!changes.changed(), "draining alone is not news");
        changes.added = vec![ip("198.51.100.17"), ip("2001:db8:1::101")];
        changes.removed = vec![ip("198.51.100.18")];
        assert!(changes.changed());
        assert_eq!(
            changes.to_string(),
            "addresses on seg: added 198.51.100.17, 2001:db8:1::101; removed 198.51.100.18; kept while in use 198.51.100.19"
        );
    }

    #[test]
    fn a_refused_permission_names_the_capability() {
        let e = netlink_error(
            io::Error::from_raw_os_error(libc::EPERM),
            "adding 198.51.100.17/32 to eth1".into(),
        );
        let text = e.to_string();
        assert!(text.starts_with("adding 198.51.100.17/32 to eth1: "), "{text}");
        assert!(text.ends_with("needs CAP_NET_ADMIN"), "{text}");
        let e = raw_error(io::Error::from_raw_os_error(libc::EPERM), "announcing".into());
        assert!(e.to_string().ends_with("needs CAP_NET_RAW"));
        let e = raw_error(io::Error::from_raw_os_error(libc::EAFNOSUPPORT), "announcing".into());
        assert!(e.to_string().contains("RestrictAddressFamilies="), "{e}");
    }
}
