//! `flipbit-generator run` against an API server whose status and Event writes are held, failing
//! or answered late: commits never wait on them (issue 19, item 1), status follows once the
//! endpoint answers, each Service gets one status patch and one `AddressAllocated` Event naming
//! all its hosts, and a generator that loses the Lease drops what it had not written.
//!
//! Nothing here is timed: each step waits for something observable (a file in the repo, a
//! request held by the server, a metric), with a generous deadline only to fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flipbit_tests::apiserver::{ApiServer, StatusWrites};
use flipbit_tests::genproc::{GeneratorProcess, objects};
use flipbit_tests::live_cluster::LiveCluster;
use flipbit_tests::repo;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
/// The generator's writes in flight at once (`live::outbox::CONCURRENCY`).
const CONCURRENCY: usize = 16;

/// The shared [`LiveCluster`] with this file's helpers.
struct Cluster(LiveCluster);

impl std::ops::Deref for Cluster {
    type Target = LiveCluster;

    fn deref(&self) -> &LiveCluster {
        &self.0
    }
}

impl Cluster {
    /// Two LB hosts (127.B.1.0/24, 127.B.2.0/24) and five Ready nodes; status writes as `mode`.
    fn new(block: u8, mode: StatusWrites) -> Self {
        let c = LiveCluster::start(block);
        c.api.set_status_writes(mode);
        Self(c)
    }

    fn generator(&self, identity: &str) -> GeneratorProcess {
        let g = GeneratorProcess::start(&self.repo, &self.kubeconfig, identity, &[]);
        g.wait_for_log("leading=true", WAIT).expect("the generator leads");
        g
    }

    fn committed(&self, name: &str) -> bool {
        repo::read(&self.repo, &format!("lb/lb-a/web/{name}.conf")).is_some()
    }

    /// Waits until `check` holds, or fails with `what` and the generator's log.
    fn wait(&self, what: &str, generator: &GeneratorProcess, check: impl Fn(&Self) -> bool) {
        flipbit_tests::wait::wait_for(WAIT, what, || check(self))
            .unwrap_or_else(|e| panic!("{e}; generator log:\n{}", generator.log()));
    }

    /// The Service's ingress holds one address of each LB host.
    fn shows_both_hosts(&self, name: &str) -> bool {
        let ips = self.ingress("web", name);
        let b = self.block;
        ips.len() == 2 && ips[0].starts_with(&format!("127.{b}.1.")) && ips[1].starts_with(&format!("127.{b}.2."))
    }

    /// Notes of the `reason` Events on Service web/`name`.
    fn event_notes(&self, reason: &str, name: &str) -> Vec<String> {
        self.api
            .events()
            .iter()
            .filter(|e| {
                e.get("reason").and_then(|r| r.as_str()) == Some(reason)
                    && e.pointer("/regarding/name").and_then(|n| n.as_str()) == Some(name)
            })
            .map(|e| e.get("note").and_then(|n| n.as_str()).unwrap_or_default().to_owned())
            .collect()
    }

    /// After the writes settle: exactly one status patch per Service, and one `AddressAllocated`
    /// Event naming both its hosts (not one per host).
    fn assert_one_patch_and_one_event_each(&self, names: &[String], generator: &GeneratorProcess) {
        self.wait("an AddressAllocated Event for every Service", generator, |t| {
            names.iter().all(|n| !t.event_notes("AddressAllocated", n).is_empty())
        });
        let b = self.block;
        for name in names {
            let notes = self.event_notes("AddressAllocated", name);
            assert_eq!(notes.len(), 1, "{name}: {notes:?}");
            assert!(
                notes[0].contains(&format!("127.{b}.1.")) && notes[0].contains("lb-a"),
                "{name}: {}",
                notes[0]
            );
            assert!(
                notes[0].contains(&format!("127.{b}.2.")) && notes[0].contains("lb-b"),
                "{name}: {}",
                notes[0]
            );
        }
        let mut patches: BTreeMap<String, usize> = BTreeMap::new();
        for p in self.api.status_patches() {
            *patches.entry(p.name).or_default() += 1;
        }
        for name in names {
            assert_eq!(
                patches.get(name),
                Some(&1),
                "{name} was patched {:?} times (coalescing re-sent a written status); log:\n{}",
                patches.get(name),
                generator.log()
            );
        }
    }
}

