//! Direct-to-pod backends (`flipbit.io/backends: pods`) end to end: the live generator
//! (`flipbit-generator run` against the in-process API server) and the applier on real nginx.
//! Stand-in "pods" answer with their own address on 127.187.x.x (and one on [::1], in an IPv6
//! slice); the one node answers nothing, so every answer proves a connection went straight to a
//! pod. web/x (a named targetPort, no node ports) is served by lb-a, in the per-service layout:
//! it reaches its pods, and a rolling update (new pods ready one by one, with another target
//! port, old ones not ready and then gone) moves the traffic step by step, each step rewriting
//! web/x's file alone. web/y is served by lb-b, in the shared-listeners layout, which renders a
//! pod-backed Service per-service. LB pools 127.186.1.0/24 and 127.186.2.0/24; each Service is
//! pinned to one host with its own port (18186, 18187), as lb-b's wildcard listener takes its
//! port on every address of this machine, lb-a's too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flipbit_core::ledger::Ledger;
use flipbit_tests::apiserver::ApiServer;
use flipbit_tests::backends::Backends;
use flipbit_tests::cluster::{applier, flipbit_yaml, text};
use flipbit_tests::genproc::GeneratorProcess;
use flipbit_tests::live_cluster::LiveCluster;
use flipbit_tests::nginx::NginxInstance;
use flipbit_tests::{probe, repo};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const PORT_X: u16 = 18186;
const PORT_Y: u16 = 18187;
const HOSTS: [&str; 2] = ["lb-a", "lb-b"];

/// A LoadBalancer Service sending to its pods, on LB host `lb`: port `port` named `http`, target
/// port named `web` (the endpoint controller resolves it per pod), no node ports.
fn pod_service(name: &str, lb: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "web", "annotations": {
            "flipbit.io/backends": "pods",
            "flipbit.io/load-balancers": lb,
        }},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "flipbit.io/nginx",
            "allocateLoadBalancerNodePorts": false,
            "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": "web"}],
        }
    })
}

/// An EndpointSlice of `web/<service>`: its `http` port at `port` (the pods' `web`), and one
/// endpoint per address with its readiness.
fn slice(service: &str, name: &str, family: &str, port: u16, endpoints: &[(IpAddr, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "web", "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "ports": [{"name": "http", "protocol": "TCP", "port": port}],
        "endpoints": endpoints.iter().map(|(ip, ready)| json!({
            "addresses": [ip.to_string()],
            "conditions": {"ready": ready},
        })).collect::<Vec<_>>(),
    })
}

