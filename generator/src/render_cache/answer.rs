//! The last run's answer, kept so that a run on exactly the same inputs answers "no change"
//! without loading the cache or deciding: CI that runs `render` on every push mostly finds nothing
//! to do, and at 50,000 Services loading the 64 MB cache alone costs more than git's own commit.
//!
//! A decision is a function of the manifests, the head commit (its `flipbit.yaml`, ledger, holds
//! and history), the time and the build. After a run that left the head up to date (it committed,
//! or found nothing to commit) with no problem, plain holds, and a decision memory that looks at no
//! Service again unless it changes (`Engine::unchanged_until`), deciding again on the same
//! manifests and head decides nothing new until a withdrawn address comes free. This file records
//! that fact: the build, repo, branch and author it holds for (the author's commits are the ones
//! history does not count as a human's), the head, that moment, and each manifest file's identity
//! and content checksum (`manifests::FileSeen`). A run whose folder has the same files with the
//! same content and whose fetched head is that commit, before that moment, is up to date.
//!
//! The fact does not go stale: another head or other manifests simply do not match it. So it is
//! written after a run it holds for and removed after one it does not, never trusted otherwise,
//! and a damaged or foreign file is ignored (the run then decides as usual).

use std::path::Path;

use flipbit_store::CommitId;
use jiff::Timestamp;

use super::{Reader, checksum, put_bytes, write_atomically};
use crate::cycle::RepoTarget;
use crate::manifests::{FileSeen, Identity, ManifestError, ParseCache, content_sum, files_in, now_ns};

pub const FILE: &str = "flipbit-render.answer";
const MAGIC: &[u8] = b"flipbit render answer\n";
/// Bumped whenever the layout changes.
const VERSION: u32 = 1;

/// An answer as recorded.
#[derive(Debug, PartialEq)]
struct Answer {
    head: CommitId,
    /// Nanoseconds since the epoch before which it holds (`i128::MAX`: for ever).
    until_ns: i128,
    /// Each manifest file by path, in the order `files_in` lists them.
    files: Vec<(String, FileSeen)>,
}

/// What the answer holds for besides its inputs: the cache's own tag (build, repo URL, branch)
/// and the author.
fn tag(target: &RepoTarget) -> String {
    format!(
        "{}\n{}\n{}",
        super::tag(target),
        target.author_name,
        target.author_email
    )
}

/// A recorded answer whose manifests are the folder's: up to date if the fetched head is `head`.
pub struct Matched {
    pub head: CommitId,
    /// The answer with the identities of files whose content had to be read (their identity
    /// alone was not trusted yet) taken again, when they can be trusted now: worth writing, so
    /// the next run need not read them.
    refreshed: Option<Vec<u8>>,
}

impl Matched {
    /// Once the head is confirmed: keeps what this run learned of the files' identities.
    pub fn keep(self, cache_dir: &Path) {
        if let Some(bytes) = self.refreshed {
            // Not kept is no loss: the next run reads those files again.
            let _ = write_atomically(cache_dir, &cache_dir.join(FILE), &bytes);
        }
    }
}

/// The recorded answer, when the manifests in `dir` are exactly those it was recorded for and
/// `now` is before the moment it stops holding; the caller fetches and compares the head. `None`
/// (the run decides as usual) for anything else, including an answer that is missing, damaged or
/// of another build.
pub fn matching(cache_dir: &Path, target: &RepoTarget, dir: &Path, now: Timestamp) -> Option<Matched> {
    if target.propose_branch.is_some() {
        // Review mode pushes to its own branch: "up to date" is not the whole answer there.
        return None;
    }
    let bytes = std::fs::read(cache_dir.join(FILE)).ok()?;
    let tag = tag(target);
    let mut answer = decode(&bytes, &tag).ok().flatten()?;
    if now.as_nanosecond() >= answer.until_ns {
        return None;
    }
    let files = files_in(dir).ok()?;
    if files.len() != answer.files.len() {
        return None;
    }
    let mut refreshed = false;
    for (file, (path, seen)) in files.iter().zip(&mut answer.files) {
        if file.display().to_string() != *path {
            return None;
        }
        // The time first, then the identity, then the text, as `manifests::load_dir_cached`.
        let seen_at = now_ns();
        let identity = Identity::of(&std::fs::metadata(file).ok()?);
        if seen.unchanged_without_reading(&identity) {
            continue;
        }
        if identity.size != seen.identity.size {
            // Another length is another text: no need to read it.
            return None;
        }
        let text = std::fs::read_to_string(file).ok()?;
        if content_sum(&text) != seen.content {
            return None;
        }
        let before = seen.clone();
        (seen.identity, seen.seen_at) = (identity, seen_at);
        match seen.unchanged_without_reading(&identity) {
            true => refreshed = true,
            false => *seen = before,
        }
    }
    Some(Matched {
        head: answer.head,
        refreshed: refreshed.then(|| encode(&answer, &tag)),
    })
}

