//! A small fleet for end-to-end tests: a bare state repo with LB hosts lb-a and lb-b, five nodes
//! with stand-in backends, one real nginx per host and, optionally, a real `named` or a third
//! host lb-c that runs HAProxy. Every address lives in the test's own block `127.<block>.0.0/16`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use tempfile::TempDir;

use crate::backends::Backends;
use crate::bind::NamedInstance;
use crate::cluster::{ManifestDir, generator, text};
use crate::haproxy::HaproxyInstance;
use crate::nginx::NginxInstance;
use crate::{repo, tool};

pub struct Fleet {
    pub tmp: TempDir,
    pub repo: PathBuf,
    pub cluster: ManifestDir,
    pub block: u8,
    pub lbs: BTreeMap<&'static str, NginxInstance>,
    /// The fleet's `named`, when started with DNS.
    pub named: Option<NamedInstance>,
    /// lb-c, a HAProxy host, when started with one.
    pub haproxy: Option<HaproxyInstance>,
    _backends: Backends,
}

impl Fleet {
    /// Hosts lb-a (127.<block>.1.0/24) and lb-b (127.<block>.2.0/24), five nodes with backends on
    /// node ports 30080 (TCP) and 30053 (TCP and UDP).
    pub fn start(block: u8) -> Option<Self> {
        Self::start_inner(block, None, None)
    }

    /// lb-a and lb-b (nginx) plus lb-c (127.<block>.3.0/24), whose `flavor` is `haproxy`.
    pub fn with_haproxy(block: u8) -> Option<Self> {
        crate::require(&[tool::HAPROXY])?;
        let mut fleet = Self::start_inner(block, None, None)?;
        let config = crate::cluster::flipbit_yaml(&[
            ("lb-a", &format!("127.{block}.1.0/24")),
            ("lb-b", &format!("127.{block}.2.0/24")),
            ("lb-c", &format!("127.{block}.3.0/24")),
        ])
        .replace("  - name: lb-c\n", "  - name: lb-c\n    flavor: haproxy\n");
        repo::human_commit(
            &fleet.repo,
            &BTreeMap::from([("flipbit.yaml", config)]),
            &[],
            "lb-c: a HAProxy host",
        )
        .expect("committing flipbit.yaml");
        fleet.haproxy = Some(HaproxyInstance::start(&fleet.tmp.path().join("lb-c")).expect("haproxy"));
        Some(fleet)
    }

    /// A fleet whose hosts draw from the given pools (for more than 254 Services).
    pub fn with_pools(block: u8, dns_port: Option<u16>, pool_a: &str, pool_b: &str) -> Option<Self> {
        Self::start_inner(block, dns_port, Some((pool_a, pool_b)))
    }

    /// The same plus a `named` on 127.0.0.1:`dns_port` serving `k8s.example.test`, and appliers
    /// that run the DNS step against it.
    pub fn with_dns(block: u8, dns_port: u16) -> Option<Self> {
        crate::require(&[tool::BIND])?;
        Self::start_inner(block, Some(dns_port), None)
    }

    /// lb-a, lb-b and lb-c (127.<block>.3.0/24), all nginx, with `named` on 127.0.0.1:`dns_port`:
    /// a fleet whose hosts watch each other.
    pub fn three_with_dns(block: u8, dns_port: u16) -> Option<Self> {
        let mut fleet = Self::with_dns(block, dns_port)?;
        let config = crate::cluster::flipbit_yaml(&[
            ("lb-a", &format!("127.{block}.1.0/24")),
            ("lb-b", &format!("127.{block}.2.0/24")),
            ("lb-c", &format!("127.{block}.3.0/24")),
        ]);
        repo::human_commit(&fleet.repo, &BTreeMap::from([("flipbit.yaml", config)]), &[], "lb-c")
            .expect("committing flipbit.yaml");
        fleet.lbs.insert(
            "lb-c",
            NginxInstance::start(&fleet.tmp.path().join("lb-c")).expect("nginx"),
        );
        Some(fleet)
    }

    fn start_inner(block: u8, dns_port: Option<u16>, pools: Option<(&str, &str)>) -> Option<Self> {
        crate::require(&[tool::NGINX])?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (pool_a, pool_b) = match pools {
            Some((a, b)) => (a.to_owned(), b.to_owned()),
            None => (format!("127.{block}.1.0/24"), format!("127.{block}.2.0/24")),
        };
        let repo = repo::two_hosts(tmp.path(), &pool_a, &pool_b);
        let cluster = ManifestDir::new(&tmp.path().join("cluster"));
        cluster.nodes(block);
        let nodes: Vec<std::net::IpAddr> = (10..15)
            .map(|i| format!("127.{block}.0.{i}").parse().unwrap())
            .collect();
        let tcp: Vec<SocketAddr> = nodes
            .iter()
            .flat_map(|ip| [SocketAddr::new(*ip, 30080), SocketAddr::new(*ip, 30053)])
            .collect();
        let udp: Vec<SocketAddr> = nodes.iter().map(|ip| SocketAddr::new(*ip, 30053)).collect();
        let backends = Backends::start(&tcp, &udp).expect("backends");
        let mut lbs = BTreeMap::new();
        for lb in ["lb-a", "lb-b"] {
            lbs.insert(lb, NginxInstance::start(&tmp.path().join(lb)).expect("nginx"));
        }
        let named = dns_port
            .map(|port| NamedInstance::start(&tmp.path().join("named"), port, "k8s.example.test").expect("named"));
        Some(Self {
            tmp,
            repo,
            cluster,
            block,
            lbs,
            named,
            haproxy: None,
            _backends: backends,
        })
    }

