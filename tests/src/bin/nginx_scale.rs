//! `flipbit-nginx-scale [N...] [--runs R] [--layout per-service|shared-listeners] [--force]`:
//! what nginx itself costs for one LB host with N Services in each layout, measured on loopback
//! with a private nginx (own prefix, pid file, error log) and the files Flipbit renders (through
//! the pure renderers, no generator or applier): `nginx -t` (median of R), a cold start until the
//! first Service answers, and a one-Service change (`nginx -t`, SIGHUP, until the new Service
//! answers). Then real TCP and UDP traffic through a sample of Services and an unowned address.
//!
//! Service i: `ns<i%100>/s<i>`, TCP 13580 → node port 30080, every fourth also UDP 13553 → 30053,
//! address 127.(135 + i/64000).x.y; five nodes 127.137.0.10–14 answer with their address. Run as
//! root or not; `TMPDIR=/var/tmp` (file creation in /tmp is slow here). The per-service layout
//! needs an open file per listener even for `nginx -t`: past the 20,000 cap of these machines it
//! is skipped unless `--force` (the figure is then extrapolated from the largest measured size).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use flipbit_core::config::{Flavor, Layout};
use flipbit_core::exposure::Protocol::{Tcp, Udp};
use flipbit_core::names::LbHostName;
use flipbit_core::{render, repo_paths};
use flipbit_tests::backends::Backends;
use flipbit_tests::nginx::STREAM_MODULE;
use flipbit_tests::probe;
use flipbit_tests::shared_layout::{Placed, host_tree, nodes, service, write_release};

const TCP_PORT: u16 = 13580;
const UDP_PORT: u16 = 13553;
const FD_CAP: usize = 20_000;

fn address(i: usize) -> IpAddr {
    IpAddr::from([
        127,
        135 + (i / 64_000) as u8,
        (i % 64_000 / 250) as u8,
        (i % 250 + 1) as u8,
    ])
}

