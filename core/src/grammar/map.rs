//! The grammar of a Service's map entries on a shared-listeners host, `lb/<host>/<ns>/<svc>.map`
//! (`templates/nginx-service.map.tera`, rendered by `render::map::service_entries`). The file is
//! included inside the host's `map` block, so a line there is a map entry or nothing: each is
//! `<TCP|UDP>/<address>:<port> $flipbit_node_<rr|hash>:<node port>;`, the address unbracketed
//! even for IPv6 (as nginx writes `$server_addr`) and inside the host's pools. The keys come back
//! as routes, so the applier can refuse two Services claiming one address and port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::lines::{Lines, quote};
use super::values::{alike, in_pools, ip, port};
use super::{Checked, Refusal};
use crate::config::LbHost;
use crate::exposure::Protocol;

/// Checks a `.map` file on shared-listeners host `host`: its map keys, in file order.
pub(super) fn check(text: &str, host: &LbHost) -> Result<Checked, Refusal> {
    let mut lines = Lines::new(text)?;
    let mut out = Checked::default();
    let mut keys = BTreeSet::new();
    let mut node_ports = BTreeMap::new();
    let mut variable = None;
    while let Some(line) = lines.next_after_gaps() {
        let words = line.top_words()?;
        let [key, value] = words[..] else {
            return Err(line.refuse("expected `<TCP|UDP>/<address>:<port> $flipbit_node_<rr|hash>:<node port>;`"));
        };
        let (protocol, addr) = entry_key(key).map_err(|e| line.refuse(e))?;
        in_pools(host, addr.ip(), line)?;
        let value = value
            .strip_suffix(';')
            .ok_or_else(|| line.refuse("expected an entry ending in `;`"))?;
        let (var, node_port) = value
            .split_once(':')
            .filter(|(var, _)| ["$flipbit_node_rr", "$flipbit_node_hash"].contains(var))
            .ok_or_else(|| {
                line.refuse(format!(
                    "expected `$flipbit_node_rr:<node port>;` or `$flipbit_node_hash:<node port>;`, found {}",
                    quote(value)
                ))
            })?;
        let node_port = port(node_port).map_err(|e| line.refuse(e))?;
        alike(&mut variable, var, line, "node variable")?;
        if !keys.insert((protocol, addr)) {
            return Err(line.refuse(format!("a second entry for {protocol}/{}:{}", addr.ip(), addr.port())));
        }
        if *node_ports.entry((protocol, addr.port())).or_insert(node_port) != node_port {
            return Err(line.refuse(format!(
                "{protocol}/{} goes to another node port than on the Service's other address",
                addr.port()
            )));
        }
        out.routes.push((protocol, addr));
    }
    Ok(out)
}

