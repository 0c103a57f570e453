//! The grammar against the real renderers: random Services (1–4 TCP/UDP ports, every balance
//! mode, PROXY protocol on or off, names up to 63 characters), addresses in random IPv4 and IPv6
//! pools (dual-stack too) and random node sets (duplicate addresses, both families, none) are
//! and random format-2 settings (client ranges, timeouts, UDP answers) are
//! rendered into every kind of file under `lb/<host>/`, and each must pass `grammar::check` (at the
//! newest format and at the one the generator records for the Service) and
//! give back exactly the sockets, map keys and upstream servers that were rendered. A file with one line inserted
//! (`access_log`, `include`) or one bound address moved outside the pools must be refused, and
//! no input makes `check` panic. A Service's zone fragment reads back (`dns::fragment`) as exactly
//! the records rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use flipbit_core::config::{Config, Flavor, Layout, LbHost};
use flipbit_core::dns::{AddressRecord, fragment};
use flipbit_core::exposure::{ExposedService, Exposure, Protocol, classify};
use flipbit_core::grammar::{Bind, BindAddr, Checked, LbFile, OUTPUT_FORMAT, check};
use flipbit_core::model::{PortInput, ServiceInput};
use flipbit_core::names::LbHostName;
use flipbit_core::nodes::Node;
use flipbit_core::render::map::{Listener, host_files, listeners_of, per_service_reason, service_entries};
use flipbit_core::render::service_to_nodes;
use flipbit_core::repo_paths;
use proptest::prelude::*;

/// Addresses no generated pool holds (pools are inside 10.0.0.0/8 and fd00::/16).
const OUTSIDE_V4: &str = "192.0.2.1";
const OUTSIDE_V6: &str = "2001:db8::1";

#[derive(Debug, Clone)]
struct Case {
    namespace: String,
    name: String,
    ports: Vec<(bool, u16, u16)>,
    balance: &'static str,
    proxy_protocol: bool,
    local: bool,
    v4: Option<(u32, u8, u32)>,
    v6: Option<(u64, u8, u64)>,
    nodes: Vec<IpAddr>,
    /// Ports of other Services on the host, for the shared listeners.
    others: Vec<Vec<(bool, u16, u16)>>,
    /// Output format 2's settings: client ranges, idle and connect timeouts, UDP answers.
    tuning: Tuning,
}

#[derive(Debug, Clone)]
struct Tuning {
    ranges: Vec<String>,
    idle: Option<u32>,
    connect: Option<u32>,
    responses: Option<u32>,
}

fn tuning() -> impl Strategy<Value = Tuning> {
    let range = prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| format!("{}/{p}", Ipv4Addr::from(a))),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| format!("{}/{p}", Ipv6Addr::from(a))),
    ];
    (
        prop::collection::vec(range, 0..=3),
        prop::option::of(1u32..=86_400),
        prop::option::of(1u32..=600),
        prop::option::of(1u32..=1_000),
    )
        .prop_map(|(ranges, idle, connect, responses)| Tuning {
            ranges,
            idle,
            connect,
            responses,
        })
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        1 => "[a-z0-9][a-z0-9-]{61}[a-z0-9]",
    ]
}

fn ports() -> impl Strategy<Value = Vec<(bool, u16, u16)>> {
    prop::collection::vec((any::<bool>(), 1u16.., 1u16..), 1..=4)
}

fn node_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..3).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 250, 0, i))),
        (0u16..3).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0xee, 0, 0, 0, 0, 0, i))),
        any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
        any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let families = prop_oneof![Just((true, false)), Just((false, true)), Just((true, true))];
    (
        (
            label(),
            label(),
            ports(),
            prop_oneof![Just("round-robin"), Just("least-conn"), Just("hash")],
        ),
        (any::<bool>(), any::<bool>(), families),
        (
            (any::<u32>(), 17u8..=30, any::<u32>()),
            (any::<u64>(), 113u8..=126, any::<u64>()),
        ),
        prop::collection::vec(node_ip(), 0..=6),
        prop::collection::vec(ports(), 0..3),
        tuning(),
    )
        .prop_map(
            |((namespace, name, ports, balance), (proxy_protocol, local, fam), (v4, v6), nodes, others, tuning)| Case {
                namespace,
                name,
                ports,
                balance,
                proxy_protocol,
                local,
                v4: fam.0.then_some(v4),
                v6: fam.1.then_some(v6),
                nodes,
                others,
                tuning,
            },
        )
}

