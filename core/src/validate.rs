//! `flipbit-generator validate`: the state repo's pre-merge check. It reads the three files a
//! person edits or reviews (`flipbit.yaml`, `holds.yaml`, `ledger.yaml`) with the generator's own
//! parsers, so a change the generator would refuse to run on fails review instead, and then
//! compares the ledger with the pools: an address outside its host's pools, or on a host that
//! left `lbHosts`, is an address the generator takes from a live Service on its next run.
//! Such a move is sometimes wanted (a pool retired on purpose), so it is a finding of its own
//! kind that `--allow-moves` accepts; a parse error never is.

use std::net::IpAddr;

use crate::config::Config;
use crate::holds::Holds;
use crate::ledger::Ledger;
use crate::names::LbHostName;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A file the generator would refuse to run on.
    Refused(String),
    /// An address the generator would take from a Service on its next run.
    Moves(String),
}

impl Finding {
    pub fn text(&self) -> &str {
        match self {
            Finding::Refused(t) | Finding::Moves(t) => t,
        }
    }
}

/// The state repo's files as text (`None`: not in the repo, which is fine for the ledger and
/// holds of a new repo, and a refusal for `flipbit.yaml`).
pub struct RepoFiles<'a> {
    pub config: Option<&'a str>,
    pub ledger: Option<&'a str>,
    pub holds: Option<&'a str>,
}

/// Every finding, in file order: flipbit.yaml, holds.yaml, ledger.yaml, then the ledger and the
/// holds against the pools.
pub fn check(files: &RepoFiles<'_>) -> Vec<Finding> {
    let mut found = Vec::new();
    let config = match files.config.map(Config::parse) {
        None => {
            found.push(Finding::Refused(
                "flipbit.yaml: missing: the generator needs it at the top of the branch (see state-repo-example/)"
                    .into(),
            ));
            None
        }
        Some(Err(e)) => {
            found.push(Finding::Refused(e.to_string()));
            None
        }
        Some(Ok(config)) => Some(config),
    };
    let holds = match files.holds.map(Holds::parse) {
        Some(Err(e)) => {
            found.push(Finding::Refused(e.to_string()));
            None
        }
        Some(Ok(holds)) => Some(holds),
        None => Some(Holds::default()),
    };
    let ledger = match files.ledger.map(Ledger::parse) {
        Some(Err(e)) => {
            found.push(Finding::Refused(e.to_string()));
            None
        }
        Some(Ok(ledger)) => Some(ledger),
        None => Some(Ledger::empty()),
    };
    let Some(config) = config else { return found };
    if let Some(ledger) = &ledger {
        for (key, entry) in &ledger.services {
            for (field, addresses) in [("addresses", &entry.addresses), ("addressesV6", &entry.addresses_v6)] {
                for (host, ip) in addresses {
                    let at = format!("ledger.yaml: services.{key}.{field}.{host}: {ip}");
                    if let Some(why) = outside(&config, host, *ip) {
                        found.push(Finding::Moves(format!("{at} {why}: the generator moves {key} off it")));
                    }
                }
            }
        }
    }
    if let Some(holds) = &holds {
        for (key, hold) in &holds.holds {
            for (host, ip) in hold.reserved() {
                if let Some(why) = outside(&config, host, *ip) {
                    found.push(Finding::Moves(format!(
                        "holds.yaml: holds.{key}: {ip} on {host} {why}: {key} cannot get it back when the hold is lifted"
                    )));
                }
            }
        }
    }
    found
}

/// Why `ip` on `host` is not an address the host may hand out, or `None` when it is.
fn outside(config: &Config, host: &LbHostName, ip: IpAddr) -> Option<String> {
    match config.host(host) {
        None => Some(format!("is on LB host {host}, which is not in flipbit.yaml's lbHosts")),
        Some(h) if !h.in_pools(ip) => Some(format!("is not in the pools of LB host {host}")),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "zone: k8s.example.test\nlbHosts:\n  - name: lb-1\n    pools: [127.1.1.0/24]\n  - name: lb-2\n    pools: [127.1.2.0/24]\n";

    fn ledger(lb1: &str) -> String {
        format!(
            "version: 1\nservices:\n  web/shop:\n    addresses: {{lb-1: {lb1}, lb-2: 127.1.2.1}}\n    ports: [TCP/80]\n"
        )
    }

    #[test]
    fn a_consistent_repo_has_nothing_to_say() {
        let ledger = ledger("127.1.1.1");
        let files = RepoFiles {
            config: Some(CONFIG),
            ledger: Some(&ledger),
            holds: None,
        };
        assert_eq!(check(&files), vec![]);
    }

    #[test]
    fn an_address_a_pool_edit_leaves_behind_is_a_move() {
        let ledger = ledger("127.1.9.1");
        let holds = "version: 1\nholds:\n  web/old:\n    addresses: {lb-3: 127.1.3.4}\n";
        let files = RepoFiles {
            config: Some(CONFIG),
            ledger: Some(&ledger),
            holds: Some(holds),
        };
        assert_eq!(
            check(&files),
            vec![
                Finding::Moves(
                    "ledger.yaml: services.web/shop.addresses.lb-1: 127.1.9.1 is not in the pools of LB host lb-1: the generator moves web/shop off it".into()
                ),
                Finding::Moves(
                    "holds.yaml: holds.web/old: 127.1.3.4 on lb-3 is on LB host lb-3, which is not in flipbit.yaml's lbHosts: web/old cannot get it back when the hold is lifted".into()
                ),
            ]
        );
    }

    #[test]
    fn files_the_generator_refuses_are_refusals_and_each_is_said() {
        let files = RepoFiles {
            config: Some("zone: k8s.example.test\nlbHosts: []\nsurprise: 1\n"),
            ledger: Some("version: 7\n"),
            holds: Some("holds: [\n"),
        };
        let found = check(&files);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|f| matches!(f, Finding::Refused(_))));
        assert!(found[0].text().starts_with("flipbit.yaml: "), "{found:?}");
        assert!(found[1].text().starts_with("holds.yaml: "), "{found:?}");
        assert!(found[2].text().starts_with("ledger.yaml: version: 7"), "{found:?}");
        let none = check(&RepoFiles {
            config: None,
            ledger: None,
            holds: None,
        });
        assert!(matches!(&none[..], [Finding::Refused(t)] if t.contains("missing")));
    }
}
