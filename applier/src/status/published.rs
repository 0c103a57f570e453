//! What each LB host published about itself (`_flipbit.<host>.<zone>`, docs/design.md §5.6), read
//! with plain queries: `flipbit-applier status` and the generator's fleet view read the same
//! records the same way, so they can never disagree on what a host said.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use flipbit_core::fleet::{self, HostState};
use flipbit_core::names::LbHostName;

use crate::dns::lookup::Lookup;
use crate::dns::records::txt_text;

/// One host's record, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// No TXT record at the name: the host never published (no DNS step, or a new host).
    Missing,
    /// Something is there that is not one state (two records, a text that does not parse): why.
    Unreadable(String),
    State(HostState),
}

impl Published {
    /// The text's parse, the one place that judges a record.
    pub fn from_texts(texts: &[String]) -> Self {
        match texts {
            [] => Published::Missing,
            [one] => HostState::parse(one).map_or_else(Published::Unreadable, Published::State),
            more => Published::Unreadable(format!("{} TXT records where one is expected", more.len())),
        }
    }

    pub fn state(&self) -> Option<&HostState> {
        match self {
            Published::State(s) => Some(s),
            _ => None,
        }
    }
}

/// The published state of each of `hosts` in `zone`. A server that cannot be reached or refuses
/// the queries is an error: the caller cannot tell a silent fleet from a silent server.
pub fn read(lookup: &Lookup, zone: &str, hosts: &[LbHostName]) -> Result<BTreeMap<LbHostName, Published>> {
    let mut out = BTreeMap::new();
    for host in hosts {
        let name = fleet::state_name(host.as_str(), zone);
        let records = lookup
            .txt(&name)
            .with_context(|| format!("reading the state of LB host {host} at {name}"))?;
        let texts: Vec<String> = records.iter().filter_map(txt_text).collect();
        out.insert(host.clone(), Published::from_texts(&texts));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parsable_text_is_a_state_and_anything_else_says_why() {
        let text = "v=1 c=- s=0 h=- t=5 lb=ok dns=off w=0 i=15".to_owned();
        assert!(matches!(
            Published::from_texts(std::slice::from_ref(&text)),
            Published::State(_)
        ));
        assert_eq!(Published::from_texts(&[]), Published::Missing);
        assert!(matches!(
            Published::from_texts(&[text.clone(), text]),
            Published::Unreadable(why) if why.contains("2 TXT records")
        ));
        assert!(matches!(
            Published::from_texts(&["hello".into()]),
            Published::Unreadable(_)
        ));
    }
}
