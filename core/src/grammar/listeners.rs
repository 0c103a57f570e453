//! The grammar of a shared-listeners host's `lb/<host>/_flipbit/listeners.conf`
//! (`templates/nginx-listeners.conf.tera`, rendered by `render::map::host_files`): the two map hash
//! sizes, the one `map` whose only content is the include of the release's `.map` files (still
//! the unbound [`SERVICE_MAPS_TOKEN`]: the applier checks the repo's text before it binds the
//! token), then at most one TCP and one UDP `server` of wildcard listeners. Every listener binds a
//! port on all of the host's addresses, so the binds come back for the applier to hold against
//! the ports its Services use.

use std::collections::BTreeSet;

use super::lines::{Directive, Line, Lines, expect, quote};
use super::values::port;
use super::{Bind, BindAddr, Checked, Refusal};
use crate::exposure::Protocol;
use crate::render::map::SERVICE_MAPS_TOKEN;

/// Checks `listeners.conf`: its wildcard sockets, in file order.
pub(super) fn check(text: &str) -> Result<Checked, Refusal> {
    let mut lines = Lines::new(text)?;
    lines.expect_top("map_hash_max_size 262144;")?;
    lines.expect_top("map_hash_bucket_size 512;")?;
    lines.expect_top("map \"$protocol/$server_addr:$server_port\" $flipbit_upstream {")?;
    let (body, close) = lines.block("map")?;
    expect(&body, 0, &format!("include {SERVICE_MAPS_TOKEN}"), close)?;
    if let Some(d) = body.get(1) {
        return Err(d.line.refuse("the map holds only the include of the Services' entries"));
    }
    let mut out = Checked::default();
    let mut last = None;
    while let Some(line) = lines.next_after_gaps() {
        if line.text != "server {" {
            return Err(line.refuse(format!("expected `server {{`, found {}", quote(line.text))));
        }
        let (body, close) = lines.block("server")?;
        let protocol = server(&body, close, &mut out.binds)?;
        if let Some(before) = last.filter(|p| *p >= protocol) {
            return Err(line.refuse(format!(
                "a {protocol} server after the {before} one; the generator writes the TCP server, then the UDP one"
            )));
        }
        last = Some(protocol);
    }
    Ok(out)
}

