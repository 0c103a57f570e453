//! The shared-listeners layout against real nginx through the real applier: the host's files are
//! rendered by the pure functions (as the decision engine will), committed to a bare state repo,
//! and `flipbit-applier apply` stages, validates and reloads them. Real TCP and UDP traffic shows
//! each address, port and protocol reaching its own node port, a per-service Service beside the
//! wildcard on the same port, broken entries refused while the old release serves, and what
//! switching a running host's layout takes. Addresses 127.131–134.x.x; ports 13100–13499 (a
//! wildcard listener takes its port on every address, so no other test may use them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flipbit_core::annotations::Balance;
use flipbit_core::config::Layout;
use flipbit_core::exposure::Protocol::{Tcp, Udp};
use flipbit_core::names::LbHostName;
use flipbit_core::nodes::Node;
use flipbit_tests::backends::Backends;
use flipbit_tests::cluster::{applier, text};
use flipbit_tests::nginx::{NginxInstance, STREAM_MODULE};
use flipbit_tests::shared_layout::{Placed, flipbit_yaml, host_tree, nodes, service, write_release};
use flipbit_tests::{probe, repo};

const HOST: &str = "lb-s";

fn host() -> LbHostName {
    HOST.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Three nodes `127.<block>.0.10–12` answering on TCP 31001 and 31002 and UDP 31053.
fn backends(block: u8) -> (Vec<Node>, Backends) {
    let ips: Vec<IpAddr> = (10..13).map(|i| ip(&format!("127.{block}.0.{i}"))).collect();
    let tcp: Vec<SocketAddr> = ips
        .iter()
        .flat_map(|ip| [SocketAddr::new(*ip, 31001), SocketAddr::new(*ip, 31002)])
        .collect();
    let udp: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, 31053)).collect();
    (nodes(&ips), Backends::start(&tcp, &udp).expect("backends"))
}

fn placed(svc: flipbit_core::exposure::ExposedService, ips: &[&str]) -> Placed {
    Placed {
        svc,
        ips: ips.iter().map(|s| ip(s)).collect(),
        nodes: None,
    }
}

/// The repo files of a commit: `flipbit.yaml` and the host's tree.
fn commit_files(block: u8, layout: Layout, services: &[Placed], all: &[Node]) -> BTreeMap<String, String> {
    let mut files = host_tree(&host(), layout, services, all).expect("rendering");
    files.insert(
        "flipbit.yaml".into(),
        // ::1 too: a test puts a dual-stack Service there, and the applier accepts only
        // addresses inside the host's pools.
        flipbit_yaml(HOST, &format!("127.{block}.1.0/24\", \"::1/128"), layout),
    );
    files
}

fn as_refs(files: &BTreeMap<String, String>) -> BTreeMap<&str, String> {
    files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect()
}

/// Commits `files` on top of `main`, deleting the host's generated files that are not in it.
fn commit(repo: &Path, files: &BTreeMap<String, String>, message: &str) -> String {
    let gone: Vec<String> = repo::files_under(repo, &format!("lb/{HOST}/"))
        .into_iter()
        .filter(|p| !files.contains_key(p))
        .collect();
    let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
    repo::human_commit(repo, &as_refs(files), &gone, message)
        .expect("commit")
        .to_string()
}

struct Host {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    nginx: NginxInstance,
}

impl Host {
    fn start(files: &BTreeMap<String, String>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo::create(&tmp.path().join("state.git"), &as_refs(files)).expect("repo");
        let nginx = NginxInstance::start(&tmp.path().join(HOST)).expect("nginx");
        Self { tmp, repo, nginx }
    }

    fn apply(&self) -> std::process::Output {
        applier(&self.nginx.applier_args(&self.repo, HOST))
    }

    fn apply_ok(&self) -> String {
        let out = self.apply();
        assert!(out.status.success(), "apply: {}", text(&out));
        text(&out)
    }

