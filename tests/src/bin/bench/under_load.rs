//! `under-load`: reloads under load. One LB address carries a Service with a TCP port (8080) and a
//! UDP port (5353) while load threads hold a steady stream of short TCP connections (connect,
//! read the backend's answer, close) and UDP request/response through it, and 20 config changes
//! to *other* Services (added, or their balance mode changed) go through
//! `flipbit-generator render` and `flipbit-applier apply`, each one an nginx reload. The changes
//! are spread over the stream (change k starts once k/(changes+1) of the connections are done).
//!
//! A TCP connection fails when it is refused, reset, times out or ends without the backend's
//! answer (`<node>:<port>`); a UDP request is lost when no answer comes within a second. UDP
//! clients reuse their sockets, as resolvers with a long-lived socket do, so nginx keeps one
//! session per client instead of one per datagram (the snippets keep a session 20 s).
//!
//! Options: `--connections C` (default 10000), `--changes K` (20), `--tcp-threads T` (2),
//! `--udp-threads U` (1), `--block B`. With `--host-option flavor=haproxy` the LB host is a
//! HAProxy 2.6 master (`haproxy -W -S <socket>`, `tests/src/haproxy.rs`) and each change is a
//! reload through the master CLI, as the applier does on a HAProxy host; HAProxy carries TCP
//! only, so there is no UDP load then.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flipbit_tests::probe;

use crate::rig::{Flags, NODE_PORT_TCP, NODE_PORT_UDP, Rig, ms};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

