//! The incremental engine produces exactly the files a full decision does, through any sequence of
//! changes and external commits, while rendering only what a change touches.

mod common;

use std::collections::BTreeMap;

use flipbit_core::config::Config;
use flipbit_core::decide::decide_with_holds;
use flipbit_core::engine::Blobs;
use flipbit_core::holds::HoldUpdate;
use flipbit_core::model::{NodeInput, Snapshot};
use jiff::Timestamp;

use common::Repo;

fn config() -> Config {
    Config::parse(
        "zone: k.test\nmaxNodesPerService: 3\nlbHosts:\n  - {name: lb-1, pools: [127.5.1.0/24]}\n  - {name: lb-2, pools: [127.5.2.0/24]}\n",
    )
    .unwrap()
}

fn node(i: u8, ready: bool) -> NodeInput {
    common::backend_node(format!("n{i}"), format!("127.5.0.{}", 10 + i), ready)
}

impl Repo {
    /// One engine cycle, committed; returns how many texts it rendered into new blobs.
    fn cycle(&mut self, snapshot: &Snapshot) -> usize {
        let before = self.store.writes;
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (decision, step) = self
            .engine
            .decide(
                snapshot,
                &config(),
                &self.ledger,
                &HoldUpdate::default(),
                now,
                &mut self.store,
            )
            .unwrap();
        common::commit_changes(&mut self.tree, &step.changes);
        self.advance(step, &decision);
        self.store.writes - before
    }

    /// Asserts the tree equals what a full decision renders.
    fn matches_full(&self, snapshot: &Snapshot) {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let full = decide_with_holds(snapshot, &config(), &self.ledger, &HoldUpdate::default(), now);
        let ours: BTreeMap<&String, &String> = self.tree.iter().map(|(p, id)| (p, &self.store.texts[id])).collect();
        let theirs: BTreeMap<&String, &String> = full.files.iter().collect();
        assert_eq!(ours, theirs);
    }
}

#[test]
fn the_engine_tracks_a_full_decision_through_every_kind_of_change() {
    let mut snapshot = Snapshot {
        services: (0..6).map(|i| common::lb_service("a", &format!("s{i}"))).collect(),
        nodes: (0..5).map(|i| node(i, true)).collect(),
        ..Snapshot::default()
    };
    let mut repo = Repo::new();
    let cold = repo.cycle(&snapshot);
    assert_eq!(
        cold,
        6 * 3 + 2,
        "cold: 2 snippets + 1 zone fragment per Service, the ledger and format.yaml"
    );
    repo.matches_full(&snapshot);
    assert!(repo.tree.contains_key(flipbit_core::format::FORMAT_FILE));

    assert_eq!(repo.cycle(&snapshot), 0, "nothing changed, nothing rendered");

    snapshot.services[2]
        .annotations
        .insert("flipbit.io/balance".into(), "least-conn".into());
    assert_eq!(repo.cycle(&snapshot), 2, "one Service changed: its two snippets");
    repo.matches_full(&snapshot);

    snapshot.services.push(common::lb_service("a", "s6"));
    assert_eq!(repo.cycle(&snapshot), 4, "a new Service: 3 files and the ledger");
    repo.matches_full(&snapshot);

    snapshot.services.remove(0);
    repo.cycle(&snapshot);
    repo.matches_full(&snapshot);
    assert!(!repo.tree.contains_key("lb/lb-1/a/s0.conf"));

    // A node leaves: only Services that had it among their 3 are rendered again.
    snapshot.nodes[1].ready = false;
    let rendered = repo.cycle(&snapshot);
    repo.matches_full(&snapshot);
    assert!(rendered > 0 && rendered < 2 * 6, "{rendered}");
    snapshot.nodes.push(node(7, true));
    repo.cycle(&snapshot);
    repo.matches_full(&snapshot);
}

#[test]
fn after_an_external_commit_only_what_it_touched_is_rendered_again() {
    let snapshot = Snapshot {
        services: (0..4).map(|i| common::lb_service("a", &format!("s{i}"))).collect(),
        nodes: (0..3).map(|i| node(i, true)).collect(),
        ..Snapshot::default()
    };
    let mut repo = Repo::new();
    repo.cycle(&snapshot);

    // Someone else's commit: one snippet edited by hand, one deleted.
    let edited = repo.store.write("# hand edit\n").unwrap();
    repo.tree.insert("lb/lb-1/a/s1.conf".into(), edited);
    repo.tree.remove("lb/lb-2/a/s3.conf");
    repo.engine.sync("external", repo.tree.clone());
    let before = repo.store.writes;
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let (decision, step) = repo
        .engine
        .decide(
            &snapshot,
            &config(),
            &repo.ledger,
            &HoldUpdate::default(),
            now,
            &mut repo.store,
        )
        .unwrap();
    // Both paths are restored (no holds were passed in here), and nothing else is rewritten.
    assert_eq!(
        step.changes.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["lb/lb-1/a/s1.conf", "lb/lb-2/a/s3.conf"]
    );
    assert_eq!(repo.store.writes - before, 2);
    assert!(decision.files.is_empty());
}