    /// Adds `setting` (a line such as `layout: shared-listeners`) to LB host `lb` in
    /// `flipbit.yaml`, as a human commit.
    pub fn set_host(&self, lb: &str, setting: &str) {
        let entry = format!("  - name: {lb}\n");
        let config = repo::read(&self.repo, "flipbit.yaml")
            .expect("flipbit.yaml")
            .replace(&entry, &format!("{entry}    {setting}\n"));
        repo::human_commit(
            &self.repo,
            &BTreeMap::from([("flipbit.yaml", config)]),
            &[],
            &format!("{lb}: {setting}"),
        )
        .expect("committing flipbit.yaml");
    }

    pub fn render(&self) {
        let out = generator("render", &self.repo, self.cluster.path(), &[]);
        assert!(out.status.success(), "render: {}", text(&out));
    }

    pub fn apply(&self, lb: &str, extra: &[&str]) -> std::process::Output {
        self.apply_with_env(lb, extra, &[])
    }

    /// [`Fleet::apply`] with environment variables for the applier.
    pub fn apply_with_env(&self, lb: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut args = match (&self.haproxy, lb) {
            (Some(haproxy), "lb-c") => haproxy.applier_args(&self.repo, lb),
            _ => self.lbs[lb].applier_args(&self.repo, lb),
        };
        if let Some(named) = &self.named {
            args.extend(self.dns_args(&named.key_file));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        crate::cluster::applier_with_env(&args, env)
    }

    pub fn apply_ok(&self, lb: &str) -> String {
        let out = self.apply(lb, &[]);
        assert!(out.status.success(), "apply on {lb}: {}", text(&out));
        text(&out)
    }

    /// `--dns-server`, `--tsig-key` and a short timeout for this fleet's `named`.
    pub fn dns_args(&self, key_file: &std::path::Path) -> Vec<String> {
        let port = self.named.as_ref().map_or(0, |n| n.port);
        vec![
            "--dns-server".into(),
            format!("127.0.0.1:{port}"),
            "--tsig-key".into(),
            key_file.display().to_string(),
            "--dns-timeout".into(),
            "2".into(),
        ]
    }

    pub fn addr(&self, host: u8, last: u8, port: u16) -> SocketAddr {
        format!("127.{}.{host}.{last}:{port}", self.block).parse().unwrap()
    }

    pub fn current(&self, lb: &str) -> Option<PathBuf> {
        std::fs::read_link(self.state_dir(lb).join("current")).ok()
    }

    /// The address Service `key` (`ns/name`) holds on `lb`, from the committed ledger.
    pub fn address(&self, key: &str, lb: &str) -> Option<std::net::IpAddr> {
        let ledger = flipbit_core::ledger::Ledger::parse(&repo::read(&self.repo, "ledger.yaml")?).ok()?;
        let key: flipbit_core::names::ServiceKey = key.parse().ok()?;
        let lb: flipbit_core::names::LbHostName = lb.parse().ok()?;
        ledger.services.get(&key)?.addresses.get(&lb).copied()
    }

    /// The applier's journal on `lb` (empty when it has none yet).
    pub fn journal(&self, lb: &str) -> flipbit_applier::journal::Journal {
        journal_of(self.state_dir(lb))
    }

    /// The applier's state dir on `lb`.
    pub fn state_dir(&self, lb: &str) -> &std::path::Path {
        match (&self.haproxy, lb) {
            (Some(haproxy), "lb-c") => &haproxy.state_dir,
            _ => &self.lbs[lb].state_dir,
        }
    }
}

/// The applier journal in `state_dir` (empty when it has none yet; a corrupt one fails the test).
pub fn journal_of(state_dir: &std::path::Path) -> flipbit_applier::journal::Journal {
    let state = flipbit_applier::release::StateDir::new(state_dir.to_path_buf()).expect("state dir");
    match flipbit_applier::journal::read(&state) {
        flipbit_applier::journal::Read::Found(j) | flipbit_applier::journal::Read::Fresh(j) => j,
        flipbit_applier::journal::Read::Corrupt(why) => {
            panic!("the journal in {} is corrupt: {why}", state_dir.display())
        }
    }
}
