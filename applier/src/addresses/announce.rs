//! Telling the segment at once that an address is now here: a gratuitous ARP for IPv4 (an ARP
//! request and an ARP reply, both broadcast, whose sender and target address are the new one:
//! RFC 5227 §3 "ARP Announcement"), an unsolicited neighbour advertisement for IPv6 (ICMPv6
//! type 136 to ff02::1, hop limit 255, override flag set, the target's link-layer address
//! option: RFC 4861 §7.2.6). Neighbours that already have an entry for the address (a router
//! that resolved it before, a host whose entry went stale) take the new link-layer address at
//! once instead of after their entry times out; routers that accept unsolicited announcements
//! create one. Without them the address still works: a neighbour resolves it by ARP or NDP on
//! its first packet.
//!
//! Raw sockets through `libc` (AF_PACKET for ARP, a raw ICMPv6 socket for the advertisement,
//! whose checksum the kernel fills in); both need CAP_NET_RAW, so [`Announcer::open`] is called
//! before any address is added and a missing capability fails the step with nothing changed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const BROADCAST: [u8; 6] = [0xff; 6];
const ND_NEIGHBOR_ADVERT: u8 = 136;
const NA_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The ARP packet (without its Ethernet header) announcing that `ip` is at `mac`: a request
/// (target hardware address unknown, zero) or a reply (target hardware address `mac` too, as
/// receivers require of a gratuitous reply).
pub fn arp_announcement(mac: [u8; 6], ip: Ipv4Addr, op: u16) -> [u8; 28] {
    let mut packet = [0u8; 28];
    packet[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    packet[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&op.to_be_bytes());
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&ip.octets());
    if op == ARP_REPLY {
        packet[18..24].copy_from_slice(&mac);
    }
    packet[24..28].copy_from_slice(&ip.octets());
    packet
}

/// The ICMPv6 message (checksum left to the kernel) advertising that `ip` is at `mac`:
/// unsolicited, override, not a router.
pub fn neighbour_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0] = ND_NEIGHBOR_ADVERT;
    message[4] = NA_OVERRIDE;
    message[8..24].copy_from_slice(&ip.octets());
    message[24] = ND_OPT_TARGET_LL_ADDR;
    message[25] = 1; // in units of 8 bytes
    message[26..32].copy_from_slice(&mac);
    message
}

/// The sockets to announce addresses on one interface.
pub struct Announcer {
    index: u32,
    mac: [u8; 6],
    arp: OwnedFd,
    icmp6: Option<OwnedFd>,
}

impl Announcer {
    /// Opens the sockets (CAP_NET_RAW), for interface `index` whose hardware address is `mac`;
    /// the ICMPv6 one only when IPv6 addresses are to be announced.
    pub fn open(index: u32, mac: [u8; 6], ipv6: bool) -> io::Result<Self> {
        // Protocol 0: a socket that only sends, so no ARP traffic queues up on it.
        let arp = socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0)?;
        let icmp6 = if ipv6 {
            let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
            set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)?;
            set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, index as libc::c_int)?;
            set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)?;
            Some(fd)
        } else {
            None
        };
        Ok(Self { index, mac, arp, icmp6 })
    }

    /// Announces `ip` on the interface.
    pub fn announce(&self, ip: IpAddr) -> io::Result<()> {
        match ip {
            IpAddr::V4(v4) => {
                for op in [ARP_REQUEST, ARP_REPLY] {
                    self.send_arp(&arp_announcement(self.mac, v4, op))?;
                }
                Ok(())
            }
            IpAddr::V6(v6) => self.send_na(v6),
        }
    }

    fn send_arp(&self, packet: &[u8; 28]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_ll is valid; every field the kernel reads is set below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as libc::c_ushort;
        to.sll_protocol = ETH_P_ARP.to_be();
        to.sll_ifindex = self.index as libc::c_int;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&BROADCAST);
        // SAFETY: sends `packet` from memory it owns to an address of the size given.
        let sent = unsafe {
            libc::sendto(
                self.arp.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        sent_whole(sent, packet.len())
    }

    fn send_na(&self, ip: Ipv6Addr) -> io::Result<()> {
        let Some(fd) = &self.icmp6 else {
            return Err(io::Error::other("no ICMPv6 socket was opened for IPv6 announcements"));
        };
        let message = neighbour_advertisement(self.mac, ip);
        // SAFETY: a zeroed sockaddr_in6 is valid; family, address and scope are set below.
        let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        to.sin6_addr.s6_addr = ALL_NODES.octets();
        to.sin6_scope_id = self.index;
        // SAFETY: sends `message` from memory it owns to an address of the size given.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&to as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        sent_whole(sent, message.len())
    }
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() has no preconditions; a descriptor it returns is owned from here on.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sent_whole(sent: isize, len: usize) -> io::Result<()> {
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize == len => Ok(()),
        n => Err(io::Error::other(format!("sent {n} of {len} bytes"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let ip = Ipv4Addr::new(198, 51, 100, 17);
        let request = arp_announcement(MAC, ip, ARP_REQUEST);
        assert_eq!(&request[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&request[8..14], &MAC);
        assert_eq!(&request[14..18], &[198, 51, 100, 17]);
        assert_eq!(&request[18..24], &[0; 6]);
        assert_eq!(&request[24..28], &[198, 51, 100, 17]);
        // A gratuitous reply carries the sender's hardware address as the target's too.
        let reply = arp_announcement(MAC, ip, ARP_REPLY);
        assert_eq!(&reply[6..8], &[0, 2]);
        assert_eq!(&reply[18..24], &MAC);
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_carries_the_link_layer_address() {
        let ip: Ipv6Addr = "2001:db8::11".parse().unwrap();
        let na = neighbour_advertisement(MAC, ip);
        assert_eq!(na[0], 136);
        assert_eq!(na[1], 0);
        // Not a router, not solicited, override.
        assert_eq!(na[4], 0x20);
        assert_eq!(&na[8..24], &ip.octets());
        assert_eq!(&na[24..26], &[2, 1]);
        assert_eq!(&na[26..32], &MAC);
    }
}
