//! A cluster as a folder of manifests that a test edits between runs, one file per object, in the
//! YAML shape `kubectl get -o yaml` writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct ManifestDir {
    dir: PathBuf,
}

/// One Service port: (protocol, port, nodePort).
pub type Port = (&'static str, u16, u16);

impl ManifestDir {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self { dir: dir.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes (or replaces) one object's file.
    pub fn put(&self, file: &str, yaml: &str) {
        std::fs::write(self.dir.join(file), yaml).unwrap_or_else(|e| panic!("writing {file}: {e}"));
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join(file)).unwrap_or_else(|e| panic!("removing {file}: {e}"));
    }

    /// A LoadBalancer Service of class `flipbit.io/nginx`.
    pub fn lb_service(&self, ns: &str, name: &str, annotations: &[(&str, &str)], ports: &[Port]) {
        self.put(
            &format!("svc-{ns}-{name}.yaml"),
            &service_yaml(ns, name, "LoadBalancer", Some("flipbit.io/nginx"), annotations, ports),
        );
    }

    /// A LoadBalancer Service of class `flipbit.io/nginx` with `metadata.labels` (for pools that
    /// admit Services by label).
    pub fn lb_service_labelled(
        &self,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        ports: &[Port],
    ) {
        let mut yaml = service_yaml(ns, name, "LoadBalancer", Some("flipbit.io/nginx"), annotations, ports);
        if !labels.is_empty() {
            let mut block = String::from("  labels:\n");
            for (k, v) in labels {
                block.push_str(&format!("    {k}: {}\n", json_string(v)));
            }
            let namespace = format!("  namespace: {ns}\n");
            yaml = yaml.replacen(&namespace, &format!("{namespace}{block}"), 1);
        }
        self.put(&format!("svc-{ns}-{name}.yaml"), &yaml);
    }

    /// A LoadBalancer Service with `externalTrafficPolicy: Local` and an EndpointSlice whose one
    /// ready endpoint is on node `ready_node`.
    pub fn local_service(&self, ns: &str, name: &str, annotations: &[(&str, &str)], ports: &[Port], ready_node: &str) {
        self.put(
            &format!("svc-{ns}-{name}.yaml"),
            &service_yaml(ns, name, "LoadBalancer", Some("flipbit.io/nginx"), annotations, ports)
                .replace("spec:\n", "spec:\n  externalTrafficPolicy: Local\n"),
        );
        self.put(
            &format!("slice-{ns}-{name}.yaml"),
            &format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\nendpoints:\n  - nodeName: {ready_node}\n    conditions: {{ready: true}}\n"
            ),
        );
    }

    /// Five Ready, labelled nodes `node-1..5` at `127.<block>.0.10..14`.
    pub fn nodes(&self, block: u8) {
        for i in 1..=5u8 {
            self.node(i, block, true);
        }
    }

    pub fn node(&self, i: u8, block: u8, ready: bool) {
        self.put(
            &format!("node-{i}.yaml"),
            &node_yaml(&format!("node-{i}"), &format!("127.{block}.0.{}", 9 + i), ready),
        );
    }
}

pub fn service_yaml(
    ns: &str,
    name: &str,
    ty: &str,
    class: Option<&str>,
    annotations: &[(&str, &str)],
    ports: &[Port],
) -> String {
    let mut y = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n");
    if !annotations.is_empty() {
        y.push_str("  annotations:\n");
        for (k, v) in annotations {
            // JSON strings are valid YAML scalars and carry any payload a test wants to smuggle.
            y.push_str(&format!("    {k}: {}\n", json_string(v)));
        }
    }
    y.push_str(&format!("spec:\n  type: {ty}\n"));
    if let Some(c) = class {
        y.push_str(&format!("  loadBalancerClass: {c}\n"));
    }
    y.push_str("  ports:\n");
    for (proto, port, node_port) in ports {
        y.push_str(&format!(
            "    - {{protocol: {proto}, port: {port}, nodePort: {node_port}}}\n"
        ));
    }
    y
}

pub fn node_yaml(name: &str, ip: &str, ready: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    flipbit.io/lb-backend: \"true\"\n\
         status:\n  addresses:\n    - {{type: InternalIP, address: {ip}}}\n  conditions:\n    - {{type: Ready, status: \"{}\"}}\n",
        if ready { "True" } else { "False" }
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `flipbit.yaml` with the given (host, pool) pairs.
pub fn flipbit_yaml(hosts: &[(&str, &str)]) -> String {
    let mut y = String::from("zone: k8s.example.test\nlbHosts:\n");
    for (name, pool) in hosts {
        y.push_str(&format!("  - name: {name}\n    pools: [\"{pool}\"]\n"));
    }
    y
}

/// Runs `flipbit-generator <cmd> --repo REPO --manifests DIR [extra]`.
pub fn generator(cmd: &str, repo: &Path, manifests: &Path, extra: &[&str]) -> Output {
    Command::new(crate::bins::generator())
        .arg(cmd)
        .arg("--repo")
        .arg(repo)
        .arg("--manifests")
        .arg(manifests)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running flipbit-generator: {e}"))
}

/// `flipbit-applier apply --repo REPO --lb LB --state-dir DIR`: what every host's arguments start
/// with, whatever its load balancer.
pub fn apply_args(repo: &Path, lb: &str, state_dir: &Path) -> Vec<String> {
    vec![
        "apply".into(),
        "--repo".into(),
        repo.display().to_string(),
        "--lb".into(),
        lb.into(),
        "--state-dir".into(),
        state_dir.display().to_string(),
    ]
}

/// Runs `flipbit-applier` with `args`.
pub fn applier(args: &[String]) -> Output {
    applier_with_env(args, &[])
}

/// Runs `flipbit-applier` with `args` and the environment variables `env` (such as
/// `FLIPBIT_APPLIER_KILL_AT`, which kills a debug build at a named step).
pub fn applier_with_env(args: &[String], env: &[(&str, &str)]) -> Output {
    Command::new(crate::bins::applier())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running flipbit-applier: {e}"))
}

/// stdout and stderr of a run, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
