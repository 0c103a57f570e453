//! Whether the sockets a release needs can be bound here, before nginx or HAProxy tries. A
//! listener another process holds (sshd on the port, a resolver on `127.0.0.53:53`, Debian's
//! default site on `*:80`) makes the load balancer's whole reload fail, and `nginx -t` does not
//! notice (it ignores "address in use" in test mode). Rather than freeze every later commit on
//! the host, the Services that need such a socket are withheld from the release and retried on
//! later runs (see `lb_step`).
//!
//! A socket is probed as nginx binds it (`SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6) and closed at
//! once, never listened on. "In use" by the load balancer itself is fine when it holds exactly
//! that socket (it keeps it across the reload), or an overlapping one Flipbit opened (a host
//! changing layouts trades its own wildcards for specific sockets). Held by anyone else, or by a
//! listener of the load balancer's that Flipbit did not write (another part of its config, such
//! as Debian's default site on `*:80`), it blocks.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flipbit_core::exposure::Protocol;
use flipbit_core::grammar::{Bind, BindAddr};
use flipbit_core::pool::Pool;
use flipbit_core::text::escaped;

use crate::procnet::SocketTable;

/// The sockets nginx opens for `binds`: a specific `<address>:<port>` is not opened when a
/// wildcard of the same protocol, family and port is (the wildcard receives its connections).
pub fn nginx_sockets(binds: impl IntoIterator<Item = Bind>) -> BTreeSet<Bind> {
    let all: BTreeSet<Bind> = binds.into_iter().collect();
    all.iter()
        .filter(|b| match b.addr {
            BindAddr::Ip(ip) => {
                let wildcard = if ip.is_ipv4() { BindAddr::AnyV4 } else { BindAddr::AnyV6 };
                !all.contains(&Bind { addr: wildcard, ..**b })
            }
            _ => true,
        })
        .copied()
        .collect()
}

/// The socket address of `bind` (a wildcard as `0.0.0.0` or `::`).
pub fn socket_addr(bind: &Bind) -> SocketAddr {
    let ip = match bind.addr {
        BindAddr::Ip(ip) => ip,
        BindAddr::AnyV4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        BindAddr::AnyV6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, bind.port)
}

/// `bind` as a person reads it: `127.1.1.5:80/tcp`, `*:53/udp`, `[::]:443/tcp`.
pub fn describe(bind: &Bind) -> String {
    let proto = match bind.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match bind.addr {
        BindAddr::AnyV4 => format!("*:{}/{proto}", bind.port),
        _ => format!("{}/{proto}", socket_addr(bind)),
    }
}

/// The load balancer's sockets Flipbit opened: its addresses (inside this host's pools) and the
/// wildcards of the release the load balancer runs (a shared-listeners host's listeners file).
#[derive(Debug, Default)]
pub struct Ours {
    pub pools: Vec<Pool>,
    pub wildcards: BTreeSet<Bind>,
}

impl Ours {
    /// True when the load balancer's socket at `ip` on `bind`'s port and protocol is Flipbit's.
    fn holds(&self, bind: &Bind, ip: IpAddr) -> bool {
        if !ip.is_unspecified() {
            return self.pools.iter().any(|p| p.contains(ip));
        }
        let addr = if ip.is_ipv4() { BindAddr::AnyV4 } else { BindAddr::AnyV6 };
        self.wildcards.contains(&Bind { addr, ..*bind })
    }
}

/// Probes sockets for one apply; the kernel's tables are read at the first one in use.
pub struct Prober {
    lb_pids: Vec<i32>,
    lb_name: &'static str,
    ours: Ours,
    table: Option<SocketTable>,
}

impl Prober {
    /// `lb_pids`: the load balancer's processes, whose sockets it keeps across a reload; `ours`:
    /// which of those Flipbit opened.
    pub fn new(lb_pids: Vec<i32>, lb_name: &'static str, ours: Ours) -> Self {
        Self {
            lb_pids,
            lb_name,
            ours,
            table: None,
        }
    }

