//! Pushing: what reaches the remote.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use git2::{Oid, Repository, Signature};

use super::Store;

/// A bare remote with one commit on `main`.
pub(crate) fn remote(path: &Path) -> Repository {
    let repo = Repository::init_bare(path).expect("init the remote");
    let sig = Signature::now("t", "t@localhost").expect("signature");
    let blob = repo.blob(b"zone: example.test\n").expect("blob");
    let tree = {
        let mut builder = repo.treebuilder(None).expect("tree builder");
        builder.insert("flipbit.yaml", blob, 0o100644).expect("insert");
        builder.write().expect("tree")
    };
    {
        let tree = repo.find_tree(tree).expect("find tree");
        repo.commit(Some("refs/heads/main"), &sig, &sig, "root", &tree, &[])
            .expect("commit");
    }
    repo
}

/// 300 nginx-like snippets that differ in a few bytes each: prime delta material.
pub(crate) fn snippets() -> Vec<(String, Vec<u8>)> {
    (0..300)
        .map(|i| {
            let text = format!(
                "upstream svc_{i}_80 {{\n{}}}\nserver {{\n    listen 127.1.1.{}:80;\n    proxy_pass svc_{i}_80;\n}}\n",
                "    server 127.0.0.10:30080 max_fails=3 fail_timeout=10s;\n".repeat(8),
                i % 250
            );
            (format!("lb/lb-1/ns/svc-{i:03}.conf"), text.into_bytes())
        })
        .collect()
}

/// Commits the snippets through `store` and pushes them; returns the commit.
pub(crate) fn commit_and_push(store: &Store) -> Oid {
    let head = store.fetch().expect("fetch").expect("the remote has main");
    let mut batch = store.batch();
    let files: Vec<(String, Oid)> = snippets()
        .into_iter()
        .map(|(path, text)| (path, batch.add(&text).expect("add")))
        .collect();
    batch.finish().expect("finish the batch");
    let changes: BTreeMap<&str, Option<Oid>> = files.iter().map(|(p, id)| (p.as_str(), Some(*id))).collect();
    let author = Store::signature("flipbit-generator", "flipbit-generator@localhost").expect("signature");
    let committed = store
        .commit_blobs(head, &changes, |_| Some("snippets".into()), &author)
        .expect("commit")
        .expect("something changed");
    store.push(committed.id).expect("push");
    committed.id
}

/// `git verify-pack -v` over every pack of the bare repo at `path`.
pub(crate) fn verify_packs(path: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(path.join("objects/pack")).expect("pack dir") {
        let idx = entry.expect("entry").path();
        if idx.extension().is_some_and(|x| x == "idx") {
            let run = Command::new("git")
                .args(["verify-pack", "-v"])
                .arg(&idx)
                .output()
                .expect("run git verify-pack");
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
            out.push_str(&String::from_utf8_lossy(&run.stdout));
        }
    }
    out
}

/// Through libgit2 (a `file://` URL) and through the store's own push to a plain path, a push
/// carries whole objects.
#[test]
fn a_push_carries_whole_objects() {
    for file_url in [true, false] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let remote_path = tmp.path().join("remote.git");
        let remote = remote(&remote_path);
        let url = remote_path.display().to_string();
        let url = if file_url { format!("file://{url}") } else { url };
        let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open the cache");
        let pushed = commit_and_push(&store);
        let packs = verify_packs(&remote_path);
        // Every snippet arrived, and none as a delta (verify-pack sums up delta chains by length).
        assert_eq!(remote.refname_to_id("refs/heads/main").expect("main"), pushed);
        assert!(packs.contains("non delta: "), "{packs}");
        assert!(
            !packs.contains("chain length"),
            "the pushed pack has deltas ({url}):\n{packs}"
        );
    }
}

/// `git fsck --full` over the repo at `path`; fails the test with its report.
pub(crate) fn fsck(path: &Path) {
    let run = Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(["fsck", "--full", "--strict", "--no-dangling"])
        .output()
        .expect("run git fsck");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // A cache's HEAD names no branch of its own ("notice: HEAD points to an unborn branch").
    let problems = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("notice:"))
        .count();
    assert!(
        run.status.success() && problems == 0,
        "git fsck {}:\n{report}",
        path.display()
    );
}

/// A cold push: the batch's blobs go through the pack and index the store writes itself. Git
/// finds nothing wrong with the cache or the remote, and a second cache (as an LB host's applier
/// keeps) fetches the commit and reads every file back.
#[test]
fn a_cold_push_passes_fsck_and_fetches_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote_path = tmp.path().join("remote.git");
    remote(&remote_path);
    let url = remote_path.display().to_string();
    let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open the cache");
    let pushed = commit_and_push(&store);
    let cache_packs = std::fs::read_dir(tmp.path().join("cache.git/objects/pack"))
        .expect("the cache's pack dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "idx"))
        })
        .count();
    // The fetch of the root commit (three objects) is written loose.
    assert_eq!(cache_packs, 1, "the batch's own pack");
    fsck(&tmp.path().join("cache.git"));
    fsck(&remote_path);
    let reader = Store::open(&tmp.path().join("applier.git"), &url, "main").expect("open a second cache");
    assert_eq!(reader.fetch().expect("fetch"), Some(pushed));
    for (path, text) in snippets() {
        assert_eq!(reader.read(pushed, &path).expect("read"), Some(text), "{path}");
    }
}

