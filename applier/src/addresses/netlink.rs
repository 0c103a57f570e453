//! The interface and its addresses through rtnetlink: `netlink-packet-route` messages over a
//! plain blocking `netlink-sys` socket, one request at a time and each acknowledged, so every
//! failure is the kernel's own errno for that request (no `ip` to shell out to and parse).

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The mark on every address the applier adds (`IFA_PROTO`, kept by Linux 6.1 and later): what
/// tells its addresses from an operator's own, on the interface itself, so that no record of
/// them can be lost or go stale. An iproute2 that knows the attribute shows it as `proto 0xfb`
/// (Debian 12's 6.1 does not).
pub const FLIPBIT_PROTO: u8 = 0xfb;

/// One network interface, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// Administratively up (`ip link set NAME up`).
    pub up: bool,
    /// Up with a carrier: frames can leave it.
    pub running: bool,
    /// Neighbours are not resolved on it (a dummy or loopback interface): nothing to announce.
    pub no_arp: bool,
    /// Its hardware address, when it is an Ethernet-like one.
    pub mac: Option<[u8; 6]>,
}

/// One address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present {
    pub ip: IpAddr,
    pub prefix_len: u8,
    /// `IFA_PROTO`: [`FLIPBIT_PROTO`] on the applier's own, 0 on an operator's.
    pub proto: u8,
    /// IPv6 duplicate address detection is still running: not usable yet.
    pub tentative: bool,
    /// IPv6 duplicate address detection found another holder: never usable.
    pub dad_failed: bool,
}

impl Present {
    /// Added by the applier.
    pub fn ours(&self) -> bool {
        self.proto == FLIPBIT_PROTO
    }
}

/// A route netlink socket.
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

/// Room for one datagram of a dump (the kernel fills at most a page or two per datagram).
const RECEIVE_BUFFER: usize = 64 * 1024;

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// The interface named `name`, or `None` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = match self.request(RouteNetlinkMessage::GetLink(message), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(replies) => replies,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(Link {
                index: link.header.index,
                up: link.header.flags.contains(LinkFlags::Up),
                running: link.header.flags.contains(LinkFlags::Running),
                no_arp: link.header.flags.intersects(LinkFlags::Noarp | LinkFlags::Loopback),
                mac: link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                    _ => None,
                }),
            }),
            _ => None,
        }))
    }

    /// Every address on interface `index`, both families.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<Present>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => present(&a),
                _ => None,
            })
            .collect())
    }

    /// Adds `ip` as a host address (/32, /128) to interface `index`, marked as the applier's,
    /// without a prefix route (the segment's route is the operator's). IPv6 duplicate address
    /// detection runs as for any address. `EEXIST` when it is there already.
    pub fn add(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let mut message = address_message(index, ip, host_prefix(ip));
        message.attributes.extend([
            AddressAttribute::Flags(AddressFlags::Noprefixroute),
            AddressAttribute::Protocol(AddressProtocol::Other(FLIPBIT_PROTO)),
        ]);
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes `ip`/`prefix_len` from interface `index`; `EADDRNOTAVAIL` when it is not there.
    pub fn delete(&mut self, index: u32, ip: IpAddr, prefix_len: u8) -> io::Result<()> {
        let message = address_message(index, ip, prefix_len);
        self.request(RouteNetlinkMessage::DelAddress(message), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
    }

    /// Sends `message` and reads the replies up to the acknowledgement (or a dump's end).
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        let mut replies = Vec::new();
        loop {
            self.buffer.clear();
            let size = self.socket.recv(&mut self.buffer, 0)?;
            if size > self.buffer.len() {
                return Err(io::Error::other("a netlink reply did not fit the receive buffer"));
            }
            let mut offset = 0;
            while offset < size {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}")))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length.next_multiple_of(4);
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(replies),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }
}

/// /32 or /128.
pub fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn address_message(index: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    message.header.prefix_len = prefix_len;
    message.header.scope = AddressScope::Universe;
    message.header.index = index;
    // IPv4 names the address twice (local, and the peer's on a point-to-point link), as `ip` does.
    if ip.is_ipv4() {
        message.attributes.push(AddressAttribute::Local(ip));
    }
    message.attributes.push(AddressAttribute::Address(ip));
    message
}

/// An address of a dump, read the way `ip address` reads it: the local address where there is
/// one (IPv4), else the address; the 32-bit flags where the kernel gives them.
fn present(message: &AddressMessage) -> Option<Present> {
    let mut ip = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
    let mut proto = 0;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(local) => ip = Some(*local),
            AddressAttribute::Address(address) if ip.is_none() => ip = Some(*address),
            AddressAttribute::Flags(f) => flags = *f,
            AddressAttribute::Protocol(p) => proto = u8::from(*p),
            _ => {}
        }
    }
    Some(Present {
        ip: ip?,
        prefix_len: message.header.prefix_len,
        proto,
        tentative: flags.contains(AddressFlags::Tentative),
        dad_failed: flags.contains(AddressFlags::Dadfailed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_address_is_a_marked_host_address_without_a_prefix_route() {
        let ip: IpAddr = "198.51.100.17".parse().unwrap();
        let mut message = address_message(7, ip, host_prefix(ip));
        message.attributes.extend([
            AddressAttribute::Flags(AddressFlags::Noprefixroute),
            AddressAttribute::Protocol(AddressProtocol::Other(FLIPBIT_PROTO)),
        ]);
        assert_eq!(
            present(&message),
            Some(Present {
                ip,
                prefix_len: 32,
                proto: FLIPBIT_PROTO,
                tentative: false,
                dad_failed: false
            })
        );
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let message = address_message(7, v6, host_prefix(v6));
        assert_eq!(message.header.prefix_len, 128);
        assert_eq!(message.header.family, AddressFamily::Inet6);
        assert!(!present(&message).unwrap().ours());
    }

    #[test]
    fn the_loopback_interface_is_found_and_a_missing_one_is_none() {
        let Ok(mut rtnl) = Rtnl::open() else {
            return; // no netlink in this sandbox
        };
        let lo = rtnl.link("lo").unwrap().expect("every network namespace has lo");
        assert!(lo.no_arp);
        assert!(rtnl.link("fbt-no-such0").unwrap().is_none());
        // Reading addresses needs no privilege.
        rtnl.addresses(lo.index).unwrap();
    }
}
