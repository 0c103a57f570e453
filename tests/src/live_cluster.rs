//! The cluster the live-generator tests and benches start from: an in-process API server with
//! Ready nodes (five at 127.B.0.10–14 by default), its kubeconfig, and a bare state repo whose
//! `flipbit.yaml` has the LB hosts (lb-a at 127.B.1.0/24 and lb-b at 127.B.2.0/24 by default).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tempfile::TempDir;

use crate::apiserver::ApiServer;
use crate::cluster::flipbit_yaml;
use crate::genproc::objects;

pub struct LiveCluster {
    pub tmp: TempDir,
    pub api: ApiServer,
    pub kubeconfig: PathBuf,
    pub repo: PathBuf,
    pub block: u8,
}

impl LiveCluster {
    /// LB hosts lb-a (127.B.1.0/24) and lb-b (127.B.2.0/24), five Ready nodes 127.B.0.10–14.
    pub fn start(block: u8) -> Self {
        Self::with_hosts(
            &[
                ("lb-a", &format!("127.{block}.1.0/24")),
                ("lb-b", &format!("127.{block}.2.0/24")),
            ],
            block,
            5,
        )
    }

    /// An API server holding `nodes` Ready nodes node-1, node-2, … at 127.`block`.0.10 on, its
    /// kubeconfig, and a bare state repo whose `flipbit.yaml` has the LB hosts `hosts` (name,
    /// pool).
    pub fn with_hosts(hosts: &[(&str, &str)], block: u8, nodes: u8) -> Self {
        Self::with_config(flipbit_yaml(hosts), block, nodes)
    }

    /// [`LiveCluster::with_hosts`] with `config` as the repo's `flipbit.yaml`.
    pub fn with_config(config: String, block: u8, nodes: u8) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let api = ApiServer::start();
        let kubeconfig = tmp.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let repo = crate::repo::create(
            &tmp.path().join("state.git"),
            &BTreeMap::from([("flipbit.yaml", config)]),
        )
        .expect("repo");
        for i in 1..=nodes {
            api.apply(objects::node(
                &format!("node-{i}"),
                &format!("127.{block}.0.{}", 9 + i),
                true,
                false,
                true,
            ));
        }
        Self {
            tmp,
            api,
            kubeconfig,
            repo,
            block,
        }
    }

    /// The addresses in Service `ns/name`'s `status.loadBalancer.ingress`, sorted; none while the
    /// Service has no status (or is gone).
    pub fn ingress(&self, ns: &str, name: &str) -> Vec<String> {
        let Some(svc) = self.api.get("Service", Some(ns), name) else {
            return Vec::new();
        };
        let mut ips: Vec<String> = svc
            .pointer("/status/loadBalancer/ingress")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.get("ip").and_then(|ip| ip.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }
}
