use std::collections::BTreeMap;
use std::path::Path;

use super::host::{percent, ring_owners};
use super::*;
use crate::nodes::Node;

fn svc(key: &str, ports: &[(Protocol, u16, u16)]) -> ExposedService {
    crate::exposure::test_service(key, ports)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            name: format!("node-{i}").into(),
            ip: format!("127.0.{}.{}", i / 250, 10 + i % 200).parse().unwrap(),
        })
        .collect()
}

fn host() -> LbHostName {
    "lb-1".parse().unwrap()
}

#[test]
fn entries_name_protocol_address_and_port_sorted() {
    let s = svc(
        "blog/frontend",
        &[(Protocol::Tcp, 80, 30080), (Protocol::Udp, 53, 30053)],
    );
    let text = service_entries(&s, &host(), &[ip("fd00::5"), ip("127.1.1.5")]).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "TCP/127.1.1.5:80 $flipbit_node_rr:30080;",
            "TCP/fd00::5:80 $flipbit_node_rr:30080;",
            "UDP/127.1.1.5:53 $flipbit_node_rr:30053;",
            "UDP/fd00::5:53 $flipbit_node_rr:30053;",
        ]
    );
    assert!(
        text.starts_with("# Flipbit: Service blog/frontend on LB host lb-1"),
        "{text}"
    );
    assert_eq!(
        listeners_in(&text),
        listeners_of(&s, &[ip("127.1.1.5"), ip("fd00::5")]),
        "the listeners read back from the file differ from those of the Service"
    );
}

#[test]
fn hash_services_use_the_client_keyed_variable() {
    let mut s = svc("blog/frontend", &[(Protocol::Tcp, 80, 30080)]);
    s.settings.balance = Balance::Hash;
    let text = service_entries(&s, &host(), &[ip("127.1.1.5")]).unwrap();
    assert!(text.contains("TCP/127.1.1.5:80 $flipbit_node_hash:30080;"), "{text}");
}

