//! `flipbit-generator render --cache-dir` keeps what it derived between runs (the engine's
//! memory, the ledger, what each manifest read as): the committed trees must be the same as with
//! no cache at every step, whether the cache is warm, from another head, truncated or damaged.
//! Two repos with the same history take the same manifests: one rendered with a cache dir, the
//! other without.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flipbit_tests::cluster::{ManifestDir, text};
use flipbit_tests::repo;

const NOW: &str = "2026-12-05T12:00:00Z";

struct Pair {
    tmp: tempfile::TempDir,
    cached: PathBuf,
    plain: PathBuf,
    cluster: ManifestDir,
    /// The ids of each human commit: (in `cached`, in `plain`). The same edit on the two repos
    /// is two commits (their parents were signed at different times), and `holds.yaml` names
    /// the commit that put a Service on hold.
    human: std::cell::RefCell<Vec<(git2::Oid, git2::Oid)>>,
}

impl Pair {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cached = repo::two_hosts(&tmp.path().join("cached"), "127.215.1.0/24", "127.215.2.0/24");
        let plain = repo::two_hosts(&tmp.path().join("plain"), "127.215.1.0/24", "127.215.2.0/24");
        let cluster = ManifestDir::new(&tmp.path().join("cluster"));
        cluster.nodes(215);
        Pair {
            tmp,
            cached,
            plain,
            cluster,
            human: Default::default(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("cache.git")
    }

    fn cache_file(&self) -> PathBuf {
        self.cache_dir().join("flipbit-render.cache")
    }

    fn journal_file(&self) -> PathBuf {
        self.cache_dir().join("flipbit-render.journal")
    }

    /// Removes the last run's answer (`render_cache::answer`), so the next run on the same
    /// manifests and head loads the cache and decides rather than answering at once.
    fn forget_answer(&self) {
        std::fs::remove_file(self.cache_dir().join("flipbit-render.answer")).expect("an answer to remove");
    }

    /// Renders both repos; returns the cached run's output. Fails unless both trees are the same.
    fn render(&self, step: &str) -> String {
        self.render_at(step, NOW)
    }

    /// [`Pair::render`] at another moment.
    fn render_at(&self, step: &str, now: &str) -> String {
        let cache = self.cache_dir();
        let with = render(
            &self.cached,
            self.cluster.path(),
            &["--now", now, "--cache-dir", &cache.display().to_string()],
        );
        let without = render(&self.plain, self.cluster.path(), &["--now", now]);
        let mut plain = files(&self.plain);
        for (cached_id, plain_id) in self.human.borrow().iter() {
            for text in plain.values_mut() {
                *text = text.replace(&plain_id.to_string(), &cached_id.to_string());
            }
        }
        assert_eq!(
            files(&self.cached),
            plain,
            "{step}: the trees differ with and without the cache (each human commit's id mapped)\nwith: {with}\nwithout: {without}"
        );
        with
    }

    /// The same human commit on both repos.
    fn human_commit(&self, files: &[(&str, String)], deletes: &[&str]) {
        let files: BTreeMap<&str, String> = files.iter().cloned().collect();
        let commit = |r: &Path| repo::human_commit(r, &files, deletes, "a human edit").expect("human commit");
        let ids = (commit(&self.cached), commit(&self.plain));
        self.human.borrow_mut().push(ids);
    }
}

fn render(repo: &Path, manifests: &Path, extra: &[&str]) -> String {
    let out: Output = Command::new(flipbit_tests::bins::generator())
        .args(["render", "--repo"])
        .arg(repo)
        .arg("--manifests")
        .arg(manifests)
        .args(extra)
        .env(
            "RUST_LOG",
            "flipbit_generator::render_cache=debug,flipbit_generator::cycle=debug",
        )
        .output()
        .unwrap_or_else(|e| panic!("running flipbit-generator: {e}"));
    assert!(out.status.success(), "render failed: {}", text(&out));
    text(&out)
}

/// Every file of the head's tree, by path, as text.
fn files(path: &Path) -> BTreeMap<String, String> {
    let repo = git2::Repository::open_bare(path).expect("bare repo");
    let tree = repo
        .find_reference("refs/heads/main")
        .and_then(|r| r.peel_to_tree())
        .expect("a head");
    let mut out = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let blob = repo.find_blob(entry.id()).expect("blob");
            let name = entry.name().expect("a UTF-8 path");
            out.insert(
                format!("{dir}{name}"),
                String::from_utf8_lossy(blob.content()).into_owned(),
            );
        }
        git2::TreeWalkResult::Ok
    })
    .expect("walking the tree");
    out
}

