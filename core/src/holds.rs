//! Holds: `git revert` is the rollback, so the generator must not undo a human's change to its
//! files. A commit the generator did not make that changes a Service's generated files (its
//! snippets, its zone fragment, its ledger entry) puts that Service on hold: the generator leaves
//! its files and ledger entry exactly as the human left them until a human deletes the Service's
//! entry from `holds.yaml`. Both the hold (a generator commit writing the entry) and its lifting
//! (a human commit deleting it) are commits, so `git log -- holds.yaml` is the story.
//!
//! The addresses the Service had before the human's change stay reserved while it is held, and it
//! gets them back when the hold is lifted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::host_addresses::HostAddresses;
use crate::ledger::{Entry, Ledger};
use crate::names::{LbHostName, ServiceKey};
use crate::repo_paths;

mod reservations;
pub(crate) use reservations::with_reservations;

pub const HOLDS_FILE: &str = "holds.yaml";
pub const VERSION: u32 = 1;

const HEADER: &str = "# Services on hold: a commit flipbit-generator did not make (a revert, a hand edit) changed their\n\
# generated files, so the generator leaves their files and ledger entries exactly as they are.\n\
# To lift a hold, delete the Service's entry and commit: the generator manages it again, with the\n\
# addresses listed here. Adding an entry by hand (e.g. `web/shop: {}`) holds a Service too.\n";

#[derive(Debug, thiserror::Error)]
#[error("holds.yaml: {0}")]
pub struct HoldsError(String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Holds {
    pub version: u32,
    #[serde(default)]
    pub holds: BTreeMap<ServiceKey, Hold>,
}

impl Default for Holds {
    fn default() -> Self {
        Self {
            version: VERSION,
            holds: BTreeMap::new(),
        }
    }
}

/// One held Service: what put it on hold and the addresses kept for it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hold {
    /// The commit whose change put the Service on hold (absent for a hold added by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitHex>,
    /// The generated paths that commit changed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub paths: BTreeSet<String>,
    /// The addresses the Service held before the change: nobody else gets them during the hold.
    #[serde(default, skip_serializing_if = "HostAddresses::is_empty")]
    pub addresses: HostAddresses,
    #[serde(default, rename = "addressesV6", skip_serializing_if = "HostAddresses::is_empty")]
    pub addresses_v6: HostAddresses,
}

impl Hold {
    /// Every reserved address with its host.
    pub fn reserved(&self) -> impl Iterator<Item = (&LbHostName, &IpAddr)> {
        self.addresses.iter().chain(&self.addresses_v6)
    }

    /// `commit 1a2b3c4 changed lb/lb-1/web/shop.conf, ledger.yaml`, or `held by hand`.
    pub fn because(&self) -> String {
        match &self.commit {
            Some(c) if self.paths.is_empty() => format!("commit {} changed its generated files", c.short()),
            Some(c) => format!(
                "commit {} changed {}",
                c.short(),
                self.paths.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
            None => "held by hand in holds.yaml".to_owned(),
        }
    }
}

/// A commit id as hex (4 to 64 digits), so nothing else can be written in its place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitHex(String);

impl CommitHex {
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl TryFrom<String> for CommitHex {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if (4..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(format!("{value:?} is not a commit id"))
        }
    }
}

impl From<CommitHex> for String {
    fn from(c: CommitHex) -> String {
        c.0
    }
}

impl Holds {
    pub fn parse(text: &str) -> Result<Self, HoldsError> {
        let holds: Holds = serde_norway::from_str(text).map_err(|e| HoldsError(e.to_string()))?;
        if holds.version != VERSION {
            return Err(HoldsError(format!(
                "version: {} is not supported (this generator writes version {VERSION})",
                holds.version
            )));
        }
        for (key, hold) in &holds.holds {
            if let Some(bad) = hold.paths.iter().find(|p| !is_generated_path(p)) {
                return Err(HoldsError(format!(
                    "holds.{key}.paths: {bad:?} is not a generated file"
                )));
            }
        }
        Ok(holds)
    }

    /// Deterministic text: same holds, same bytes.
    pub fn to_yaml(&self) -> String {
        // Plain maps, validated strings and addresses: serialising cannot fail.
        let body = serde_norway::to_string(self).unwrap_or_default();
        format!("{HEADER}{body}")
    }