    /// Why `bind` cannot be bound here, or `None` when it can (or the load balancer holds exactly
    /// it already).
    pub fn blocked(&mut self, bind: &Bind) -> Option<String> {
        let err = match try_bind(bind.protocol, socket_addr(bind)) {
            Ok(()) => return None,
            Err(e) => e,
        };
        match err.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                let table = self.table.get_or_insert_with(|| SocketTable::load(&self.lb_pids));
                if table.lb_holds(bind) {
                    return None;
                }
                let who = match table.other_holder(bind) {
                    // Only the load balancer's own sockets overlap it. Those Flipbit opened (a
                    // host switching layouts trades specific sockets for a wildcard) are no
                    // obstacle worth withholding for: the reload says what it says. Any other is
                    // part of the operator's config, which the reload cannot get past.
                    None if table.lb_overlaps(bind) => {
                        let theirs = table
                            .lb_overlapping(bind)
                            .into_iter()
                            .find(|ip| !self.ours.holds(bind, *ip))?;
                        let theirs = describe(&Bind {
                            addr: match theirs {
                                ip if !ip.is_unspecified() => BindAddr::Ip(ip),
                                ip if ip.is_ipv4() => BindAddr::AnyV4,
                                _ => BindAddr::AnyV6,
                            },
                            ..*bind
                        });
                        return Some(format!(
                            "{} is covered by {theirs}, a listener of {lb}'s own config that Flipbit did not write (such as a default site's `listen {port}`): {lb} cannot bind both; make that listener name its addresses, or remove it",
                            describe(bind),
                            lb = self.lb_name,
                            port = bind.port,
                        ));
                    }
                    None => "another process".to_owned(),
                    Some(inode) => crate::procnet::process_of(inode).map_or_else(
                        || "another process".to_owned(),
                        |(pid, name)| format!("{} (pid {pid})", escaped(&name)),
                    ),
                };
                Some(format!("{} is in use by {who}", describe(bind)))
            }
            Some(libc::EADDRNOTAVAIL) => Some(format!(
                "{} cannot be bound: the address is not configured on this host",
                describe(bind)
            )),
            _ => Some(format!("{} cannot be bound: {err}", describe(bind))),
        }
    }
}