/// A metric's value from /metrics (0 when absent).
fn metric(generator: &GeneratorProcess, name: &str) -> f64 {
    let (_, text) = generator.get("/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

#[test]
fn a_held_status_endpoint_delays_no_commit_and_status_follows_once_it_answers() {
    let t = Cluster::new(106, StatusWrites::Hold);
    let generator = t.generator("gen-a");

    let mut names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        t.api.apply(objects::lb_service("web", name, &[], &[(8080, 30080)]));
    }
    t.wait("20 Services committed", &generator, |t| {
        names.iter().all(|n| t.committed(n))
    });
    t.wait("a status write held", &generator, |t| t.api.held_status_writes() >= 1);

    // A Service created now is decided and committed while those writes are still stuck.
    t.api.apply(objects::lb_service("web", "late", &[], &[(8080, 30080)]));
    t.wait("web/late committed", &generator, |t| t.committed("late"));
    assert!(
        t.api.status_patches().is_empty(),
        "a status patch got through a held endpoint"
    );
    // Every slot is taken by a write the API server does not answer, and no more than that.
    t.wait("the writer's slots all held", &generator, |t| {
        t.api.held_status_writes() >= CONCURRENCY
    });
    assert_eq!(
        t.api.held_status_writes(),
        CONCURRENCY,
        "more writes in flight than the bound"
    );
    names.push("late".into());
    // 21 status patches and 21 Events wait or are in flight.
    t.wait("the pending gauge", &generator, |_| {
        metric(&generator, "flipbit_generator_status_writes_pending") >= 42.0
    });

    // The endpoint answers again: everything is written, once.
    t.api.set_status_writes(StatusWrites::Normal);
    t.wait("every Service's status", &generator, |t| {
        names.iter().all(|n| t.shows_both_hosts(n))
    });
    t.assert_one_patch_and_one_event_each(&names, &generator);
    t.wait("the pending gauge back to 0", &generator, |_| {
        metric(&generator, "flipbit_generator_status_writes_pending") == 0.0
    });
    generator
        .wait_for_log("status and Events written", WAIT)
        .expect("the writer says it is done");
}

#[test]
fn a_failing_status_endpoint_is_retried_with_backoff_and_delays_no_commit() {
    let t = Cluster::new(107, StatusWrites::Fail(500));
    let generator = t.generator("gen-a");

    t.api.apply(objects::lb_service("web", "a", &[], &[(8080, 30080)]));
    t.wait("web/a committed", &generator, |t| t.committed("a"));
    // Failed, then failed again on its own (a retry, not a new cycle's wish: nothing changed).
    t.wait("two failed status patches", &generator, |_| {
        metric(
            &generator,
            "flipbit_generator_status_write_failures_total{kind=\"status\"}",
        ) >= 2.0
    });
    t.wait("a failed Event", &generator, |_| {
        metric(
            &generator,
            "flipbit_generator_status_write_failures_total{kind=\"event\"}",
        ) >= 1.0
    });

    // Decisions go on while every write fails.
    t.api.apply(objects::lb_service("web", "b", &[], &[(8080, 30080)]));
    t.wait("web/b committed while status writes fail", &generator, |t| {
        t.committed("b")
    });
    assert!(t.api.status_patches().is_empty());
    assert!(metric(&generator, "flipbit_generator_status_writes_pending") >= 2.0);

    // Recovered: the backoff (at most 30 s) brings both in.
    t.api.set_status_writes(StatusWrites::Normal);
    t.wait("status of web/a and web/b", &generator, |t| {
        t.shows_both_hosts("a") && t.shows_both_hosts("b")
    });
    t.assert_one_patch_and_one_event_each(&["a".into(), "b".into()], &generator);
}

#[test]
fn a_slow_status_endpoint_delays_no_commit() {
    // 3 s per status patch or Event: the 8 Services' patches, all in flight at once, land 3 s
    // after their commit, and their Events 3 to 6 s later; sent one after another in the cycle
    // (as before issue 19) they held back the next decision for 8 x 3 x 3 s.
    let t = Cluster::new(108, StatusWrites::Delay(Duration::from_secs(3)));
    let generator = t.generator("gen-a");
    let mut names: Vec<String> = (0..8).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        t.api.apply(objects::lb_service("web", name, &[], &[(8080, 30080)]));
    }
    t.wait("8 Services committed", &generator, |t| {
        names.iter().all(|n| t.committed(n))
    });
    t.api.apply(objects::lb_service("web", "late", &[], &[(8080, 30080)]));
    t.wait("web/late committed", &generator, |t| t.committed("late"));
    let patched = t.api.status_patches().len();
    assert!(
        patched < names.len(),
        "web/late was committed only after all {patched} earlier status patches were answered"
    );
    names.push("late".into());
    t.wait("every Service's status", &generator, |t| {
        names.iter().all(|n| t.shows_both_hosts(n))
    });
    t.assert_one_patch_and_one_event_each(&names, &generator);
}

