//! What a Service asks of its traffic, on each flavour and layout with real traffic: source
//! ranges (a client inside them gets through, one outside is refused, TCP and UDP), session
//! affinity (one client, one node), an idle timeout (an idle connection is closed), UDP answers
//! per session (a DNS-style exchange ends after its answer). lb-a is an nginx host in the
//! per-service layout, lb-b an nginx host in the shared-listeners layout (these Services are
//! rendered per-service there, never through the wildcard), lb-c a HAProxy host. Each Service is
//! pinned to one host with its own port: a shared-listeners host's wildcard listener would take
//! the port on every address of this one machine.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use flipbit_tests::cluster::{Port, service_yaml, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::{probe, repo};

/// A client source inside the allowed range 127.9.0.0/16, and one outside it.
const INSIDE: [u8; 4] = [127, 9, 0, 1];
const OUTSIDE: [u8; 4] = [127, 8, 0, 1];

/// Writes Service `web/<name>`, pinned to `lb`, with `spec` lines added and `annotations`.
fn put(f: &Fleet, name: &str, lb: &str, spec: &str, annotations: &[(&str, &str)], ports: &[Port]) {
    let mut all = vec![("flipbit.io/load-balancers", lb)];
    all.extend_from_slice(annotations);
    let yaml = service_yaml("web", name, "LoadBalancer", Some("flipbit.io/nginx"), &all, ports)
        .replace("spec:\n", &format!("spec:\n{spec}"));
    f.cluster.put(&format!("svc-web-{name}.yaml"), &yaml);
}

fn at(f: &Fleet, name: &str, lb: &str, port: u16) -> SocketAddr {
    let ip = f
        .address(&format!("web/{name}"), lb)
        .unwrap_or_else(|| panic!("web/{name} has no address on {lb}"));
    SocketAddr::new(ip, port)
}

fn apply_all(f: &Fleet) {
    for lb in ["lb-a", "lb-b", "lb-c"] {
        f.apply_ok(lb);
    }
}

/// The fleet with lb-b in the shared-listeners layout.
fn fleet(block: u8) -> Option<Fleet> {
    let f = Fleet::with_haproxy(block)?;
    f.set_host("lb-b", "layout: shared-listeners");
    Some(f)
}

#[test]
fn source_ranges_are_enforced_on_every_flavour_and_layout() {
    let Some(f) = fleet(176) else { return };
    let ranges = "  loadBalancerSourceRanges: [\"127.9.0.0/16\"]\n";
    let hosts = [("lb-a", 17680, true), ("lb-b", 17681, true), ("lb-c", 17682, false)];
    for (lb, port, udp) in hosts {
        let mut ports: Vec<Port> = vec![("TCP", port, 30080)];
        if udp {
            ports.push(("UDP", port, 30053));
        }
        put(&f, &format!("admin-{lb}"), lb, ranges, &[], &ports);
    }
    f.render();
    apply_all(&f);
    assert_eq!(
        repo::read(&f.repo, "format.yaml")
            .as_deref()
            .map(str::trim_end)
            .and_then(|t| t.lines().last()),
        Some("outputFormat: 2")
    );
    let (inside, outside) = (IpAddr::from(INSIDE), IpAddr::from(OUTSIDE));
    for (lb, port, udp) in hosts {
        let to = at(&f, &format!("admin-{lb}"), lb, port);
        let got = flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::tcp_from(inside, to));
        assert!(got.is_ok(), "{lb}: a client inside the range was refused: {got:?}");
        assert!(
            probe::tcp_from(outside, to).is_err(),
            "{lb}: a client outside the range got through"
        );
        if udp {
            assert!(probe::udp_from(inside, to).is_ok(), "{lb}: UDP from inside was refused");
            assert!(
                probe::udp_from(outside, to).is_err(),
                "{lb}: UDP from outside got through"
            );
        }
    }
    // On the shared-listeners host the Service is rendered per-service, never through the map.
    assert!(repo::read(&f.repo, "lb/lb-b/web/admin-lb-b.conf").is_some_and(|t| t.contains("deny all;")));
    assert!(repo::read(&f.repo, "lb/lb-b/web/admin-lb-b.map").is_none());

    // A malformed range (or one smuggling a directive) is an error naming the field; the files
    // stay as they were, so the restriction stays.
    let before = repo::read(&f.repo, "lb/lb-a/web/admin-lb-a.conf");
    for bad in ["127.8.0.0/16; allow all", "everyone"] {
        put(
            &f,
            "admin-lb-a",
            "lb-a",
            &format!("  loadBalancerSourceRanges: [\"{bad}\"]\n"),
            &[],
            &[("TCP", 17680, 30080)],
        );
        let out = flipbit_tests::cluster::generator("render", &f.repo, f.cluster.path(), &[]);
        let said = text(&out);
        assert!(
            said.contains("spec.loadBalancerSourceRanges[0]") && said.contains("web/admin-lb-a"),
            "{said}"
        );
        assert_eq!(repo::read(&f.repo, "lb/lb-a/web/admin-lb-a.conf"), before);
        f.apply_ok("lb-a");
        assert!(probe::tcp_from(outside, at(&f, "admin-lb-a", "lb-a", 17680)).is_err());
    }
}

