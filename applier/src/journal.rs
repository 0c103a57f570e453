//! The applier's journal (`<state>/journal`): what it has confirmed on this host, and the change
//! under way, so a run killed at any instruction is resumed from where it stopped instead of
//! guessed from the file system (docs/design.md §5.5). The `current` link says what nginx
//! will load at its next reload; the journal says what it was last *confirmed* to run.
//!
//! ```text
//! flipbit-applier journal 1
//! lb <commit>                      last commit whose LB step completed (the rewind check's anchor)
//! loaded <commit> [<ns/svc>,...]   the release the load balancer was confirmed to run, and the
//!                                  Services withheld from it
//! pending <commit> [<ns/svc>,...]  a release being swapped in: written before the swap, cleared
//!                                  once a reload onto it was confirmed
//! dns <commit> [<ns/svc>,...] [<name>,...]  the commit whose records were last published, less
//!                                  the Services and names left out
//! check <fnv-1a 64 of the lines above>
//! ```
//!
//! Every change writes the whole file anew: a temporary file, fsync, rename over the journal,
//! fsync of the directory. A journal that does not read back (a torn or hand-edited file) is
//! reported in one line and rebuilt from what can be checked (see `apply::read_journal`).

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::Path;

use flipbit_core::names::ServiceKey;
use flipbit_store::CommitId;

use crate::release::StateDir;

const HEADER: &str = "flipbit-applier journal 1";
const FILE: &str = "journal";
/// The files of the applier before the journal, read once to carry a state dir over.
const LEGACY_LB: &str = "applied-nginx";
const LEGACY_DNS: &str = "applied-dns";

/// This host's files at `commit`, less the files of the `withheld` Services (whose listeners
/// could not be bound here).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub commit: CommitId,
    pub withheld: BTreeSet<ServiceKey>,
}

impl Release {
    pub fn whole(commit: CommitId) -> Self {
        Self {
            commit,
            withheld: BTreeSet::new(),
        }
    }

    /// The release's directory name: the commit, and a digest of the withheld Services when
    /// there are any, so a release without some Services never takes the whole one's name.
    pub fn id(&self) -> String {
        if self.withheld.is_empty() {
            return self.commit.to_string();
        }
        let list = keys_text(&self.withheld);
        format!("{}-w{:016x}", self.commit, fnv1a(list.as_bytes()))
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.commit)?;
        if !self.withheld.is_empty() {
            write!(f, " (without {})", keys_text(&self.withheld).replace(',', ", "))?;
        }
        Ok(())
    }
}

/// What the DNS step last published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub commit: CommitId,
    /// Services whose records were left out (withheld from the load balancer).
    pub omitted: BTreeSet<ServiceKey>,
    /// Names whose records were left out (reserved, or holding records Flipbit did not write).
    pub omitted_names: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    pub lb: Option<CommitId>,
    pub loaded: Option<Release>,
    pub pending: Option<Release>,
    pub dns: Option<DnsRecord>,
}

/// How the journal read.
#[derive(Debug)]
pub enum Read {
    Found(Journal),
    /// No journal: a new host, or a state dir from before the journal (its old files are read).
    Fresh(Journal),
    /// Present but unreadable: why.
    Corrupt(String),
}

impl Journal {
    pub fn render(&self) -> String {
        let mut body = format!("{HEADER}\n");
        if let Some(lb) = &self.lb {
            body.push_str(&format!("lb {lb}\n"));
        }
        for (word, release) in [("loaded", &self.loaded), ("pending", &self.pending)] {
            if let Some(r) = release {
                body.push_str(&format!(
                    "{word} {}{}\n",
                    r.commit,
                    list_suffix(&keys_text(&r.withheld))
                ));
            }
        }
        if let Some(dns) = &self.dns {
            let names: Vec<&str> = dns.omitted_names.iter().map(String::as_str).collect();
            let keys = keys_text(&dns.omitted);
            let rest = match (keys.is_empty(), names.is_empty()) {
                (true, true) => String::new(),
                (_, true) => format!(" {keys}"),
                (true, false) => format!(" - {}", names.join(",")),
                (false, false) => format!(" {keys} {}", names.join(",")),
            };
            body.push_str(&format!("dns {}{rest}\n", dns.commit));
        }
        let sum = fnv1a(body.as_bytes());
        format!("{body}check {sum:016x}\n")
    }

