//! The in-process API server against the real clients: kube-rs's `Api`, `watcher`, `reflector`
//! and events `Recorder`, raw HTTP for what those clients cannot send, and kubectl when installed.
//! If these pass, a test of the generator against this server exercises the same wire protocol a
//! cluster speaks.

use std::io::{Read, Write};
use std::time::Duration;

use flipbit_tests::apiserver::ApiServer;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

fn client(server: &ApiServer) -> Client {
    let config = kube::Config::new(server.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn service(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "flipbit.io/nginx",
                 "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]},
    })
}

fn typed<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The HTTP status of a failed kube call.
fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn next<S: Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("no event within 10 s")
        .expect("stream ended")
}

/// Watcher events as short strings ("Init", "InitApply a", "Apply b", "Err 410", ...).
async fn next_watcher<S>(s: &mut S) -> String
where
    S: Stream<Item = Result<watcher::Event<Service>, watcher::Error>> + Unpin,
{
    match next(s).await {
        Ok(watcher::Event::Init) => "Init".into(),
        Ok(watcher::Event::InitApply(o)) => format!("InitApply {}", o.name_any()),
        Ok(watcher::Event::InitDone) => "InitDone".into(),
        Ok(watcher::Event::Apply(o)) => format!("Apply {}", o.name_any()),
        Ok(watcher::Event::Delete(o)) => format!("Delete {}", o.name_any()),
        Err(watcher::Error::WatchError(status)) => format!("Err {}", status.code),
        Err(e) => format!("Err {e}"),
    }
}

/// One raw HTTP/1.1 request; returns the status and the body as JSON (or a string).
fn raw(server: &ApiServer, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into())),
    )
}

#[tokio::test]
async fn crud_round_trip_with_kube_api() {
    let server = ApiServer::start();
    let api: Api<Service> = Api::namespaced(client(&server), "default");
    let pp = PostParams::default();

    let created = api
        .create(&pp, &typed(service("default", "web", json!({}))))
        .await
        .unwrap();
    let uid = created.uid().unwrap();
    assert!(created.resource_version().is_some());
    assert!(created.meta().creation_timestamp.is_some());
    assert_eq!(
        api_code(api.create(&pp, &typed(service("default", "web", json!({})))).await),
        409
    );

    assert_eq!(api.get("web").await.unwrap().uid(), Some(uid.clone()));
    server.apply(service("other", "db", json!({})));
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let all = Api::<Service>::all(client(&server))
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = all.items.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["web", "db"]);

    // apply keeps the uid; a namespace mismatch between URL and body is refused.
    let replaced = server.apply(service("default", "web", json!({"a": "b"})));
    assert_eq!(replaced["metadata"]["uid"], json!(uid));
    let elsewhere: Api<Service> = Api::namespaced(client(&server), "elsewhere");
    assert_eq!(
        api_code(elsewhere.create(&pp, &typed(service("default", "x", json!({})))).await),
        400
    );

    let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().unwrap().uid(), Some(uid));
    assert_eq!(api_code(api.get("web").await), 404);
    assert_eq!(api_code(api.delete("web", &DeleteParams::default()).await), 404);
    assert!(server.get("Service", Some("default"), "web").is_none());

    let nodes: Api<Node> = Api::all(client(&server));
    let node = nodes
        .create(&pp, &typed(json!({"metadata": {"name": "n1"}})))
        .await
        .unwrap();
    assert_eq!(node.metadata.namespace, None);
    assert_eq!(server.get("Node", None, "n1").unwrap()["kind"], "Node");
}