    fn current(&self) -> Option<PathBuf> {
        std::fs::read_link(self.nginx.state_dir.join("current")).ok()
    }
}

#[test]
fn each_address_port_and_protocol_reaches_its_own_node_port() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::NGINX]) else {
        return;
    };
    let (all, _backends) = backends(131);
    let mut sticky = service("web/sticky", &[(Tcp, 13180, 31002)]);
    sticky.settings.balance = Balance::Hash;
    let mut local = service("web/local", &[(Tcp, 13180, 31002), (Udp, 13153, 31053)]);
    local.local_traffic = true;
    let services = vec![
        placed(service("web/a", &[(Tcp, 13180, 31001)]), &["127.131.1.1", "::1"]),
        placed(service("web/b", &[(Tcp, 13180, 31002)]), &["127.131.1.2"]),
        placed(
            service("web/dns", &[(Udp, 13153, 31053), (Tcp, 13153, 31001)]),
            &["127.131.1.3"],
        ),
        placed(sticky, &["127.131.1.4"]),
        // Local traffic policy: per-service rendering, on the one node with an endpoint.
        Placed {
            nodes: Some(vec![all[2].clone()]),
            ..placed(local, &["127.131.1.5"])
        },
    ];
    let files = commit_files(131, Layout::SharedListeners, &services, &all);
    assert!(files.contains_key("lb/lb-s/web/local.conf") && files.contains_key("lb/lb-s/web/a.map"));
    let h = Host::start(&files);
    let out = h.apply_ok();
    assert!(out.contains("nginx reloaded"), "{out}");

    let got = probe::answers(addr("127.131.1.1:13180"), false, 12);
    assert!(got.len() > 1, "one node took every connection: {got:?}");
    assert!(got.iter().all(|a| a.ends_with(":31001")), "{got:?}");
    let v6 = probe::answers(addr("[::1]:13180"), false, 3);
    assert!(v6.iter().all(|a| a.ends_with(":31001")), "{v6:?}");
    let b = probe::answers(addr("127.131.1.2:13180"), false, 6);
    assert!(b.iter().all(|a| a.ends_with(":31002")), "{b:?}");
    // One port, two protocols, two node ports.
    let dns_udp = probe::answers(addr("127.131.1.3:13153"), true, 3);
    assert!(dns_udp.iter().all(|a| a.ends_with(":31053")), "{dns_udp:?}");
    let dns_tcp = probe::answers(addr("127.131.1.3:13153"), false, 3);
    assert!(dns_tcp.iter().all(|a| a.ends_with(":31001")), "{dns_tcp:?}");
    // Hash: one client address, one node.
    assert_eq!(probe::answers(addr("127.131.1.4:13180"), false, 8).len(), 1);
    // The specific listener beside the wildcard on the same port, TCP and UDP.
    let only = BTreeSet::from(["127.131.0.12:31002".to_owned()]);
    assert_eq!(probe::answers(addr("127.131.1.5:13180"), false, 6), only);
    let only_udp = BTreeSet::from(["127.131.0.12:31053".to_owned()]);
    assert_eq!(probe::answers(addr("127.131.1.5:13153"), true, 3), only_udp);
    // An address no Service holds: accepted by the wildcard, then closed without an answer.
    assert!(probe::tcp(addr("127.131.1.99:13180")).is_err());
    assert!(probe::udp(addr("127.131.1.99:13153")).is_err());
    assert!(
        probe::tcp(addr("127.131.1.1:13181")).is_err(),
        "a port no Service uses answers"
    );

    // The staged host file names its own release.
    let release = h.nginx.state_dir.join(h.current().expect("current"));
    let listeners = std::fs::read_to_string(release.join("_flipbit/listeners.conf")).unwrap();
    assert!(
        listeners.contains(&format!(
            "include \"{}/*/*.map\";",
            release.canonicalize().unwrap().display()
        )),
        "{listeners}"
    );
}