    /// Parses a journal; any deviation from [`Journal::render`]'s form is an error saying where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body_end = text
            .rfind("check ")
            .ok_or_else(|| "no check line (a torn write?)".to_owned())?;
        let (body, check) = text.split_at(body_end);
        let want = format!("check {:016x}\n", fnv1a(body.as_bytes()));
        if check != want {
            return Err("its check line does not match its content".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("the first line is not {HEADER:?}"));
        }
        let mut journal = Journal::default();
        for (i, line) in lines.enumerate() {
            let at = |why: String| format!("line {}: {why}", i + 2);
            let words: Vec<&str> = line.split(' ').collect();
            let commit = || {
                words
                    .get(1)
                    .and_then(|w| parse_commit(w))
                    .ok_or_else(|| at("not a commit id".into()))
            };
            match words[0] {
                "lb" if words.len() == 2 && journal.lb.is_none() => journal.lb = Some(commit()?),
                "loaded" | "pending" if words.len() <= 3 => {
                    let release = Release {
                        commit: commit()?,
                        withheld: parse_keys(words.get(2).copied().unwrap_or("")).map_err(at)?,
                    };
                    let slot = if words[0] == "loaded" {
                        &mut journal.loaded
                    } else {
                        &mut journal.pending
                    };
                    if slot.replace(release).is_some() {
                        return Err(at(format!("{} given twice", words[0])));
                    }
                }
                "dns" if words.len() <= 4 && journal.dns.is_none() => {
                    let keys = words.get(2).copied().filter(|w| *w != "-").unwrap_or("");
                    journal.dns = Some(DnsRecord {
                        commit: commit()?,
                        omitted: parse_keys(keys).map_err(at)?,
                        omitted_names: parse_names(words.get(3).copied().unwrap_or("")).map_err(at)?,
                    });
                }
                _ => return Err(at("not a journal entry".into())),
            }
        }
        Ok(journal)
    }
}

/// Reads the journal of `state`; a state dir without one is read from the files the applier
/// kept before (`applied-nginx`, `applied-dns`: a commit id each), which say what was applied
/// but not what nginx was confirmed to run, so nothing counts as loaded.
pub fn read(state: &StateDir) -> Read {
    match std::fs::read(state.root().join(FILE)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Journal::parse(&text).map_or_else(Read::Corrupt, Read::Found),
            Err(_) => Read::Corrupt("it is not UTF-8".into()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Absent: nothing applied; present, it must hold a commit id.
            let legacy = |name: &str| -> Result<Option<CommitId>, String> {
                match std::fs::read(state.root().join(name)) {
                    Ok(bytes) => String::from_utf8(bytes)
                        .ok()
                        .and_then(|t| parse_commit(t.trim()))
                        .map(Some)
                        .ok_or_else(|| format!("{name} (from before the journal) does not hold a commit id")),
                    Err(_) => Ok(None),
                }
            };
            let (lb, dns) = match (legacy(LEGACY_LB), legacy(LEGACY_DNS)) {
                (Ok(lb), Ok(dns)) => (lb, dns),
                (Err(why), _) | (_, Err(why)) => return Read::Corrupt(why),
            };
            Read::Fresh(Journal {
                lb,
                loaded: None,
                pending: None,
                dns: dns.map(|commit| DnsRecord {
                    commit,
                    omitted: BTreeSet::new(),
                    omitted_names: BTreeSet::new(),
                }),
            })
        }
        Err(e) => Read::Corrupt(format!("cannot be read: {e}")),
    }
}

/// Writes `journal` as the state dir's journal, durably, and drops the files it replaced.
pub fn write(state: &StateDir, journal: &Journal) -> std::io::Result<()> {
    write_durably(state.root(), FILE, journal.render().as_bytes())?;
    for legacy in [LEGACY_LB, LEGACY_DNS] {
        let _ = std::fs::remove_file(state.root().join(legacy));
    }
    crate::failpoint::reached("journal-written");
    Ok(())
}