/// One or more wildcard `listen`s of one protocol, `proxy_pass $flipbit_upstream;` and the
/// protocol's timeout; the binds go to `binds`.
fn server(body: &[Directive<'_>], close: Line<'_>, binds: &mut Vec<Bind>) -> Result<Protocol, Refusal> {
    let mut protocol = None;
    let mut seen = BTreeSet::new();
    for d in body.iter().take_while(|d| d.words[0] == "listen") {
        let (addr, this) = match d.words[..] {
            ["listen", addr] => (addr, Protocol::Tcp),
            ["listen", addr, "udp"] => (addr, Protocol::Udp),
            _ => return Err(d.not("listen <port>[ udp]")),
        };
        if *protocol.get_or_insert(this) != this {
            return Err(d.line.refuse("TCP and UDP listeners in one server"));
        }
        let bind = match addr.strip_prefix("[::]:") {
            Some(p) => Bind {
                protocol: this,
                addr: BindAddr::AnyV6,
                port: port(p).map_err(|e| d.line.refuse(e))?,
            },
            None => Bind {
                protocol: this,
                addr: BindAddr::AnyV4,
                port: port(addr).map_err(|e| d.line.refuse(format!("expected `<port>` or `[::]:<port>`: {e}")))?,
            },
        };
        if !seen.insert(bind) {
            return Err(d.line.refuse("a second `listen` on the same socket"));
        }
        binds.push(bind);
    }
    let Some(protocol) = protocol else {
        return Err(body.first().map_or_else(
            || close.refuse("a server without a `listen`"),
            |d| d.not("listen <port>"),
        ));
    };
    let at = seen.len();
    expect(body, at, "proxy_pass $flipbit_upstream", close)?;
    let timeout = match protocol {
        Protocol::Tcp => "proxy_connect_timeout 5s",
        Protocol::Udp => "proxy_timeout 20s",
    };
    expect(body, at + 1, timeout, close)?;
    match body.get(at + 2) {
        Some(d) => Err(d.line.refuse(format!(
            "expected the `}}` closing the server, found {}",
            quote(d.words[0])
        ))),
        None => Ok(protocol),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::tests::{assert_refused, node};
    use super::*;
    use crate::render::map::{Listener, host_files};

    const HEAD: &str = "# Flipbit: listeners.\n\nmap_hash_max_size 262144;\nmap_hash_bucket_size 512;\n\nmap \"$protocol/$server_addr:$server_port\" $flipbit_upstream {\n    include @flipbit-service-maps@;\n}\n";
    const TCP: &str = "\nserver {\n    listen 80;\n    listen [::]:80;\n    proxy_pass $flipbit_upstream;\n    proxy_connect_timeout 5s;\n}\n";
    const UDP: &str = "\nserver {\n    listen 53 udp;\n    proxy_pass $flipbit_upstream;\n    proxy_timeout 20s;\n}\n";

    #[test]
    fn accepts_what_the_renderer_writes() {
        let listeners: BTreeSet<Listener> = [
            (Protocol::Tcp, 80, false),
            (Protocol::Tcp, 80, true),
            (Protocol::Udp, 53, true),
        ]
        .into_iter()
        .map(|(protocol, port, ipv6)| Listener { protocol, port, ipv6 })
        .collect();
        let nodes = [node("10.0.0.1")];
        let host = "lb-1".parse().expect("host");
        for (nodes, binds) in [(&nodes[..], 3), (&[][..], 0)] {
            let refs: Vec<_> = nodes.iter().collect();
            let files = host_files(&host, &listeners, &refs).expect("render");
            let checked = check(&files[0].1).unwrap_or_else(|r| panic!("{r}:\n{}", files[0].1));
            assert_eq!(checked.binds.len(), binds, "{}", files[0].1);
        }
        let checked = check(&format!("{HEAD}{TCP}{UDP}")).expect("accepted");
        assert_eq!(
            checked.binds,
            [
                Bind {
                    protocol: Protocol::Tcp,
                    addr: BindAddr::AnyV4,
                    port: 80
                },
                Bind {
                    protocol: Protocol::Tcp,
                    addr: BindAddr::AnyV6,
                    port: 80
                },
                Bind {
                    protocol: Protocol::Udp,
                    addr: BindAddr::AnyV4,
                    port: 53
                },
            ]
        );
        assert!(check(&format!("{HEAD}{UDP}")).is_ok() && check(HEAD).is_ok());
    }

    #[test]
    fn refuses_anything_else() {
        let all = format!("{HEAD}{TCP}{UDP}");
        let r = |from: &str, to: &str| all.replacen(from, to, 1);
        let table: Vec<(String, usize, &str)> = vec![
            (
                r("map_hash_max_size 262144;", "map_hash_max_size 1;"),
                3,
                "expected `map_hash_max_size 262144;`",
            ),
            (
                r("\nmap_hash_bucket", "\nlog_format x $remote_addr;\nmap_hash_bucket"),
                4,
                "expected `map_hash_bucket_size 512;`",
            ),
            (r("@flipbit-service-maps@", "/etc/shadow"), 7, "arguments differ"),
            (
                r(
                    "@flipbit-service-maps@;\n",
                    "@flipbit-service-maps@;\n    default 127.0.0.1:22;\n",
                ),
                8,
                "only the include",
            ),
            (r("$flipbit_upstream {", "$flipbit_other {"), 6, "expected `map"),
            (
                r("    listen 80;", "    listen 127.0.0.1:80;"),
                11,
                "expected `<port>` or `[::]:<port>`",
            ),
            (r("    listen 80;", "    listen *:80;"), 11, "\"*:80\""),
            (
                r("    listen 80;", "    listen 80 reuseport;"),
                11,
                "expected `listen <port>[ udp]`",
            ),
            (r("    listen 80;", "    listen 80 udp;"), 12, "TCP and UDP"),
            (r("    listen 80;", "    listen 0;"), 11, "\"0\" is not a port"),
            (
                r("    listen [::]:80;", "    listen [::]:80;\n    listen [::]:80;"),
                13,
                "a second `listen`",
            ),
            (
                r(
                    "    proxy_connect_timeout 5s;",
                    "    proxy_connect_timeout 5s;\n    access_log /tmp/x;",
                ),
                15,
                "found \"access_log\"",
            ),
            (
                r(
                    "    proxy_pass $flipbit_upstream;\n    proxy_connect",
                    "    proxy_pass 127.0.0.1:22;\n    proxy_connect",
                ),
                13,
                "arguments differ",
            ),
            (
                r("    proxy_timeout 20s;", "    proxy_connect_timeout 5s;"),
                20,
                "expected `proxy_timeout 20s`",
            ),
            (format!("{HEAD}{UDP}{TCP}"), 16, "a TCP server after the UDP one"),
            (format!("{HEAD}{TCP}{TCP}"), 17, "a TCP server after the TCP one"),
            (format!("{all}include /etc/passwd;\n"), 22, "expected `server {`"),
            (format!("{HEAD}\nserver {{\n}}\n"), 11, "without a `listen`"),
            (all.replace('\n', "\r\n"), 1, "'\\r'"),
        ];
        assert_refused(table, check);
    }
}