/// Records that `head` is up to date for the manifests `manifests` read (their `seen` records)
/// until `until` (`None`: for ever). A file without a record (one that did not read cleanly) means
/// no answer: the run had a problem anyway.
pub fn record(
    cache_dir: &Path,
    target: &RepoTarget,
    dir: &Path,
    head: CommitId,
    until: Option<Timestamp>,
    manifests: &ParseCache,
) {
    let Some(answer) = answer_for(dir, head, until, manifests) else {
        forget(cache_dir);
        return;
    };
    let bytes = encode(&answer, &tag(target));
    if let Err(e) = write_atomically(cache_dir, &cache_dir.join(FILE), &bytes) {
        tracing::warn!(dir = %cache_dir.display(), error = %e, "could not record the render's answer; the next run decides as usual");
        forget(cache_dir);
    }
}

/// Removes the answer: the last run's result is not one a later run may repeat without deciding.
pub fn forget(cache_dir: &Path) {
    match std::fs::remove_file(cache_dir.join(FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %cache_dir.display(), error = %e, "could not remove the render's last answer")
        }
    }
}

fn answer_for(dir: &Path, head: CommitId, until: Option<Timestamp>, manifests: &ParseCache) -> Option<Answer> {
    let files: Result<Vec<_>, ManifestError> = files_in(dir);
    let files = files.ok()?;
    // Exactly the files the run read: one removed since (its Services were decided on) or added
    // since (not read) means no answer.
    if files.len() != manifests.seen.len() {
        return None;
    }
    let files = files
        .into_iter()
        .map(|file| {
            let path = file.display().to_string();
            let seen = manifests.seen.get(&path)?.clone();
            Some((path, seen))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Answer {
        head,
        until_ns: until.map_or(i128::MAX, Timestamp::as_nanosecond),
        files,
    })
}

/// `MAGIC`, version, tag, head, until, the files (a count, then per file its path, identity, when
/// it was taken and content checksum), a checksum of all that.
fn encode(answer: &Answer, tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + answer.files.len() * 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    put_bytes(&mut out, tag.as_bytes());
    out.extend_from_slice(answer.head.as_bytes());
    out.extend_from_slice(&answer.until_ns.to_le_bytes());
    out.extend_from_slice(&(answer.files.len() as u64).to_le_bytes());
    for (path, seen) in &answer.files {
        put_bytes(&mut out, path.as_bytes());
        let id = &seen.identity;
        out.extend_from_slice(&id.size.to_le_bytes());
        out.extend_from_slice(&id.mtime_ns.to_le_bytes());
        out.extend_from_slice(&id.ctime_ns.to_le_bytes());
        out.extend_from_slice(&id.ino.to_le_bytes());
        out.extend_from_slice(&id.dev.to_le_bytes());
        out.extend_from_slice(&seen.seen_at.to_le_bytes());
        out.extend_from_slice(&seen.content.to_le_bytes());
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// `Ok(None)` for an intact answer of another version or tag; `Err` for a damaged one.
fn decode(bytes: &[u8], tag: &str) -> Result<Option<Answer>, String> {
    let body_len = bytes.len().checked_sub(8).ok_or("shorter than its checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    if u64::from_le_bytes(sum.try_into().map_err(|_| "no checksum")?) != checksum(body) {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { bytes: body, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not an answer".into());
    }
    if u32::from_le_bytes(r.array()?) != VERSION || r.sized()? != tag.as_bytes() {
        return Ok(None);
    }
    let head = CommitId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?;
    let until_ns = i128::from_le_bytes(r.array()?);
    let n = u64::from_le_bytes(r.array()?);
    let mut files = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(body.len() / 100));
    for _ in 0..n {
        let path = std::str::from_utf8(r.sized()?).map_err(|_| "a path that is not UTF-8")?;
        let identity = Identity {
            size: u64::from_le_bytes(r.array()?),
            mtime_ns: i128::from_le_bytes(r.array()?),
            ctime_ns: i128::from_le_bytes(r.array()?),
            ino: u64::from_le_bytes(r.array()?),
            dev: u64::from_le_bytes(r.array()?),
        };
        let seen_at = i128::from_le_bytes(r.array()?);
        let content = u128::from_le_bytes(r.array()?);
        let seen = FileSeen {
            identity,
            seen_at,
            content,
            units: Vec::new(),
        };
        files.push((path.to_owned(), seen));
    }
    if r.at != body.len() {
        return Err("bytes after the end".into());
    }
    Ok(Some(Answer { head, until_ns, files }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::load_dir_cached;

    fn target(cache: &Path, author: &str) -> RepoTarget {
        RepoTarget {
            url: "/srv/state.git".into(),
            branch: "main".into(),
            cache_dir: Some(cache.to_path_buf()),
            author_name: "flipbit".into(),
            author_email: author.into(),
            signing_key: None,
            propose_branch: None,
        }
    }

    fn head(n: u8) -> CommitId {
        CommitId::from_bytes(&[n; 20]).expect("20 bytes")
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: LoadBalancer\n  ports:\n  - {port: 80, protocol: TCP, nodePort: 30080}\n";

    /// A folder of two manifests, read as `render` reads it, and an answer recorded for it.
    fn recorded(until: Option<Timestamp>) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, cache) = (tmp.path().join("cluster"), tmp.path().join("cache"));
        std::fs::create_dir_all(dir.join("more")).expect("dirs");
        std::fs::create_dir_all(&cache).expect("cache dir");
        std::fs::write(dir.join("web.yaml"), SERVICE).expect("write");
        std::fs::write(dir.join("more/db.yaml"), SERVICE.replace("web", "db")).expect("write");
        let (_, problems, parsed) = load_dir_cached(&dir, ParseCache::default()).expect("read");
        assert!(problems.is_empty(), "{problems:?}");
        record(&cache, &target(&cache, "a@x"), &dir, head(7), until, &parsed);
        (tmp, dir, cache)
    }

    use std::path::PathBuf;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn matched(cache: &Path, dir: &Path, author: &str, now: &str) -> Option<CommitId> {
        matching(cache, &target(cache, author), dir, at(now)).map(|m| m.head)
    }

    #[test]
    fn the_same_manifests_match_until_the_answer_expires() {
        let (_tmp, dir, cache) = recorded(Some(at("2026-12-06T12:00:00Z")));
        assert_eq!(matched(&cache, &dir, "a@x", "2026-12-06T11:59:59Z"), Some(head(7)));
        assert_eq!(matched(&cache, &dir, "a@x", "2026-12-06T12:00:00Z"), None, "expired");
        // Another author counts other commits as a human's: not the same inputs.
        assert_eq!(matched(&cache, &dir, "b@x", "2026-12-06T11:00:00Z"), None);
        let mut review = target(&cache, "a@x");
        review.propose_branch = Some("review".into());
        assert!(matching(&cache, &review, &dir, at("2026-12-06T11:00:00Z")).is_none());
        // For ever when nothing comes free.
        let (_tmp, dir, cache) = recorded(None);
        assert_eq!(matched(&cache, &dir, "a@x", "2100-01-01T00:00:00Z"), Some(head(7)));
    }

    /// Any change to the folder is a mismatch: a same-size edit made at once (inside the racy
    /// window, so its identity alone is not trusted), a file added, a file removed; the same text
    /// written again is not.
    #[test]
    fn any_change_to_the_manifests_is_a_mismatch() {
        let now = "2026-12-06T11:00:00Z";
        let (_tmp, dir, cache) = recorded(None);
        std::fs::write(dir.join("web.yaml"), SERVICE.replace("30080", "30081")).expect("write");
        assert_eq!(matched(&cache, &dir, "a@x", now), None, "same-size edit");
        std::fs::write(dir.join("web.yaml"), SERVICE).expect("write");
        assert_eq!(matched(&cache, &dir, "a@x", now), Some(head(7)), "the same text again");
        std::fs::write(dir.join("more/new.json"), "{}").expect("write");
        assert_eq!(matched(&cache, &dir, "a@x", now), None, "a file added");
        std::fs::remove_file(dir.join("more/new.json")).expect("remove");
        std::fs::remove_file(dir.join("more/db.yaml")).expect("remove");
        assert_eq!(matched(&cache, &dir, "a@x", now), None, "a file removed");
    }

    /// A file written again with an old modification time (`touch -d`, `cp -p`) and the same
    /// size: its change time gives it away, and its content is compared.
    #[test]
    fn an_edit_with_its_modification_time_put_back_is_a_mismatch() {
        let now = "2026-12-06T11:00:00Z";
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let (_tmp, dir, cache) = {
            let tmp = tempfile::tempdir().expect("tempdir");
            let (dir, cache) = (tmp.path().join("cluster"), tmp.path().join("cache"));
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::create_dir_all(&cache).expect("cache dir");
            let file = dir.join("web.yaml");
            std::fs::write(&file, SERVICE).expect("write");
            set_mtime(&file, old);
            let (_, _, parsed) = load_dir_cached(&dir, ParseCache::default()).expect("read");
            record(&cache, &target(&cache, "a@x"), &dir, head(7), None, &parsed);
            (tmp, dir, cache)
        };
        assert_eq!(matched(&cache, &dir, "a@x", now), Some(head(7)), "trusted unread");
        let file = dir.join("web.yaml");
        std::fs::write(&file, SERVICE.replace("30080", "30081")).expect("write");
        set_mtime(&file, old);
        assert_eq!(matched(&cache, &dir, "a@x", now), None);
    }

    fn set_mtime(path: &Path, t: std::time::SystemTime) {
        let f = std::fs::File::options().write(true).open(path).expect("open");
        f.set_modified(t).expect("set mtime");
    }

    /// A file read because its identity was not trusted yet is recorded again once it can be
    /// (so the next run need not read it); the answer stays the same otherwise.
    #[test]
    fn a_file_read_once_it_can_be_trusted_is_recorded_again() {
        let (_tmp, dir, cache) = recorded(None);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for file in files_in(&dir).expect("files") {
            set_mtime(&file, old);
        }
        // The identities recorded are the ones before the times were set back: read, the same
        // content, and now old enough to trust.
        let target = target(&cache, "a@x");
        let m = matching(&cache, &target, &dir, at("2026-12-06T11:00:00Z")).expect("a match");
        assert!(m.refreshed.is_some(), "worth writing again");
        m.keep(&cache);
        let m = matching(&cache, &target, &dir, at("2026-12-06T11:00:00Z")).expect("a match");
        assert!(m.refreshed.is_none(), "nothing read this time");
    }

    /// The answer names exactly the files the run read: a file removed (or added) while the run
    /// decided means no answer, since the next run would read another folder.
    #[test]
    fn a_folder_changed_during_the_run_gets_no_answer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, cache) = (tmp.path().join("cluster"), tmp.path().join("cache"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::create_dir_all(&cache).expect("cache dir");
        std::fs::write(dir.join("web.yaml"), SERVICE).expect("write");
        std::fs::write(dir.join("db.yaml"), SERVICE.replace("web", "db")).expect("write");
        let (_, _, parsed) = load_dir_cached(&dir, ParseCache::default()).expect("read");
        std::fs::remove_file(dir.join("db.yaml")).expect("remove");
        let target = target(&cache, "a@x");
        record(&cache, &target, &dir, head(7), None, &parsed);
        assert!(
            !cache.join(FILE).exists(),
            "no answer for a folder the run did not read"
        );
        std::fs::write(dir.join("db.yaml"), SERVICE.replace("web", "db")).expect("write");
        std::fs::write(dir.join("new.yaml"), SERVICE.replace("web", "new")).expect("write");
        record(&cache, &target, &dir, head(7), None, &parsed);
        assert!(!cache.join(FILE).exists(), "nor for one with a file added");
        std::fs::remove_file(dir.join("new.yaml")).expect("remove");
        record(&cache, &target, &dir, head(7), None, &parsed);
        assert!(cache.join(FILE).exists(), "the folder the run read");
    }

    #[test]
    fn a_damaged_answer_is_refused_and_another_tag_ignored() {
        let answer = Answer {
            head: head(3),
            until_ns: 42,
            files: vec![(
                "m/a.yaml".into(),
                FileSeen {
                    identity: Identity {
                        size: 1,
                        mtime_ns: -2,
                        ctime_ns: 3,
                        ino: 4,
                        dev: 5,
                    },
                    seen_at: 6,
                    content: u128::MAX - 7,
                    units: Vec::new(),
                },
            )],
        };
        let bytes = encode(&answer, "tag");
        assert_eq!(decode(&bytes, "tag"), Ok(Some(answer)));
        assert_eq!(decode(&bytes, "other"), Ok(None));
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], "tag").is_err(), "cut to {len}");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(decode(&damaged, "tag").is_err(), "byte {i} flipped");
        }
    }
}