#[test]
fn client_ip_affinity_pins_a_client_to_one_node() {
    let Some(f) = fleet(177) else { return };
    let hosts = [("lb-a", 17780), ("lb-b", 17781), ("lb-c", 17782)];
    for (lb, port) in hosts {
        put(
            &f,
            &format!("sticky-{lb}"),
            lb,
            "  sessionAffinity: ClientIP\n",
            &[],
            &[("TCP", port, 30080)],
        );
    }
    f.render();
    apply_all(&f);
    for (lb, port) in hosts {
        let to = at(&f, &format!("sticky-{lb}"), lb, port);
        let one: BTreeSet<String> = (0..8)
            .map(|_| {
                flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::tcp_from(IpAddr::from(INSIDE), to))
                    .expect("answer")
            })
            .collect();
        assert_eq!(one.len(), 1, "{lb}: one client reached several nodes: {one:?}");
        let many: BTreeSet<String> = (1..=40u8)
            .map(|i| {
                flipbit_tests::wait::wait_until(Duration::from_secs(3), || {
                    probe::tcp_from(IpAddr::from([127, 9, 1, i]), to)
                })
                .expect("answer")
            })
            .collect();
        assert!(many.len() > 1, "{lb}: forty clients all reached one node: {many:?}");
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let Some(f) = fleet(178) else { return };
    // Nodes that accept and then stay silent, so only the idle timeout ends a connection.
    let silent: Vec<TcpListener> = (10..15)
        .map(|i| TcpListener::bind(format!("127.178.0.{i}:30090")).expect("silent backend"))
        .collect();
    let held = std::thread::spawn({
        let listeners: Vec<TcpListener> = silent.iter().map(|l| l.try_clone().expect("clone")).collect();
        move || {
            let mut conns = Vec::new();
            for l in &listeners {
                l.set_nonblocking(true).expect("nonblocking");
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                for l in &listeners {
                    if let Ok((c, _)) = l.accept() {
                        conns.push(c);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let idle = [("flipbit.io/idle-timeout", "2s"), ("flipbit.io/connect-timeout", "3s")];
    let hosts = [("lb-a", 17880), ("lb-b", 17881), ("lb-c", 17882)];
    for (lb, port) in hosts {
        put(&f, &format!("idle-{lb}"), lb, "", &idle, &[("TCP", port, 30090)]);
    }
    put(&f, "patient", "lb-a", "", &[], &[("TCP", 17883, 30090)]);
    f.render();
    apply_all(&f);
    let closed_after = |to: SocketAddr| -> Duration {
        let mut conn =
            flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::connect_from(IpAddr::from(INSIDE), to))
                .expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let n = read_through_signals(&mut conn, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the silent backend sent something");
        started.elapsed()
    };
    for (lb, port) in hosts {
        let took = closed_after(at(&f, &format!("idle-{lb}"), lb, port));
        assert!(
            took < Duration::from_secs(25),
            "{lb}: an idle connection stayed open {took:?} (idle timeout 2s)"
        );
    }
    // Without one, nginx's default (10 minutes) holds it: still open after 4 s.
    let mut conn = probe::connect_from(IpAddr::from(INSIDE), at(&f, "patient", "lb-a", 17883)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(4))).expect("timeout");
    let mut buf = [0u8; 16];
    let err = read_through_signals(&mut conn, &mut buf).expect_err("the connection without an idle timeout ended");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    drop(silent);
    drop(held);
}

#[test]
fn one_udp_answer_ends_the_session() {
    let Some(f) = fleet(179) else { return };
    let hosts = [("lb-a", 17953), ("lb-b", 17954)];
    for (lb, port) in hosts {
        put(
            &f,
            &format!("dns-{lb}"),
            lb,
            "",
            &[("flipbit.io/udp-responses", "1")],
            &[("UDP", port, 30053)],
        );
    }
    put(&f, "chatty", "lb-a", "", &[], &[("UDP", 17955, 30053)]);
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    let nodes_reached = |to: SocketAddr| -> BTreeSet<String> {
        let socket = std::net::UdpSocket::bind("127.9.0.1:0").expect("client");
        (0..10)
            .map(|_| {
                flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::udp_on(&socket, to)).expect("answer")
            })
            .collect()
    };
    for (lb, port) in hosts {
        // Each datagram of one client starts a new session, balanced over the nodes.
        let got = nodes_reached(at(&f, &format!("dns-{lb}"), lb, port));
        assert!(
            got.len() > 1,
            "{lb}: a client's datagrams all went to one session: {got:?}"
        );
    }
    // Without it, one client's datagrams stay in one session (20 s) on one node.
    let got = nodes_reached(at(&f, "chatty", "lb-a", 17955));
    assert_eq!(got.len(), 1, "{got:?}");
}

/// `conn.read`, again when a signal interrupted it: the end-to-end tests share one process, and a
/// signal meant for another test's child (or handler) can land on this thread's blocking read.
fn read_through_signals(conn: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match conn.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
