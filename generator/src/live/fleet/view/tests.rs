use flipbit_core::fleet::{Cause, HostState, StepState};
use flipbit_core::ledger::Entry;

use super::*;

const HEAD: &str = "fedcba9876543210fedcba9876543210fedcba98";
const OLD: &str = "0123456789abcdef0123456789abcdef01234567";

fn config() -> Config {
    Config::parse(
        "zone: k8s.example.test\nlbHosts:\n  - name: lb-a\n    pools: [127.9.1.0/24]\n  - name: lb-b\n    pools: [127.9.2.0/24]\n  - name: lb-c\n    pools: [127.9.3.0/24]\n  - name: lb-d\n    pools: [127.9.4.0/24]\n",
    )
    .expect("config")
}

fn host(name: &str) -> LbHostName {
    name.parse().expect("host name")
}

fn published(commit: &str, lb: StepState, withdrawn: bool) -> Published {
    Published::State(HostState {
        commit: Some(commit.into()),
        since: 1,
        head: Some(HEAD.into()),
        at: 100,
        lb,
        dns: StepState::Ok,
        withdrawn,
        interval: 1,
    })
}

fn states(c_withdrawn: bool) -> BTreeMap<LbHostName, Published> {
    BTreeMap::from([
        (host("lb-a"), published(HEAD, StepState::Ok, false)),
        (host("lb-b"), published(OLD, StepState::Failed(Cause::Reload), false)),
        (host("lb-c"), published(HEAD, StepState::Ok, c_withdrawn)),
        (host("lb-d"), Published::Missing),
    ])
}

fn ledger(services: usize) -> Ledger {
    let mut ledger = Ledger::empty();
    for i in 0..services {
        let mut entry = Entry::default();
        for (h, net) in [("lb-a", 1), ("lb-c", 3)] {
            entry
                .addresses
                .insert(host(h), format!("127.9.{net}.{}", i + 1).parse().expect("ip"));
        }
        let key: ServiceKey = format!("web/s{i}").parse().expect("key");
        ledger.services.insert(key, entry);
    }
    ledger
}

#[test]
fn the_gauges_count_each_state_once() {
    let counts = counts(&config(), HEAD, &states(true));
    assert_eq!(
        (
            counts.hosts,
            counts.behind_head,
            counts.withdrawn,
            counts.failed,
            counts.unknown
        ),
        (4, 1, 1, 1, 1)
    );
    let c = &counts.per_host[2];
    assert_eq!(
        (c.host.as_str(), c.at_head, c.serving, c.withdrawn),
        ("lb-c", true, false, true)
    );
    assert_eq!(counts.per_host[3].last_run, None);
}

#[test]
fn each_service_hears_of_a_withdrawal_once_and_of_the_next_one_again() {
    let mut announced = Announced::default();
    let ledger = ledger(3);
    assert!(
        announced.due(&ledger, &states(false), 10).is_empty(),
        "nothing withdrawn"
    );
    let first = announced.due(&ledger, &states(true), 2);
    assert_eq!(first.len(), 2, "bounded per refresh");
    assert_eq!(first[0].host, host("lb-c"));
    assert_eq!(first[0].addresses, vec!["127.9.3.1".parse::<IpAddr>().expect("ip")]);
    let rest = announced.due(&ledger, &states(true), 2);
    assert_eq!(rest.iter().map(|a| a.key.to_string()).collect::<Vec<_>>(), ["web/s2"]);
    assert!(announced.due(&ledger, &states(true), 10).is_empty(), "told once");
    // lb-c comes back, then is withdrawn again: a new withdrawal.
    assert!(announced.due(&ledger, &states(false), 10).is_empty());
    assert_eq!(announced.due(&ledger, &states(true), 10).len(), 3);
}
