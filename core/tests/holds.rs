//! Held Services are left exactly as a human left them, their addresses stay reserved, and a
//! lifted hold gives the addresses back.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::holds::{self, CommitHex, Holds, HumanChange, Touch};
use flipbit_core::ledger::Ledger;
use flipbit_core::message;
use flipbit_core::model::ServiceInput;
use flipbit_core::names::ServiceKey;

fn config() -> Config {
    Config::parse("zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.4.1.0/24]}\n").unwrap()
}

fn key(name: &str) -> ServiceKey {
    format!("a/{name}").parse().unwrap()
}

fn run(services: &[&str], ledger: &Ledger, holds: &holds::HoldUpdate) -> Decision {
    let services: Vec<ServiceInput> = services.iter().map(|n| common::lb_service("a", n)).collect();
    common::decide_one_node_held(&config(), services, "127.4.0.10", ledger, holds)
}

fn addr(d: &Decision, name: &str) -> Option<String> {
    d.exposed
        .get(&key(name))
        .and_then(|s| s.addresses.values().next())
        .map(ToString::to_string)
}

/// The ledger after exposing `names` from scratch.
fn exposed(names: &[&str]) -> Ledger {
    run(names, &Ledger::empty(), &holds::HoldUpdate::default()).ledger
}

/// A revert of the commit that exposed `name`: its files and ledger entry are gone.
fn revert_of(name: &str, before: &Ledger) -> HumanChange {
    HumanChange {
        commit: CommitHex::try_from("0123456789abcdef".to_owned()).ok(),
        touched: BTreeMap::from([(
            key(name),
            Touch {
                paths: BTreeSet::from([format!("lb/lb-1/a/{name}.conf"), "ledger.yaml".to_owned()]),
                before: before.services.get(&key(name)).cloned(),
            },
        )]),
        lifted: BTreeMap::new(),
    }
}

#[test]
fn a_reverted_service_stays_withdrawn_and_its_address_stays_reserved() {
    let before = exposed(&["shop"]);
    let mut after_revert = before.clone();
    after_revert.services.remove(&key("shop"));
    let update = holds::update(&Holds::default(), &[revert_of("shop", &before)]);
    assert!(update.holds.is_held(&key("shop")));

    // The Service still exists in the cluster and a new one arrives: the held one gets no files and
    // no ledger entry, and the newcomer does not get its address.
    let d = run(&["shop", "new"], &after_revert, &update);
    assert!(!d.files.contains_key("lb/lb-1/a/shop.conf"));
    assert!(
        !d.ledger.services.contains_key(&key("shop")),
        "the revert removed it; it stays removed"
    );
    assert_eq!(addr(&d, "new").as_deref(), Some("127.4.1.2"));
    assert!(d.kept.contains(&key("shop")));
    let warning = d
        .problems
        .iter()
        .map(ToString::to_string)
        .find(|p| p.contains("a/shop"));
    let warning = warning.expect("a problem names the held Service");
    assert!(
        warning.contains("on hold: commit 0123456789ab changed") && warning.contains("delete a/shop from holds.yaml"),
        "{warning}"
    );

    // The message says what was held and why.
    let changed = BTreeSet::from(["holds.yaml".to_owned(), "lb/lb-1/a/new.conf".to_owned()]);
    let msg = message::compose(&d, &changed, 300, &BTreeMap::new()).expect("a message");
    assert!(
        msg.contains("hold a/shop: commit 0123456789ab changed its files"),
        "{msg}"
    );
    assert!(
        msg.contains("Flipbit-Cause:") && msg.contains("human change in 0123456789ab"),
        "{msg}"
    );

    // Lifting the hold brings the Service back on its old address, though a lower one is free.
    let mut ledger = d.ledger.clone();
    ledger.services.remove(&key("new"));
    let lift = HumanChange {
        commit: None,
        touched: BTreeMap::new(),
        lifted: update.holds.holds.clone(),
    };
    let lifted = holds::update(&Holds::default(), &[lift]);
    let mut with_low_free = ledger.clone();
    with_low_free.services.clear();
    let d = run(&["shop"], &with_low_free, &lifted);
    assert_eq!(addr(&d, "shop").as_deref(), Some("127.4.1.1"));
    assert!(d.resumed.contains(&key("shop")));
    let changed = BTreeSet::from(["lb/lb-1/a/shop.conf".to_owned(), "ledger.yaml".to_owned()]);
    let msg = message::compose(&d, &changed, 300, &BTreeMap::new()).expect("a message");
    assert!(
        msg.starts_with("resume a/shop on lb-1 127.4.1.1 (hold lifted)"),
        "{msg}"
    );
}