/// The control: the same push with libgit2's defaults does deltify these snippets, so the test
/// above would see a delta if the setting stopped working.
#[test]
fn libgit2_deltifies_the_same_push_by_default() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote_path = tmp.path().join("remote.git");
    remote(&remote_path);
    // A `file://` URL: libgit2's push (a plain path takes the store's own).
    let url = format!("file://{}", remote_path.display());
    let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open the cache");
    let mut config = store.repo.config().expect("config");
    config.remove("pack.deltaCacheSize").expect("unset");
    config.remove("core.bigFileThreshold").expect("unset");
    commit_and_push(&store);
    assert!(verify_packs(&remote_path).contains("chain length"));
    // Opening the cache again restores the setting.
    drop(store);
    let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open the cache again");
    let config = store.repo.config().and_then(|mut c| c.snapshot()).expect("config");
    assert_eq!(config.get_i64("pack.deltaCacheSize").ok(), Some(1));
}

/// A remote that accepts the connection and then says nothing: the fetch gives up at the limit
/// with one error that says so, instead of waiting forever.
#[test]
fn a_silent_remote_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    let held = std::thread::spawn(move || {
        // Hold the connection open, silent, until the client goes away.
        let (mut conn, _) = listener.accept().expect("accept");
        let mut sink = [0u8; 256];
        while std::io::Read::read(&mut conn, &mut sink).is_ok_and(|n| n > 0) {}
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("git://127.0.0.1:{port}/state.git");
    let mut store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open");
    store.limit_fetches(crate::FetchLimits {
        connect: std::time::Duration::from_secs(1),
        total: std::time::Duration::from_millis(800),
    });
    let started = std::time::Instant::now();
    let err = store.fetch().expect_err("a silent remote answered");
    let took = started.elapsed();
    assert!(matches!(err, crate::StoreError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("no answer within"), "{err}");
    // The read timeout is the limit; well under a generous bound (no fixed expectation of speed).
    assert!(took < std::time::Duration::from_secs(30), "the fetch took {took:?}");
    drop(store);
    let _ = held.join();
}

/// Links and submodules under a directory are reported, never listed as files, in a listing and
/// in a difference.
#[test]
fn links_and_submodules_are_not_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("remote.git");
    let repo = remote(&path);
    let sig = Signature::now("t", "t@localhost").expect("signature");
    let head = repo.refname_to_id("refs/heads/main").expect("main");
    let base = repo.find_commit(head).expect("commit").tree().expect("tree");
    let file = repo.blob(b"upstream x {}\n").expect("blob");
    let target = repo.blob(b"/etc/shadow").expect("blob");
    let ns = {
        let mut b = repo.treebuilder(None).expect("builder");
        b.insert("a.conf", file, 0o100644).expect("file");
        b.insert("b.conf", target, 0o120000).expect("link");
        b.insert("c.conf", head, 0o160000).expect("submodule");
        b.write().expect("tree")
    };
    let host = {
        let mut b = repo.treebuilder(None).expect("builder");
        b.insert("ns", ns, 0o040000).expect("dir");
        b.write().expect("tree")
    };
    let lb = {
        let mut b = repo.treebuilder(None).expect("builder");
        b.insert("h", host, 0o040000).expect("dir");
        b.write().expect("tree")
    };
    let root = {
        let mut b = repo.treebuilder(Some(&base)).expect("builder");
        b.insert("lb", lb, 0o040000).expect("dir");
        b.write().expect("tree")
    };
    let tree = repo.find_tree(root).expect("tree");
    let parent = repo.find_commit(head).expect("commit");
    repo.commit(Some("refs/heads/main"), &sig, &sig, "links", &tree, &[&parent])
        .expect("commit");

    let store = Store::open(&tmp.path().join("cache.git"), &path.display().to_string(), "main").expect("open");
    let top = store.fetch().expect("fetch").expect("main");
    let listing = store.list_dir(top, "lb/h").expect("list");
    assert_eq!(listing.files.keys().collect::<Vec<_>>(), ["lb/h/ns/a.conf"]);
    assert_eq!(listing.not_files, ["lb/h/ns/b.conf", "lb/h/ns/c.conf"]);
    let diff = store.diff_dir(head, top, "lb/h").expect("diff");
    assert_eq!(diff.not_files, ["lb/h/ns/b.conf", "lb/h/ns/c.conf"]);
    assert_eq!(
        diff.changed.get("lb/h/ns/b.conf"),
        Some(&None),
        "a link counts as no file"
    );
    assert!(diff.changed.get("lb/h/ns/a.conf").is_some_and(Option::is_some));
}