/// A `List` of Services as `kubectl get -o yaml` writes it (items first, `kind: List` and
/// `metadata` after them); `balance` is the `flipbit.io/balance` annotation of the first one.
fn services_list(count: usize, balance: &str, first_port: u16) -> String {
    let mut out = String::from("apiVersion: v1\nitems:\n");
    for i in 0..count {
        let annotations = if i == 0 {
            format!("  metadata:\n    annotations:\n      flipbit.io/balance: {balance}\n")
        } else {
            "  metadata:\n".to_owned()
        };
        let port = if i == 0 { first_port } else { 8080 };
        out.push_str(&format!(
            "- apiVersion: v1\n  kind: Service\n{annotations}    name: svc{i}\n    namespace: shop\n  spec:\n    type: LoadBalancer\n    loadBalancerClass: flipbit.io/nginx\n    ports:\n    - {{port: {port}, protocol: TCP, nodePort: {}}}\n",
            30100 + i
        ));
    }
    out.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    out
}

#[test]
fn renders_with_a_warm_stale_truncated_or_damaged_cache_commit_what_renders_without_one() {
    let p = Pair::new();
    p.cluster.put("services.yaml", &services_list(6, "round-robin", 8080));
    p.cluster.lb_service("web", "alone", &[], &[("TCP", 8081, 30090)]);
    let out = p.render("cold");
    assert!(out.contains("committed"), "{out}");
    assert!(p.cache_file().exists(), "no cache written: {out}");

    // Warm: one Service of the List changed, then nothing.
    p.cluster.put("services.yaml", &services_list(6, "least-conn", 8080));
    let out = p.render("one changed Service");
    assert!(out.contains("render cache loaded"), "{out}");
    assert!(out.contains("committed"), "{out}");
    assert!(
        p.journal_file().exists(),
        "one change is appended to the journal: {out}"
    );
    let out = p.render("no change");
    assert!(out.contains("no change"), "{out}");

    // A Service leaves the List (its files go), another file goes.
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8080));
    p.cluster.remove("svc-web-alone.yaml");
    p.render("two Services gone");

    // A human commit moves the head: the cache describes another commit.
    let stale = std::fs::read(p.cache_file()).expect("cache");
    let stale_journal = std::fs::read(p.journal_file()).ok();
    p.human_commit(&[], &["lb/lb-a/shop/svc1.conf"]);
    let out = p.render("a human deleted a generated file");
    assert!(out.contains("committed"), "{out}");

    // A cache from an older head, put back (with its journal).
    std::fs::write(p.cache_file(), &stale).expect("old cache back");
    match &stale_journal {
        Some(journal) => std::fs::write(p.journal_file(), journal).expect("old journal back"),
        None => {
            let _ = std::fs::remove_file(p.journal_file());
        }
    }
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8090));
    p.render("cache from another head");

    // A journal torn by a crash while appending: its tail is ignored with a log line (the state
    // before it is an older commit's, synced with the head), and the next write is a whole file.
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8095));
    p.render("a change for the journal");
    let journal = std::fs::read(p.journal_file()).expect("a journal");
    std::fs::write(p.journal_file(), &journal[..journal.len() - 3]).expect("tear");
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8096));
    let out = p.render("torn journal");
    assert!(
        out.contains("journal has a damaged tail") && out.contains("committed"),
        "{out}"
    );
    assert!(
        !p.journal_file().exists(),
        "a whole file after a damaged journal: {out}"
    );
    // A byte flipped inside a journal record.
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8097));
    p.render("another change for the journal");
    let mut journal = std::fs::read(p.journal_file()).expect("a journal");
    let at = journal.len() - 20;
    journal[at] ^= 0x01;
    std::fs::write(p.journal_file(), &journal).expect("damage the journal");
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8098));
    let out = p.render("damaged journal");
    assert!(out.contains("journal has a damaged tail"), "{out}");

    // Truncated, then damaged in the middle: ignored with a log line, and rebuilt.
    let bytes = std::fs::read(p.cache_file()).expect("cache");
    std::fs::write(p.cache_file(), &bytes[..bytes.len() / 2]).expect("truncate");
    p.cluster.put("services.yaml", &services_list(5, "round-robin", 8090));
    let out = p.render("truncated cache");
    assert!(out.contains("render cache corrupt"), "{out}");
    let mut bytes = std::fs::read(p.cache_file()).expect("cache rebuilt");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(p.cache_file(), &bytes).expect("damage");
    p.cluster.put("services.yaml", &services_list(7, "round-robin", 8090));
    let out = p.render("damaged cache");
    assert!(out.contains("render cache corrupt"), "{out}");
    // A Service is on hold since the human's commit: the run decides, with no answer to repeat.
    let out = p.render("rebuilt cache");
    assert!(
        out.contains("render cache loaded") && out.contains("no change"),
        "{out}"
    );
}

