//! `--manage-addresses` on a flat L2 segment (docs/design.md §5.7), inside network namespaces
//! each test creates (`tests/src/netns.rs`): an LB host running real nginx and the applier, a
//! client on the same segment, the Service's backend on the LB host's loopback. The segment and
//! its pool (198.51.100.0/24, 2001:db8:1::/64, documentation ranges) exist only inside them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flipbit_applier::addresses::netlink::FLIPBIT_PROTO;
use flipbit_tests::bind::NamedInstance;
use flipbit_tests::cluster::{ManifestDir, generator, text};
use flipbit_tests::netns::{DEV, Segment};
use flipbit_tests::nginx::NginxInstance;
use flipbit_tests::{repo, tool};

const POOL_V4: &str = "198.51.100.16/28";
const POOL_V6: &str = "2001:db8:1::100/120";
const ZONE: &str = "k8s.example.test";
const DNS_PORT: u16 = 5353;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An LB host (lb-a) on the segment with its nginx, the Service backend on its loopback, a
/// state repo and a cluster of one node, optionally a `named` inside the LB namespace.
/// Fields drop in order: the processes first, the namespaces last.
struct Lab {
    nginx: NginxInstance,
    named: Option<NamedInstance>,
    _backend: EchoBackend,
    cluster: ManifestDir,
    repo: PathBuf,
    _tmp: tempfile::TempDir,
    seg: Segment,
}

impl Lab {
    /// `block` picks the node address 127.<block>.0.10 (on the LB host's loopback).
    fn start(tag: &str, block: u8, pools: &[&str], dns: bool, lb_addresses: &[&str], client: &[&str]) -> Option<Self> {
        let seg = Segment::create(tag, lb_addresses, client)?;
        flipbit_tests::require(&[tool::NGINX])?;
        if dns {
            flipbit_tests::require(&[tool::BIND])?;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let pool_list = pools.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "zone: {ZONE}\nlbHosts:\n  - name: lb-a\n    pools: [{pool_list}]\n  - name: lb-b\n    pools: [\"192.0.2.16/28\"]\n"
        );
        let repo = repo::create(
            &tmp.path().join("state.git"),
            &BTreeMap::from([("flipbit.yaml", config)]),
        )
        .expect("state repo");
        let cluster = ManifestDir::new(&tmp.path().join("cluster"));
        cluster.node(1, block, true);
        let node: SocketAddr = format!("127.{block}.0.10:30080").parse().unwrap();
        let backend = seg.in_lb(|| EchoBackend::start(node));
        let nginx = seg.in_lb(|| NginxInstance::start(&tmp.path().join("lb-a")).expect("nginx"));
        let named =
            dns.then(|| seg.in_lb(|| NamedInstance::start(&tmp.path().join("named"), DNS_PORT, ZONE).expect("named")));
        Some(Self {
            nginx,
            named,
            _backend: backend,
            cluster,
            repo,
            _tmp: tmp,
            seg,
        })
    }

    fn render(&self) {
        let out = generator("render", &self.repo, self.cluster.path(), &[]);
        assert!(out.status.success(), "render: {}", text(&out));
    }

    /// `flipbit-applier apply --manage-addresses <interface>` inside the LB namespace.
    fn apply_on(&self, interface: &str, env: &[(&str, &str)]) -> Output {
        let mut args = self.nginx.applier_args(&self.repo, "lb-a");
        args.extend(["--manage-addresses".into(), interface.into()]);
        if let Some(named) = &self.named {
            args.extend([
                "--dns-server".into(),
                named.addr().to_string(),
                "--tsig-key".into(),
                named.key_file.display().to_string(),
                "--dns-timeout".into(),
                "2".into(),
            ]);
        }
        self.seg.in_lb(|| flipbit_tests::cluster::applier_with_env(&args, env))
    }

    fn apply_ok(&self) -> String {
        let out = self.apply_on(DEV, &[]);
        assert!(out.status.success(), "apply: {}", text(&out));
        text(&out)
    }

