//! `flipbit-generator render` and `plan` against real bare Git repos: determinism, stable
//! addresses, and bad input that skips one Service and loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flipbit_core::ledger::Ledger;
use flipbit_tests::cluster::{ManifestDir, flipbit_yaml, generator, service_yaml, text};
use flipbit_tests::repo;
use tempfile::TempDir;

struct Setup {
    _tmp: TempDir,
    repo: PathBuf,
    cluster: ManifestDir,
    block: u8,
}

/// A repo with hosts lb-a (127.<block>.1.0/24) and lb-b (127.<block>.2.0/24) and five nodes.
fn setup(block: u8) -> Setup {
    setup_with_pools(block, &format!("127.{block}.1.0/24"), &format!("127.{block}.2.0/24"))
}

fn setup_with_pools(block: u8, pool_a: &str, pool_b: &str) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = repo::two_hosts(tmp.path(), pool_a, pool_b);
    let cluster = ManifestDir::new(&tmp.path().join("cluster"));
    cluster.nodes(block);
    Setup {
        _tmp: tmp,
        repo,
        cluster,
        block,
    }
}

fn render_ok(s: &Setup) -> String {
    let out = generator("render", &s.repo, s.cluster.path(), &[]);
    assert!(out.status.success(), "render failed: {}", text(&out));
    text(&out)
}

fn ledger(repo: &Path) -> Ledger {
    Ledger::parse(&repo::read(repo, "ledger.yaml").expect("ledger committed")).expect("ledger parses")
}