/// The memory of the last decision is kept too, so a warm run looks only at what changed (`fast`
/// in the log); when it no longer fits (a node went not ready since: other nodes), it is refused
/// with a log line and the decision is a full one. The trees match a run without cache at every
/// step.
#[test]
fn a_warm_cache_decides_only_what_changed_and_a_memory_that_no_longer_fits_is_decided_in_full() {
    let p = Pair::new();
    p.cluster.put("services.yaml", &services_list(6, "round-robin", 8080));
    let out = p.render("cold");
    assert!(out.contains("committed") && out.contains("fast=false"), "{out}");
    p.cluster.put("services.yaml", &services_list(6, "round-robin", 8085));
    let out = p.render("one changed Service");
    assert!(out.contains("committed") && out.contains("fast=true"), "{out}");
    p.forget_answer();
    let out = p.render("no change");
    assert!(out.contains("no change") && out.contains("fast=true"), "{out}");

    p.cluster.node(2, 215, false);
    let out = p.render("a node not ready");
    assert!(
        out.contains("does not fit") && out.contains("nodes or unreadable Services changed"),
        "{out}"
    );
    assert!(out.contains("fast=false") && out.contains("committed"), "{out}");
    p.cluster.put("services.yaml", &services_list(5, "least-conn", 8085));
    let out = p.render("after the full decision");
    assert!(out.contains("fast=true") && out.contains("committed"), "{out}");
}

const ANSWERED: &str = "nothing to decide";

/// A run on the manifests and head a run left up to date answers "no change" without loading the
/// cache or deciding (`render_cache::answer`), but only while nothing it depends on moved: the
/// manifests (a same-size edit with its modification time put back too), the head (a human's
/// commit), and the time (a withdrawn address comes free after the release grace). The trees
/// match a run without cache at every step.
#[test]
fn an_up_to_date_answer_is_repeated_only_while_manifests_head_and_time_are_the_same() {
    let p = Pair::new();
    p.cluster.put("services.yaml", &services_list(4, "round-robin", 8080));
    let out = p.render("cold");
    assert!(out.contains("committed") && !out.contains(ANSWERED), "{out}");
    let out = p.render("the same manifests and head");
    assert!(
        out.contains("no change") && out.contains(ANSWERED) && !out.contains("render cache loaded"),
        "{out}"
    );

    // The same size, the modification time put back: the change time and the content tell.
    let file = p.cluster.path().join("services.yaml");
    let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
    p.cluster.put("services.yaml", &services_list(4, "round-robin", 8081));
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(mtime))
        .expect("mtime put back");
    let out = p.render("a same-size edit, its time put back");
    assert!(out.contains("committed") && !out.contains(ANSWERED), "{out}");
    let out = p.render("answered again");
    assert!(out.contains(ANSWERED), "{out}");

    // A Service goes: its addresses are withdrawn now and come free an hour later (the release
    // grace). Before then the answer holds; after, the run decides and commits the release.
    p.cluster.put("services.yaml", &services_list(3, "round-robin", 8081));
    let out = p.render("a Service gone");
    assert!(out.contains("committed"), "{out}");
    let out = p.render_at("before its addresses come free", "2026-12-05T12:59:00Z");
    assert!(out.contains(ANSWERED), "{out}");
    let out = p.render_at("after its addresses come free", "2026-12-05T13:01:00Z");
    assert!(out.contains("committed") && !out.contains(ANSWERED), "{out}");

    // A human's commit moves the head: decided (the Service goes on hold), never answered.
    let out = p.render_at("answered at the new time", "2026-12-05T13:01:00Z");
    assert!(out.contains(ANSWERED), "{out}");
    p.human_commit(&[], &["lb/lb-a/shop/svc1.conf"]);
    let out = p.render_at("a human deleted a generated file", "2026-12-05T13:01:00Z");
    assert!(out.contains("committed") && !out.contains(ANSWERED), "{out}");
    // With a Service on hold the answer is not kept: every run decides.
    let out = p.render_at("a Service on hold", "2026-12-05T13:01:00Z");
    assert!(out.contains("no change") && !out.contains(ANSWERED), "{out}");
}