#[tokio::test]
async fn kubeconfig_serves_kube_clients() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "events.k8s.io"));
    let services: Api<Service> = Api::default_namespaced(client);
    assert!(services.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn list_pages_are_one_snapshot_and_selectors_filter() {
    let server = ApiServer::start();
    for i in 0..5 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        server.apply(service("default", &format!("s{i}"), json!({"tier": tier})));
    }
    let api: Api<Service> = Api::namespaced(client(&server), "default");
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    // Changes after the first page do not show up in the following ones.
    server.delete("Service", Some("default"), "s3");
    server.apply(service("default", "s9", json!({})));
    let mut names: Vec<String> = first.items.iter().map(|s| s.name_any()).collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version, first.metadata.resource_version);
        names.extend(page.items.iter().map(|s| s.name_any()));
        token = page.metadata.continue_;
    }
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);

    let front = api
        .list(&ListParams::default().labels("tier=front,!gone"))
        .await
        .unwrap();
    assert_eq!(
        front.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["s0", "s2", "s4"]
    );
    let named = api
        .list(&ListParams::default().fields("metadata.name=s1"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
    assert_eq!(
        api_code(api.list(&ListParams::default().fields("spec.type=LoadBalancer")).await),
        400
    );

    // After a compaction the old snapshot is gone: 410, as etcd answers.
    let again = api.list(&ListParams::default().limit(1)).await.unwrap();
    server.apply(service("default", "s10", json!({})));
    server.compact();
    let t = again.metadata.continue_.unwrap();
    assert_eq!(
        api_code(api.list(&ListParams::default().limit(1).continue_token(&t)).await),
        410
    );
}

#[tokio::test]
async fn watcher_sees_init_apply_and_delete() {
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({})));
    let mut events = Box::pin(watcher(
        Api::<Service>::all(client(&server)),
        watcher::Config::default(),
    ));
    assert_eq!(next_watcher(&mut events).await, "Init");
    assert_eq!(next_watcher(&mut events).await, "InitApply a");
    assert_eq!(next_watcher(&mut events).await, "InitDone");
    server.apply(service("other", "b", json!({})));
    assert_eq!(next_watcher(&mut events).await, "Apply b");
    assert!(server.delete("Service", Some("other"), "b"));
    assert_eq!(next_watcher(&mut events).await, "Delete b");
}

#[tokio::test]
async fn compaction_makes_the_watcher_relist() {
    let server = ApiServer::start();
    server.apply(service("default", "a", json!({})));
    let (reader, writer) = reflector::store::<Service>();
    let stream = watcher(Api::<Service>::all(client(&server)), watcher::Config::default());
    let mut events = Box::pin(reflector(writer, stream));
    for want in ["Init", "InitApply a", "InitDone"] {
        assert_eq!(next_watcher(&mut events).await, want);
    }
    server.apply(service("default", "b", json!({})));
    assert_eq!(next_watcher(&mut events).await, "Apply b");

    server.compact();
    assert_eq!(next_watcher(&mut events).await, "Err 410");
    for want in ["Init", "InitApply a", "InitApply b", "InitDone"] {
        assert_eq!(next_watcher(&mut events).await, want);
    }
    server.apply(service("default", "c", json!({})));
    assert_eq!(next_watcher(&mut events).await, "Apply c");
    assert_eq!(reader.state().len(), 3);

    let requests = server.requests();
    let is_list = |r: &&flipbit_tests::apiserver::RequestRecord| {
        r.method == "GET" && r.path == "/api/v1/services" && !r.query.contains("watch")
    };
    let lists: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| is_list(r))
        .map(|(i, _)| i)
        .collect();
    let first_watch = requests.iter().position(|r| r.query.contains("watch=true")).unwrap();
    assert_eq!(lists.len(), 2, "{requests:#?}");
    assert!(lists[1] > first_watch);
}