fn addresses(repo: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    ledger(repo)
        .services
        .iter()
        .filter(|(_, e)| e.released_at.is_none())
        .map(|(k, e)| {
            (
                k.to_string(),
                e.addresses
                    .iter()
                    .map(|(h, ip)| (h.to_string(), ip.to_string()))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn render_commits_once_and_output_is_deterministic() {
    let s = setup(21);
    s.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    s.cluster
        .lb_service("web", "dns", &[], &[("UDP", 8053, 30053), ("TCP", 8053, 30053)]);
    let first = render_ok(&s);
    assert!(first.contains("committed"), "{first}");
    assert_eq!(repo::commit_count(&s.repo), 2);
    let again = render_ok(&s);
    assert!(again.contains("no change"), "{again}");
    assert_eq!(
        repo::commit_count(&s.repo),
        2,
        "a second render with the same input committed"
    );

    // The same input into a fresh repo gives byte-identical files.
    let t = setup(21);
    t.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    t.cluster
        .lb_service("web", "dns", &[], &[("UDP", 8053, 30053), ("TCP", 8053, 30053)]);
    render_ok(&t);
    let files = repo::files_under(&s.repo, "");
    assert_eq!(files, repo::files_under(&t.repo, ""));
    assert!(files.contains(&"lb/lb-a/web/shop.conf".to_owned()), "{files:?}");
    for f in files {
        assert_eq!(
            repo::read(&s.repo, &f),
            repo::read(&t.repo, &f),
            "{f} differs between two renders"
        );
    }
    let message = repo::head_message(&s.repo);
    assert!(message.starts_with("expose web/dns, web/shop"), "{message}");
    assert!(
        message.contains("- expose web/shop on lb-a 127.21.1.2, lb-b 127.21.2.2"),
        "{message}"
    );
    assert!(message.contains("Flipbit-Services: web/dns, web/shop"), "{message}");
}

#[test]
fn plan_prints_the_change_and_commits_nothing() {
    let s = setup(22);
    s.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    let out = generator("plan", &s.repo, s.cluster.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "plan with a change must exit 2: {}",
        text(&out)
    );
    let shown = text(&out);
    assert!(
        shown.contains("expose web/shop on lb-a 127.22.1.1, lb-b 127.22.2.1"),
        "{shown}"
    );
    // A plain (not a terminal) unified diff and the summary table.
    assert!(shown.contains("+++ b/lb/lb-b/web/shop.conf"), "{shown}");
    assert!(shown.contains("+    listen 127.22.2.1:8080;"), "{shown}");
    assert!(!shown.contains('\x1b'), "colour codes on a pipe: {shown}");
    assert!(shown.contains("Services exposed           1"), "{shown}");
    assert!(shown.contains("Addresses allocated        2"), "{shown}");
    assert!(shown.contains("DNS names added            1"), "{shown}");
    assert_eq!(repo::commit_count(&s.repo), 1, "plan committed");
    render_ok(&s);
    let out = generator("plan", &s.repo, s.cluster.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("no change"), "{}", text(&out));

    // A change to an existing Service shows as a diff of its lines.
    s.cluster.remove("node-1.yaml");
    let out = generator("plan", &s.repo, s.cluster.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let shown = text(&out);
    assert!(shown.contains("-    server 127.22.0.10:30080;"), "{shown}");
    assert!(shown.contains("Services changed           1"), "{shown}");
}

#[test]
fn addresses_survive_node_churn_and_fresh_generators() {
    let s = setup(23);
    for name in ["a", "b", "c"] {
        s.cluster.lb_service("web", name, &[], &[("TCP", 8080, 30080)]);
    }
    render_ok(&s);
    let before = addresses(&s.repo);
    assert_eq!(before.len(), 3);
    let snippet = |s: &Setup| repo::read(&s.repo, "lb/lb-a/web/b.conf").unwrap_or_default();
    let node3 = format!("127.{}.0.12:30080", s.block);
    assert!(snippet(&s).contains(&node3));

    s.cluster.remove("node-3.yaml");
    let out = render_ok(&s);
    assert!(out.contains("committed"), "{out}");
    assert!(!snippet(&s).contains(&node3), "removed node still an upstream");
    assert_eq!(addresses(&s.repo), before, "removing a node moved an address");

    s.cluster.node(3, s.block, false);
    render_ok(&s);
    assert!(!snippet(&s).contains(&node3), "a NotReady node is an upstream");
    s.cluster.node(6, s.block, true);
    s.cluster.node(3, s.block, true);
    render_ok(&s);
    assert!(snippet(&s).contains(&node3) && snippet(&s).contains(&format!("127.{}.0.15:30080", s.block)));
    assert_eq!(addresses(&s.repo), before, "adding nodes moved an address");

    // A generator with a persistent cache, then one with a fresh clone, after a Service is added.
    let cache = s.repo.parent().unwrap().join("cache.git");
    s.cluster.lb_service("web", "aa", &[], &[("TCP", 8080, 30080)]);
    let out = generator(
        "render",
        &s.repo,
        s.cluster.path(),
        &["--cache-dir", cache.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_dir_all(&cache).unwrap();
    render_ok(&s);
    let after = addresses(&s.repo);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} moved");
    }
    assert_eq!(
        after["web/aa"]["lb-a"], "127.23.1.4",
        "a new Service gets the lowest free address"
    );
}

#[test]
fn a_bad_annotation_skips_only_that_service_and_keeps_its_files() {
    let s = setup(24);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    s.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    let a_before = repo::read(&s.repo, "lb/lb-a/web/a.conf").unwrap();
    let b_before = repo::read(&s.repo, "lb/lb-a/web/b.conf").unwrap();

    s.cluster
        .lb_service("web", "a", &[("flipbit.io/balance", "fast")], &[("TCP", 8080, 30080)]);
    s.cluster.remove("node-1.yaml");
    let out = render_ok(&s);
    assert!(
        out.contains("error: Service web/a: metadata.annotations[\"flipbit.io/balance\"]: \"fast\" is not one of round-robin, least-conn, hash"),
        "{out}"
    );
    assert_eq!(
        repo::read(&s.repo, "lb/lb-a/web/a.conf").unwrap(),
        a_before,
        "the bad Service's files changed"
    );
    assert_ne!(
        repo::read(&s.repo, "lb/lb-a/web/b.conf").unwrap(),
        b_before,
        "the good Service was not updated"
    );
    assert!(
        addresses(&s.repo).contains_key("web/a"),
        "the bad Service lost its address"
    );
}

#[test]
fn annotation_values_cannot_inject_nginx_directives() {
    let s = setup(25);
    let payloads = [
        (
            "flipbit.io/balance",
            "round-robin;\n}\nserver { listen 127.25.9.9:1; proxy_pass evil; }",
        ),
        ("flipbit.io/max-nodes", "3; include /etc/passwd"),
        ("flipbit.io/load-balancers", "lb-a;}evil"),
        ("flipbit.io/proxy-protocol", "true;\nevil on"),
    ];
    for (i, (key, value)) in payloads.iter().enumerate() {
        s.cluster
            .lb_service("web", &format!("x{i}"), &[(key, value)], &[("TCP", 8080, 30080)]);
    }
    s.cluster.put(
        "svc-bad-name.yaml",
        &service_yaml(
            "web",
            "evil;name",
            "LoadBalancer",
            Some("flipbit.io/nginx"),
            &[],
            &[("TCP", 80, 30080)],
        ),
    );
    s.cluster.lb_service("web", "fine", &[], &[("TCP", 8080, 30080)]);
    let out = render_ok(&s);
    for i in 0..payloads.len() {
        assert!(
            out.contains(&format!("error: Service web/x{i}: metadata.annotations")),
            "{out}"
        );
    }
    assert!(out.contains("evil;name"), "the bad name is not reported: {out}");
    for f in repo::files_under(&s.repo, "") {
        let content = repo::read(&s.repo, &f).unwrap();
        for bad in ["evil", "127.25.9.9", "passwd"] {
            assert!(!content.contains(bad), "{f} contains {bad:?}:\n{content}");
        }
    }
    assert_eq!(addresses(&s.repo).keys().collect::<Vec<_>>(), ["web/fine"]);
}

#[test]
fn services_without_node_ports_are_errors_naming_the_field() {
    let s = setup(26);
    s.cluster.put(
        "svc-cip.yaml",
        &service_yaml(
            "web",
            "cip",
            "ClusterIP",
            None,
            &[("flipbit.io/expose", "true")],
            &[("TCP", 80, 30080)],
        ),
    );
    s.cluster.put(
        "svc-nonp.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: nonp, namespace: web}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: flipbit.io/nginx\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n",
    );
    s.cluster.put(
        "svc-other.yaml",
        &service_yaml(
            "web",
            "other",
            "LoadBalancer",
            Some("example.com/other"),
            &[],
            &[("TCP", 80, 30081)],
        ),
    );
    s.cluster.put(
        "svc-optout.yaml",
        &service_yaml(
            "web",
            "optout",
            "LoadBalancer",
            Some("flipbit.io/nginx"),
            &[("flipbit.io/expose", "false")],
            &[("TCP", 80, 30082)],
        ),
    );
    s.cluster.put(
        "svc-np.yaml",
        &service_yaml(
            "web",
            "np",
            "NodePort",
            None,
            &[("flipbit.io/expose", "true")],
            &[("TCP", 80, 30083)],
        ),
    );
    let out = render_ok(&s);
    assert!(
        out.contains("error: Service web/cip: spec.type: \"ClusterIP\" has no node ports"),
        "{out}"
    );
    assert!(
        out.contains("error: Service web/nonp: spec.ports[0].nodePort: the port has no node port"),
        "{out}"
    );
    assert_eq!(addresses(&s.repo).keys().collect::<Vec<_>>(), ["web/np"], "{out}");
}

#[test]
fn an_unreadable_manifest_commits_nothing_and_a_malformed_service_keeps_its_state() {
    let s = setup(27);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    s.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    let commits = repo::commit_count(&s.repo);

    s.cluster
        .put("broken.yaml", "kind: Service\nmetadata: {name: [unclosed\n");
    s.cluster.remove("node-2.yaml");
    let out = generator("render", &s.repo, s.cluster.path(), &[]);
    assert!(!out.status.success(), "an unreadable file was accepted: {}", text(&out));
    assert!(text(&out).contains("broken.yaml"), "{}", text(&out));
    assert_eq!(
        repo::commit_count(&s.repo),
        commits,
        "something was committed from an incomplete snapshot"
    );
    s.cluster.remove("broken.yaml");

    let a_before = repo::read(&s.repo, "lb/lb-b/web/a.conf").unwrap();
    s.cluster.put(
        "svc-web-a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: web}\nspec:\n  type: LoadBalancer\n  ports: \"not a list\"\n",
    );
    let out = render_ok(&s);
    assert!(
        out.contains("error: Service web/a:") && out.contains("malformed Service"),
        "{out}"
    );
    assert_eq!(
        repo::read(&s.repo, "lb/lb-b/web/a.conf").unwrap(),
        a_before,
        "the malformed Service lost its files"
    );
    assert!(
        !repo::read(&s.repo, "lb/lb-b/web/b.conf")
            .unwrap()
            .contains("127.27.0.11:"),
        "b was not updated"
    );
}

#[test]
fn an_exhausted_pool_fails_that_service_on_that_host_only() {
    let s = setup_with_pools(28, "127.28.1.0/30", "127.28.2.0/24");
    for name in ["a", "b", "c"] {
        s.cluster.lb_service("web", name, &[], &[("TCP", 8080, 30080)]);
    }
    let out = render_ok(&s);
    assert!(
        out.contains("error: Service web/c: no free address on LB host lb-a (pools 127.28.1.0/30 are exhausted)"),
        "{out}"
    );
    let got = addresses(&s.repo);
    assert_eq!(got["web/a"]["lb-a"], "127.28.1.1");
    assert_eq!(got["web/b"]["lb-a"], "127.28.1.2");
    assert_eq!(got["web/c"].get("lb-a"), None);
    assert_eq!(got["web/c"]["lb-b"], "127.28.2.3");
}

#[test]
fn a_withdrawn_service_keeps_its_addresses_through_the_grace() {
    let s = setup(29);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    let a = addresses(&s.repo)["web/a"].clone();

    s.cluster.remove("svc-web-a.yaml");
    let out = render_ok(&s);
    assert!(out.contains("withdraw web/a"), "{out}");
    assert!(
        repo::files_under(&s.repo, "lb/").is_empty(),
        "files of a withdrawn Service remain"
    );
    assert!(ledger(&s.repo).services.values().all(|e| e.released_at.is_some()));

    s.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    assert_ne!(addresses(&s.repo)["web/b"], a, "a held address was given away");

    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    let out = render_ok(&s);
    assert!(out.contains("expose web/a again"), "{out}");
    assert_eq!(
        addresses(&s.repo)["web/a"],
        a,
        "a returning Service did not get its address back"
    );

    // Withdraw again and let the grace run out: the address goes to the next new Service.
    s.cluster.remove("svc-web-a.yaml");
    render_ok(&s);
    let later = "2099-01-01T00:00:00Z";
    let out = generator("render", &s.repo, s.cluster.path(), &["--now", later]);
    assert!(text(&out).contains("release web/a"), "{}", text(&out));
    s.cluster.lb_service("web", "c", &[], &[("TCP", 8080, 30080)]);
    let out = generator("render", &s.repo, s.cluster.path(), &["--now", later]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(addresses(&s.repo)["web/c"], a, "the freed address was not reused");
}

#[test]
fn a_broken_flipbit_yaml_or_ledger_stops_the_generator() {
    let s = setup(30);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    let commits = repo::commit_count(&s.repo);
    repo::human_commit(
        &s.repo,
        &BTreeMap::from([(
            "flipbit.yaml",
            "zone: k8s.example.test\nlbHosts: []\npoolz: 1\n".to_owned(),
        )]),
        &[],
        "typo",
    )
    .unwrap();
    let out = generator("render", &s.repo, s.cluster.path(), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("flipbit.yaml") && text(&out).contains("poolz"),
        "{}",
        text(&out)
    );
    assert_eq!(repo::commit_count(&s.repo), commits + 1);

    let good = flipbit_yaml(&[("lb-a", "127.30.1.0/24"), ("lb-b", "127.30.2.0/24")]);
    let broken = repo::read(&s.repo, "ledger.yaml")
        .unwrap()
        .replace("127.30.1.1", "not-an-address");
    repo::human_commit(
        &s.repo,
        &BTreeMap::from([("flipbit.yaml", good), ("ledger.yaml", broken)]),
        &[],
        "oops",
    )
    .unwrap();
    let out = generator("render", &s.repo, s.cluster.path(), &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("ledger.yaml"), "{}", text(&out));
    assert_eq!(
        repo::commit_count(&s.repo),
        commits + 2,
        "the generator 'repaired' a broken ledger"
    );
}

#[test]
fn a_pool_edit_moves_only_what_left_the_pools_and_a_removed_host_loses_its_files() {
    let s = setup(31);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    s.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    assert_eq!(addresses(&s.repo)["web/a"]["lb-a"], "127.31.1.1");
    // A human shrinks lb-a's pool past web/a's address and removes lb-b.
    let edited = flipbit_yaml(&[("lb-a", "127.31.1.2-127.31.1.50")]);
    repo::human_commit(
        &s.repo,
        &BTreeMap::from([("flipbit.yaml", edited)]),
        &[],
        "shrink lb-a, drop lb-b",
    )
    .unwrap();
    render_ok(&s);
    let got = addresses(&s.repo);
    assert_eq!(got["web/b"]["lb-a"], "127.31.1.2", "an address still in the pool moved");
    assert_eq!(got["web/a"]["lb-a"], "127.31.1.3");
    assert!(!got["web/a"].contains_key("lb-b"));
    assert!(
        repo::files_under(&s.repo, "lb/lb-b").is_empty(),
        "lb-b's files were not deleted"
    );
    let message = repo::head_message(&s.repo);
    assert!(
        message.contains("move web/a on lb-a from 127.31.1.1 to 127.31.1.3"),
        "{message}"
    );
    assert!(message.contains("drop web/a from lb-b"), "{message}");
}

#[test]
fn commit_messages_name_the_nodes_that_moved_and_why() {
    let s = setup(32);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    s.cluster.node(3, s.block, false);
    render_ok(&s);
    let message = repo::head_message(&s.repo);
    assert!(
        message.starts_with("move upstreams of web/a: -127.32.0.12 (node-3 NotReady)\n"),
        "{message}"
    );
    assert!(message.contains("Flipbit-Cause: node node-3 NotReady"), "{message}");
    s.cluster.node(3, s.block, true);
    render_ok(&s);
    let message = repo::head_message(&s.repo);
    assert!(
        message.starts_with("move upstreams of web/a: +127.32.0.12 (node-3)\n"),
        "{message}"
    );
    // `git log -- <snippet>` is the Service's history.
    let log = std::process::Command::new("git")
        .args(["log", "--format=%s", "--", "lb/lb-a/web/a.conf"])
        .current_dir(&s.repo)
        .output()
        .expect("git log");
    let subjects = String::from_utf8_lossy(&log.stdout).into_owned();
    assert_eq!(subjects.lines().count(), 3, "{subjects}");
    assert!(
        subjects.lines().last().is_some_and(|l| l.starts_with("expose web/a")),
        "{subjects}"
    );
}

/// On a shared-listeners host a Service's `.map` names node ports, not nodes (those are the
/// host's `nodes.conf`): a changed node port is a change of ports, and no node "came".
#[test]
fn a_node_port_change_on_a_shared_listeners_host_is_reported_as_a_port_change() {
    let s = setup(34);
    let shared = "zone: k8s.example.test\nlbHosts:\n  - name: lb-a\n    pools: [\"127.34.1.0/24\"]\n    layout: shared-listeners\n";
    repo::human_commit(
        &s.repo,
        &BTreeMap::from([("flipbit.yaml", shared.to_owned())]),
        &[],
        "one shared-listeners host",
    )
    .unwrap();
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    assert!(
        repo::read(&s.repo, "lb/lb-a/web/a.map").is_some(),
        "not rendered as map entries"
    );
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30081)]);
    render_ok(&s);
    let message = repo::head_message(&s.repo);
    assert!(
        message.starts_with("update web/a on lb-a (ports or settings)\n"),
        "{message}"
    );
    assert!(!message.contains("move upstreams"), "{message}");
}

#[test]
fn both_binaries_name_their_version_and_the_revision_they_were_built_from() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    assert!(head.status.success(), "this test runs in a Git checkout");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    for (name, bin) in [
        ("flipbit-generator", flipbit_tests::bins::generator()),
        ("flipbit-applier", flipbit_tests::bins::applier()),
    ] {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .expect("--version");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{name} {} ({head})", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// `flipbit-generator validate` with `--repo` (a branch head) or `--dir` (a checkout).
fn validate(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(flipbit_tests::bins::generator())
        .arg("validate")
        .args(args)
        .output()
        .expect("running flipbit-generator validate");
    (out.status.success(), text(&out))
}

#[test]
fn validate_passes_what_the_generator_wrote_and_fails_a_pool_edit_that_moves_addresses() {
    let s = setup(33);
    s.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    render_ok(&s);
    let repo_arg = [std::ffi::OsStr::new("--repo"), s.repo.as_os_str()];
    let (ok, out) = validate(&repo_arg);
    assert!(ok, "a repo the generator just wrote failed: {out}");
    assert!(out.contains("ok: ") && out.contains("(0 findings)"), "{out}");

    // A pool edit under review that leaves web/a's address behind: a move, refused unless allowed.
    let edited = flipbit_yaml(&[("lb-a", "127.33.1.2-127.33.1.50"), ("lb-b", "127.33.2.0/24")]);
    repo::human_commit(&s.repo, &BTreeMap::from([("flipbit.yaml", edited)]), &[], "shrink lb-a").unwrap();
    let (ok, out) = validate(&repo_arg);
    assert!(!ok, "a move passed: {out}");
    assert!(
        out.contains("ledger.yaml: services.web/a.addresses.lb-a: 127.33.1.1 is not in the pools of LB host lb-a"),
        "{out}"
    );
    let allow = [repo_arg[0], repo_arg[1], std::ffi::OsStr::new("--allow-moves")];
    let (ok, out) = validate(&allow);
    assert!(ok, "--allow-moves still failed: {out}");
    assert!(out.contains("allowed move: ledger.yaml"), "{out}");

    // A checkout with a typo in a field: the generator's own error, naming file and field; exit 1
    // even with --allow-moves.
    let checkout = s._tmp.path().join("checkout");
    std::fs::create_dir(&checkout).unwrap();
    let typo = flipbit_yaml(&[("lb-a", "127.33.1.0/24")]).replace("pools:", "pool:");
    std::fs::write(checkout.join("flipbit.yaml"), typo).unwrap();
    std::fs::write(
        checkout.join("ledger.yaml"),
        repo::read(&s.repo, "ledger.yaml").unwrap(),
    )
    .unwrap();
    let dir_arg = [
        std::ffi::OsStr::new("--dir"),
        checkout.as_os_str(),
        std::ffi::OsStr::new("--allow-moves"),
    ];
    let (ok, out) = validate(&dir_arg);
    assert!(!ok, "a broken flipbit.yaml passed: {out}");
    assert!(out.contains("error: flipbit.yaml: ") && out.contains("pool"), "{out}");
}