#[derive(Default)]
struct Counters {
    tcp_ok: AtomicU64,
    tcp_failed: AtomicU64,
    udp_sent: AtomicU64,
    udp_answered: AtomicU64,
    /// Failure reasons (first words of the error) and how often each happened.
    reasons: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn fail(&self, reason: String) {
        self.tcp_failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut r) = self.reasons.lock() {
            *r.entry(reason).or_default() += 1;
        }
    }

    fn tcp_done(&self) -> u64 {
        self.tcp_ok.load(Ordering::Relaxed) + self.tcp_failed.load(Ordering::Relaxed)
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let block: u8 = flags.get("block", 134)?;
    let target: u64 = flags.get("connections", 10_000)?;
    let changes: usize = flags.get("changes", 20)?;
    let tcp_threads: usize = flags.get("tcp-threads", 2)?;
    let rig = Rig::start(block, 1, changes + 16, None, &flags.host_options)?;
    let haproxy = !rig.haproxies.is_empty();
    let (server, reloaded) = if haproxy {
        ("haproxy", "haproxy reloaded")
    } else {
        ("nginx", "nginx reloaded")
    };
    let udp_threads: usize = if haproxy { 0 } else { flags.get("udp-threads", 1)? };
    rig.cluster.lb_service(
        "bench",
        "load",
        &[],
        &[("TCP", TCP_PORT, NODE_PORT_TCP), ("UDP", UDP_PORT, NODE_PORT_UDP)],
    );
    for i in 0..4 {
        other(&rig, i, None);
    }
    rig.render()?;
    rig.apply("lb-a", &[])?;
    let ip = *rig
        .addresses("bench", "load")
        .get("lb-a")
        .ok_or("bench/load has no committed address on lb-a")?;
    let (tcp_addr, udp_addr) = (SocketAddr::new(ip, TCP_PORT), SocketAddr::new(ip, UDP_PORT));
    flipbit_tests::wait::wait_until(Duration::from_secs(5), || probe::tcp(tcp_addr))?;
    if !haproxy {
        flipbit_tests::wait::wait_until(Duration::from_secs(5), || probe::udp(udp_addr))?;
    }
    let nodes: Vec<String> = crate::rig::node_ips(block)
        .iter()
        .map(|ip| format!("{ip}:{NODE_PORT_TCP}"))
        .collect();

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..tcp_threads {
        let (counters, stop, nodes) = (counters.clone(), stop.clone(), nodes.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match tcp_once(tcp_addr, &nodes) {
                    Ok(()) => {
                        counters.tcp_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(reason) => counters.fail(reason),
                }
            }
        }));
    }
    for _ in 0..udp_threads {
        let (counters, stop) = (counters.clone(), stop.clone());
        threads.push(std::thread::spawn(move || udp_loop(udp_addr, &counters, &stop)));
    }

    let started = Instant::now();
    let mut applies = Vec::new();
    let mut result = Ok(());
    for k in 0..changes {
        let due = target * (k as u64 + 1) / (changes as u64 + 1);
        while counters.tcp_done() < due && started.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Even changes add a Service, odd ones change the balance mode of the one just added.
        let i = 4 + k / 2;
        other(&rig, i, (k % 2 == 1).then_some("least-conn"));
        let step = rig.render().and_then(|_| rig.apply("lb-a", &[]));
        match step {
            Ok((took, out)) if out.contains(reloaded) => applies.push(ms(took)),
            Ok((_, out)) => {
                result = Err(format!("change {k} did not reload {server}: {out}"));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    while result.is_ok() && counters.tcp_done() < target && started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result?;

    let ok = counters.tcp_ok.load(Ordering::Relaxed);
    let failed = counters.tcp_failed.load(Ordering::Relaxed);
    let sent = counters.udp_sent.load(Ordering::Relaxed);
    let answered = counters.udp_answered.load(Ordering::Relaxed);
    println!(
        "under-load ({server}), {} reloads ({} applies, median {:.0} ms) in {secs:.1} s: TCP {} connections, {failed} failed (target 0)",
        applies.len(),
        applies.len(),
        crate::rig::median(&mut applies),
        ok + failed
    );
    if haproxy {
        println!("under-load (haproxy): no UDP (HAProxy carries TCP only)");
    } else {
        println!(
            "under-load: UDP {sent} requests, {answered} answered, {} lost ({:.2}%)",
            sent - answered,
            if sent == 0 {
                0.0
            } else {
                100.0 * (sent - answered) as f64 / sent as f64
            }
        );
    }
    if let Ok(reasons) = counters.reasons.lock() {
        for (reason, count) in reasons.iter() {
            println!("  TCP failure x{count}: {reason}");
        }
    }
    Ok(())
}

/// Another Service on the same LB host (not the one under load), with `balance` when given.
fn other(rig: &Rig, i: usize, balance: Option<&str>) {
    let annotations: Vec<(&str, &str)> = balance.iter().map(|b| ("flipbit.io/balance", *b)).collect();
    rig.cluster.lb_service(
        "bench",
        &format!("other{i:02}"),
        &annotations,
        &[("TCP", TCP_PORT, NODE_PORT_TCP)],
    );
}

/// One short connection: connect, read the backend's whole answer, close.
fn tcp_once(addr: SocketAddr, nodes: &[String]) -> Result<(), String> {
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {:?}", e.kind()))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("set timeout: {e}"))?;
    let mut out = String::new();
    conn.read_to_string(&mut out)
        .map_err(|e| format!("read: {:?}", e.kind()))?;
    let answer = out.trim();
    if nodes.iter().any(|n| n == answer) {
        Ok(())
    } else if answer.is_empty() {
        Err("closed without an answer".into())
    } else {
        Err(format!("unexpected answer {answer:?}"))
    }
}

/// Request/response over one long-lived socket until stopped: send, wait up to a second for the
/// answer; a late answer to an earlier request is drained, not counted for the next one.
fn udp_loop(addr: SocketAddr, counters: &Counters, stop: &AtomicBool) {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    if socket.connect(addr).is_err() {
        return;
    }
    let mut buf = [0u8; 1500];
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        // Drain anything late before asking again.
        let _ = socket.set_nonblocking(true);
        while socket.recv(&mut buf).is_ok() {}
        let _ = socket.set_nonblocking(false);
        let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
        counters.udp_sent.fetch_add(1, Ordering::Relaxed);
        if socket.send(format!("ping {seq}").as_bytes()).is_err() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if let Ok(n) = socket.recv(&mut buf)
            && n > 0
        {
            counters.udp_answered.fetch_add(1, Ordering::Relaxed);
        }
        // A steady stream, not a flood: ~500 requests/s per thread at most.
        std::thread::sleep(Duration::from_millis(2));
    }
}