/// `dir/name` replaced by `content` so that a crash or power loss leaves the old file or the
/// new one, whole: write a temporary file, fsync it, rename it over, fsync the directory.
pub fn write_durably(dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.new"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

fn parse_commit(word: &str) -> Option<CommitId> {
    (word.len() == 40 && word.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| CommitId::from_str(word).ok())
        .flatten()
}

fn keys_text(keys: &BTreeSet<ServiceKey>) -> String {
    keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn list_suffix(list: &str) -> String {
    if list.is_empty() {
        String::new()
    } else {
        format!(" {list}")
    }
}

fn parse_keys(list: &str) -> Result<BTreeSet<ServiceKey>, String> {
    list.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| k.parse().map_err(|e| format!("{e}")))
        .collect()
}

fn parse_names(list: &str) -> Result<BTreeSet<String>, String> {
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| flipbit_core::dns::check_dns_name(n).map(|()| n.to_owned()))
        .collect()
}

/// FNV-1a, 64 bits: a check against torn and hand-edited files, not against an adversary (who
/// could as well rewrite the state dir).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(c: char) -> CommitId {
        CommitId::from_str(&c.to_string().repeat(40)).unwrap()
    }

    fn full() -> Journal {
        Journal {
            lb: Some(commit('a')),
            loaded: Some(Release {
                commit: commit('b'),
                withheld: ["web/x".parse().unwrap(), "db/y".parse().unwrap()].into(),
            }),
            pending: Some(Release::whole(commit('c'))),
            dns: Some(DnsRecord {
                commit: commit('d'),
                omitted: BTreeSet::new(),
                omitted_names: ["ns.k8s.example.test".to_owned()].into(),
            }),
        }
    }

    #[test]
    fn round_trips() {
        for journal in [Journal::default(), full()] {
            assert_eq!(Journal::parse(&journal.render()), Ok(journal.clone()));
        }
        let text = full().render();
        assert!(text.contains("loaded bbbb"), "{text}");
        assert!(text.contains(" db/y,web/x\n"), "{text}");
        assert!(
            text.contains("dns dddddddddddddddddddddddddddddddddddddddd - ns.k8s.example.test\n"),
            "{text}"
        );
    }

    #[test]
    fn torn_or_edited_journals_are_refused_with_a_reason() {
        let text = full().render();
        let torn = &text[..text.len() / 2];
        assert!(Journal::parse(torn).unwrap_err().contains("check"));
        let edited = text.replace("lb aaaa", "lb ffff");
        assert!(Journal::parse(&edited).unwrap_err().contains("does not match"));
        assert!(Journal::parse("garbage").is_err());
        assert!(Journal::parse("").is_err());
    }

    #[test]
    fn release_ids_say_when_services_are_withheld() {
        let whole = Release::whole(commit('a'));
        assert_eq!(whole.id(), "a".repeat(40));
        let partial = full().loaded.unwrap();
        assert!(
            partial.id().starts_with(&format!("{}-w", "b".repeat(40))),
            "{}",
            partial.id()
        );
        assert_eq!(partial.to_string(), format!("{} (without db/y, web/x)", "b".repeat(40)));
    }

    #[test]
    fn a_fresh_state_dir_reads_the_old_files_and_a_corrupt_one_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("s")).unwrap();
        std::fs::write(state.root().join(LEGACY_LB), format!("{}\n", "a".repeat(40))).unwrap();
        match read(&state) {
            Read::Fresh(j) => {
                assert_eq!(j.lb, Some(commit('a')));
                assert_eq!(j.loaded, None, "nothing is confirmed loaded before the journal");
                assert_eq!(j.dns, None);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(state.root().join(LEGACY_DNS), "not a commit\n").unwrap();
        assert!(matches!(read(&state), Read::Corrupt(why) if why.contains("applied-dns")));
        write(&state, &full()).unwrap();
        assert!(!state.root().join(LEGACY_LB).exists());
        assert!(matches!(read(&state), Read::Found(j) if j == full()));
        std::fs::write(state.root().join(FILE), b"\xff\xfe").unwrap();
        assert!(matches!(read(&state), Read::Corrupt(why) if why.contains("UTF-8")));
    }
}