#[test]
fn a_broken_entry_is_refused_and_the_running_release_keeps_serving() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::NGINX]) else {
        return;
    };
    let (all, _backends) = backends(132);
    let a = placed(service("web/a", &[(Tcp, 13280, 31001)]), &["127.132.1.1"]);
    let files = commit_files(132, Layout::SharedListeners, std::slice::from_ref(&a), &all);
    let h = Host::start(&files);
    h.apply_ok();
    let good = h.current().expect("current");
    assert!(!probe::answers(addr("127.132.1.1:13280"), false, 2).is_empty());

    let entries = files["lb/lb-s/web/a.map"].clone();
    // Neither reaches nginx: each is refused by the grammar of the generator's output, naming
    // the file and line.
    for (broken, refusal) in [
        (
            format!("{entries}TCP/127.132.1.9:13280 three words;\n"),
            "lb/lb-s/web/a.map: line 6",
        ),
        (
            format!("{entries}TCP/127.132.1.9:13280 $flipbit_nope:31001;\n"),
            "lb/lb-s/web/a.map: line 6",
        ),
    ] {
        let mut bad_files = files.clone();
        bad_files.insert("lb/lb-s/web/a.map".into(), broken);
        let bad = commit(&h.repo, &bad_files, "hand edit");
        let out = h.apply();
        assert!(!out.status.success(), "a broken entry was applied");
        let err = text(&out);
        assert!(err.contains(&bad) && err.contains(refusal), "{err}");
        assert_eq!(h.current(), Some(good.clone()), "the running release was swapped");
        assert!(!probe::answers(addr("127.132.1.1:13280"), false, 2).is_empty());
    }

    // Fixed, then three one-Service changes: releases are staged from spares and links, and the
    // host files must name each new release every time.
    let mut services = vec![a];
    for (name, last) in [("b", 2), ("c", 3), ("d", 4)] {
        services.push(placed(
            service(&format!("web/{name}"), &[(Tcp, 13280, 31002)]),
            &[&format!("127.132.1.{last}")],
        ));
        commit(
            &h.repo,
            &commit_files(132, Layout::SharedListeners, &services, &all),
            "one more",
        );
        h.apply_ok();
        for (i, p) in services.iter().enumerate() {
            let to = SocketAddr::new(p.ips[0], 13280);
            let want = if i == 0 { ":31001" } else { ":31002" };
            let got = probe::answers(to, false, 2);
            assert!(got.iter().all(|g| g.ends_with(want)), "{to}: {got:?}");
        }
    }
    services.remove(0);
    commit(
        &h.repo,
        &commit_files(132, Layout::SharedListeners, &services, &all),
        "remove web/a",
    );
    h.apply_ok();
    assert!(
        probe::tcp(addr("127.132.1.1:13280")).is_err(),
        "a removed Service answers"
    );
    assert!(!probe::answers(addr("127.132.1.4:13280"), false, 2).is_empty());
}