    pub fn is_held(&self, key: &ServiceKey) -> bool {
        self.holds.contains_key(key)
    }
}

/// True for the files the generator writes: the ledger, snippets and zone fragments.
pub fn is_generated_path(path: &str) -> bool {
    path == repo_paths::LEDGER_FILE || repo_paths::service_of(path).is_some()
}

/// What one commit the generator did not make did to generated files, as input to [`update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HumanChange {
    pub commit: Option<CommitHex>,
    /// Services whose generated files changed: the paths, and the ledger entry they had before.
    pub touched: BTreeMap<ServiceKey, Touch>,
    /// Services whose hold this commit deleted from `holds.yaml`, with the hold as it was.
    pub lifted: BTreeMap<ServiceKey, Hold>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touch {
    pub paths: BTreeSet<String>,
    /// The Service's ledger entry in the commit's (first) parent: what the generator had given it.
    pub before: Option<Entry>,
}

/// The Services a commit changed, from the generated paths that differ from every parent and the
/// ledgers at the commit and its parents. A ledger entry counts as changed when it differs from
/// the entry in every parent (a merge that takes one side's entry changes nothing). A ledger that
/// does not parse (`None`) is compared by path only.
pub fn touched(
    changed_paths: &BTreeSet<String>,
    ledger_after: Option<&Ledger>,
    ledgers_before: &[Option<Ledger>],
) -> BTreeMap<ServiceKey, Touch> {
    let first_before = ledgers_before.first().and_then(Option::as_ref);
    let before_entry = |key: &ServiceKey| first_before.and_then(|l| l.services.get(key)).cloned();
    let mut out: BTreeMap<ServiceKey, Touch> = BTreeMap::new();
    for path in changed_paths {
        if let Some(key) = repo_paths::service_of(path) {
            let touch = out.entry(key.clone()).or_insert_with(|| Touch {
                paths: BTreeSet::new(),
                before: before_entry(&key),
            });
            touch.paths.insert(path.clone());
        }
    }
    let parsed: Option<Vec<&Ledger>> = ledgers_before.iter().map(Option::as_ref).collect();
    if changed_paths.contains(repo_paths::LEDGER_FILE)
        && let (Some(after), Some(before)) = (ledger_after, parsed)
        && !before.is_empty()
    {
        let keys: BTreeSet<&ServiceKey> = after
            .services
            .keys()
            .chain(before.iter().flat_map(|l| l.services.keys()))
            .collect();
        for key in keys {
            let now = after.services.get(key);
            if before.iter().all(|l| l.services.get(key) != now) {
                let touch = out.entry(key.clone()).or_insert_with(|| Touch {
                    paths: BTreeSet::new(),
                    before: before_entry(key),
                });
                touch.paths.insert(repo_paths::LEDGER_FILE.to_owned());
            }
        }
    }
    out
}

/// Holds entries present in every parent's `holds.yaml` and gone from the commit's: lifted.
pub fn lifted(after: &Holds, before: &[Holds]) -> BTreeMap<ServiceKey, Hold> {
    let Some(first) = before.first() else {
        return BTreeMap::new();
    };
    first
        .holds
        .iter()
        .filter(|(key, _)| !after.is_held(key) && before.iter().all(|b| b.is_held(key)))
        .map(|(k, h)| (k.clone(), h.clone()))
        .collect()
}

/// The holds after the commits the generator did not make, and what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldUpdate {
    /// Every hold now in force (what `holds.yaml` should say).
    pub holds: Holds,
    /// Holds placed by this update.
    pub placed: BTreeMap<ServiceKey, Hold>,
    /// Holds a human lifted since the generator last looked: the addresses to give back.
    pub lifted: BTreeMap<ServiceKey, Hold>,
}