    /// Applies until `done` holds (a removal waits for the previous nginx generation to let go
    /// of the address), for up to 10 s; the last run's output.
    fn apply_until(&self, what: &str, done: impl Fn() -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.apply_ok();
            if done() {
                return out;
            }
            assert!(Instant::now() < deadline, "after 10 s of applies: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address Service `web/<name>` holds on lb-a in the family of `v6`.
    fn address(&self, name: &str, v6: bool) -> IpAddr {
        let ledger = flipbit_core::ledger::Ledger::parse(&repo::read(&self.repo, "ledger.yaml").expect("ledger"))
            .expect("ledger parses");
        let key: flipbit_core::names::ServiceKey = format!("web/{name}").parse().unwrap();
        let service = ledger
            .services
            .get(&key)
            .unwrap_or_else(|| panic!("{key} has no address"));
        let lb: flipbit_core::names::LbHostName = "lb-a".parse().unwrap();
        let mut all = service.addresses.get(&lb).into_iter().copied().collect::<Vec<_>>();
        all.extend(service.addresses_v6.get(&lb).copied());
        all.into_iter()
            .find(|a| a.is_ipv6() == v6)
            .unwrap_or_else(|| panic!("{key} has no {} address", if v6 { "IPv6" } else { "IPv4" }))
    }

    /// `Some(true)` when `ip` is on the LB host's `seg` marked as the applier's, `Some(false)`
    /// when it is there unmarked, `None` when it is not there.
    fn marked(&self, ip: IpAddr) -> Option<bool> {
        self.seg
            .lb_addresses()
            .iter()
            .find(|p| p.ip == ip)
            .map(|p| p.proto == FLIPBIT_PROTO)
    }

    fn dns(&self, name: &str, rtype: &str) -> Vec<String> {
        let named = self.named.as_ref().expect("started with DNS");
        self.seg.in_lb(|| named.query(&format!("{name}.web.{ZONE}"), rtype))
    }

    /// A connection from the client to `addr` that read the backend's greeting.
    fn connect(&self, addr: SocketAddr) -> Result<Client, String> {
        self.seg.in_client(|| Client::connect(addr))
    }
}

fn service(lab: &Lab, name: &str, dual: bool) {
    let families = if dual { "  ipFamilies: [IPv4, IPv6]\n" } else { "" };
    lab.cluster.put(
        &format!("svc-{name}.yaml"),
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: web}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: flipbit.io/nginx\n{families}  ports:\n    - {{protocol: TCP, port: 80, nodePort: 30080}}\n"
        ),
    );
}

#[test]
fn a_service_address_is_added_announced_served_held_while_used_and_removed() {
    let Some(lab) = Lab::start(
        "serve",
        61,
        &[POOL_V4],
        false,
        &["198.51.100.1/24"],
        &["198.51.100.2/24"],
    ) else {
        return;
    };
    // The client takes unsolicited ARP into its table (as many routers do), so the entry seen
    // before any traffic can only come from the applier's announcement.
    lab.seg.sysctl(&lab.seg.client, "net/ipv4/conf/seg/arp_accept", "1");
    service(&lab, "shop", false);
    lab.render();
    let addr = lab.address("shop", false);
    assert_eq!(lab.seg.client_neighbour(addr), None);
    let out = lab.apply_ok();
    assert!(
        out.contains(&format!("addresses on {DEV}: added {addr}\n")),
        "the run reports the address it added: {out}"
    );

    assert_eq!(lab.marked(addr), Some(true), "{addr} on the LB host's seg, marked");
    let no_route = lab.seg.ip(&lab.seg.lb, &["route", "show", "table", "main"]);
    assert!(!no_route.contains(&addr.to_string()), "no route for {addr}: {no_route}");
    assert_eq!(
        lab.seg.client_neighbour(addr),
        Some(lab.seg.lb_mac()),
        "the gratuitous ARP put {addr} in the client's neighbour table before any traffic"
    );
    let mut held = lab
        .connect(SocketAddr::new(addr, 80))
        .expect("the client reaches the Service");
    assert_eq!(held.echo("one"), "one");

    // The Service goes while the client's connection is open: nginx's old worker keeps serving
    // it, so the address stays until the connection ends.
    lab.cluster.remove("svc-shop.yaml");
    lab.render();
    lab.apply_ok();
    lab.apply_ok();
    assert_eq!(lab.marked(addr), Some(true), "{addr} kept while a connection uses it");
    assert_eq!(held.echo("two"), "two", "the open connection still flows");
    drop(held);
    let out = lab.apply_until(&format!("{addr} removed once its last connection closed"), || {
        lab.marked(addr).is_none()
    });
    assert!(
        out.contains(&format!("addresses on {DEV}: removed {addr}\n")),
        "the run reports the address it removed: {out}"
    );
    let refused = lab
        .seg
        .in_client(|| TcpStream::connect_timeout(&SocketAddr::new(addr, 80), Duration::from_millis(500)).is_err());
    assert!(refused, "the client can no longer connect to {addr}");
}