/// A pool's text and one address inside it (never its first or last).
fn v4_pool((raw, prefix, offset): (u32, u8, u32)) -> (String, IpAddr) {
    let net = (0x0a00_0000 | (raw & 0x00ff_ffff)) & (u32::MAX << (32 - prefix));
    let addr = net + 1 + offset % ((1u32 << (32 - prefix)) - 2);
    (format!("{}/{prefix}", Ipv4Addr::from(net)), IpAddr::V4(addr.into()))
}

fn v6_pool((raw, prefix, offset): (u64, u8, u64)) -> (String, IpAddr) {
    let net = ((0xfd00u128 << 112) | (u128::from(raw) << 16)) & (u128::MAX << (128 - prefix));
    let addr = net + 1 + u128::from(offset) % ((1u128 << (128 - prefix)) - 2);
    (format!("\"{}/{prefix}\"", Ipv6Addr::from(net)), IpAddr::V6(addr.into()))
}

/// Everything a case renders from: the host in each flavor and layout, the Service, its addresses.
struct World {
    per_service: LbHost,
    shared: LbHost,
    haproxy: LbHost,
    svc: ExposedService,
    others: Vec<ExposedService>,
    ips: Vec<IpAddr>,
    nodes: Vec<Node>,
}

fn service(case: &Case, name: &str, ports: &[(bool, u16, u16)], config: &Config) -> ExposedService {
    let mut annotations = BTreeMap::from([("flipbit.io/balance".to_owned(), case.balance.to_owned())]);
    annotations.insert("flipbit.io/proxy-protocol".into(), case.proxy_protocol.to_string());
    let t = &case.tuning;
    if !t.ranges.is_empty() {
        annotations.insert(
            "service.beta.kubernetes.io/load-balancer-source-ranges".into(),
            t.ranges.join(","),
        );
    }
    for (name, value) in [
        ("flipbit.io/idle-timeout", t.idle.map(|s| format!("{s}s"))),
        ("flipbit.io/connect-timeout", t.connect.map(|s| s.to_string())),
        ("flipbit.io/udp-responses", t.responses.map(|n| n.to_string())),
    ] {
        if let Some(value) = value {
            annotations.insert(name.into(), value);
        }
    }
    let mut seen = BTreeSet::new();
    let input = ServiceInput {
        namespace: case.namespace.clone(),
        name: name.to_owned(),
        service_type: "LoadBalancer".into(),
        load_balancer_class: Some("flipbit.io/nginx".into()),
        annotations,
        ports: ports
            .iter()
            .filter(|(udp, port, _)| seen.insert((*udp, *port)))
            .map(|(udp, port, node_port)| PortInput {
                name: None,
                protocol: Some(if *udp { "UDP" } else { "TCP" }.into()),
                port: i32::from(*port),
                node_port: Some(i32::from(*node_port)),
            })
            .collect(),
        external_traffic_policy: case.local.then(|| "Local".to_owned()),
        ..ServiceInput::default()
    };
    match classify(&input, config) {
        Exposure::Exposed(svc, _) => *svc,
        other => panic!("not exposed: {other:?}"),
    }
}

fn world(case: &Case) -> World {
    let pools: Vec<(String, IpAddr)> = case.v4.map(v4_pool).into_iter().chain(case.v6.map(v6_pool)).collect();
    let text = pools.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ");
    let config = Config::parse(&format!(
        "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools: [{text}]\n"
    ))
    .expect("config");
    let per_service = config.lb_hosts[0].clone();
    let mut shared = per_service.clone();
    shared.layout = Layout::SharedListeners;
    let mut haproxy = per_service.clone();
    haproxy.flavor = Flavor::Haproxy;
    let others = (case.others.iter().enumerate())
        .map(|(i, ports)| service(case, &format!("other-{i}"), ports, &config))
        .collect();
    let nodes = (case.nodes.iter().enumerate())
        .map(|(i, ip)| Node {
            name: format!("node-{i}").into(),
            ip: *ip,
        })
        .collect();
    World {
        svc: service(case, &case.name, &case.ports, &config),
        others,
        ips: pools.iter().map(|(_, ip)| *ip).collect(),
        per_service,
        shared,
        haproxy,
        nodes,
    }
}

