//! `format.yaml` in a real state repo (a bare Git repo made with the `git` command): it comes with
//! the first commit the generator makes to a repo that lacks it, through a full decision and
//! through the engine's shortcut alike, and never makes a commit of its own.

#[path = "../../core/tests/common/inputs.rs"]
mod inputs;

use std::path::{Path, PathBuf};
use std::process::Command;

use flipbit_core::format;
use flipbit_core::model::Snapshot;
use flipbit_generator::cycle::{self, Memory, RepoTarget};

const CONFIG: &str = "zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.7.1.0/24]}\n";

/// Runs `git` in `dir` as a human with a fixed identity; returns its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Human")
        .env("GIT_AUTHOR_EMAIL", "human@example.test")
        .env("GIT_COMMITTER_NAME", "Human")
        .env("GIT_COMMITTER_EMAIL", "human@example.test")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare repo whose `main` holds `flipbit.yaml` alone, and a clone to make human commits in.
struct Repo {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bare = dir.path().join("state.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "state.git"]);
        git(dir.path(), &["clone", "-q", "state.git", "work"]);
        std::fs::write(work.join("flipbit.yaml"), CONFIG).expect("write flipbit.yaml");
        git(&work, &["checkout", "-q", "-b", "main"]);
        git(&work, &["add", "flipbit.yaml"]);
        git(&work, &["commit", "-q", "-m", "add flipbit.yaml"]);
        git(&work, &["push", "-q", "origin", "main"]);
        Self { _dir: dir, bare, work }
    }

    fn target(&self) -> RepoTarget {
        RepoTarget {
            url: self.bare.display().to_string(),
            branch: "main".into(),
            cache_dir: None,
            author_name: "flipbit-generator".into(),
            author_email: "flipbit-generator@localhost".into(),
            signing_key: None,
            propose_branch: None,
        }
    }

    /// One decision cycle, committed and pushed; with `memory`, through the engine.
    fn cycle(&self, snapshot: &Snapshot, memory: Option<&mut Memory>) {
        let (store, _temp) = cycle::open_store(&self.target()).expect("store");
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        cycle::run(&store, &self.target(), snapshot, &[], now, true, memory).expect("cycle");
    }

    fn commits(&self) -> usize {
        git(&self.bare, &["rev-list", "--count", "main"])
            .trim()
            .parse()
            .expect("a count")
    }

    /// The paths the last commit on `main` changed.
    fn last_changed(&self) -> Vec<String> {
        let out = git(&self.bare, &["show", "--name-only", "--format=", "main"]);
        out.lines().map(str::to_owned).collect()
    }

    fn format_record(&self) -> Option<String> {
        let out = Command::new("git")
            .current_dir(&self.bare)
            .args(["show", &format!("main:{}", format::FORMAT_FILE)])
            .output()
            .expect("git runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A human's commit deleting `format.yaml` (a repo an older generator wrote).
    fn delete_format_record(&self) {
        git(&self.work, &["pull", "-q", "origin", "main"]);
        git(&self.work, &["rm", "-q", format::FORMAT_FILE]);
        git(&self.work, &["commit", "-q", "-m", "drop format.yaml"]);
        git(&self.work, &["push", "-q", "origin", "main"]);
    }
}

/// Services `a/<name>` (each with its annotation, if any) on one backend node.
fn snapshot(services: &[(&str, Option<(&str, &str)>)]) -> Snapshot {
    let service = |&(name, annotation): &(&str, Option<(&str, &str)>)| match annotation {
        Some((key, value)) => inputs::annotated(inputs::lb_service("a", name), key, value),
        None => inputs::lb_service("a", name),
    };
    inputs::one_node_snapshot(services.iter().map(service).collect(), "127.7.0.10")
}

#[test]
fn the_format_record_comes_with_the_first_commit_and_never_alone() {
    let repo = Repo::new();
    // Nothing exposed: nothing to commit, not even the format record.
    repo.cycle(&snapshot(&[]), None);
    assert_eq!(repo.commits(), 1);
    assert_eq!(repo.format_record(), None);

    // The first real change brings it, exactly as the format module renders it.
    repo.cycle(&snapshot(&[("web", None)]), None);
    assert_eq!(repo.commits(), 2);
    assert!(repo.last_changed().contains(&format::FORMAT_FILE.to_owned()));
    // Format 1: no Service needs more, so an applier that reads only format 1 keeps applying.
    let text = repo.format_record().expect("format.yaml committed");
    assert_eq!(text, format::render(1));
    assert_eq!(format::parse(&text), Ok(1));

    // Nothing changed: no commit.
    let mut memory = Memory::default();
    repo.cycle(&snapshot(&[("web", None)]), Some(&mut memory));
    assert_eq!(repo.commits(), 2);

    // A Service with an idle timeout of its own needs format 2, which the record says in the
    // same commit; once it goes, the record goes back to 1.
    let tuned = snapshot(&[("web", None), ("slow", Some(("flipbit.io/idle-timeout", "30s")))]);
    repo.cycle(&tuned, Some(&mut memory));
    assert_eq!(repo.commits(), 3);
    assert_eq!(repo.format_record(), Some(format::render(format::OUTPUT_FORMAT)));
    assert!(repo.last_changed().contains(&format::FORMAT_FILE.to_owned()));
    repo.cycle(&snapshot(&[("web", None)]), Some(&mut memory));
    assert_eq!(repo.format_record(), Some(format::render(1)));
}

/// The engine's shortcut must give it too: a full decision that finds only it missing commits
/// nothing, and the next (shortcut) decision, with a real change, must not take it for present.
#[test]
fn a_repo_lacking_the_record_gets_it_with_the_next_change_through_the_shortcut() {
    let repo = Repo::new();
    repo.cycle(&snapshot(&[("web", None)]), None);
    repo.delete_format_record();
    let commits = repo.commits();

    let mut memory = Memory::default();
    repo.cycle(&snapshot(&[("web", None)]), Some(&mut memory));
    assert_eq!(repo.commits(), commits, "format.yaml alone made a commit");
    assert_eq!(repo.format_record(), None);

    let changed = snapshot(&[("web", Some(("flipbit.io/balance", "least-conn")))]);
    repo.cycle(&changed, Some(&mut memory));
    assert_eq!(repo.commits(), commits + 1);
    assert_eq!(
        repo.last_changed(),
        [format::FORMAT_FILE, "lb/lb-1/a/web.conf"],
        "the change and the record, nothing else"
    );
    assert_eq!(repo.format_record(), Some(format::render(1)));
}
