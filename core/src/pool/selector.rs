//! A Kubernetes label selector (`matchLabels`, `matchExpressions` with `In`, `NotIn`, `Exists`,
//! `DoesNotExist`), as `serviceSelector` of a pool in `flipbit.yaml`. Written the way Kubernetes
//! objects write it, so an operator can copy one from a NetworkPolicy, and matched with the same
//! semantics (an empty selector matches every Service; `NotIn` matches a Service without the label).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `matchLabels` and `matchExpressions`: a Service matches when it matches all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operators of a label selector (set-based requirements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// True when it says nothing: Kubernetes matches every object with an empty selector.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// True when `labels` satisfy every label and every expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// What Kubernetes would refuse in it, naming the field: keys that are not label keys, values
    /// that are not label values, `In`/`NotIn` without values, `Exists`/`DoesNotExist` with some.
    /// (Checked here rather than trusted: the text goes into messages and Events.)
    pub fn check(&self) -> Result<(), String> {
        for (k, v) in &self.match_labels {
            check_key(k).map_err(|why| format!("matchLabels: {why}"))?;
            check_value(v).map_err(|why| format!("matchLabels.{k}: {why}"))?;
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let at = format!("matchExpressions[{i}]");
            check_key(&r.key).map_err(|why| format!("{at}.key: {why}"))?;
            for v in &r.values {
                check_value(v).map_err(|why| format!("{at}.values: {why}"))?;
            }
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(format!("{at}: operator {:?} needs values", r.operator));
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(format!("{at}: operator {:?} takes no values", r.operator));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// The selector in `kubectl`'s string form: `tier=web,env in (prod,stage),!legacy`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for r in &self.match_expressions {
            let values = r.values.join(",");
            parts.push(match r.operator {
                Operator::In => format!("{} in ({values})", r.key),
                Operator::NotIn => format!("{} notin ({values})", r.key),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of 1–63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix
                .split('.')
                .all(|l| crate::names::check_dns_label("label key prefix", l).is_ok());
        if !subdomain {
            return Err(format!("{key:?} is not a label key: its prefix is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "{key:?} is not a label key: the name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or a name as in a key.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        return Ok(());
    }
    Err(format!(
        "{value:?} is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    ))
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && alnum(s.bytes().next())
        && alnum(s.bytes().last())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn selector(yaml: &str) -> LabelSelector {
        serde_norway::from_str(yaml).expect("selector")
    }

    #[test]
    fn operators_match_as_kubernetes_does() {
        let s = selector(
            "matchLabels: {team: a}\nmatchExpressions:\n  - {key: tier, operator: In, values: [web, db]}\n  - {key: env, operator: NotIn, values: [dev]}\n  - {key: owner, operator: Exists}\n  - {key: legacy, operator: DoesNotExist}\n",
        );
        s.check().expect("valid");
        let good = labels(&[("team", "a"), ("tier", "web"), ("owner", "x")]);
        assert!(s.matches(&good), "NotIn matches a Service without the label");
        let mut with_env = good.clone();
        with_env.insert("env".into(), "prod".into());
        assert!(s.matches(&with_env));
        with_env.insert("env".into(), "dev".into());
        assert!(!s.matches(&with_env), "NotIn dev");
        let mut legacy = good.clone();
        legacy.insert("legacy".into(), "".into());
        assert!(!s.matches(&legacy), "DoesNotExist");
        assert!(
            !s.matches(&labels(&[("team", "a"), ("tier", "api"), ("owner", "x")])),
            "In"
        );
        assert!(
            !s.matches(&labels(&[("team", "b"), ("tier", "web"), ("owner", "x")])),
            "matchLabels"
        );
        assert!(!s.matches(&labels(&[("team", "a"), ("tier", "web")])), "Exists");
        assert_eq!(s.to_string(), "team=a,tier in (web,db),env notin (dev),owner,!legacy");
        assert!(LabelSelector::default().matches(&BTreeMap::new()), "empty matches all");
    }

    #[test]
    fn what_kubernetes_refuses_is_refused_with_the_field() {
        for (yaml, why) in [
            (
                "matchExpressions: [{key: tier, operator: In}]",
                "matchExpressions[0]: operator In needs values",
            ),
            (
                "matchExpressions: [{key: tier, operator: Exists, values: [a]}]",
                "matchExpressions[0]: operator Exists takes no values",
            ),
            (
                "matchLabels: {\"bad key!\": a}",
                "matchLabels: \"bad key!\" is not a label key",
            ),
            (
                "matchLabels: {tier: \"-web\"}",
                "matchLabels.tier: \"-web\" is not a label value",
            ),
            (
                "matchExpressions: [{key: \"Example.com/tier\", operator: Exists}]",
                "its prefix is not a DNS subdomain",
            ),
        ] {
            let err = selector(yaml).check().expect_err(yaml);
            assert!(err.contains(why), "{yaml}: {err}");
        }
        selector("matchLabels: {app.kubernetes.io/name: web, empty: \"\"}")
            .check()
            .expect("prefixed keys and empty values are labels");
        for bad in [
            "matchExpressions: [{key: a, operator: Equals, values: [b]}]",
            "matchLabel: {a: b}",
            "matchExpressions: [{key: a, operator: Exists, value: b}]",
        ] {
            assert!(serde_norway::from_str::<LabelSelector>(bad).is_err(), "{bad}");
        }
    }
}