fn placed(i: usize) -> Placed {
    let mut ports = vec![(Tcp, TCP_PORT, 30080)];
    if i.is_multiple_of(4) {
        ports.push((Udp, UDP_PORT, 30053));
    }
    Placed {
        svc: service(&format!("ns{}/s{i}", i % 100), &ports),
        ips: vec![address(i)],
        nodes: None,
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling the nginx master this process spawned.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

struct Instance {
    dir: PathBuf,
    conf: PathBuf,
}

impl Instance {
    fn new(dir: &Path, release: &Path, listeners: usize) -> Result<Self, String> {
        let conf = dir.join("nginx.conf");
        let text = format!(
            "load_module {STREAM_MODULE};\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\ndaemon off;\n\
             worker_processes 1;\nevents {{ worker_connections {wc}; }}\nstream {{\n    include {r}/*/*.conf;\n}}\n",
            d = dir.display(),
            r = release.display(),
            wc = listeners + 1024,
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            conf,
        })
    }

    fn command(&self) -> Command {
        flipbit_tests::nginx::command(&self.dir, &self.conf, &self.dir.join("error.log"))
    }

    fn test(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let out = self.command().arg("-t").arg("-q").output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(started.elapsed())
    }

    fn start(&self) -> Result<Running, String> {
        self.command().spawn().map(Running).map_err(|e| e.to_string())
    }
}

/// Polls a TCP connection to `to` until a node answers.
fn until_answer(to: SocketAddr, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if probe::tcp(to).is_ok() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("{to} did not answer within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Real traffic through the running instance: a sample of Services over TCP and UDP reach the
/// node port of their protocol; an address no Service holds gets no answer.
fn check_traffic(n: usize) -> Result<String, String> {
    let mut checked = 0;
    for i in [0, 1, n / 2, n - 1] {
        let got = probe::tcp(SocketAddr::new(address(i), TCP_PORT))?;
        if !got.ends_with(":30080") {
            return Err(format!("s{i} TCP reached {got}"));
        }
        checked += 1;
        if i.is_multiple_of(4) {
            let got = probe::udp(SocketAddr::new(address(i), UDP_PORT))?;
            if !got.ends_with(":30053") {
                return Err(format!("s{i} UDP reached {got}"));
            }
            checked += 1;
        }
    }
    let unowned = SocketAddr::new(address(n + 10), TCP_PORT);
    if let Ok(got) = probe::tcp(unowned) {
        return Err(format!("{unowned}, held by no Service, reached {got}"));
    }
    Ok(format!(
        "{checked} TCP/UDP probes reached their node ports; an unowned address got no answer"
    ))
}

fn measure(layout: Layout, n: usize, runs: usize, root: &Path) -> Result<String, String> {
    let host: LbHostName = "lb-bench".parse().map_err(|e| format!("{e}"))?;
    let node_ips: Vec<IpAddr> = (10..15).map(|i| IpAddr::from([127, 137, 0, i])).collect();
    let all = nodes(&node_ips);
    let services: Vec<Placed> = (0..n).map(placed).collect();
    let files = host_tree(&host, layout, &services, &all).map_err(|e| e.to_string())?;
    let listeners: usize = files.values().map(|t| t.matches("    listen ").count()).sum();
    let dir = root.join(format!("{layout:?}-{n}"));
    let release = dir.join("release");
    write_release(&host, &files, &release)?;
    let nginx = Instance::new(&dir, &release, listeners)?;
    let tests = (0..runs).map(|_| nginx.test()).collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let running = nginx.start()?;
    let cold = started.elapsed() + until_answer(SocketAddr::new(address(0), TCP_PORT), Duration::from_secs(600))?;
    let traffic = check_traffic(n)?;

    // One more Service: its file alone is new (the listener set is the same).
    let new = placed(n);
    let (path, text) = if layout == Layout::PerService {
        let every: Vec<_> = all.iter().collect();
        (
            repo_paths::lb_service_path(&host, &new.svc.key),
            render::service_to_nodes(Flavor::Nginx, &new.svc, &host, &new.ips, &every),
        )
    } else {
        (
            repo_paths::lb_service_map_path(&host, &new.svc.key),
            render::map::service_entries(&new.svc, &host, &new.ips),
        )
    };
    let one = std::collections::BTreeMap::from([(path, text.map_err(|e| e.to_string())?)]);
    write_release(&host, &one, &release)?;
    let started = Instant::now();
    let check = nginx.test()?;
    // SAFETY: signalling the nginx master this process spawned.
    unsafe { libc::kill(running.0.id() as i32, libc::SIGHUP) };
    let reload = until_answer(SocketAddr::new(new.ips[0], TCP_PORT), Duration::from_secs(600))?;
    let change = started.elapsed();
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "| {layout:?} | {n} | {listeners} | {} | {} | {} | {} (-t {} + reload {}) |\n    traffic: {traffic}",
        files.len(),
        secs(median(tests)),
        secs(cold),
        secs(change),
        secs(check),
        secs(reload),
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes: Vec<usize> = Vec::new();
    let mut runs = 3;
    let mut layouts = vec![Layout::PerService, Layout::SharedListeners];
    let mut force = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            "--layout" => match it.next().map(String::as_str) {
                Some("per-service") => layouts = vec![Layout::PerService],
                Some("shared-listeners") => layouts = vec![Layout::SharedListeners],
                _ => usage(),
            },
            "--force" => force = true,
            n => sizes.push(n.parse().unwrap_or_else(|_| usage())),
        }
    }
    if sizes.is_empty() {
        sizes = vec![2_000, 10_000, 50_000];
    }
    let node_ips: Vec<IpAddr> = (10..15).map(|i| IpAddr::from([127, 137, 0, i])).collect();
    let tcp: Vec<SocketAddr> = node_ips.iter().map(|ip| SocketAddr::new(*ip, 30080)).collect();
    let udp: Vec<SocketAddr> = node_ips.iter().map(|ip| SocketAddr::new(*ip, 30053)).collect();
    let _backends = Backends::start(&tcp, &udp).unwrap_or_else(|e| fail(&format!("backends: {e}")));
    let root = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    println!(
        "| layout | Services | listen lines | files | nginx -t (median of {runs}) | cold start → first answer | one Service added → answering |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut measured: BTreeSet<(Layout, usize)> = BTreeSet::new();
    for layout in layouts {
        for &n in &sizes {
            let listeners = n + n.div_ceil(4);
            if layout == Layout::PerService && listeners + 100 > FD_CAP && !force {
                let largest = measured.iter().filter(|(l, _)| *l == layout).map(|(_, n)| *n).max();
                let note = largest.map_or(String::new(), |m| {
                    format!(
                        "; quadratic: about {:.0}× the time at {m}",
                        (n as f64 / m as f64).powi(2)
                    )
                });
                println!(
                    "| {layout:?} | {n} | {listeners} | not run: one open file per listener, cap {FD_CAP}{note} |"
                );
                continue;
            }
            match measure(layout, n, runs, root.path()) {
                Ok(row) => {
                    println!("{row}");
                    measured.insert((layout, n));
                }
                Err(e) => println!("| {layout:?} | {n} | failed: {e} |"),
            }
        }
    }
}

fn usage() -> ! {
    fail("usage: flipbit-nginx-scale [N...] [--runs R] [--layout per-service|shared-listeners] [--force]")
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}