#[test]
fn a_lifted_service_whose_address_was_taken_gets_another() {
    let before = exposed(&["shop"]);
    let update = holds::update(&Holds::default(), &[revert_of("shop", &before)]);
    let lift = HumanChange {
        commit: None,
        touched: BTreeMap::new(),
        lifted: update.holds.holds.clone(),
    };
    // Someone edited the ledger by hand and gave .1 to another Service meanwhile.
    let other = run(&["other"], &Ledger::empty(), &holds::HoldUpdate::default()).ledger;
    let d = run(&["shop", "other"], &other, &holds::update(&Holds::default(), &[lift]));
    assert_eq!(addr(&d, "other").as_deref(), Some("127.4.1.1"));
    assert_eq!(addr(&d, "shop").as_deref(), Some("127.4.1.2"));
}

#[test]
fn a_hand_edited_service_keeps_the_humans_files_and_ledger_entry() {
    let before = exposed(&["shop", "blog"]);
    let mut edited = before.clone();
    let entry = edited.services.get_mut(&key("shop")).unwrap();
    entry
        .addresses
        .insert("lb-1".parse().unwrap(), "127.4.1.77".parse().unwrap());
    let change = HumanChange {
        commit: CommitHex::try_from("abcdef01".to_owned()).ok(),
        touched: holds::touched(
            &BTreeSet::from(["ledger.yaml".to_owned()]),
            Some(&edited),
            &[Some(before.clone())],
        ),
        lifted: BTreeMap::new(),
    };
    let update = holds::update(&Holds::default(), &[change]);
    let d = run(&["shop", "blog"], &edited, &update);
    assert_eq!(d.ledger.services[&key("shop")], edited.services[&key("shop")]);
    // Its snippet is neither rendered nor deleted; the other Service is managed as usual.
    assert!(!d.files.contains_key("lb/lb-1/a/shop.conf"));
    let current = ["lb/lb-1/a/shop.conf".to_owned(), "lb/lb-1/a/blog.conf".to_owned()];
    assert!(d.deletions(current.iter()).is_empty());
    assert_eq!(addr(&d, "blog").as_deref(), Some("127.4.1.1"));
    // The hold records the address before the edit, but the human's entry is what holds
    // addresses while there is one: .77 stays out of reach and the old .2 is free again.
    assert_eq!(
        update.holds.holds[&key("shop")]
            .addresses
            .values()
            .next()
            .map(ToString::to_string),
        Some("127.4.1.2".to_owned())
    );
    let mut crowd: Vec<String> = (0..76).map(|i| format!("n{i:02}")).collect();
    crowd.extend(["shop".to_owned(), "blog".to_owned()]);
    let names: Vec<&str> = crowd.iter().map(String::as_str).collect();
    let d = run(&names, &edited, &update);
    let given: BTreeSet<String> = (0..76).filter_map(|i| addr(&d, &format!("n{i:02}"))).collect();
    assert!(given.contains("127.4.1.2"), "{given:?}");
    assert!(!given.contains("127.4.1.77"), "{given:?}");
    assert_eq!(given.len(), 76);
}