/// `<TCP|UDP>/<address>:<port>`, the address written by `IpAddr`'s `Display`; never an
/// IPv4-compatible IPv6 address (`::a.b.c.d`), which the renderer refuses because nginx spells
/// it differently in `$server_addr`.
fn entry_key(key: &str) -> Result<(Protocol, SocketAddr), String> {
    let (protocol, rest) = match key.split_once('/') {
        Some(("TCP", rest)) => (Protocol::Tcp, rest),
        Some(("UDP", rest)) => (Protocol::Udp, rest),
        _ => return Err(format!("{} is not <TCP|UDP>/<address>:<port>", quote(key))),
    };
    let (addr, port_text) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{} is not <TCP|UDP>/<address>:<port>", quote(key)))?;
    let addr = ip(addr)?;
    if let IpAddr::V6(v6) = addr {
        let s = v6.segments();
        if s[..6].iter().all(|x| *x == 0) && (s[6] != 0 || s[7] > 1) {
            return Err(format!(
                "{addr} is an IPv4-compatible address, which the generator never writes"
            ));
        }
    }
    Ok((protocol, SocketAddr::new(addr, port(port_text)?)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_refused, host, svc};
    use super::*;
    use crate::annotations::Balance;
    use crate::config::{Flavor, Layout};
    use crate::render::map::service_entries;

    const BASE: &str = "# Flipbit: entries.\nTCP/127.1.1.5:80 $flipbit_node_rr:30080;\nTCP/fd00:1::5:80 $flipbit_node_rr:30080;\nUDP/127.1.1.5:53 $flipbit_node_rr:30053;\n";

    fn run(text: &str) -> Result<Checked, Refusal> {
        check(text, &host(Layout::SharedListeners, Flavor::Nginx))
    }

    #[test]
    fn accepts_what_the_renderer_writes() {
        let addrs: Vec<IpAddr> = vec!["fd00:1::5".parse().expect("ip"), "127.1.1.5".parse().expect("ip")];
        for balance in [Balance::RoundRobin, Balance::Hash] {
            let s = svc("blog/web", balance, false);
            let text = service_entries(&s, &"lb-1".parse().expect("host"), &addrs).expect("render");
            let checked = run(&text).unwrap_or_else(|r| panic!("{r}:\n{text}"));
            let want: Vec<(Protocol, SocketAddr)> =
                ["127.1.1.5:80", "[fd00:1::5]:80", "127.1.1.5:53", "[fd00:1::5]:53"]
                    .iter()
                    .zip([Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Udp])
                    .map(|(a, p)| (p, a.parse().expect("socket")))
                    .collect();
            assert_eq!(checked.routes, want, "{text}");
        }
        assert_eq!(run(BASE).map(|c| c.routes.len()), Ok(3));
        assert_eq!(run("# only comments\n\n"), Ok(Checked::default()));
    }

    #[test]
    fn refuses_anything_else() {
        let r = |from: &str, to: &str| BASE.replacen(from, to, 1);
        let table: Vec<(String, usize, &str)> = vec![
            (format!("{BASE}include /etc/passwd;\n"), 5, "\"include\" is not"),
            (format!("{BASE}default $flipbit_node_rr:22;\n"), 5, "\"default\" is not"),
            (format!("{BASE}hostnames;\n"), 5, "expected `<TCP|UDP>"),
            (format!("{BASE}~^TCP/ 127.0.0.1:22;\n"), 5, "\"~^TCP/\" is not"),
            (
                r("TCP/127.1.1.5:80", "TCP/10.9.9.9:80"),
                2,
                "address 10.9.9.9 is outside LB host lb-1's pools",
            ),
            (
                r("TCP/fd00:1::5:80", "TCP/[fd00:1::5]:80"),
                3,
                "\"[fd00:1::5]\" is not an address",
            ),
            (r("TCP/127.1.1.5:80", "TCP/::7f01:105:80"), 2, "IPv4-compatible"),
            (r("TCP/127.1.1.5:80", "SCTP/127.1.1.5:80"), 2, "\"SCTP/127.1.1.5:80\""),
            (r("TCP/127.1.1.5:80", "TCP/127.1.1.5:0"), 2, "\"0\" is not a port"),
            (r("TCP/127.1.1.5:80", "TCP/127.1.1.5:x"), 2, "\"x\" is not a port"),
            (
                r(":30080;\n", ":30080; include /etc/passwd;\n"),
                2,
                "expected `<TCP|UDP>",
            ),
            (r(":30080;\n", ":30080;;\n"), 2, "\"30080;\" is not a port"),
            (r(":30080;\n", ":30080\n"), 2, "ending in `;`"),
            (
                r("$flipbit_node_rr:30080;\nTCP/fd", "$flipbit_upstream:30080;\nTCP/fd"),
                2,
                "found \"$flipbit_upstream:30080\"",
            ),
            (
                r("$flipbit_node_rr:30080;\nTCP/fd", "127.0.0.1:22;\nTCP/fd"),
                2,
                "found \"127.0.0.1:22\"",
            ),
            (
                r("$flipbit_node_rr:30080;\nTCP/fd", "$flipbit_node_hash:30080;\nTCP/fd"),
                3,
                "node variable: not as",
            ),
            (
                r(
                    "fd00:1::5:80 $flipbit_node_rr:30080",
                    "fd00:1::5:80 $flipbit_node_rr:30081",
                ),
                3,
                "another node port",
            ),
            (
                format!("{BASE}TCP/127.1.1.5:80 $flipbit_node_rr:30080;\n"),
                5,
                "a second entry for TCP/127.1.1.5:80",
            ),
            (r("TCP/127.1.1.5:80 ", "TCP/127.1.1.5:80  "), 2, "exactly one space"),
            (r("TCP/127.1.1.5:80", "    TCP/127.1.1.5:80"), 2, "indentation"),
            (BASE.replace('\n', "\r\n"), 1, "'\\r'"),
        ];
        assert_refused(table, run);
    }
}
