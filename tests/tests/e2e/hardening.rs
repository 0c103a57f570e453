//! An LB host trusts only what the generator could have written, and comes back right from any
//! crash: hand-pushed commits (directives, links, other zones, infrastructure names, forged log
//! lines, a newer output format), kill -9 at every step, a dangling `current`, a corrupt journal,
//! a silent Git server, and a Service whose listener another process holds. Real nginx, HAProxy,
//! BIND and Git throughout; a module per concern.

mod crash;
mod fleet;
mod isolation;
mod rollout;
mod status;
mod untrusted;
mod watch;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use flipbit_tests::fleet::Fleet;
use flipbit_tests::process::Owned;

/// The address records `named` holds for `name`, sorted.
pub fn records(f: &Fleet, name: &str) -> Vec<String> {
    let named = f.named.as_ref().expect("a fleet with DNS");
    let mut out = named.query(name, "A");
    out.extend(named.query(name, "AAAA"));
    out
}

/// Every address record `named` holds for `names` that lies in lb-a's pool (127.<block>.1.0/24).
pub fn lb_a_records(f: &Fleet, names: &[String]) -> BTreeMap<String, Vec<IpAddr>> {
    let prefix = format!("127.{}.1.", f.block);
    names
        .iter()
        .map(|n| {
            let addrs = records(f, n)
                .into_iter()
                .filter(|a| a.starts_with(&prefix))
                .filter_map(|a| a.parse().ok())
                .collect();
            (n.clone(), addrs)
        })
        .collect()
}

/// Every sample of the /metrics served at `addr`, by series as written (`name{labels}`).
pub fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Starts `flipbit-applier` with `args` (which include `--metrics-listen 127.0.0.1:0`) and returns
/// it (stopped when dropped) with the address its metrics listener bound, read from the `bound=` field of its log.
pub fn spawn_with_metrics(args: &[String], wait: Duration) -> (Owned, SocketAddr) {
    let mut child = Owned::new(
        Command::new(flipbit_tests::bins::applier())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a watching applier"),
    );
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("bound=").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let bound = rx
        .recv_timeout(wait)
        .expect("the metrics listener's address in the log")
        .parse()
        .expect("an address");
    (child, bound)
}