/// A rendered file: its repo path, text, the host it is for and what a check must return.
struct Rendered {
    path: String,
    text: String,
    host: LbHost,
    want: Checked,
}

fn binds(ports: impl Iterator<Item = (Protocol, u16)>, ips: &[IpAddr]) -> Vec<Bind> {
    ports
        .flat_map(|(protocol, port)| {
            ips.iter().map(move |ip| Bind {
                protocol,
                addr: BindAddr::Ip(*ip),
                port,
            })
        })
        .collect()
}

/// Every file the renderers write for the case, with what its check must return.
fn rendered(w: &World) -> Vec<Rendered> {
    let lb1: LbHostName = "lb-1".parse().expect("host");
    let refs: Vec<&Node> = w.nodes.iter().collect();
    let serving = !refs.is_empty();
    let ports = || w.svc.ports.iter().filter(|_| serving).map(|p| (p.protocol, p.port));
    // Every node at each port's node port (HAProxy carries TCP ports only).
    let upstreams = |tcp_only: bool| -> BTreeSet<SocketAddr> {
        (w.svc.ports.iter())
            .filter(|p| !tcp_only || p.protocol == Protocol::Tcp)
            .flat_map(|p| refs.iter().map(move |n| SocketAddr::new(n.ip, p.node_port)))
            .collect()
    };
    let nginx = service_to_nodes(Flavor::Nginx, &w.svc, &lb1, &w.ips, &refs).expect("nginx");
    let conf = repo_paths::lb_service_path(&lb1, &w.svc.key);
    let mut out = vec![
        Rendered {
            path: conf.clone(),
            text: nginx.clone(),
            host: w.per_service.clone(),
            want: Checked {
                binds: binds(ports(), &w.ips),
                routes: Vec::new(),
                upstreams: upstreams(false),
            },
        },
        Rendered {
            path: conf,
            text: nginx,
            host: w.shared.clone(),
            want: Checked {
                binds: binds(ports(), &w.ips),
                routes: Vec::new(),
                upstreams: upstreams(false),
            },
        },
        Rendered {
            path: repo_paths::lb_service_cfg_path(&lb1, &w.svc.key),
            text: service_to_nodes(Flavor::Haproxy, &w.svc, &lb1, &w.ips, &refs).expect("haproxy"),
            host: w.haproxy.clone(),
            want: Checked {
                binds: binds(ports().filter(|(p, _)| *p == Protocol::Tcp), &w.ips),
                routes: Vec::new(),
                upstreams: upstreams(true),
            },
        },
    ];
    if per_service_reason(&w.svc).is_none() {
        let mut sorted = w.ips.clone();
        sorted.sort();
        let routes = (w.svc.ports.iter())
            .flat_map(|p| sorted.iter().map(move |ip| (p.protocol, SocketAddr::new(*ip, p.port))))
            .collect();
        out.push(Rendered {
            path: repo_paths::lb_service_map_path(&lb1, &w.svc.key),
            text: service_entries(&w.svc, &lb1, &w.ips).expect("map"),
            host: w.shared.clone(),
            want: Checked {
                binds: Vec::new(),
                routes,
                upstreams: BTreeSet::new(),
            },
        });
    }
    let listeners: BTreeSet<Listener> = std::iter::once(&w.svc)
        .chain(&w.others)
        .flat_map(|s| listeners_of(s, &w.ips))
        .collect();
    let wildcards = (listeners.iter().filter(|_| serving))
        .map(|l| Bind {
            protocol: l.protocol,
            addr: if l.ipv6 { BindAddr::AnyV6 } else { BindAddr::AnyV4 },
            port: l.port,
        })
        .collect();
    let mut wants = [wildcards, Vec::new()].into_iter();
    for (path, text) in host_files(&lb1, &listeners, &refs).expect("host files") {
        out.push(Rendered {
            path,
            text,
            host: w.shared.clone(),
            want: Checked {
                binds: wants.next().unwrap_or_default(),
                routes: Vec::new(),
                upstreams: BTreeSet::new(),
            },
        });
    }
    out
}