/// Binds (never listens on) a socket as nginx would, and closes it.
fn try_bind(protocol: Protocol, addr: SocketAddr) -> std::io::Result<()> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let kind = match protocol {
        Protocol::Tcp => libc::SOCK_STREAM,
        Protocol::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: plain socket calls on a descriptor this function owns and closes on every path.
    unsafe {
        let fd = libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        let set = |level, name| {
            libc::setsockopt(
                fd,
                level,
                name,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // A TCP port in TIME_WAIT is no obstacle to nginx (it sets SO_REUSEADDR); for UDP the
        // option would let two processes share the port, which is exactly what must not pass.
        if protocol == Protocol::Tcp {
            set(libc::SOL_SOCKET, libc::SO_REUSEADDR);
        }
        if addr.is_ipv6() {
            set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
        }
        let result = match addr {
            SocketAddr::V4(v4) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(v6) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: 0,
                };
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        let err = (result != 0).then(std::io::Error::last_os_error);
        libc::close(fd);
        err.map_or(Ok(()), Err)
    }
}

/// The socket addresses a failed reload could not bind, read from the load balancer's own
/// message: nginx's `bind() to 127.1.1.5:80 failed (98: ...)`, HAProxy's `cannot bind socket
/// (Address already in use) [127.1.1.5:80]`.
pub fn failed_binds(message: &str) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for part in message.split("bind() to ").skip(1) {
        if let Some(addr) = part.split_whitespace().next().and_then(|a| a.parse().ok()) {
            out.insert(addr);
        }
    }
    if message.contains("cannot bind socket") {
        for part in message.split('[').skip(1) {
            if let Some(addr) = part.split(']').next().and_then(|a| a.parse().ok()) {
                out.insert(addr);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(protocol: Protocol, addr: BindAddr, port: u16) -> Bind {
        Bind { protocol, addr, port }
    }

    #[test]
    fn a_wildcard_covers_specific_sockets_of_its_family_and_protocol() {
        let ip4 = BindAddr::Ip("127.1.1.5".parse().unwrap());
        let ip6 = BindAddr::Ip("fd00::5".parse().unwrap());
        let sockets = nginx_sockets([
            bind(Protocol::Tcp, ip4, 80),
            bind(Protocol::Tcp, BindAddr::AnyV4, 80),
            bind(Protocol::Tcp, ip6, 80),
            bind(Protocol::Udp, ip4, 80),
            bind(Protocol::Tcp, ip4, 443),
        ]);
        let want: BTreeSet<Bind> = [
            bind(Protocol::Tcp, BindAddr::AnyV4, 80),
            bind(Protocol::Tcp, ip6, 80),
            bind(Protocol::Udp, ip4, 80),
            bind(Protocol::Tcp, ip4, 443),
        ]
        .into();
        assert_eq!(sockets, want);
        assert_eq!(describe(&bind(Protocol::Udp, BindAddr::AnyV4, 53)), "*:53/udp");
        assert_eq!(describe(&bind(Protocol::Tcp, ip6, 80)), "[fd00::5]:80/tcp");
    }

    /// Flipbit's sockets when this process plays the load balancer: 127.0.0.1 is in its pools.
    fn ours() -> Ours {
        Ours {
            pools: vec![Pool::parse("127.0.0.0/24").unwrap()],
            wildcards: BTreeSet::new(),
        }
    }

    #[test]
    fn a_listener_of_the_load_balancers_own_config_blocks_the_sockets_it_covers() {
        let me = std::process::id() as i32;
        // Not in the pools: a listener of nginx's config that Flipbit did not write.
        let held = std::net::TcpListener::bind("127.0.2.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let why = Prober::new(vec![me], "nginx", ours())
            .blocked(&bind(Protocol::Tcp, BindAddr::AnyV4, port))
            .expect("a wildcard over the operator's listener passed");
        assert!(
            why.contains(&format!(
                "*:{port}/tcp is covered by 127.0.2.1:{port}/tcp, a listener of nginx's own config"
            )),
            "{why}"
        );
        drop(held);
        // A wildcard of its own config (a default site's `listen 80`) over a pool address.
        let wildcard = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = wildcard.local_addr().unwrap().port();
        let pool_addr = bind(Protocol::Tcp, BindAddr::Ip("127.0.0.7".parse().unwrap()), port);
        let why = Prober::new(vec![me], "nginx", ours())
            .blocked(&pool_addr)
            .expect("a pool address under the operator's wildcard passed");
        assert!(
            why.contains(&format!("127.0.0.7:{port}/tcp is covered by *:{port}/tcp")),
            "{why}"
        );
        assert!(why.contains(&format!("listen {port}")), "{why}");
        // The same wildcard in the release Flipbit runs: its own, no obstacle.
        let mut own = ours();
        own.wildcards.insert(bind(Protocol::Tcp, BindAddr::AnyV4, port));
        assert_eq!(Prober::new(vec![me], "nginx", own).blocked(&pool_addr), None);
        // Held by another process, the message blames a process, not the config.
        let why = Prober::new(vec![], "nginx", ours())
            .blocked(&pool_addr)
            .expect("blocked");
        assert!(why.contains("in use by"), "{why}");
    }

    #[test]
    fn a_held_socket_is_blocked_a_free_one_is_not() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let ip = BindAddr::Ip("127.0.0.1".parse().unwrap());
        let why = Prober::new(vec![], "nginx", Ours::default())
            .blocked(&bind(Protocol::Tcp, ip, port))
            .expect("a held port passed");
        assert!(why.contains("in use by") && why.contains(&port.to_string()), "{why}");
        // The wildcard of the same port is blocked by the specific listener too.
        assert!(
            Prober::new(vec![], "nginx", Ours::default())
                .blocked(&bind(Protocol::Tcp, BindAddr::AnyV4, port))
                .is_some()
        );
        // This process holds it: as the load balancer, it may keep it.
        let me = std::process::id() as i32;
        assert_eq!(
            Prober::new(vec![me], "nginx", ours()).blocked(&bind(Protocol::Tcp, ip, port)),
            None
        );
        // Its wildcard overlaps only the load balancer's own socket: no other process to blame.
        assert_eq!(
            Prober::new(vec![me], "nginx", ours()).blocked(&bind(Protocol::Tcp, BindAddr::AnyV4, port)),
            None
        );
        drop(held);
        assert_eq!(
            Prober::new(vec![], "nginx", Ours::default()).blocked(&bind(Protocol::Tcp, ip, port)),
            None
        );

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        assert!(
            Prober::new(vec![], "nginx", Ours::default())
                .blocked(&bind(Protocol::Udp, ip, port))
                .is_some()
        );
        assert_eq!(
            Prober::new(vec![], "nginx", Ours::default()).blocked(&bind(Protocol::Tcp, ip, port)),
            None,
            "TCP and UDP ports are apart"
        );
    }

    #[test]
    fn reload_messages_name_the_sockets() {
        let nginx = "[emerg] 12#12: bind() to 127.1.1.5:80 failed (98: Address already in use); [emerg] bind() to [fd00::5]:443 failed (98: Address already in use)";
        let want: BTreeSet<SocketAddr> = ["127.1.1.5:80".parse().unwrap(), "[fd00::5]:443".parse().unwrap()].into();
        assert_eq!(failed_binds(nginx), want);
        let haproxy = "the master kept its old workers: Starting frontend flipbit_web_a_80: cannot bind socket (Address already in use) [127.1.1.5:80]";
        assert_eq!(failed_binds(haproxy), ["127.1.1.5:80".parse().unwrap()].into());
        assert!(failed_binds("unknown directive \"x\"").is_empty());
    }
}