/// The paths that differ between the trees of two commits of the bare repo.
fn changed_between(repo: &Path, from: git2::Oid, to: git2::Oid) -> BTreeSet<String> {
    let repo = git2::Repository::open_bare(repo).expect("the state repo");
    let tree = |id| repo.find_commit(id).and_then(|c| c.tree()).expect("a commit's tree");
    let (old, new) = (tree(from), tree(to));
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None).expect("a diff");
    diff.deltas()
        .filter_map(|d| d.new_file().path().or_else(|| d.old_file().path()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Messages of the commits after `from` up to the head.
fn messages_since(repo: &Path, from: git2::Oid) -> String {
    let repo = git2::Repository::open_bare(repo).expect("the state repo");
    let mut walk = repo.revwalk().expect("a revwalk");
    walk.push_ref("refs/heads/main").expect("main");
    walk.hide(from).expect("the old head");
    walk.filter_map(Result::ok)
        .filter_map(|id| repo.find_commit(id).ok())
        .map(|c| c.message().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

struct World {
    _tmp: tempfile::TempDir,
    api: ApiServer,
    repo: PathBuf,
    lbs: BTreeMap<&'static str, NginxInstance>,
    generator: GeneratorProcess,
    /// Running stand-in pods, by the address they answer on.
    pods: BTreeMap<SocketAddr, Backends>,
}

impl World {
    fn start() -> Option<Self> {
        flipbit_tests::require(&[flipbit_tests::tool::NGINX])?;
        let config = flipbit_yaml(&[("lb-a", "127.186.1.0/24"), ("lb-b", "127.186.2.0/24")])
            .replace("  - name: lb-b\n", "  - name: lb-b\n    layout: shared-listeners\n");
        // A Ready node (127.186.0.10) with nothing behind it: traffic that went through nodes
        // would fail.
        let LiveCluster {
            tmp,
            api,
            kubeconfig,
            repo,
            ..
        } = LiveCluster::with_config(config, 186, 1);
        let lbs = HOSTS
            .iter()
            .map(|lb| (*lb, NginxInstance::start(&tmp.path().join(lb)).expect("nginx")))
            .collect();
        let generator = GeneratorProcess::start(&repo, &kubeconfig, "gen-pods", &[]);
        Some(Self {
            _tmp: tmp,
            api,
            repo,
            lbs,
            generator,
            pods: BTreeMap::new(),
        })
    }

    fn start_pod(&mut self, addr: SocketAddr) {
        let backend = Backends::start(&[addr], &[]).unwrap_or_else(|e| panic!("pod {addr}: {e}"));
        self.pods.insert(addr, backend);
    }

    fn file(&self, lb: &str, name: &str) -> String {
        repo::read(&self.repo, &format!("lb/{lb}/web/{name}.conf")).unwrap_or_default()
    }

    /// Waits until `lb`'s snippet of `web/<name>` sends exactly to `pods`.
    fn wait_servers(&self, lb: &str, name: &str, pods: &BTreeSet<SocketAddr>) {
        let want: BTreeSet<String> = pods.iter().map(|p| format!("server {p};")).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let got: BTreeSet<String> = self
                .file(lb, name)
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("server ") && !l.ends_with('{'))
                .map(str::to_owned)
                .collect();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "web/{name} never sent to exactly {pods:?}; {lb} has:\n{}\ngenerator log:\n{}",
                self.file(lb, name),
                self.generator.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn apply_all(&self) {
        for lb in HOSTS {
            let out = applier(&self.lbs[lb].applier_args(&self.repo, lb));
            assert!(out.status.success(), "apply on {lb}: {}", text(&out));
        }
    }

    /// The address `web/<name>` holds on `lb`, from the committed ledger.
    fn address(&self, name: &str, lb: &str, port: u16) -> SocketAddr {
        let ledger = Ledger::parse(&repo::read(&self.repo, "ledger.yaml").expect("a ledger")).expect("ledger parses");
        let key: flipbit_core::names::ServiceKey = format!("web/{name}").parse().expect("key");
        let host: flipbit_core::names::LbHostName = lb.parse().expect("host");
        let ip = ledger.services[&key]
            .addresses
            .get(&host)
            .copied()
            .unwrap_or_else(|| panic!("web/{name} has no address on {lb}"));
        SocketAddr::new(ip, port)
    }

    /// The generator's count of decision cycles, from its `/metrics`.
    fn reconciles(&self) -> u64 {
        let (_, metrics) = self.generator.get("/metrics").unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("flipbit_generator_reconciles_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every pod that answers through `web/<name>`'s address on `lb`: exactly `pods`.
    fn assert_traffic(&self, lb: &str, name: &str, port: u16, pods: &BTreeSet<SocketAddr>) {
        let want: BTreeSet<String> = pods.iter().map(ToString::to_string).collect();
        let addr = self.address(name, lb, port);
        // nginx (one worker) goes round the servers: three rounds reach every one.
        let got = probe::answers(addr, false, 3 * pods.len());
        assert_eq!(got, want, "answers through {lb} ({addr})");
    }
}

fn v4(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// A free port on [::1] for the IPv6 pod.
fn free_v6_port() -> u16 {
    TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding [::1]")
}

#[test]
fn a_pod_backed_service_follows_its_endpoints_through_a_rolling_update() {
    let Some(mut w) = World::start() else { return };
    let old: Vec<SocketAddr> = (1..=3).map(|i| v4(&format!("127.187.0.{i}:8080"))).collect();
    let new: Vec<SocketAddr> = (1..=3).map(|i| v4(&format!("127.187.1.{i}:9090"))).collect();
    let v6 = SocketAddr::new("::1".parse().expect("::1"), free_v6_port());
    let other = v4("127.187.2.1:8080");
    for pod in old.iter().chain([&v6, &other]) {
        w.start_pod(*pod);
    }

    // web/x: three IPv4 pods and one IPv6 pod; web/y: one pod, there to stay untouched.
    w.api.apply(pod_service("x", "lb-a", PORT_X));
    let ready = |pods: &[SocketAddr]| pods.iter().map(|p| (p.ip(), true)).collect::<Vec<_>>();
    w.api.apply(slice("x", "x-v1", "IPv4", 8080, &ready(&old)));
    w.api.apply(slice("x", "x-v1-v6", "IPv6", v6.port(), &ready(&[v6])));
    w.api.apply(pod_service("y", "lb-b", PORT_Y));
    w.api.apply(slice("y", "y-1", "IPv4", 8080, &ready(&[other])));
    let mut serving: BTreeSet<SocketAddr> = old.iter().copied().chain([v6]).collect();
    w.wait_servers("lb-a", "x", &serving);
    w.wait_servers("lb-b", "y", &BTreeSet::from([other]));
    assert!(
        repo::read(&w.repo, "lb/lb-b/web/y.map").is_none(),
        "a pod-backed Service went through the shared listeners"
    );
    w.apply_all();
    w.assert_traffic("lb-a", "x", PORT_X, &serving);
    w.assert_traffic("lb-b", "y", PORT_Y, &BTreeSet::from([other]));

    // The rolling update: a new pod (target port 9090 now) becomes ready, then an old one goes
    // not ready (terminating) and then leaves the slice.
    let files_of_x = BTreeSet::from(["lb/lb-a/web/x.conf".to_owned()]);
    let mut started = Vec::new();
    for (i, (gone, came)) in old.iter().zip(&new).enumerate() {
        let head = repo::head(&w.repo).expect("a head");
        w.start_pod(*came);
        started.push(*came);
        w.api.apply(slice("x", "x-v2", "IPv4", 9090, &ready(&started)));
        serving.insert(*came);
        w.wait_servers("lb-a", "x", &serving);
        w.apply_all();
        w.assert_traffic("lb-a", "x", PORT_X, &serving);

        let mut endpoints: Vec<(IpAddr, bool)> = old[i..].iter().map(|p| (p.ip(), p != gone)).collect();
        w.api.apply(slice("x", "x-v1", "IPv4", 8080, &endpoints));
        serving.remove(gone);
        w.wait_servers("lb-a", "x", &serving);
        w.apply_all();
        w.assert_traffic("lb-a", "x", PORT_X, &serving);
        // Gone: out of the slice, and nothing answers there any more.
        endpoints.remove(0);
        if endpoints.is_empty() {
            w.api.delete("EndpointSlice", Some("web"), "x-v1");
        } else {
            w.api.apply(slice("x", "x-v1", "IPv4", 8080, &endpoints));
        }
        w.pods.remove(gone);

        let now = repo::head(&w.repo).expect("a head");
        let changed = changed_between(&w.repo, head, now);
        assert_eq!(changed, files_of_x, "step {} changed more than web/x's files", i + 1);
        let messages = messages_since(&w.repo, head);
        assert!(
            messages.contains(&format!("move upstreams of web/x: +{came} (ready endpoint)")),
            "{messages}"
        );
        assert!(
            messages.contains(&format!("move upstreams of web/x: -{gone} (not a ready endpoint now)")),
            "{messages}"
        );
    }
    // Endpoints that were not ready leaving their slices change nothing: two more cycles (the
    // change's and a resync) commit nothing.
    let settled = repo::head(&w.repo).expect("a head");
    let cycles = w.reconciles();
    let deadline = Instant::now() + WAIT;
    while w.reconciles() < cycles + 2 {
        assert!(Instant::now() < deadline, "no cycle ran; log:\n{}", w.generator.log());
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(repo::head(&w.repo), Some(settled), "{}", w.generator.log());
    w.assert_traffic("lb-a", "x", PORT_X, &serving);
    assert_eq!(serving, new.iter().copied().chain([v6]).collect());
    w.assert_traffic("lb-b", "y", PORT_Y, &BTreeSet::from([other]));
}
