//! Which Services a pool admits: tenant pools. A pool in `flipbit.yaml` may list `namespaces`
//! and/or a `serviceSelector`, so one team's addresses (the ones its firewall rules, DNS
//! delegations or customers know) never go to another team's Services. A pool with neither admits
//! every Service; with both, a Service must be in one of the namespaces and match the selector.

use std::collections::BTreeMap;

use crate::names::Namespace;
use crate::pool::selector::LabelSelector;

/// A pool's admission rule, as written in its object form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `namespaces`: `None` admits every namespace (an empty list is refused by the config).
    pub namespaces: Option<Vec<Namespace>>,
    /// `serviceSelector`: `None` admits every Service (an empty selector is stored as `None`).
    pub service_selector: Option<LabelSelector>,
}

impl Admission {
    /// True when it admits every Service (the plain string form of a pool).
    pub fn is_open(&self) -> bool {
        self.namespaces.is_none() && self.service_selector.is_none()
    }

    /// True when a Service of `namespace` with `labels` may take an address of the pool.
    pub fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n.as_str() == namespace))
            && self.service_selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// What it admits, for messages: `admits only namespaces team-a, team-b`, `admits only
    /// Services matching tier=web`, or both; `admits every Service` when open.
    pub fn describe(&self) -> String {
        let namespaces = self
            .namespaces
            .as_ref()
            .map(|list| list.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "));
        match (namespaces, &self.service_selector) {
            (None, None) => "admits every Service".to_owned(),
            (Some(ns), None) => format!("admits only namespaces {ns}"),
            (None, Some(s)) => format!("admits only Services matching {s}"),
            (Some(ns), Some(s)) => format!("admits only Services of namespaces {ns} matching {s}"),
        }
    }

    /// What the config must refuse, naming the field: an empty or repeated `namespaces` list, a
    /// selector Kubernetes would refuse.
    pub fn check(&self) -> Result<(), String> {
        if let Some(list) = &self.namespaces {
            if list.is_empty() {
                return Err(
                    "namespaces: an empty list admits no Service; leave it out to admit every namespace".into(),
                );
            }
            for (i, n) in list.iter().enumerate() {
                if list[..i].contains(n) {
                    return Err(format!("namespaces: {n} is listed twice"));
                }
            }
        }
        if let Some(selector) = &self.service_selector {
            selector.check().map_err(|why| format!("serviceSelector.{why}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(names: &[&str]) -> Option<Vec<Namespace>> {
        Some(names.iter().map(|n| Namespace::new(n).expect("namespace")).collect())
    }

    #[test]
    fn namespaces_and_selector_must_both_admit() {
        let web: LabelSelector = serde_norway::from_str("matchLabels: {tier: web}").expect("selector");
        let labels = BTreeMap::from([("tier".to_owned(), "web".to_owned())]);
        let none = BTreeMap::new();
        let open = Admission::default();
        assert!(open.is_open() && open.admits("x", &none));
        let by_ns = Admission {
            namespaces: ns(&["team-a", "team-b"]),
            service_selector: None,
        };
        assert!(by_ns.admits("team-b", &none) && !by_ns.admits("team-c", &labels));
        assert_eq!(by_ns.describe(), "admits only namespaces team-a, team-b");
        let both = Admission {
            namespaces: ns(&["team-a"]),
            service_selector: Some(web),
        };
        assert!(both.admits("team-a", &labels));
        assert!(!both.admits("team-a", &none) && !both.admits("team-b", &labels));
        assert_eq!(
            both.describe(),
            "admits only Services of namespaces team-a matching tier=web"
        );
    }

    #[test]
    fn empty_or_repeated_namespaces_are_refused() {
        let empty = Admission {
            namespaces: Some(Vec::new()),
            service_selector: None,
        };
        assert!(empty.check().unwrap_err().contains("an empty list admits no Service"));
        let twice = Admission {
            namespaces: ns(&["a", "b", "a"]),
            service_selector: None,
        };
        assert_eq!(twice.check().unwrap_err(), "namespaces: a is listed twice");
    }
}
