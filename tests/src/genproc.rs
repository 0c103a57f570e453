//! A `flipbit-generator run` process for live tests: started against a kubeconfig, its log lines
//! collected as they come (so tests wait on what it says, never on a fixed sleep), killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lease 2 s (renew 0.3 s), debounce 50/300 ms, resync 2 s.
pub const TEST_TIMINGS: &[&str] = &[
    "--lease-duration",
    "2",
    "--lease-renew",
    "0.3",
    "--debounce-ms",
    "50",
    "--debounce-max-ms",
    "300",
    "--resync",
    "2",
];

pub struct GeneratorProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub identity: String,
}

impl GeneratorProcess {
    /// Starts `flipbit-generator run` with fast test timings: lease 2 s (renew 0.3 s), debounce
    /// 50/300 ms, resync 2 s.
    pub fn start(repo: &Path, kubeconfig: &Path, identity: &str, extra: &[&str]) -> Self {
        Self::spawn(repo, kubeconfig, identity, TEST_TIMINGS, extra)
    }

    /// Starts it with the given timing flags (none: the production defaults).
    pub fn spawn(repo: &Path, kubeconfig: &Path, identity: &str, timings: &[&str], extra: &[&str]) -> Self {
        let mut child = Command::new(crate::bins::generator())
            .arg("run")
            .arg("--repo")
            .arg(repo)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--identity",
                identity,
                "--lease-namespace",
                "flipbit-system",
            ])
            .args(timings)
            .args(extra)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting flipbit-generator run: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Self {
            child,
            lines,
            identity: identity.to_owned(),
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no log line with {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of /live, /ready and /metrics, from the "serving" log line.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("serving /live"))?;
        let at = line.find("bound=")? + "bound=".len();
        line[at..].split_whitespace().next()?.parse().ok()
    }

    /// A plain HTTP GET on the process's own endpoint: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect_timeout(&self.http_addr()?, Duration::from_secs(2)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process abruptly (no lease release), as a crashed pod would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GeneratorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kubernetes objects as the API server stores them, for tests.
pub mod objects {
    use serde_json::{Value, json};

    /// A LoadBalancer Service of class flipbit.io/nginx with TCP ports (port, nodePort).
    pub fn lb_service(ns: &str, name: &str, annotations: &[(&str, &str)], ports: &[(u16, u16)]) -> Value {
        let annotations: serde_json::Map<String, Value> =
            annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "flipbit.io/nginx",
                "ports": ports.iter().map(|(p, np)| json!({"protocol": "TCP", "port": p, "nodePort": np})).collect::<Vec<_>>(),
            }
        })
    }

    pub fn node(name: &str, ip: &str, ready: bool, unschedulable: bool, labelled: bool) -> Value {
        let mut labels = serde_json::Map::new();
        if labelled {
            labels.insert("flipbit.io/lb-backend".into(), json!("true"));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        })
    }

    /// An EndpointSlice of Service `ns/svc` with one ready endpoint on each of `nodes`.
    pub fn endpoint_slice(ns: &str, svc: &str, nodes: &[&str]) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-slice"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": nodes.iter().enumerate().map(|(i, n)| json!({
                "addresses": [format!("127.250.0.{}", i + 1)],
                "conditions": {"ready": true},
                "nodeName": n,
            })).collect::<Vec<_>>(),
        })
    }
}
