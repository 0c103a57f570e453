//! The live generator with `--dns-server` reads the states the LB hosts published: `/metrics`
//! counts the hosts behind the head and withdrawn, and a Service with an address on a withdrawn
//! host gets one `HostWithdrawn` Event naming it.

use std::time::{Duration, Instant};

use flipbit_core::fleet::StepState;
use flipbit_tests::apiserver::ApiServer;
use flipbit_tests::bind::NamedInstance;
use flipbit_tests::genproc::{GeneratorProcess, objects};
use flipbit_tests::live_cluster::LiveCluster;
use flipbit_tests::repo;

use super::{ZONE, state};

const WAIT: Duration = Duration::from_secs(20);

fn withdrawn_events(api: &ApiServer) -> Vec<String> {
    api.events()
        .iter()
        .filter(|e| e.get("reason").and_then(|r| r.as_str()) == Some("HostWithdrawn"))
        .map(|e| e.get("note").and_then(|n| n.as_str()).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_generator_shows_the_fleet_and_tells_services_of_a_withdrawn_host() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::BIND]) else {
        return;
    };
    let LiveCluster {
        tmp,
        api,
        kubeconfig,
        repo,
        ..
    } = LiveCluster::with_hosts(&[("lb-a", "127.198.1.0/24"), ("lb-b", "127.198.2.0/24")], 198, 3);
    let named = NamedInstance::start(&tmp.path().join("named"), 5368, ZONE).expect("named");
    let server = format!("127.0.0.1:{}", named.port);
    let generator = GeneratorProcess::start(
        &repo,
        &kubeconfig,
        "gen-a",
        &["--dns-server", &server, "--fleet-refresh", "1"],
    );
    generator.wait_for_log("first full sync", WAIT).expect("sync");
    api.apply(objects::lb_service("web", "shop", &[], &[(8080, 30080)]));
    let deadline = Instant::now() + WAIT;
    while repo::read(&repo, "lb/lb-b/web/shop.conf").is_none() {
        assert!(Instant::now() < deadline, "not committed; log:\n{}", generator.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let head = repo::head(&repo).expect("head").to_string();
    let publish = |host: &str, state: &flipbit_core::fleet::HostState| {
        let name = format!("_flipbit.{host}.{ZONE}");
        named
            .nsupdate(&format!(
                "update delete {name} TXT\nupdate add {name} 60 TXT \"{}\"",
                state.render()
            ))
            .expect("nsupdate");
    };
    publish("lb-a", &state(&head, StepState::Ok, false));
    publish("lb-b", &state(&"0".repeat(40), StepState::Ok, true));

    let wanted = [
        "flipbit_fleet_hosts 2",
        "flipbit_fleet_hosts_behind_head 1",
        "flipbit_fleet_hosts_withdrawn 1",
        "flipbit_fleet_host_withdrawn{lb_host=\"lb-b\"} 1",
        "flipbit_fleet_host_at_head{lb_host=\"lb-a\"} 1",
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = generator.get("/metrics").map(|r| r.1).unwrap_or_default();
        if wanted.iter().all(|w| metrics.lines().any(|l| l == *w)) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}\nlog:\n{}", generator.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + WAIT;
    while withdrawn_events(&api).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no HostWithdrawn Event; log:\n{}",
            generator.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let notes = withdrawn_events(&api);
    assert!(
        notes[0].contains("lb-b") && notes[0].contains("127.198.2.1"),
        "{notes:?}"
    );
    // Later refreshes of the same withdrawal tell nobody again: two more refreshes, same Events.
    let refreshed = || {
        let metrics = generator.get("/metrics").map(|r| r.1).unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("flipbit_fleet_last_refresh_timestamp_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let since = refreshed();
    let deadline = Instant::now() + WAIT;
    while refreshed() < since + 1.5 {
        assert!(
            Instant::now() < deadline,
            "no further refresh; log:\n{}",
            generator.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(withdrawn_events(&api).len(), 1, "{:?}", withdrawn_events(&api));
}