#[test]
fn a_generator_that_loses_the_lease_drops_its_pending_writes() {
    let t = Cluster::new(109, StatusWrites::Hold);
    let generator = t.generator("gen-a");
    let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        t.api.apply(objects::lb_service("web", name, &[], &[(8080, 30080)]));
    }
    t.wait("20 Services committed", &generator, |t| {
        names.iter().all(|n| t.committed(n))
    });
    t.wait("the pending gauge", &generator, |_| {
        metric(&generator, "flipbit_generator_status_writes_pending") >= 40.0
    });

    // Another holder renews the Lease: gen-a stands down at its next renewal.
    let now = jiff::Timestamp::now().to_string();
    let mut lease = t
        .api
        .get("Lease", Some("flipbit-system"), "flipbit-generator")
        .expect("the Lease");
    lease["spec"]["holderIdentity"] = json!("gen-b");
    lease["spec"]["renewTime"] = json!(now);
    lease["spec"]["leaseDurationSeconds"] = json!(3600);
    t.api.apply(lease);
    generator
        .wait_for_log("leading=false", WAIT)
        .expect("gen-a stands down");
    generator
        .wait_for_log("pending status writes and Events dropped", WAIT)
        .expect("the pending writes are dropped");
    t.wait("the pending gauge at 0", &generator, |_| {
        metric(&generator, "flipbit_generator_status_writes_pending") == 0.0
    });
}

/// The knob itself: it governs Service status and Event writes only, holds them until the mode
/// changes, and fails them with the real Status of the code.
#[tokio::test]
async fn the_test_servers_status_knob_governs_only_status_and_event_writes() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let server = ApiServer::start();
    server.apply(objects::lb_service("web", "a", &[], &[(8080, 30080)]));
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().expect("url"))).expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "web");
    let events: Api<Event> = Api::namespaced(client, "web");
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "127.109.9.9"}]}}});
    let label = json!({"metadata": {"labels": {"x": "y"}}});
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "a.1", "namespace": "web"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reason": "Test", "action": "Test", "type": "Normal",
        "reportingController": "test", "reportingInstance": "test",
        "regarding": {"kind": "Service", "namespace": "web", "name": "a"},
    }))
    .expect("event");

    server.set_status_writes(StatusWrites::Hold);
    let held = {
        let services = services.clone();
        let status = status.clone();
        tokio::spawn(async move {
            services
                .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
                .await
        })
    };
    let deadline = Instant::now() + WAIT;
    while server.held_status_writes() < 1 {
        assert!(Instant::now() < deadline, "the status patch was not held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything else is served meanwhile.
    services.get("a").await.expect("a GET while status is held");
    services
        .patch("a", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("a metadata patch while status is held");
    assert!(server.status_patches().is_empty());

    server.set_status_writes(StatusWrites::Fail(500));
    let answer = tokio::time::timeout(WAIT, held)
        .await
        .expect("released")
        .expect("joined");
    assert!(
        matches!(&answer, Err(kube::Error::Api(e)) if e.code == 500 && e.reason == "InternalError"),
        "{answer:?}"
    );
    let create = events.create(&PostParams::default(), &event).await;
    assert!(
        matches!(&create, Err(kube::Error::Api(e)) if e.code == 500),
        "{create:?}"
    );
    assert_eq!(server.held_status_writes(), 0);

    server.set_status_writes(StatusWrites::Normal);
    services
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("event create");
    assert_eq!(server.status_patches().len(), 1);
    assert_eq!(server.events().len(), 1);
}

/// `flipbit-bench status-writes` at a tiny size, so the benchmark keeps working as the code
/// moves (its figures are in BENCHMARKS.md; nothing is timed here).
#[test]
fn the_status_writes_benchmark_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flipbit-bench"))
        .args(["status-writes", "40", "--idle-probes", "1"])
        .output()
        .expect("running flipbit-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flipbit-bench status-writes failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "40 Services x 3 LB hosts: first commit",
        "create -> commit while status is written: median",
        "create -> commit idle (floor and target): median",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{stdout}");
    }
}
