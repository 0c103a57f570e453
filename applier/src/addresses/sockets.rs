//! Which local addresses still carry traffic, from the kernel's socket tables
//! (`/proc/net/{tcp,tcp6,udp,udp6}` of this network namespace). An address whose Service is gone
//! stays on the interface while one socket still uses it: a listener of the load balancer's
//! previous generation (nginx's old workers stop accepting some 100 ms after a reload), or a
//! connection they still proxy (they serve it until it ends, or until nginx's
//! `worker_shutdown_timeout` or HAProxy's `hard-stop-after` cuts it). Taking the address away
//! earlier would not close such a connection: its packets would stop arriving, and it would
//! hang until a timeout. So an address goes only once the load balancer itself let go of it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP states that no longer carry data for anyone: TIME_WAIT and CLOSE. Every other state,
/// listening included, holds the address.
const TCP_DONE: [&str; 2] = ["06", "07"];

/// The local addresses of every bound UDP socket and every TCP socket that still carries or
/// accepts a connection. A table that does not read counts as empty: the worst case is an
/// address removed under a connection the kernel did not show.
pub fn in_use() -> BTreeSet<IpAddr> {
    let mut used = BTreeSet::new();
    for (table, tcp) in [
        ("/proc/net/tcp", true),
        ("/proc/net/tcp6", true),
        ("/proc/net/udp", false),
        ("/proc/net/udp6", false),
    ] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        used.extend(local_addresses(&text, tcp));
    }
    used
}

/// The local addresses in one table's text (its header line first).
fn local_addresses(text: &str, tcp: bool) -> impl Iterator<Item = IpAddr> + '_ {
    text.lines().skip(1).filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if tcp && TCP_DONE.contains(&state) {
            return None;
        }
        kernel_ip(local.split(':').next()?)
    })
}

/// An address as the kernel prints it: 8 or 32 hex digits, each group of 8 one 32-bit word in
/// the machine's byte order.
fn kernel_ip(hex: &str) -> Option<IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    for i in (0..hex.len()).step_by(8) {
        let word = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(octets: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(octets))
    }

    #[test]
    fn listeners_and_live_connections_hold_their_address_time_wait_does_not() {
        let ip = |last: u8| word([198, 51, 100, last]);
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {a}:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n\
             1: {b}:0050 {c}:9C40 01 00000000:00000000 00:00000000 00000000 0 0 2\n\
             2: {d}:0050 {c}:9C41 06 00000000:00000000 00:00000000 00000000 0 0 0\n\
             3: {e}:0050 {c}:9C42 08 00000000:00000000 00:00000000 00000000 0 0 3\n",
            a = ip(17),
            b = ip(18),
            c = ip(2),
            d = ip(19),
            e = ip(20),
        );
        let used: BTreeSet<IpAddr> = local_addresses(&text, true).collect();
        let want: BTreeSet<IpAddr> = [17, 18, 20].map(|l| IpAddr::from([198, 51, 100, l])).into();
        assert_eq!(used, want);
        // A UDP socket in any state is bound.
        let udp: Vec<IpAddr> = local_addresses(&text, false).collect();
        assert_eq!(udp.len(), 4);
    }

    #[test]
    fn ipv6_addresses_read_back_word_by_word() {
        let ip: Ipv6Addr = "2001:db8::11".parse().unwrap();
        let hex: String = ip.octets().chunks(4).map(|c| word([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(kernel_ip(&hex), Some(IpAddr::V6(ip)));
        assert_eq!(kernel_ip("zz"), None);
        assert_eq!(kernel_ip("0102"), None);
    }

    #[test]
    fn this_process_listening_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(in_use().contains(&listener.local_addr().unwrap().ip()));
    }
}
