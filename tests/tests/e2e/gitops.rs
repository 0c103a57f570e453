//! Git as the operator's tool, end to end with the real `git` CLI: a revert rolls the LB hosts
//! back (listener and DNS records), the generator holds the Service instead of re-adding it, and
//! lifting the hold in Git brings it back on the same address.

use std::time::Duration;

use flipbit_tests::cluster::{generator, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::human::Human;
use flipbit_tests::{probe, repo};

const SHOP: &str = "shop.web.k8s.example.test";

fn render(f: &Fleet) -> String {
    let out = generator("render", &f.repo, f.cluster.path(), &[]);
    assert!(out.status.success(), "render: {}", text(&out));
    text(&out)
}

fn serves(f: &Fleet, host: u8, last: u8) -> bool {
    flipbit_tests::wait::wait_until(Duration::from_secs(2), || probe::tcp(f.addr(host, last, 8080))).is_ok()
}

fn dns(f: &Fleet, name: &str) -> Vec<String> {
    f.named.as_ref().expect("named").query(name, "A")
}

fn git_log(f: &Fleet, path: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&f.repo)
        .args(["log", "--format=%an|%s", "--", path])
        .output()
        .expect("git log");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_revert_rolls_back_holds_and_comes_back_on_the_same_address_when_lifted() {
    let Some(f) = Fleet::with_dns(111, 5401) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    render(&f);
    for lb in ["lb-a", "lb-b"] {
        f.apply_ok(lb);
    }
    assert!(serves(&f, 1, 1) && serves(&f, 2, 1));
    assert_eq!(dns(&f, SHOP).len(), 2);

    // The operator reverts the generator's "expose" commit with plain git.
    let alice = Human::clone(&f.repo, &f.tmp.path().join("alice"), "Alice", "alice@example.test");
    let subject = alice.git(&["log", "-1", "--format=%s"]);
    assert!(subject.starts_with("expose web/shop on lb-a 127.111.1.1"), "{subject}");
    alice.git(&["revert", "--no-edit", "HEAD"]);
    alice.git(&["push", "-q", "origin", "main"]);
    let revert = alice.git(&["rev-parse", "HEAD"]).trim().to_owned();

    // The appliers take the listener and the records away like for any commit.
    for lb in ["lb-a", "lb-b"] {
        f.apply_ok(lb);
    }
    assert!(
        !serves(&f, 1, 1) && !serves(&f, 2, 1),
        "the reverted listener still answers"
    );
    assert!(dns(&f, SHOP).is_empty(), "the reverted records still answer");

    // The generator does not re-add it: it holds it, says so, and says how to lift the hold.
    let out = render(&f);
    assert!(
        out.contains("Service web/shop: on hold: commit")
            && out.contains(&revert[..12])
            && out.contains("delete web/shop from holds.yaml"),
        "{out}"
    );
    let head = repo::head_message(&f.repo);
    assert!(head.starts_with("hold web/shop: commit"), "{head}");
    assert!(head.contains("Flipbit-Cause: human change in"), "{head}");
    let files = repo::files_under(&f.repo, "lb");
    assert!(files.is_empty(), "held files came back: {files:?}");
    let holds = repo::read(&f.repo, "holds.yaml").expect("holds.yaml");
    assert!(holds.contains("web/shop:") && holds.contains("127.111.1.1"), "{holds}");

    // Other Services are managed as usual, and do not get the held Service's addresses.
    f.cluster.lb_service("web", "blog", &[], &[("TCP", 8080, 30080)]);
    render(&f);
    assert!(repo::head_message(&f.repo).starts_with("expose web/blog on lb-a 127.111.1.2, lb-b 127.111.2.2"));
    assert!(
        render(&f).contains("no change"),
        "a held Service must not cause a commit per run"
    );
    for lb in ["lb-a", "lb-b"] {
        f.apply_ok(lb);
    }
    assert!(serves(&f, 1, 2) && !serves(&f, 1, 1));

    // Lifting the hold is a human commit that deletes the entry; the Service comes back on .1.
    alice.pull();
    let text = alice.read("holds.yaml").expect("holds.yaml in the clone");
    let kept: Vec<&str> = text.lines().take_while(|l| !l.starts_with("holds:")).collect();
    alice.write("holds.yaml", &format!("{}\nholds: {{}}\n", kept.join("\n")));
    alice.commit_all("lift the hold on web/shop");
    alice.git(&["push", "-q", "origin", "main"]);
    render(&f);
    let head = repo::head_message(&f.repo);
    assert!(
        head.starts_with("resume web/shop on lb-a 127.111.1.1, lb-b 127.111.2.1 (hold lifted)"),
        "{head}"
    );
    for lb in ["lb-a", "lb-b"] {
        f.apply_ok(lb);
    }
    assert!(serves(&f, 1, 1) && serves(&f, 2, 1));
    let mut got = dns(&f, SHOP);
    got.sort();
    assert_eq!(got, vec!["127.111.1.1".to_owned(), "127.111.2.1".to_owned()]);

    // The hold and its lifting are both in `git log -- holds.yaml`; the Service's history is in
    // `git log -- <its snippet>`.
    let log = git_log(&f, "holds.yaml");
    assert!(
        log.contains("Alice|lift the hold on web/shop") && log.contains("flipbit-generator|hold web/shop"),
        "{log}"
    );
    let log = git_log(&f, "lb/lb-a/web/shop.conf");
    let subjects: Vec<&str> = log.lines().map(|l| l.split('|').nth(1).unwrap_or("")).collect();
    assert_eq!(subjects.len(), 3, "{log}");
    assert!(subjects[0].starts_with("resume web/shop"), "{log}");
    assert!(subjects[1].starts_with("Revert \"expose web/shop"), "{log}");
    assert!(subjects[2].starts_with("expose web/shop"), "{log}");
}

#[test]
fn a_hand_edit_is_held_and_kept_while_other_changes_go_on() {
    let Some(f) = Fleet::start(112) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.cluster.lb_service("web", "blog", &[], &[("TCP", 8080, 30080)]);
    render(&f);

    // A hand edit pins web/shop on lb-a to one node.
    let bob = Human::clone(&f.repo, &f.tmp.path().join("bob"), "Bob", "bob@example.test");
    let path = "lb/lb-a/web/shop.conf";
    let snippet = bob.read(path).expect("snippet");
    let pinned: String = snippet
        .lines()
        .filter(|l| !l.trim_start().starts_with("server 127.112.0.") || l.contains("127.112.0.10:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(pinned, snippet);
    bob.write(path, &pinned);
    bob.commit_all("pin web/shop on lb-a to node 10 while we debug");
    bob.git(&["push", "-q", "origin", "main"]);

    // A node goes NotReady: web/blog's upstreams follow, web/shop's hand-edited file stays.
    f.cluster.node(1, f.block, false);
    render(&f);
    assert_eq!(repo::read(&f.repo, path).as_deref(), Some(pinned.as_str()));
    let blog = repo::read(&f.repo, "lb/lb-a/web/blog.conf").expect("blog");
    assert!(!blog.contains("127.112.0.10:"), "{blog}");
    let holds = repo::read(&f.repo, "holds.yaml").expect("holds.yaml");
    assert!(holds.contains("web/shop:") && holds.contains(path), "{holds}");
    assert!(!holds.contains("web/blog"), "{holds}");

    // The pinned config is valid nginx and is served.
    f.apply_ok("lb-a");
    let got = flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::tcp(f.addr(1, 2, 8080)))
        .expect("shop answers");
    assert!(got.starts_with("127.112.0.10:"), "{got}");
}

fn propose(f: &Fleet) -> String {
    let out = generator(
        "render",
        &f.repo,
        f.cluster.path(),
        &["--propose-branch", "flipbit/review"],
    );
    assert!(out.status.success(), "render: {}", text(&out));
    text(&out)
}

fn rev(f: &Fleet, what: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&f.repo)
        .args(["rev-parse", "--verify", "-q", what])
        .output()
        .expect("git rev-parse");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn review_mode_proposes_on_a_branch_and_follows_fast_forwards_and_merges() {
    let Some(f) = Fleet::start(113) else { return };
    let carol = Human::clone(&f.repo, &f.tmp.path().join("carol"), "Carol", "carol@example.test");
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);

    // The change goes to the review branch; main and the LB hosts do not see it.
    let out = propose(&f);
    assert!(out.contains("proposed") && out.contains("on flipbit/review"), "{out}");
    assert!(
        repo::files_under(&f.repo, "lb").is_empty(),
        "main changed in review mode"
    );
    let p1 = rev(&f, "refs/heads/flipbit/review").expect("review branch");
    f.apply_ok("lb-a");
    assert!(!serves(&f, 1, 1), "served before the merge");
    // Proposing the same change again does not move the branch.
    assert!(propose(&f).contains("already proposes"));
    assert_eq!(rev(&f, "refs/heads/flipbit/review").as_deref(), Some(p1.as_str()));

    // A fast-forward merge puts it live.
    carol.git(&["fetch", "-q", "origin"]);
    carol.git(&["merge", "-q", "--ff-only", "origin/flipbit/review"]);
    carol.git(&["push", "-q", "origin", "main"]);
    f.apply_ok("lb-a");
    assert!(serves(&f, 1, 1));
    assert!(propose(&f).contains("no change"));

    // The next proposal is made on top of main; main moves on meanwhile (a human commit), and the
    // proposal goes in with a merge commit. Nothing is held: a merge is not a hand edit.
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    propose(&f);
    carol.write("NOTES.md", "LB fleet notes\n");
    carol.commit_all("notes for the fleet");
    carol.git(&["fetch", "-q", "origin"]);
    carol.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge flipbit/review",
        "origin/flipbit/review",
    ]);
    carol.git(&["push", "-q", "origin", "main"]);
    f.apply_ok("lb-a");
    assert!(serves(&f, 1, 2));
    let out = propose(&f);
    assert!(out.contains("no change") && !out.contains("on hold"), "{out}");
    assert!(repo::read(&f.repo, "holds.yaml").is_none());

    // The proposal moves on before the merge (c, then c and d); the human merges the older one
    // they reviewed. The generator proposes the rest on top of what was merged: the ledger stays
    // consistent and nobody's address moves.
    f.cluster.lb_service("web", "c", &[], &[("TCP", 8080, 30080)]);
    propose(&f);
    carol.git(&["fetch", "-q", "origin"]);
    let reviewed = carol.git(&["rev-parse", "origin/flipbit/review"]).trim().to_owned();
    f.cluster.lb_service("web", "d", &[], &[("TCP", 8080, 30080)]);
    propose(&f);
    carol.git(&["merge", "-q", "--no-ff", "-m", "Merge the reviewed proposal", &reviewed]);
    carol.git(&["push", "-q", "origin", "main"]);
    let out = propose(&f);
    assert!(out.contains("proposed"), "{out}");
    let review_ledger = {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&f.repo)
            .args(["show", "flipbit/review:ledger.yaml"])
            .output()
            .expect("git show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (svc, last) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        assert!(
            review_ledger.contains(&format!("web/{svc}:\n    addresses:\n      lb-a: 127.113.1.{last}\n")),
            "web/{svc}: {review_ledger}"
        );
    }
    let parent = rev(&f, "flipbit/review^").expect("parent");
    assert_eq!(
        Some(parent),
        rev(&f, "refs/heads/main"),
        "the proposal is not on top of main"
    );

    // The Service goes away before anyone merges: nothing is left to propose, the branch goes.
    f.cluster.remove("svc-web-d.yaml");
    let out = propose(&f);
    assert!(out.contains("deleted the unmerged flipbit/review"), "{out}");
    assert_eq!(rev(&f, "refs/heads/flipbit/review"), None);
}
