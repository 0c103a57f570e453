//! The cluster bundle (deploy/kubernetes) through the real kubectl: the base and the example
//! overlay render with `kubectl kustomize`, hold what an install needs (the objects, the image,
//! the known_hosts mount, the overlay's settings), every object reads back into the Kubernetes
//! types without losing a field (so none is misspelled or mistyped), and `kubectl apply -k`
//! installs each render into the in-process API server, where the objects then read back with
//! every field that was sent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flipbit_tests::apiserver::ApiServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::serde::Deserialize;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{Value, json};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NAMESPACE: &str = "flipbit-system";
const KNOWN_HOSTS_DIR: &str = "/etc/flipbit/ssh";

fn bundle(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(dir)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubectl kustomize DIR` as JSON objects, in the order kubectl prints them.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = run(Command::new("kubectl").arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        text(&out)
    );
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_norway::Deserializer::from_str(&yaml)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("kubectl kustomize printed bad YAML: {e}\n{yaml}"))
        })
        .collect()
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    field(v, path).as_str().unwrap_or_default()
}

/// (kind, name) of every object, sorted.
fn ids(objects: &[Value]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = objects
        .iter()
        .map(|o| (s(o, &["kind"]).to_string(), s(o, &["metadata", "name"]).to_string()))
        .collect();
    ids.sort();
    ids
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    let first = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} in {:?}", ids(objects)));
    assert!(found.next().is_none(), "more than one {kind}: {:?}", ids(objects));
    first
}

/// Deserializes `obj` into the Kubernetes type `T` and back: a field the type does not have is
/// lost on the way and a value of the wrong type fails, which is what a server's strict field
/// validation refuses.
fn round_trips<T: DeserializeOwned + Serialize>(obj: &Value) {
    let name = format!("{} {}", s(obj, &["kind"]), s(obj, &["metadata", "name"]));
    let typed: T = serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("{name} is not a valid object: {e}"));
    let back = serde_json::to_value(&typed).expect("serializing");
    if let Some(missing) = first_missing(obj, &back, "") {
        panic!("{name}: {missing} is not a field of the Kubernetes type (misspelled, or in the wrong place)");
    }
}

fn check_types(objects: &[Value]) {
    for obj in objects {
        let mut obj = obj.clone();
        let kind = s(&obj, &["kind"]).to_string();
        // kubectl kustomize prints a Secret's base64 wrapped at 70 columns; the server's decoder
        // (Go's encoding/base64) skips the line breaks, k8s-openapi's does not.
        if kind == "Secret"
            && let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut)
        {
            for value in data.values_mut() {
                if let Some(text) = value.as_str() {
                    *value = Value::String(text.replace(['\n', '\r'], ""));
                }
            }
        }
        match kind.as_str() {
            "Namespace" => round_trips::<Namespace>(&obj),
            "ServiceAccount" => round_trips::<ServiceAccount>(&obj),
            "ConfigMap" => round_trips::<ConfigMap>(&obj),
            "Secret" => round_trips::<Secret>(&obj),
            "Deployment" => round_trips::<Deployment>(&obj),
            "ClusterRole" => round_trips::<ClusterRole>(&obj),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(&obj),
            "Role" => round_trips::<Role>(&obj),
            "RoleBinding" => round_trips::<RoleBinding>(&obj),
            other => panic!("the bundle holds a {other}, which this test does not know"),
        }
    }
}

/// The first path (e.g. `.spec.template`) whose value in `sent` is not in `got` as sent, if any.
fn first_missing(sent: &Value, got: &Value, path: &str) -> Option<String> {
    match (sent, got) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => first_missing(v, w, &format!("{path}.{k}")),
            None if v.is_null() => None,
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_missing(v, w, &format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        _ => Some(format!("{path} (sent {sent}, got {got})")),
    }
}

fn generator_container(objects: &[Value]) -> Container {
    let deployment: Deployment = serde_json::from_value(one(objects, "Deployment").clone()).expect("a Deployment");
    let pod = deployment.spec.template.spec.expect("a pod spec");
    let mut containers = pod.containers.into_iter();
    let container = containers.next().expect("a container");
    assert!(containers.next().is_none(), "one container");
    container
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The volume of the Deployment's pod mounted at `path`, as JSON.
fn volume_at(objects: &[Value], path: &str) -> Value {
    let pod = field(one(objects, "Deployment"), &["spec", "template", "spec"]);
    let mounts = &pod["containers"][0]["volumeMounts"];
    let mounts = mounts.as_array().cloned().unwrap_or_default();
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("nothing is mounted at {path}: {mounts:?}"));
    assert_eq!(mount["readOnly"], true, "{path} is mounted writable");
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    volumes
        .into_iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {} for {path}", mount["name"]))
}

/// What the base and every overlay must keep: the objects, all in flipbit-system but the
/// cluster-wide ones, and the generator wired to its known_hosts ConfigMap.
fn check_common(objects: &[Value]) {
    check_types(objects);
    let kinds: Vec<String> = ids(objects).into_iter().map(|(k, _)| k).collect();
    for kind in [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    for obj in objects {
        let cluster_wide = matches!(s(obj, &["kind"]), "Namespace" | "ClusterRole" | "ClusterRoleBinding");
        let ns = s(obj, &["metadata", "namespace"]);
        assert_eq!(ns, if cluster_wide { "" } else { NAMESPACE }, "{obj:#}");
    }
    assert_eq!(s(one(objects, "Namespace"), &["metadata", "name"]), NAMESPACE);
    let binding = one(objects, "ClusterRoleBinding");
    assert_eq!(
        &binding["subjects"][0],
        &json!({"kind": "ServiceAccount", "name": "flipbit-generator", "namespace": NAMESPACE})
    );

    let container = generator_container(objects);
    let known_hosts = format!("{KNOWN_HOSTS_DIR}/known_hosts");
    assert_eq!(env(&container, "FLIPBIT_GIT_KNOWN_HOSTS"), Some(known_hosts.as_str()));
    let volume = volume_at(objects, KNOWN_HOSTS_DIR);
    let config_map = one(objects, "ConfigMap");
    let cm_name = s(config_map, &["metadata", "name"]);
    assert!(cm_name.starts_with("flipbit-git-known-hosts-"), "{cm_name}");
    assert_eq!(s(&volume, &["configMap", "name"]), cm_name, "{volume}");
    assert!(
        field(config_map, &["data", "known_hosts"]).is_string(),
        "{config_map:#}"
    );
    let security = container.security_context.expect("a container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
}

#[test]
fn the_base_renders_with_kubectl_kustomize() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::KUBECTL]) else {
        return;
    };
    let objects = kustomize(&bundle(""));
    assert_eq!(
        objects,
        kustomize(&bundle("base")),
        "deploy/kubernetes is the base as it is"
    );
    check_common(&objects);
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "the base holds no Secret"
    );

    let container = generator_container(&objects);
    // The base runs what scripts/image tags, at this tree's version.
    let image = format!("localhost/flipbit-generator:{VERSION}");
    assert_eq!(container.image.as_deref(), Some(image.as_str()));
    assert_eq!(
        env(&container, "FLIPBIT_PROPOSE_BRANCH"),
        None,
        "the base commits to main"
    );
    let hosts = s(one(&objects, "ConfigMap"), &["data", "known_hosts"]);
    assert!(
        hosts.lines().all(|l| l.trim().is_empty() || l.starts_with('#')),
        "the base trusts no host key: {hosts}"
    );
    let secret = volume_at(&objects, "/etc/flipbit/git");
    assert_eq!(s(&secret, &["secret", "secretName"]), "flipbit-git");
    let pod = field(one(&objects, "Deployment"), &["spec", "template", "spec"]);
    assert_eq!(field(pod, &["securityContext", "runAsUser"]), 65532);
}

#[test]
fn the_example_overlay_sets_a_sites_settings() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::KUBECTL]) else {
        return;
    };
    let base = kustomize(&bundle(""));
    let objects = kustomize(&bundle("overlays/example"));
    check_common(&objects);

    let container = generator_container(&objects);
    let image = container.image.clone().unwrap_or_default();
    let base_image = generator_container(&base).image.unwrap_or_default();
    assert!(
        image.ends_with(&format!("/flipbit-generator:{VERSION}")) && image != base_image,
        "{image}"
    );
    assert_eq!(env(&container, "FLIPBIT_PROPOSE_BRANCH"), Some("flipbit/review"));
    let repo = env(&container, "FLIPBIT_REPO").unwrap_or_default();
    assert!(
        repo.starts_with("ssh://") && Some(repo) != env(&generator_container(&base), "FLIPBIT_REPO"),
        "{repo}"
    );
    // The rest of the base's environment is kept, in its order.
    let names = |c: &Container| -> Vec<String> { c.env.iter().flatten().map(|e| e.name.clone()).collect() };
    let mut overlay_env = names(&container);
    overlay_env.retain(|n| n != "FLIPBIT_PROPOSE_BRANCH");
    assert_eq!(overlay_env, names(&generator_container(&base)));

    // The deploy key: a generated ssh-auth Secret that the Deployment mounts.
    let secret = one(&objects, "Secret");
    assert_eq!(s(secret, &["type"]), "kubernetes.io/ssh-auth");
    assert!(field(secret, &["data", "ssh-privatekey"]).is_string(), "{secret:#}");
    let secret_name = s(secret, &["metadata", "name"]);
    assert!(secret_name.starts_with("flipbit-git-"), "{secret_name}");
    assert_eq!(
        s(&volume_at(&objects, "/etc/flipbit/git"), &["secret", "secretName"]),
        secret_name
    );

    // known_hosts replaced: host key lines, and a new name, so the Deployment rolls.
    let hosts = s(one(&objects, "ConfigMap"), &["data", "known_hosts"]);
    let keys: Vec<&str> = hosts.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(!keys.is_empty(), "{hosts}");
    for line in keys {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() >= 3 && fields[1].starts_with("ssh-") && fields[2].starts_with("AAAA"),
            "not a known_hosts line: {line}"
        );
    }
    assert_ne!(
        s(one(&objects, "ConfigMap"), &["metadata", "name"]),
        s(one(&base, "ConfigMap"), &["metadata", "name"])
    );
    // Everything but the Deployment and the generated objects is the base's.
    let unchanged = |objs: &[Value]| -> Vec<Value> {
        objs.iter()
            .filter(|o| !matches!(s(o, &["kind"]), "Deployment" | "ConfigMap" | "Secret"))
            .cloned()
            .collect()
    };
    assert_eq!(unchanged(&objects), unchanged(&base));
}

/// `kubectl apply -k DIR` against `server`, twice: the first creates every object, the second
/// finds nothing to change.
fn apply_twice(server: &ApiServer, dir: &Path, work: &Path) {
    let kubeconfig = work.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let kubectl = |args: &[&str]| {
        run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(work.join("cache"))
            .args(args)
            .arg("-k")
            .arg(dir))
    };
    let objects = kustomize(dir);
    // No OpenAPI here: kubectl's schema check is the round trip above (check_types).
    let first = kubectl(&["apply", "--validate=false"]);
    assert!(first.status.success(), "kubectl apply: {}", text(&first));
    let said = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(said.lines().count(), objects.len(), "{said}");
    assert!(said.lines().all(|l| l.ends_with(" created")), "{said}");

    for sent in &objects {
        let kind = s(sent, &["kind"]);
        let ns = Some(s(sent, &["metadata", "namespace"])).filter(|n| !n.is_empty());
        let name = s(sent, &["metadata", "name"]);
        let stored = server
            .get(kind, ns, name)
            .unwrap_or_else(|| panic!("{kind} {name} was not stored"));
        if let Some(missing) = first_missing(sent, &stored, "") {
            panic!("{kind} {name}: {missing} was sent but is not stored");
        }
        // What kubectl diffs the next apply against.
        let last = s(
            &stored,
            &[
                "metadata",
                "annotations",
                "kubectl.kubernetes.io/last-applied-configuration",
            ],
        );
        let last: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
        assert_eq!(first_missing(sent, &last, ""), None, "{kind} {name}");
    }

    let rv = server.resource_version();
    let second = kubectl(&["apply", "--validate=false"]);
    assert!(second.status.success(), "kubectl apply again: {}", text(&second));
    let said = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(said.lines().all(|l| l.ends_with(" unchanged")), "{said}");
    assert_eq!(server.resource_version(), rv, "the second apply wrote something");

    // Through the API as a client reads them: kubectl's view of the Deployment.
    let out = kubectl_get(&kubeconfig, work);
    assert!(out.status.success(), "kubectl get: {}", text(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("kubectl get -o json");
    let sent = one(&objects, "Deployment");
    assert_eq!(first_missing(sent, &got, ""), None, "{got:#}");
}

fn kubectl_get(kubeconfig: &Path, work: &Path) -> Output {
    run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .args(["get", "deployment", "flipbit-generator", "-n", NAMESPACE, "-o", "json"]))
}

#[test]
fn kubectl_applies_the_base_and_the_overlay() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::KUBECTL]) else {
        return;
    };
    for dir in ["", "overlays/example"] {
        // The groups the bundle's kinds live in, beside the generator's.
        let server = ApiServer::start_with_groups(&["apps", "rbac.authorization.k8s.io"]);
        let work = tempfile::tempdir().expect("tempdir");
        apply_twice(&server, &bundle(dir), work.path());
    }
}