#[test]
fn an_operators_addresses_inside_and_outside_the_pool_are_left_alone() {
    // 198.51.100.17 (the Service's address to be) and .30 are inside the pool, 203.0.113.9 and
    // the segment's own 198.51.100.1 outside: all put there by hand, before Flipbit.
    let mine = ["198.51.100.17/32", "198.51.100.30/32", "203.0.113.9/32"];
    let mut lb = vec!["198.51.100.1/24"];
    lb.extend(mine);
    let Some(lab) = Lab::start("operator", 62, &[POOL_V4], false, &lb, &["198.51.100.2/24"]) else {
        return;
    };
    let theirs = || -> Vec<(IpAddr, Option<bool>)> {
        ["198.51.100.1", "198.51.100.17", "198.51.100.30", "203.0.113.9"]
            .map(|a| (ip(a), lab.marked(ip(a))))
            .to_vec()
    };
    let untouched: Vec<(IpAddr, Option<bool>)> = theirs().into_iter().map(|(a, _)| (a, Some(false))).collect();
    assert_eq!(theirs(), untouched);

    service(&lab, "shop", false);
    lab.render();
    assert_eq!(lab.address("shop", false), ip("198.51.100.17"));
    lab.apply_ok();
    assert_eq!(
        theirs(),
        untouched,
        "served on an address the operator put there: still theirs"
    );
    let mut client = lab
        .connect("198.51.100.17:80".parse().unwrap())
        .expect("served on the operator's address");
    assert_eq!(client.echo("hi"), "hi");
    drop(client);

    lab.cluster.remove("svc-shop.yaml");
    lab.render();
    lab.apply_ok();
    lab.apply_ok();
    assert_eq!(
        theirs(),
        untouched,
        "the Service is gone; the operator's addresses stay"
    );
}

#[test]
fn a_run_killed_after_the_reload_or_after_the_addresses_converges_and_dns_follows_the_address() {
    let Some(lab) = Lab::start(
        "crash",
        63,
        &[POOL_V4],
        true,
        &["198.51.100.1/24"],
        &["198.51.100.2/24"],
    ) else {
        return;
    };
    // Killed right after the reload was confirmed: no address, no record.
    service(&lab, "one", false);
    lab.render();
    let one = lab.address("one", false);
    let killed = lab.apply_on(DEV, &[("FLIPBIT_APPLIER_KILL_AT", "reloaded")]);
    assert!(!killed.status.success(), "killed at reloaded: {}", text(&killed));
    assert_eq!(lab.marked(one), None);
    assert!(lab.dns("one", "A").is_empty());
    lab.apply_ok();
    assert_eq!(lab.marked(one), Some(true));
    assert_eq!(lab.dns("one", "A"), [one.to_string()]);

    // Killed between the addresses and DNS: the address is there, DNS has not named it yet,
    // and the next run publishes it.
    service(&lab, "two", false);
    lab.render();
    let two = lab.address("two", false);
    let killed = lab.apply_on(DEV, &[("FLIPBIT_APPLIER_KILL_AT", "addresses-added")]);
    assert!(!killed.status.success(), "killed at addresses-added: {}", text(&killed));
    assert_eq!(lab.marked(two), Some(true));
    assert!(lab.dns("two", "A").is_empty());
    lab.apply_ok();
    assert_eq!(lab.marked(two), Some(true));
    assert_eq!(lab.dns("two", "A"), [two.to_string()]);
    let mut client = lab.connect(SocketAddr::new(two, 80)).expect("the client reaches two");
    assert_eq!(client.echo("x"), "x");
}