#[test]
fn switching_a_running_host_to_shared_listeners_needs_its_listeners_dropped_first() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::NGINX]) else {
        return;
    };
    let (all, _backends) = backends(133);
    let services = vec![placed(service("web/a", &[(Tcp, 13380, 31001)]), &["127.133.1.1"])];
    let h = Host::start(&commit_files(133, Layout::PerService, &services, &all));
    h.apply_ok();
    let old = h.current().expect("current");
    let to = addr("127.133.1.1:13380");
    assert!(!probe::answers(to, false, 2).is_empty());

    // nginx cannot trade the socket of 127.133.1.1:13380 for one on *:13380 in a reload.
    commit(
        &h.repo,
        &commit_files(133, Layout::SharedListeners, &services, &all),
        "layout: shared-listeners",
    );
    let out = h.apply();
    assert!(
        !out.status.success(),
        "the reload was reported as applied: {}",
        text(&out)
    );
    let err = text(&out);
    assert!(
        err.contains("rolled back") && err.contains("Address already in use"),
        "{err}"
    );
    assert_eq!(h.current(), Some(old));
    assert!(
        !probe::answers(to, false, 2).is_empty(),
        "the old layout stopped serving"
    );

    // The procedure: drop the current release and reload (nothing listens), then apply.
    std::fs::remove_file(h.nginx.state_dir.join("current")).unwrap();
    h.nginx.sighup().unwrap();
    flipbit_tests::wait::wait_until(Duration::from_secs(5), || match probe::tcp(to) {
        Ok(_) => Err("still listening".to_owned()),
        Err(_) => Ok(()),
    })
    .expect("the old listener stayed");
    h.apply_ok();
    let got = probe::answers(to, false, 6);
    assert!(got.iter().all(|a| a.ends_with(":31001")), "{got:?}");
    let release = h.nginx.state_dir.join(h.current().expect("current"));
    assert!(release.join("web/a.map").exists() && !release.join("web/a.conf").exists());
    drop(h.tmp);
}

/// A host's rendered tree as nginx reads it: every `*/*.conf` of `release` in `stream {}`.
fn nginx_t(release: &Path, dir: &Path) -> std::process::Output {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {STREAM_MODULE};\npid {d}/nginx.pid;\nevents {{}}\nstream {{\n    include {r}/*/*.conf;\n}}\n",
            d = dir.display(),
            r = release.display()
        ),
    )
    .unwrap();
    flipbit_tests::nginx::command(dir, &conf, &dir.join("error.log"))
        .arg("-t")
        .output()
        .unwrap()
}

#[test]
fn rendered_hosts_pass_nginx_t_and_an_unbound_file_does_not() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::NGINX]) else {
        return;
    };
    let all = nodes(&[ip("127.134.0.10"), ip("127.134.0.11"), ip("::1")]);
    let mut hash = service("ns/hash", &[(Tcp, 13480, 30080)]);
    hash.settings.balance = Balance::Hash;
    let mut proxied = service("ns/proxied", &[(Tcp, 13480, 30080), (Udp, 13453, 30053)]);
    proxied.settings.proxy_protocol = true;
    let mut subset = service("other/subset", &[(Tcp, 13481, 30081)]);
    subset.settings.max_nodes = Some(1);
    let services = vec![
        placed(
            service("ns/dual", &[(Tcp, 13480, 30080), (Udp, 13453, 30053)]),
            &["127.134.1.1", "::1"],
        ),
        placed(hash, &["127.134.1.2"]),
        placed(proxied, &["127.134.1.3"]),
        Placed {
            nodes: Some(vec![all[0].clone()]),
            ..placed(subset, &["127.134.1.4"])
        },
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (case, nodes) in [("nodes", &all[..]), ("no-nodes", &[][..])] {
        for layout in [Layout::SharedListeners, Layout::PerService] {
            let files = host_tree(&host(), layout, &services, nodes).unwrap();
            assert_eq!(files, host_tree(&host(), layout, &services, nodes).unwrap());
            let release = tmp.path().join(format!("{case}-{layout:?}/release"));
            write_release(&host(), &files, &release).unwrap();
            let out = nginx_t(&release, &tmp.path().join(format!("{case}-{layout:?}")));
            assert!(
                out.status.success(),
                "{case} {layout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // Staged without binding, the host file fails loudly instead of routing nothing.
    let files = host_tree(&host(), Layout::SharedListeners, &services, &all).unwrap();
    let release = tmp.path().join("unbound/release");
    write_release(&host(), &files, &release).unwrap();
    let raw = &files["lb/lb-s/_flipbit/listeners.conf"];
    std::fs::write(release.join("_flipbit/listeners.conf"), raw).unwrap();
    let out = nginx_t(&release, &tmp.path().join("unbound"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("@flipbit-service-maps@"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