fn run(r: &Rendered, text: &str) -> Result<Checked, flipbit_core::grammar::Refusal> {
    let file = LbFile::of_path(&r.path, &r.host.name).expect("a generated path");
    check(&file, text, &r.host, OUTPUT_FORMAT)
}

/// `text` with one bound address (a `listen`, `bind` or map key) moved outside the pools, if it
/// binds any; `pick` chooses which.
fn moved_outside(text: &str, ips: &[IpAddr], pick: usize) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut candidates = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        for ip in ips {
            let (out, (from, to)) = match ip {
                IpAddr::V4(_) => (OUTSIDE_V4, (format!(" {ip}:"), format!(" {OUTSIDE_V4}:"))),
                IpAddr::V6(_) => (OUTSIDE_V6, (format!(" [{ip}]:"), format!(" [{OUTSIDE_V6}]:"))),
            };
            let bound = line.starts_with("    listen ") || line.starts_with("    bind ");
            if bound && line.contains(&from) {
                candidates.push((i, line.replacen(&from, &to, 1)));
            } else if (line.starts_with("TCP/") || line.starts_with("UDP/")) && line.contains(&format!("/{ip}:")) {
                candidates.push((i, line.replacen(&format!("/{ip}:"), &format!("/{out}:"), 1)));
            }
        }
    }
    let (i, line) = candidates.get(pick % candidates.len().max(1))?.clone();
    lines[i] = line;
    Some(lines.join("\n") + "\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn whatever_the_renderers_write_is_accepted_and_read_back(case in case()) {
        let w = world(&case);
        // The format the generator records for this Service: an applier that reads only that
        // format must accept the files too (format 1 files stay readable by older appliers).
        let needed = flipbit_core::format::needed(&w.svc);
        for r in rendered(&w) {
            let got = run(&r, &r.text).map_err(|e| TestCaseError::fail(format!("{} refused, {e}:\n{}", r.path, r.text)))?;
            prop_assert_eq!(&got, &r.want, "{}:\n{}", r.path, r.text);
            let file = LbFile::of_path(&r.path, &r.host.name).expect("a generated path");
            let at_needed = check(&file, &r.text, &r.host, needed)
                .map_err(|e| TestCaseError::fail(format!("{} refused at format {needed}, {e}:\n{}", r.path, r.text)))?;
            prop_assert_eq!(&at_needed, &r.want);
        }
    }

    #[test]
    fn a_zone_fragment_reads_back_as_the_records_rendered(case in case(), ttl in 1u32..=86_400, extra in 0usize..3) {
        let w = world(&case);
        let zone = "k.test";
        // The default name and up to two custom ones, all inside the zone.
        let mut names: BTreeSet<String> = BTreeSet::from([format!("{}.{}.{zone}", case.name, case.namespace)]);
        names.extend((0..extra).map(|i| format!("n{i}.{}.{zone}", case.namespace)));
        let text = flipbit_core::render::zone::fragment(&w.svc, zone, &names, ttl, &w.ips)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: BTreeSet<AddressRecord> = fragment::parse(zone, &text)
            .map_err(|e| TestCaseError::fail(format!("refused, {e}:\n{text}")))?
            .into_iter()
            .collect();
        let want: BTreeSet<AddressRecord> = names
            .iter()
            .flat_map(|name| w.ips.iter().map(move |addr| AddressRecord { name: name.clone(), ttl, addr: *addr }))
            .collect();
        prop_assert_eq!(got, want, "{}", text);
        // Another zone's reader refuses it: every name is outside.
        prop_assert!(fragment::parse("other.test", &text).is_err() || w.ips.is_empty());
    }

    #[test]
    fn one_foreign_line_or_address_is_refused(case in case(), at in any::<usize>(), what in 0usize..3) {
        let w = world(&case);
        for r in rendered(&w) {
            let lines: Vec<&str> = r.text.lines().collect();
            let at = at % (lines.len() + 1);
            let mutated = match what {
                0 | 1 => {
                    let foreign = if what == 0 { "    access_log /tmp/x;" } else { "include /etc/passwd;" };
                    let mut lines = lines.clone();
                    lines.insert(at, foreign);
                    lines.join("\n") + "\n"
                }
                _ => match moved_outside(&r.text, &w.ips, at) {
                    Some(text) => text,
                    None => continue,
                },
            };
            prop_assert!(run(&r, &mutated).is_err(), "accepted {}:\n{}", r.path, mutated);
        }
    }

    #[test]
    fn no_text_makes_check_panic(text in "(\\PC|\n|\r| {4}|;|\\{|\\}|listen |server |TCP/|upstream |frontend |backend )*", kind in 0usize..5) {
        let w = world(&Case {
            namespace: "ns".into(), name: "svc".into(), ports: vec![(false, 80, 30080)], balance: "hash",
            proxy_protocol: false, local: false, v4: Some((0, 24, 5)), v6: None, nodes: Vec::new(), others: Vec::new(),
            tuning: Tuning { ranges: Vec::new(), idle: None, connect: None, responses: None },
        });
        let paths = ["lb/lb-1/ns/svc.conf", "lb/lb-1/ns/svc.map", "lb/lb-1/ns/svc.cfg", "lb/lb-1/_flipbit/listeners.conf", "lb/lb-1/_flipbit/nodes.conf"];
        let lb1 = w.per_service.name.clone();
        let file = LbFile::of_path(paths[kind], &lb1).expect("path");
        for host in [&w.per_service, &w.shared, &w.haproxy] {
            if let Err(e) = check(&file, &text, host, OUTPUT_FORMAT) {
                prop_assert!(!e.to_string().contains(['\n', '\r']), "{e:?}");
            }
        }
    }
}