#[test]
fn ipv6_addresses_are_announced_with_an_unsolicited_neighbour_advertisement() {
    let Some(lab) = Lab::start(
        "v6",
        64,
        &[POOL_V4, POOL_V6],
        false,
        &["198.51.100.1/24", "2001:db8:1::1/64"],
        &["198.51.100.2/24", "2001:db8:1::2/64"],
    ) else {
        return;
    };
    service(&lab, "dual", true);
    lab.render();
    let (v4, v6) = (lab.address("dual", false), lab.address("dual", true));
    // The client believes both addresses are elsewhere: only an announcement with the override
    // flag corrects that before its entries time out.
    for addr in [v4, v6] {
        lab.seg.ip(
            &lab.seg.client,
            &[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                DEV,
                "nud",
                "stale",
            ],
        );
    }
    lab.apply_ok();
    assert_eq!(lab.marked(v6), Some(true));
    let lb_mac = lab.seg.lb_mac();
    assert_eq!(
        lab.seg.client_neighbour(v6),
        Some(lb_mac.clone()),
        "the advertisement overrode {v6}"
    );
    assert_eq!(
        lab.seg.client_neighbour(v4),
        Some(lb_mac),
        "the gratuitous ARP overrode {v4}"
    );
    for addr in [v4, v6] {
        let mut client = lab
            .connect(SocketAddr::new(addr, 80))
            .unwrap_or_else(|e| panic!("the client reaches {addr}: {e}"));
        assert_eq!(client.echo("six"), "six");
    }
}

#[test]
fn a_misconfigured_interface_fails_the_run_naming_it_and_dns_names_nothing() {
    let Some(lab) = Lab::start("fail", 65, &[POOL_V4], true, &["198.51.100.1/24"], &["198.51.100.2/24"]) else {
        return;
    };
    service(&lab, "shop", false);
    lab.render();
    let addr = lab.address("shop", false);
    let fails = |interface: &str, says: &str| {
        let out = lab.apply_on(interface, &[]);
        let text = text(&out);
        assert!(!out.status.success(), "{says}: {text}");
        assert!(text.contains(says), "expected {says:?} in: {text}");
        assert!(lab.dns("shop", "A").is_empty(), "DNS names nothing after: {text}");
        assert_eq!(lab.marked(addr), None);
    };
    fails("nosuch0", "--manage-addresses nosuch0: no such interface on this host");
    lab.seg.ip(&lab.seg.lb, &["link", "set", DEV, "down"]);
    fails(DEV, "--manage-addresses seg: the interface is down");
    lab.seg.ip(&lab.seg.lb, &["link", "set", DEV, "up"]);
    lab.seg.ip(&lab.seg.client, &["link", "set", DEV, "down"]);
    fails(DEV, "--manage-addresses seg: the interface has no carrier");
    lab.seg.ip(&lab.seg.client, &["link", "set", DEV, "up"]);
    lab.seg.sysctl(&lab.seg.lb, "net/ipv4/ip_nonlocal_bind", "0");
    fails(DEV, "net.ipv4.ip_nonlocal_bind is 0");
    lab.seg.sysctl(&lab.seg.lb, "net/ipv4/ip_nonlocal_bind", "1");
    // Fixed: the next run serves it, then names it.
    lab.apply_ok();
    assert_eq!(lab.marked(addr), Some(true));
    assert_eq!(lab.dns("shop", "A"), [addr.to_string()]);
}

/// A node's stand-in that holds connections: greets each with `hello`, then echoes every line
/// until the peer closes, so a test can keep a connection open through nginx across a reload.
struct EchoBackend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoBackend {
    fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("backend {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || echo(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo(conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else { return };
    if out.write_all(b"hello\n").is_err() {
        return;
    }
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The client's end of a connection through the Service.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Result<Self, String> {
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let writer = conn.try_clone().map_err(|e| e.to_string())?;
        let mut client = Self {
            reader: BufReader::new(conn),
            writer,
        };
        let greeting = client.line().map_err(|e| format!("{addr}: {e}"))?;
        if greeting != "hello" {
            return Err(format!("{addr}: greeted with {greeting:?}"));
        }
        Ok(client)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("closed".into()),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn echo(&mut self, word: &str) -> String {
        writeln!(self.writer, "{word}").expect("write");
        self.line().unwrap_or_else(|e| panic!("echo {word}: {e}"))
    }
}
