//! Who holds a socket, from `/proc/net/{tcp,tcp6,udp,udp6}` and `/proc/<pid>/fd`: read only
//! when a probe found a port in use, to tell the load balancer's own socket (kept across its
//! reload) from another process's, and to name that process in the message. The tables are read
//! once per apply: a host with 10,000 listeners would otherwise read them 10,000 times.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flipbit_core::exposure::Protocol;
use flipbit_core::grammar::{Bind, BindAddr};

/// The kernel's socket tables, read once per apply and only when a probe found a port in use:
/// every listening TCP and bound UDP socket with its inode, and the inodes the load balancer's
/// processes hold.
#[derive(Debug, Default)]
pub struct SocketTable {
    /// (protocol, port) → (address, inode).
    sockets: HashMap<(Protocol, u16), Vec<(IpAddr, u64)>>,
    lb_inodes: HashSet<u64>,
}

impl SocketTable {
    pub fn load(lb_pids: &[i32]) -> Self {
        let mut sockets: HashMap<(Protocol, u16), Vec<(IpAddr, u64)>> = HashMap::new();
        for (file, protocol) in [
            ("/proc/net/tcp", Protocol::Tcp),
            ("/proc/net/tcp6", Protocol::Tcp),
            ("/proc/net/udp", Protocol::Udp),
            ("/proc/net/udp6", Protocol::Udp),
        ] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                    continue;
                };
                // TCP: listening sockets only (a connection on the port is no obstacle to a bind).
                if protocol == Protocol::Tcp && *state != "0A" {
                    continue;
                }
                if let (Some((ip, port)), Ok(inode)) = (parse_local(local), inode.parse::<u64>()) {
                    sockets.entry((protocol, port)).or_default().push((ip, inode));
                }
            }
        }
        let lb_inodes = lb_pids.iter().flat_map(|pid| socket_inodes(*pid)).collect();
        Self { sockets, lb_inodes }
    }

    /// True when the load balancer holds a socket bound to exactly `bind`'s address.
    pub fn lb_holds(&self, bind: &Bind) -> bool {
        self.conflicting(bind)
            .any(|(ip, inode)| same_addr(bind, ip) && self.lb_inodes.contains(&inode))
    }

    /// True when a socket of the load balancer's overlaps `bind`.
    pub fn lb_overlaps(&self, bind: &Bind) -> bool {
        self.conflicting(bind).any(|(_, inode)| self.lb_inodes.contains(&inode))
    }

    /// The addresses of the load balancer's sockets that overlap `bind` without being exactly it.
    pub fn lb_overlapping(&self, bind: &Bind) -> Vec<IpAddr> {
        self.conflicting(bind)
            .filter(|(ip, inode)| !same_addr(bind, *ip) && self.lb_inodes.contains(inode))
            .map(|(ip, _)| ip)
            .collect()
    }

    /// The inode of a socket, not the load balancer's, that keeps `bind` from being bound.
    pub fn other_holder(&self, bind: &Bind) -> Option<u64> {
        self.conflicting(bind)
            .find(|(_, inode)| !self.lb_inodes.contains(inode))
            .map(|(_, inode)| inode)
    }

    /// Sockets on `bind`'s port of its family that overlap it: the same address, a wildcard, or,
    /// for a wildcard `bind`, any address.
    fn conflicting<'a>(&'a self, bind: &'a Bind) -> impl Iterator<Item = (IpAddr, u64)> + 'a {
        let want_v6 = match bind.addr {
            BindAddr::Ip(ip) => ip.is_ipv6(),
            BindAddr::AnyV4 => false,
            BindAddr::AnyV6 => true,
        };
        self.sockets
            .get(&(bind.protocol, bind.port))
            .into_iter()
            .flatten()
            .copied()
            // A dual-stack `[::]` socket (one without IPV6_V6ONLY) holds the IPv4 port as well.
            .filter(move |(ip, _)| ip.is_ipv6() == want_v6 || (ip.is_ipv6() && ip.is_unspecified()))
            .filter(move |(ip, _)| same_addr(bind, *ip) || ip.is_unspecified() || !matches!(bind.addr, BindAddr::Ip(_)))
    }
}

fn same_addr(bind: &Bind, ip: IpAddr) -> bool {
    match bind.addr {
        BindAddr::Ip(want) => ip == want,
        BindAddr::AnyV4 | BindAddr::AnyV6 => ip.is_unspecified(),
    }
}

/// `0100007F:0050` (IPv4, the address as the kernel's native-endian words) or 32 hex digits of
/// IPv6 in four such words.
fn parse_local(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = addr
        .as_bytes()
        .chunks(8)
        .map(|c| {
            let word = u32::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok()?;
            Some(word.to_ne_bytes())
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

/// The first process (pid, name) found with the socket `inode` open.
pub fn process_of(inode: u64) -> Option<(i32, String)> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if socket_inodes(pid).contains(&inode) {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some((pid, name.trim().to_owned()));
        }
    }
    None
}

/// The inodes of the sockets process `pid` has open.
fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_read_back() {
        let v4 = format!("{:08X}:0050", u32::from_ne_bytes([127, 0, 0, 1]));
        assert_eq!(parse_local(&v4), Some(("127.0.0.1".parse().unwrap(), 80)));
        let ip: Ipv6Addr = "fd00::5".parse().unwrap();
        let words: String = ip
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        assert_eq!(parse_local(&format!("{words}:01BB")), Some((IpAddr::V6(ip), 443)));
        assert_eq!(parse_local("zz:1"), None);
    }

    #[test]
    fn finds_this_process_holding_a_listener() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let bind = Bind {
            protocol: Protocol::Tcp,
            addr: BindAddr::Ip("127.0.0.1".parse().unwrap()),
            port,
        };
        let me = std::process::id() as i32;
        let as_lb = SocketTable::load(&[me]);
        assert!(as_lb.lb_holds(&bind), "{as_lb:?}");
        assert_eq!(as_lb.other_holder(&bind), None);
        let as_other = SocketTable::load(&[]);
        assert!(!as_other.lb_holds(&bind));
        let inode = as_other.other_holder(&bind).expect("the listener is found");
        assert_eq!(process_of(inode).map(|p| p.0), Some(me));
        // Its wildcard overlaps it.
        let wildcard = Bind {
            addr: BindAddr::AnyV4,
            ..bind
        };
        assert_eq!(as_other.other_holder(&wildcard), Some(inode));
    }
}