#[test]
fn the_attack_files_of_the_brief_are_refused() {
    let w = world(&Case {
        namespace: "blog".into(),
        name: "web".into(),
        ports: vec![(false, 80, 30080)],
        balance: "round-robin",
        proxy_protocol: false,
        local: false,
        v4: Some((0x0001_0100, 24, 4)),
        v6: None,
        nodes: vec!["10.250.0.1".parse().expect("ip")],
        others: Vec::new(),
        tuning: Tuning {
            ranges: Vec::new(),
            idle: None,
            connect: None,
            responses: None,
        },
    });
    let r = &rendered(&w)[0];
    assert!(run(r, &r.text).is_ok(), "{}", r.text);
    for attack in [
        "log_format leak $remote_addr;\naccess_log /var/www/html/leak.txt leak;\n",
        "include /etc/shadow;\n",
        "server {\n    listen 10.1.1.1:22;\n    proxy_pass 127.0.0.1:22;\n}\n",
    ] {
        let text = format!("{}\n{attack}", r.text);
        let refusal = run(r, &text).expect_err(attack);
        assert!(refusal.line > r.text.lines().count(), "{refusal}");
    }
}

/// The generator's golden outputs (`generator/tests/golden/*/expected/lb/`), checked against the
/// `flipbit.yaml` they were rendered for: what the fleet is known to run passes.
#[test]
fn the_golden_files_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for (golden, config) in [
        ("example", "state-repo-example/flipbit.yaml"),
        ("features", "generator/tests/golden/features/flipbit.yaml"),
        ("haproxy", "generator/tests/golden/haproxy/flipbit.yaml"),
    ] {
        let config = Config::parse(&std::fs::read_to_string(root.join(config)).expect("config")).expect("config");
        let expected = root.join("generator/tests/golden").join(golden).join("expected");
        for host in &config.lb_hosts {
            let dir = expected.join("lb").join(host.name.as_str());
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                for file in std::fs::read_dir(entry.path()).expect("namespace dir").flatten() {
                    let rel = file
                        .path()
                        .strip_prefix(&expected)
                        .expect("inside")
                        .to_string_lossy()
                        .into_owned();
                    let kind =
                        LbFile::of_path(&rel, &host.name).unwrap_or_else(|| panic!("{rel}: not a generated path"));
                    let text = std::fs::read_to_string(file.path()).expect("text");
                    if let Err(e) = check(&kind, &text, host, OUTPUT_FORMAT) {
                        panic!("{golden}/{rel}: {e}\n{text}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} golden files found");
}
