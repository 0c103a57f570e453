//! Validated names. Every string that ends up in a config file or a repo path passes through one
//! of these newtypes first, so an annotation or object name can never smuggle a `;`, `}`, `/` or a
//! newline into nginx text or a file path.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name was refused; the caller adds which object and field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Checks an RFC 1123 DNS label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric. This is
/// what Kubernetes requires of namespace and Service names, and it is safe in paths and nginx text.
pub fn check_dns_label(kind: &'static str, value: &str) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError {
            kind,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.len() > 63 {
        return fail("it is longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("only lowercase letters, digits and '-' are allowed");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail("it must start and end with a letter or digit");
    }
    Ok(())
}

macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Shared text: a Service's key is copied into the ledger, the decision, the engine's
        /// memory and every event (a dozen copies of 50,000 keys), and a copy costs a count.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub fn new(value: &str) -> Result<Self, NameError> {
                check_dns_label($kind, value)?;
                Ok(Self(value.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::new(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_newtype!(
    /// The name of a load-balancer host as written in `flipbit.yaml` (`lb-1`); also a directory name.
    LbHostName,
    "LB host name"
);
label_newtype!(
    /// A Kubernetes namespace name.
    Namespace,
    "namespace name"
);
label_newtype!(
    /// A Kubernetes Service name.
    ServiceName,
    "Service name"
);

/// `namespace/name` of a Service: the identity used in the ledger, in paths and in messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: Namespace,
    pub name: ServiceName,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> Result<Self, NameError> {
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: ServiceName::new(name)?,
        })
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Err(NameError {
                kind: "Service key",
                value: s.to_owned(),
                reason: "expected namespace/name",
            }),
        }
    }
}

impl Serialize for ServiceKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_refuse_config_metacharacters() {
        for bad in ["", "a;b", "a}", "a\nb", "A", "-a", "a-", "a/b", "a b", &"x".repeat(64)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(ServiceName::new("front-end1").unwrap().as_str(), "front-end1");
    }

    #[test]
    fn service_key_round_trips_through_text() {
        let key: ServiceKey = "blog/frontend".parse().unwrap();
        assert_eq!(key.to_string(), "blog/frontend");
        assert!("blog".parse::<ServiceKey>().is_err());
        assert!("blog/Front".parse::<ServiceKey>().is_err());
    }
}