/// Applies `changes` (oldest first) to the holds in `holds.yaml` at the head: each Service a change
/// touched goes on hold unless it is held already or a later change lifted its hold.
pub fn update(head: &Holds, changes: &[HumanChange]) -> HoldUpdate {
    let mut holds = head.clone();
    let mut placed = BTreeMap::new();
    let mut last_lift: BTreeMap<&ServiceKey, usize> = BTreeMap::new();
    let mut lifted = BTreeMap::new();
    for (i, change) in changes.iter().enumerate() {
        for (key, hold) in &change.lifted {
            last_lift.insert(key, i);
            lifted.insert(key.clone(), hold.clone());
        }
    }
    for (i, change) in changes.iter().enumerate() {
        for (key, touch) in &change.touched {
            if holds.is_held(key) || last_lift.get(key).is_some_and(|&l| l > i) {
                continue;
            }
            let before = touch.before.clone().unwrap_or_default();
            let hold = Hold {
                commit: change.commit.clone(),
                paths: touch.paths.clone(),
                addresses: before.addresses,
                addresses_v6: before.addresses_v6,
            };
            holds.holds.insert(key.clone(), hold.clone());
            placed.insert(key.clone(), hold);
        }
    }
    lifted.retain(|key, _| !holds.is_held(key));
    HoldUpdate { holds, placed, lifted }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        s.parse().unwrap()
    }

    fn entry(ip: &str) -> Entry {
        Entry {
            addresses: HostAddresses::from([("lb-1".parse().unwrap(), ip.parse().unwrap())]),
            ..Entry::default()
        }
    }

    fn ledger(entries: &[(&str, &str)]) -> Ledger {
        let mut l = Ledger::empty();
        for (k, ip) in entries {
            l.services.insert(key(k), entry(ip));
        }
        l
    }

    fn hex(s: &str) -> Option<CommitHex> {
        Some(CommitHex::try_from(s.to_owned()).unwrap())
    }

    #[test]
    fn a_revert_touches_the_service_by_path_and_ledger_entry() {
        let paths = BTreeSet::from(["lb/lb-1/web/shop.conf".to_owned(), "ledger.yaml".to_owned()]);
        let before = ledger(&[("web/shop", "127.1.1.1"), ("web/other", "127.1.1.2")]);
        let after = ledger(&[("web/other", "127.1.1.2")]);
        let t = touched(&paths, Some(&after), &[Some(before)]);
        assert_eq!(t.keys().collect::<Vec<_>>(), vec![&key("web/shop")]);
        let touch = &t[&key("web/shop")];
        assert_eq!(touch.paths.len(), 2);
        assert_eq!(touch.before, Some(entry("127.1.1.1")));
    }

    #[test]
    fn a_merge_taking_one_sides_entry_touches_nothing() {
        let paths = BTreeSet::from(["ledger.yaml".to_owned()]);
        let main = ledger(&[("web/a", "127.1.1.1")]);
        let proposal = ledger(&[("web/a", "127.1.1.1"), ("web/b", "127.1.1.2")]);
        let merged = proposal.clone();
        assert!(touched(&paths, Some(&merged), &[Some(main.clone()), Some(proposal.clone())]).is_empty());
        // An entry neither side had is a human change.
        let edited = ledger(&[("web/a", "127.1.1.9"), ("web/b", "127.1.1.2")]);
        let t = touched(&paths, Some(&edited), &[Some(main), Some(proposal)]);
        assert_eq!(t.keys().collect::<Vec<_>>(), vec![&key("web/a")]);
    }

    #[test]
    fn holds_are_placed_once_and_a_later_lift_wins() {
        let touch = |k: &str, ip: &str| HumanChange {
            commit: hex("abcdef12"),
            touched: BTreeMap::from([(
                key(k),
                Touch {
                    paths: BTreeSet::from([format!("lb/lb-1/{k}.conf")]),
                    before: Some(entry(ip)),
                },
            )]),
            lifted: BTreeMap::new(),
        };
        let up = update(&Holds::default(), &[touch("web/a", "127.1.1.1")]);
        assert_eq!(up.placed.len(), 1);
        assert_eq!(up.holds.holds[&key("web/a")].addresses, entry("127.1.1.1").addresses);

        // Already held: the first hold stays as it was.
        let again = update(&up.holds, &[touch("web/a", "127.1.1.7")]);
        assert!(again.placed.is_empty());
        assert_eq!(again.holds, up.holds);

        // Touched, then lifted in a later commit: not held, and the addresses come back.
        let lift = HumanChange {
            commit: hex("1234abcd"),
            touched: BTreeMap::new(),
            lifted: BTreeMap::from([(key("web/a"), up.holds.holds[&key("web/a")].clone())]),
        };
        let lifted = update(&Holds::default(), &[touch("web/a", "127.1.1.1"), lift.clone()]);
        assert!(lifted.holds.holds.is_empty());
        assert_eq!(lifted.lifted.len(), 1);
        // Lifted, then touched again: held again.
        let held = update(&Holds::default(), &[lift, touch("web/a", "127.1.1.1")]);
        assert!(held.holds.is_held(&key("web/a")));
        assert!(held.lifted.is_empty());
    }

    #[test]
    fn the_file_round_trips_and_is_strict() {
        let up = update(
            &Holds::default(),
            &[HumanChange {
                commit: hex("ABCDEF0123"),
                touched: BTreeMap::from([(
                    key("web/a"),
                    Touch {
                        paths: BTreeSet::from(["ledger.yaml".to_owned()]),
                        before: Some(entry("127.1.1.1")),
                    },
                )]),
                lifted: BTreeMap::new(),
            }],
        );
        let text = up.holds.to_yaml();
        assert!(text.contains("commit: abcdef0123"), "{text}");
        assert_eq!(Holds::parse(&text).unwrap(), up.holds);
        assert!(
            Holds::parse("version: 1\nholds:\n  web/a: {}\n")
                .unwrap()
                .is_held(&key("web/a"))
        );
        let err = Holds::parse("version: 1\nholds:\n  web/a: {commit: 'x; rm -rf'}\n").unwrap_err();
        assert!(err.to_string().contains("not a commit id"), "{err}");
        let err = Holds::parse("version: 1\nholds:\n  web/a: {paths: [flipbit.yaml]}\n").unwrap_err();
        assert!(err.to_string().contains("holds.web/a.paths"), "{err}");
        let err = Holds::parse("version: 1\nholds:\n  web/a: {color: red}\n").unwrap_err();
        assert!(err.to_string().contains("color"), "{err}");
    }

    #[test]
    fn lifted_means_gone_from_the_commit_and_present_in_every_parent() {
        let held = Holds::parse("version: 1\nholds:\n  web/a: {}\n  web/b: {}\n").unwrap();
        let after = Holds::parse("version: 1\nholds:\n  web/b: {}\n").unwrap();
        let got = lifted(&after, std::slice::from_ref(&held));
        assert_eq!(got.keys().collect::<Vec<_>>(), vec![&key("web/a")]);
        // A merge where one side never had the hold did not lift it.
        assert!(lifted(&after, &[held, Holds::default()]).is_empty());
    }
}
