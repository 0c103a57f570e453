//! `flipbit-generator run` (the real binary) against the in-process API server: watches, commits
//! to a bare repo, status patches and Events, leader election, relists and outages.

use std::collections::BTreeMap;
use std::time::Duration;

use flipbit_core::ledger::Ledger;
use flipbit_tests::genproc::{GeneratorProcess, objects};
use flipbit_tests::live_cluster::LiveCluster;
use flipbit_tests::repo;
use flipbit_tests::wait::{wait_for, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// Decision cycles a generator has started (resyncs included), from its /metrics.
const CYCLES: &str = "flipbit_generator_reconciles_total";

/// The value of counter `name` in `generator`'s /metrics.
fn counter(generator: &GeneratorProcess, name: &str) -> u64 {
    let (_, metrics) = generator.get("/metrics").expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

fn cycles(generator: &GeneratorProcess) -> u64 {
    counter(generator, CYCLES)
}

/// Waits until `generator` has started its `n`th cycle (so the one before it has ended).
fn wait_cycles(generator: &GeneratorProcess, n: u64) {
    wait_for(WAIT, &format!("cycle {n}"), || cycles(generator) >= n)
        .unwrap_or_else(|e| panic!("{e}; generator log:\n{}", generator.log()));
}

/// Waits until the cycle running now (if any) has ended, and returns the count of cycles started:
/// whatever it was deciding is committed by then.
fn settle(generator: &GeneratorProcess) -> u64 {
    let n = cycles(generator) + 1;
    wait_cycles(generator, n);
    n
}

/// The shared [`LiveCluster`] with this file's helpers.
struct Live(LiveCluster);

impl std::ops::Deref for Live {
    type Target = LiveCluster;

    fn deref(&self) -> &LiveCluster {
        &self.0
    }
}

impl Live {
    fn new(block: u8) -> Self {
        Self(LiveCluster::start(block))
    }

    fn generator(&self, identity: &str) -> GeneratorProcess {
        GeneratorProcess::start(&self.repo, &self.kubeconfig, identity, &[])
    }

    fn ledger(&self) -> Ledger {
        repo::read(&self.repo, "ledger.yaml")
            .map(|t| Ledger::parse(&t).expect("ledger parses"))
            .unwrap_or_else(Ledger::empty)
    }

    fn file(&self, path: &str) -> Option<String> {
        repo::read(&self.repo, path)
    }

    /// Waits until `check` holds for the repo, or fails with `what`.
    fn wait_repo(&self, what: &str, generator: &GeneratorProcess, check: impl Fn(&Self) -> bool) {
        wait_for(WAIT, what, || check(self)).unwrap_or_else(|e| panic!("{e}; generator log:\n{}", generator.log()));
    }
}

#[test]
fn services_nodes_and_slices_flow_into_commits_and_status() {
    let t = Live::new(101);
    let generator = t.generator("gen-a");
    generator.wait_for_log("first full sync", WAIT).unwrap();
    assert_eq!(generator.get("/ready").map(|r| r.0), Some(200));

    // Created → committed, status patched with both addresses, an Event recorded.
    t.api.apply(objects::lb_service("web", "shop", &[], &[(8080, 30080)]));
    t.wait_repo("web/shop committed", &generator, |t| {
        t.file("lb/lb-a/web/shop.conf").is_some()
    });
    let expected = vec!["127.101.1.1".to_owned(), "127.101.2.1".to_owned()];
    t.wait_repo("status of web/shop", &generator, |t| {
        t.ingress("web", "shop") == expected
    });
    let patch = t.api.status_patches().into_iter().last().expect("a status patch");
    assert_eq!(
        patch
            .body
            .pointer("/status/loadBalancer/ingress/0/ipMode")
            .and_then(|v| v.as_str()),
        Some("VIP")
    );
    let (code, metrics) = generator.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("flipbit_generator_commits_total 1"), "{metrics}");
    assert!(
        metrics.contains("flipbit_generator_allocations_in_use{lb_host=\"lb-a\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("flipbit_generator_leader 1"), "{metrics}");
    assert!(
        t.api
            .events()
            .iter()
            .any(|e| e.get("reason").and_then(|r| r.as_str()) == Some("AddressAllocated")),
        "no AddressAllocated Event: {:?}",
        t.api.events()
    );

    // A node going NotReady leaves the upstreams; cordoned and labelled-out nodes too.
    let commits = repo::commit_count(&t.repo);
    t.api.apply(objects::node("node-1", "127.101.0.10", false, false, true));
    t.wait_repo("node-1 out", &generator, |t| {
        !t.file("lb/lb-a/web/shop.conf")
            .unwrap_or_default()
            .contains("127.101.0.10:")
    });
    t.api.apply(objects::node("node-2", "127.101.0.11", true, true, true));
    t.api.apply(objects::node("node-3", "127.101.0.12", true, false, false));
    t.wait_repo("node-2 and node-3 out", &generator, |t| {
        let text = t.file("lb/lb-a/web/shop.conf").unwrap_or_default();
        !text.contains("127.101.0.11:") && !text.contains("127.101.0.12:")
    });
    assert!(repo::commit_count(&t.repo) > commits);
    assert_eq!(t.ledger().services.len(), 1);

    // externalTrafficPolicy: Local follows the EndpointSlices.
    let mut local = objects::lb_service("web", "local", &[], &[(8081, 30081)]);
    local["spec"]["externalTrafficPolicy"] = "Local".into();
    t.api.apply(local);
    t.api.apply(objects::endpoint_slice("web", "local", &["node-4"]));
    t.wait_repo("web/local on node-4 only", &generator, |t| {
        let text = t.file("lb/lb-a/web/local.conf").unwrap_or_default();
        text.contains("127.101.0.13:30081") && text.matches("server 127.").count() == 1
    });
    t.api
        .apply(objects::endpoint_slice("web", "local", &["node-4", "node-5"]));
    t.wait_repo("web/local on node-4 and node-5", &generator, |t| {
        t.file("lb/lb-a/web/local.conf")
            .unwrap_or_default()
            .contains("127.101.0.14:30081")
    });

    // A bad Service gets an Event and changes nothing else.
    t.api.apply(objects::lb_service(
        "web",
        "bad",
        &[("flipbit.io/balance", "fastest")],
        &[(8082, 30082)],
    ));
    t.wait_repo("an InvalidAnnotation Event", &generator, |t| {
        t.api
            .events()
            .iter()
            .any(|e| e.get("reason").and_then(|r| r.as_str()) == Some("InvalidAnnotation"))
    });
    assert!(t.file("lb/lb-a/web/bad.conf").is_none());

    // Moved to another class: withdrawn, and our addresses leave its status.
    let mut other = objects::lb_service("web", "local", &[], &[(8081, 30081)]);
    other["spec"]["loadBalancerClass"] = "example.com/other".into();
    t.wait_repo("status of web/local", &generator, |t| {
        t.ingress("web", "local").len() == 2
    });
    t.api.apply(other);
    t.wait_repo("web/local withdrawn", &generator, |t| {
        t.file("lb/lb-a/web/local.conf").is_none()
    });
    t.wait_repo("status of web/local cleared", &generator, |t| {
        t.ingress("web", "local").is_empty()
    });

    // Deleted → withdrawn, files gone.
    t.api.delete("Service", Some("web"), "shop");
    t.wait_repo("web/shop withdrawn", &generator, |t| {
        t.file("lb/lb-a/web/shop.conf").is_none()
    });
    assert!(
        t.ledger()
            .services
            .get(&"web/shop".parse::<flipbit_core::names::ServiceKey>().unwrap())
            .is_some_and(|e| e.released_at.is_some())
    );

    // Quiet cluster, resyncs every 2 s: two whole cycles run and commit nothing.
    let running = settle(&generator);
    let settled = repo::commit_count(&t.repo);
    wait_cycles(&generator, running + 2);
    assert_eq!(
        repo::commit_count(&t.repo),
        settled,
        "a resync with no change committed; log:\n{}",
        generator.log()
    );
}

#[test]
fn a_relist_after_410_and_an_outage_change_nothing_and_the_generator_resumes() {
    let t = Live::new(102);
    let mut generator = t.generator("gen-a");
    t.api.apply(objects::lb_service("web", "a", &[], &[(8080, 30080)]));
    t.wait_repo("web/a committed", &generator, |t| {
        t.file("lb/lb-a/web/a.conf").is_some()
    });
    let commits = repo::commit_count(&t.repo);
    let lists = |t: &Live| {
        t.api
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/api/v1/services" && !r.query.contains("watch"))
            .count()
    };
    let before = lists(&t);

    t.api.compact();
    t.wait_repo("a relist after 410", &generator, |t| lists(t) > before);
    t.api.apply(objects::lb_service("web", "b", &[], &[(8080, 30080)]));
    t.wait_repo("web/b after the relist", &generator, |t| {
        t.file("lb/lb-a/web/b.conf").is_some()
    });
    assert_eq!(repo::commit_count(&t.repo), commits + 1, "the relist itself committed");

    // The API server goes away: the generator keeps running and the repo keeps its state.
    // Proof it lived through the outage rather than slept past it: its requests were refused.
    let refused = |t: &Live| t.api.requests().iter().filter(|r| r.status == 503).count();
    t.api.set_unavailable(true);
    t.wait_repo("10 requests refused during the outage", &generator, |t| {
        refused(t) >= 10
    });
    assert!(
        generator.is_running(),
        "the generator died during the outage; log:\n{}",
        generator.log()
    );
    assert!(
        t.file("lb/lb-a/web/a.conf").is_some() && t.file("lb/lb-a/web/b.conf").is_some(),
        "the outage emptied the repo"
    );
    t.api.set_unavailable(false);
    t.api.apply(objects::lb_service("web", "c", &[], &[(8080, 30080)]));
    t.wait_repo("web/c after the outage", &generator, |t| {
        t.file("lb/lb-a/web/c.conf").is_some()
    });
    let ledger = t.ledger();
    assert_eq!(ledger.services.len(), 3);
    generator.kill();
}

#[test]
fn only_the_leader_writes_and_a_standby_takes_over() {
    let t = Live::new(103);
    let mut a = t.generator("gen-a");
    a.wait_for_log("leading=true", WAIT).unwrap();
    let b = t.generator("gen-b");
    b.wait_for_log("first full sync", WAIT).unwrap();
    t.api.apply(objects::lb_service("web", "a", &[], &[(8080, 30080)]));
    t.wait_repo("web/a committed", &a, |t| t.file("lb/lb-a/web/a.conf").is_some());
    // The remote moves before the generator logs the push: wait for the line, do not race it.
    a.wait_for_log("pushed", WAIT).unwrap();
    assert!(!b.log().contains("pushed"), "the standby pushed:\n{}", b.log());
    let address = t.ledger().services[&"web/a".parse::<flipbit_core::names::ServiceKey>().unwrap()]
        .addresses
        .clone();

    a.kill();
    b.wait_for_log("leading=true", WAIT).unwrap();
    t.api.apply(objects::lb_service("web", "b", &[], &[(8080, 30080)]));
    t.wait_repo("web/b committed by the standby", &b, |t| {
        t.file("lb/lb-a/web/b.conf").is_some()
    });
    b.wait_for_log("pushed", WAIT).unwrap();
    assert_eq!(
        t.ledger().services[&"web/a".parse::<flipbit_core::names::ServiceKey>().unwrap()].addresses,
        address,
        "the takeover moved an address"
    );
    let lease = t
        .api
        .get("Lease", Some("flipbit-system"), "flipbit-generator")
        .expect("lease");
    assert_eq!(
        lease.pointer("/spec/holderIdentity").and_then(|v| v.as_str()),
        Some("gen-b")
    );
    assert!(
        lease
            .pointer("/spec/leaseTransitions")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
            >= 1
    );
    let _ = t.block;
}

#[test]
fn two_generators_racing_on_one_repo_never_share_an_address() {
    let t = Live::new(104);
    // Different Leases: both lead, both write the same repo from the same cluster.
    let a = GeneratorProcess::start(&t.repo, &t.kubeconfig, "gen-a", &["--lease-name", "lease-a"]);
    let b = GeneratorProcess::start(&t.repo, &t.kubeconfig, "gen-b", &["--lease-name", "lease-b"]);
    a.wait_for_log("first full sync", WAIT).unwrap();
    b.wait_for_log("first full sync", WAIT).unwrap();
    for i in 0..12 {
        t.api
            .apply(objects::lb_service("web", &format!("s{i:02}"), &[], &[(8080, 30080)]));
        std::thread::sleep(Duration::from_millis(30));
    }
    t.wait_repo("all 12 committed", &a, |t| t.ledger().services.len() == 12);
    // Both have decided on the whole set: a whole cycle of each after the last commit.
    let (ca, cb) = (settle(&a), settle(&b));
    wait_cycles(&a, ca + 1);
    wait_cycles(&b, cb + 1);
    let ledger = t.ledger();
    let mut seen = BTreeMap::new();
    for (key, entry) in &ledger.services {
        for (host, ip) in &entry.addresses {
            if let Some(other) = seen.insert((host.clone(), *ip), key.clone()) {
                panic!("{ip} on {host} is held by {other} and {key}");
            }
        }
    }
    let first = ledger.services.clone();
    // Another whole cycle of each, started after that read (resyncs every 2 s), moves nothing.
    let (ca, cb) = (cycles(&a), cycles(&b));
    wait_cycles(&a, ca + 2);
    wait_cycles(&b, cb + 2);
    assert_eq!(t.ledger().services, first, "addresses moved after the race settled");
}

#[test]
fn a_revert_while_running_holds_the_service_with_an_event_until_lifted() {
    let t = Live::new(105);
    let generator = t.generator("gen-a");
    generator.wait_for_log("first full sync", WAIT).unwrap();
    t.api.apply(objects::lb_service("web", "shop", &[], &[(8080, 30080)]));
    t.wait_repo("web/shop committed", &generator, |t| {
        t.file("lb/lb-a/web/shop.conf").is_some()
    });

    // A human reverts the generator's commit with the real git CLI.
    let dir = t.tmp.path().join("dana");
    let dana = flipbit_tests::human::Human::clone(&t.repo, &dir, "Dana", "dana@example.test");
    dana.git(&["revert", "--no-edit", "HEAD"]);
    dana.git(&["push", "-q", "origin", "main"]);
    let revert = dana.git(&["rev-parse", "--short=12", "HEAD"]).trim().to_owned();

    // On the next resync: held (not re-added), and an Event on the Service says why and how to lift.
    t.wait_repo("the hold committed", &generator, |t| {
        t.file("holds.yaml").is_some_and(|h| h.contains("web/shop:"))
    });
    assert!(t.file("lb/lb-a/web/shop.conf").is_none());
    let held = wait_until(WAIT, || {
        t.api
            .events()
            .into_iter()
            .find(|e| {
                e.get("reason").and_then(|r| r.as_str()) == Some("OnHold")
                    && e.pointer("/regarding/name").and_then(|n| n.as_str()) == Some("shop")
            })
            .ok_or_else(|| "no OnHold Event".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", generator.log()));
    let note = held.get("note").and_then(|n| n.as_str()).unwrap_or_default().to_owned();
    assert!(
        note.contains(&revert) && note.contains("delete web/shop from holds.yaml"),
        "{note}"
    );
    assert_eq!(held.get("type").and_then(|v| v.as_str()), Some("Warning"));

    // Lifted in Git: managed again, on the same addresses.
    dana.pull();
    dana.git(&["rm", "-q", "holds.yaml"]);
    dana.git(&["commit", "-q", "-m", "lift all holds"]);
    dana.git(&["push", "-q", "origin", "main"]);
    t.wait_repo("web/shop resumed", &generator, |t| {
        t.file("lb/lb-a/web/shop.conf").is_some()
    });
    let entry = t.ledger().services[&"web/shop".parse::<flipbit_core::names::ServiceKey>().unwrap()].clone();
    assert_eq!(
        entry.addresses.values().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["127.105.1.1", "127.105.2.1"]
    );
}

/// The quiet period's leading edge (docs/design.md §4.2): a lone change after a quiet spell starts
/// a cycle at once, counted as such, while a burst of Services still makes a handful of commits,
/// not one each. The quiet period is long (1.5 s) so that a commit that waited for it, or a burst
/// that did not batch, shows in the counts.
#[test]
fn a_lone_change_is_decided_at_once_and_a_burst_still_batches() {
    let t = Live::new(210);
    let timings = [
        "--lease-duration",
        "2",
        "--lease-renew",
        "0.3",
        "--debounce-ms",
        "1500",
        "--debounce-max-ms",
        "6000",
        "--resync",
        "30",
    ];
    let generator = GeneratorProcess::spawn(&t.repo, &t.kubeconfig, "gen-q", &timings, &[]);
    generator.wait_for_log("leading=true", WAIT).unwrap();
    let counter = |name: &str| counter(&generator, name);
    let leading = "flipbit_generator_leading_edge_cycles_total";

    // A quiet spell longer than the quiet period, then one Service: decided at once.
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(2000));
        let (before_leading, before_commits) = (counter(leading), repo::commit_count(&t.repo));
        let name = format!("lone-{round}");
        t.api.apply(objects::lb_service("web", &name, &[], &[(8080, 30080)]));
        t.wait_repo("the lone Service committed", &generator, |t| {
            t.file(&format!("lb/lb-a/web/{name}.conf")).is_some()
        });
        assert_eq!(counter(leading), before_leading + 1, "{}", generator.log());
        assert_eq!(repo::commit_count(&t.repo), before_commits + 1, "{}", generator.log());

        // A burst right after: its first change may go at once, the rest wait for quiet together.
        let before = repo::commit_count(&t.repo);
        let burst: Vec<String> = (0..12).map(|i| format!("burst-{round}-{i}")).collect();
        for name in &burst {
            t.api.apply(objects::lb_service("web", name, &[], &[(8080, 30080)]));
        }
        t.wait_repo("the whole burst committed", &generator, |t| {
            burst.iter().all(|n| t.file(&format!("lb/lb-a/web/{n}.conf")).is_some())
        });
        let made = repo::commit_count(&t.repo) - before;
        assert!(
            (1..=3).contains(&made),
            "12 Services in a burst made {made} commits:\n{}",
            generator.log()
        );
    }
}