#[tokio::test]
async fn raw_watch_replays_filters_bookmarks_and_expires() {
    let server = ApiServer::start();
    server.set_bookmark_interval(Duration::from_millis(100));
    server.apply(service("default", "a", json!({"app": "x"})));
    server.apply(service("default", "b", json!({})));
    let api: Api<Service> = Api::namespaced(client(&server), "default");
    let wp = WatchParams::default().labels("app=x");
    let mut events = api.watch(&wp, "0").await.unwrap().boxed();
    let name = |e: WatchEvent<Service>| match e {
        WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
        WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
        WatchEvent::Deleted(s) => format!("DELETED {}", s.name_any()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    };
    assert_eq!(name(next(&mut events).await.unwrap()), "ADDED a");
    let rv = server.resource_version();
    assert_eq!(name(next(&mut events).await.unwrap()), format!("BOOKMARK {rv}"));
    // Relabelling b in makes it ADDED for this stream; relabelling a out makes it DELETED.
    server.apply(service("default", "b", json!({"app": "x"})));
    assert_eq!(name(next(&mut events).await.unwrap()), "ADDED b");
    server.apply(service("default", "a", json!({})));
    assert_eq!(name(next(&mut events).await.unwrap()), "DELETED a");

    // From a resourceVersion: the history after it is replayed.
    let mut replay = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .unwrap()
        .boxed();
    assert_eq!(name(next(&mut replay).await.unwrap()), "MODIFIED b");
    assert_eq!(name(next(&mut replay).await.unwrap()), "MODIFIED a");

    server.compact();
    assert_eq!(name(next(&mut events).await.unwrap()), "ERROR 410");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .is_none()
    );
    let mut old = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .unwrap()
        .boxed();
    assert_eq!(name(next(&mut old).await.unwrap()), "ERROR 410");
    // timeoutSeconds ends the stream.
    let now = server.resource_version().to_string();
    let mut short = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &now)
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), short.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn status_merge_patch_changes_only_status() {
    let server = ApiServer::start();
    let original = server.apply(service("default", "web", json!({})));
    let api: Api<Service> = Api::namespaced(client(&server), "default");
    let body = json!({
        "spec": {"type": "ClusterIP"},
        "status": {"loadBalancer": {"ingress": [{"ip": "127.1.1.1", "ipMode": "VIP"}]}},
    });
    let patched = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
    let stored = server.get("Service", Some("default"), "web").unwrap();
    assert_eq!(stored["spec"], original["spec"]);
    assert_eq!(stored["status"]["loadBalancer"]["ingress"][0]["ip"], "127.1.1.1");
    assert_eq!(
        patched.resource_version(),
        stored["metadata"]["resourceVersion"].as_str().map(String::from)
    );
    let patches = server.status_patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        (patches[0].namespace.as_str(), patches[0].name.as_str()),
        ("default", "web")
    );
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(patches[0].body, body);

    // The same status again writes nothing; the main resource cannot change status.
    let rv = server.resource_version();
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
    assert_eq!(server.resource_version(), rv);
    let main = json!({"metadata": {"labels": {"x": "y"}}, "status": {"loadBalancer": {}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    let stored = server.get("Service", Some("default"), "web").unwrap();
    assert_eq!(stored["metadata"]["labels"]["x"], "y");
    assert_eq!(stored["status"]["loadBalancer"]["ingress"][0]["ip"], "127.1.1.1");

    let apply = PatchParams::apply("flipbit");
    assert_eq!(
        api_code(api.patch_status("web", &apply, &Patch::Apply(&body)).await),
        415
    );
    assert_eq!(
        api_code(
            api.patch("web", &PatchParams::default(), &Patch::Strategic(&main))
                .await
        ),
        415
    );
    assert_eq!(
        api_code(
            api.patch_status("gone", &PatchParams::default(), &Patch::Merge(&body))
                .await
        ),
        404
    );
    assert_eq!(server.status_patches().len(), 2);
}

#[tokio::test]
async fn lease_replace_checks_resource_version() {
    let server = ApiServer::start();
    let leases: Api<Lease> = Api::namespaced(client(&server), "default");
    let lease: Lease = typed(json!({"metadata": {"name": "flipbit"}, "spec": {"holderIdentity": "a"}}));
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut next_lease = created.clone();
    next_lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = leases
        .replace("flipbit", &PostParams::default(), &next_lease)
        .await
        .unwrap();
    assert_ne!(replaced.resource_version(), created.resource_version());
    assert_eq!(replaced.uid(), created.uid());
    // created's resourceVersion is stale now.
    assert_eq!(
        api_code(leases.replace("flipbit", &PostParams::default(), &created).await),
        409
    );
    assert_eq!(
        leases
            .get("flipbit")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("b")
    );
    // As on a real server, PUT creates a missing lease unless a resourceVersion is given.
    let other: Lease = typed(json!({"metadata": {"name": "other", "resourceVersion": "1"}}));
    assert_eq!(
        api_code(leases.replace("other", &PostParams::default(), &other).await),
        404
    );
}

#[test]
fn strict_paths_verbs_and_bodies() {
    let server = ApiServer::start();
    let (code, status) = raw(&server, "GET", "/api/v1/pods", "application/json", "");
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (404, Some("Status"), Some("NotFound"))
    );
    assert_eq!(raw(&server, "GET", "/apis/apps/v1", "application/json", "").0, 404);
    let (code, status) = raw(&server, "DELETE", "/api/v1/services", "application/json", "");
    assert_eq!((code, status["reason"].as_str()), (405, Some("MethodNotAllowed")));
    assert_eq!(
        raw(&server, "POST", "/api/v1/services", "application/json", "{}").0,
        405
    );
    let (code, status) = raw(
        &server,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        "{nope",
    );
    assert_eq!((code, status["code"].as_u64()), (400, Some(400)));
    assert_eq!(
        raw(&server, "POST", "/api/v1/nodes", "application/yaml", "metadata: {}").0,
        415
    );
    assert_eq!(
        raw(
            &server,
            "POST",
            "/api/v1/nodes",
            "application/json",
            r#"{"metadata":{"name":"Bad_Name"}}"#
        )
        .0,
        422
    );
    assert_eq!(
        raw(&server, "GET", "/api/v1/services?watch=maybe", "application/json", "").0,
        400
    );
    let (code, version) = raw(&server, "GET", "/version", "application/json", "");
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
    let records = server.requests();
    assert_eq!(records.len(), 9);
    assert_eq!((records[0].method.as_str(), records[0].status), ("GET", 404));
    assert_eq!(records[7].query, "watch=maybe");
}

#[tokio::test]
async fn unavailable_answers_503_then_recovers() {
    let server = ApiServer::start();
    let api: Api<Service> = Api::all(client(&server));
    let mut watch = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    server.set_unavailable(true);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .is_none()
    );
    // kube 5 clients retry 503 by default (up to 15 times, exponential backoff): without
    // retries the 503 surfaces at once...
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.default_retry = false;
    let no_retry: Api<Service> = Api::all(Client::try_from(config).unwrap());
    assert_eq!(api_code(no_retry.list(&ListParams::default()).await), 503);
    // ...and with them a request made during the outage succeeds once it ends.
    let pending = tokio::spawn(async move { api.list(&ListParams::default()).await.map(|l| l.items.len()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.set_unavailable(false);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        0
    );
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert!(statuses.iter().filter(|s| **s == 503).count() >= 2, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200));
}

#[tokio::test]
async fn recorder_events_land_in_events() {
    let server = ApiServer::start();
    let svc: Service = typed(server.apply(service("default", "web", json!({}))));
    let reporter = Reporter {
        controller: "flipbit-generator".into(),
        instance: None,
    };
    let recorder = Recorder::new(client(&server), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "AddressAssigned".into(),
        note: Some("127.1.1.1 on lb-1".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = svc.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events = server.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(events[0]["regarding"]["name"], "web");
    assert_eq!(events[0]["reason"], "AddressAssigned");
    assert_eq!(events[0]["series"]["count"], 2);
    let verbs: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/v1/namespaces/default/events"))
        .map(|r| format!("{} {}", r.method, r.status))
        .collect();
    assert_eq!(verbs, ["POST 201", "PATCH 200"]);
}

#[test]
fn kubectl_resolves_and_lists() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::KUBECTL]) else {
        return;
    };
    let server = ApiServer::start();
    let mut web = service("default", "web", json!({}));
    web["status"] = json!({"loadBalancer": {"ingress": [{"ip": "127.1.1.1", "ipMode": "VIP"}]}});
    server.apply(web);
    server.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    // Server-side printing: kubectl shows the address a controller wrote into the status.
    let table = kubectl(&["get", "svc", "-A"]);
    assert!(
        table.contains("EXTERNAL-IP") && table.contains("127.1.1.1") && table.contains("default"),
        "{table}"
    );
    assert!(kubectl(&["get", "no"]).contains("node-1"));
    let json_out: Value = serde_json::from_str(&kubectl(&["get", "services", "-o", "json"])).unwrap();
    assert_eq!(json_out["items"][0]["metadata"]["name"], "web");
}