#[test]
fn per_service_features_fall_back_and_are_refused_here() {
    let base = svc("blog/frontend", &[(Protocol::Tcp, 80, 30080)]);
    assert_eq!(per_service_reason(&base), None);
    let mut cases = Vec::new();
    let mut s = base.clone();
    s.local_traffic = true;
    cases.push(s);
    let mut s = base.clone();
    s.settings.max_nodes = Some(2);
    cases.push(s);
    let mut s = base.clone();
    s.settings.balance = Balance::LeastConn;
    cases.push(s);
    let mut s = base.clone();
    s.settings.proxy_protocol = true;
    cases.push(s);
    for s in cases {
        let why = per_service_reason(&s).expect("a reason");
        let err = service_entries(&s, &host(), &[ip("127.1.1.5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(why) && err.contains("blog/frontend"), "{err}");
    }
}

#[test]
fn ipv4_compatible_addresses_are_refused() {
    let s = svc("blog/frontend", &[(Protocol::Tcp, 80, 30080)]);
    assert!(service_entries(&s, &host(), &[ip("::127.1.1.5")]).is_err());
    assert!(service_entries(&s, &host(), &[ip("::1")]).is_ok());
    assert!(service_entries(&s, &host(), &[ip("::ffff:127.1.1.5")]).is_ok());
}

#[test]
fn listeners_are_read_back_from_per_service_snippets() {
    let s = svc(
        "blog/frontend",
        &[(Protocol::Tcp, 80, 30080), (Protocol::Udp, 53, 30053)],
    );
    let n = nodes(2);
    let chosen: Vec<&Node> = n.iter().collect();
    let ips = [ip("127.1.1.5"), ip("::1")];
    let text = crate::render::service_to_nodes(crate::config::Flavor::Nginx, &s, &host(), &ips, &chosen).unwrap();
    assert_eq!(listeners_in(&text), listeners_of(&s, &ips));
    assert!(listeners_in("# nothing\nlisten nonsense;\nTCP/x:1 y;\n").is_empty());
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    let path = crate::repo_paths::lb_host_file_path(&host(), name);
    files
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no {path}"))
}

#[test]
fn host_files_listen_on_each_port_once_and_split_evenly() {
    let listeners: BTreeSet<Listener> = [
        (Protocol::Tcp, 443, false),
        (Protocol::Tcp, 80, false),
        (Protocol::Tcp, 80, true),
        (Protocol::Udp, 53, false),
    ]
    .into_iter()
    .map(|(protocol, port, ipv6)| Listener { protocol, port, ipv6 })
    .collect();
    let n = nodes(3);
    let refs: Vec<&Node> = n.iter().rev().collect();
    let files = host_files(&host(), &listeners, &refs).unwrap();
    assert_eq!(files.len(), 2);
    let listen = file(&files, LISTENERS_FILE);
    assert!(
        listen.contains(
            "server {\n    listen 80;\n    listen [::]:80;\n    listen 443;\n    proxy_pass $flipbit_upstream;"
        ),
        "{listen}"
    );
    assert!(listen.contains("    listen 53 udp;\n"), "{listen}");
    assert!(listen.contains(&format!("include {SERVICE_MAPS_TOKEN};")), "{listen}");
    let node_text = file(&files, NODES_FILE);
    assert!(
        node_text.contains(
            "split_clients \"$remote_addr$remote_port\" $flipbit_node_rr {\n    33.34% 127.0.0.10;\n    33.33% 127.0.0.11;\n    * 127.0.0.12;\n}"
        ),
        "{node_text}"
    );
    // Deterministic whatever the order of the input.
    let again = host_files(&host(), &listeners, &n.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(files, again);
}

#[test]
fn without_nodes_nothing_listens_but_the_variables_exist() {
    let listeners = BTreeSet::from([Listener {
        protocol: Protocol::Tcp,
        port: 80,
        ipv6: false,
    }]);
    let files = host_files(&host(), &listeners, &[]).unwrap();
    assert!(!file(&files, LISTENERS_FILE).contains("listen "));
    let node_text = file(&files, NODES_FILE);
    assert!(
        node_text.contains("map $protocol $flipbit_node_rr {") && node_text.contains("$flipbit_node_hash"),
        "{node_text}"
    );
}

#[test]
fn hash_slots_move_only_with_the_node_that_went() {
    let all = nodes(10);
    let refs: Vec<&Node> = all.iter().collect();
    let before = ring_owners(&refs);
    let fewer: Vec<&Node> = refs.iter().copied().filter(|n| &*n.name != "node-3").collect();
    let after = ring_owners(&fewer);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if &*refs[*b].name == "node-3" {
            moved += 1;
        } else {
            assert_eq!(refs[*b].name, fewer[*a].name, "a slot moved between two staying nodes");
        }
    }
    // About a tenth of the slots, each node's share within a third of even.
    assert!((700..1300).contains(&moved), "{moved}");
    let mut per_node: BTreeMap<usize, usize> = BTreeMap::new();
    for owner in &before {
        *per_node.entry(*owner).or_default() += 1;
    }
    assert!(per_node.values().all(|c| (700..1300).contains(c)), "{per_node:?}");
    // A few nodes give a few hundred lines, not one per 0.01%.
    let three: Vec<&Node> = refs[..3].to_vec();
    let files = host_files(&host(), &BTreeSet::new(), &three).unwrap();
    let lines = file(&files, NODES_FILE).lines().count();
    assert!(lines < 3 * 160 + 30, "{lines} lines");
}

#[test]
fn percentages_are_written_as_nginx_reads_them() {
    assert_eq!(percent(20), "0.2%");
    assert_eq!(percent(3333), "33.33%");
    assert_eq!(percent(100), "1%");
    assert_eq!(percent(1000), "10%");
    assert_eq!(percent(1), "0.01%");
}

#[test]
fn too_many_nodes_for_the_shares_is_an_error() {
    let many: Vec<Node> = (0..10_001)
        .map(|i| Node {
            name: format!("n{i}").into(),
            ip: IpAddr::from([10, (i / 65536) as u8, (i / 256 % 256) as u8, (i % 256) as u8]),
        })
        .collect();
    let refs: Vec<&Node> = many.iter().collect();
    assert!(host_files(&host(), &BTreeSet::new(), &refs).is_err());
}

#[test]
fn binding_a_release_names_its_own_maps() {
    let text = format!("map x $y {{\n    include {SERVICE_MAPS_TOKEN};\n}}\n");
    let bound = bind_release(&text, Path::new("/var/lib/flipbit/releases/abc")).unwrap();
    assert_eq!(
        bound,
        "map x $y {\n    include \"/var/lib/flipbit/releases/abc/*/*.map\";\n}\n"
    );
    assert_eq!(bind_release("no token\n", Path::new("relative")).unwrap(), "no token\n");
    for bad in ["relative/dir", "/a\"b", "/a*b", "/a;b", "/a\nb", "/a$b"] {
        assert!(bind_release(&text, Path::new(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn listeners_can_be_dropped_and_a_server_block_left_empty_goes() {
    let ns = nodes(2);
    let refs: Vec<&Node> = ns.iter().collect();
    let l = |protocol, port, ipv6| Listener { protocol, port, ipv6 };
    let all: BTreeSet<Listener> = [
        l(Protocol::Tcp, 80, false),
        l(Protocol::Tcp, 80, true),
        l(Protocol::Tcp, 22, false),
        l(Protocol::Udp, 53, false),
    ]
    .into();
    let files = host_files(&host(), &all, &refs).unwrap();
    let text = &files[0].1;
    // Dropping the UDP port removes its whole block; dropping TCP/22 keeps the other TCP ports.
    let drop: BTreeSet<Listener> = [l(Protocol::Udp, 53, false), l(Protocol::Tcp, 22, false)].into();
    let fewer: BTreeSet<Listener> = all.difference(&drop).copied().collect();
    let want = &host_files(&host(), &fewer, &refs).unwrap()[0].1;
    assert_eq!(&without_listeners(text, &drop), want);
    assert_eq!(without_listeners(text, &BTreeSet::new()), *text);
    let none = without_listeners(text, &all);
    assert!(
        !none.lines().any(|l| l.starts_with("    listen ") || l == "server {"),
        "{none}"
    );
}
