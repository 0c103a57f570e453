//! What went wrong with one object, said so an operator can find it: the object, the field, why.

use std::cmp::Ordering;
use std::fmt;

use crate::names::{LbHostName, ServiceKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The object is skipped and keeps its last committed state.
    Error,
    /// The object is handled; something about it deserves a look.
    Warning,
}

/// The object a [`Problem`] is about. Typed, so the engine, commit messages and Events find a
/// problem's Service by its key instead of reading it back from text; [`fmt::Display`] gives the
/// text operators see in reports, logs, commit messages and Events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `Service blog/frontend`.
    Service(ServiceKey),
    /// A Service input whose namespace or name is not a valid key, as written:
    /// `Service "Blog"/"front end"`.
    UnkeyedService { namespace: String, name: String },
    /// `Node "worker-1"`.
    Node(String),
    /// `EndpointSlice blog/frontend-abc12`.
    EndpointSlice { namespace: String, name: String },
    /// `LB host lb-1`.
    LbHost(LbHostName),
}

impl Subject {
    /// The Service this is about, when it is one with a valid key.
    pub fn service(&self) -> Option<&ServiceKey> {
        match self {
            Self::Service(key) => Some(key),
            _ => None,
        }
    }

    /// True for any Service input, keyed or not.
    pub fn is_service(&self) -> bool {
        matches!(self, Self::Service(_) | Self::UnkeyedService { .. })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(key) => write!(f, "Service {key}"),
            Self::UnkeyedService { namespace, name } => write!(f, "Service {namespace:?}/{name:?}"),
            Self::Node(name) => write!(f, "Node {name:?}"),
            Self::EndpointSlice { namespace, name } => write!(f, "EndpointSlice {namespace}/{name}"),
            Self::LbHost(name) => write!(f, "LB host {name}"),
        }
    }
}

/// Subjects sort as their text does, so problems are listed in the order they always were
/// (reports, commit messages and logs stay byte for byte what they were).
impl Ord for Subject {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            // The common case, without building text: `Service ` is shared, `ns/name` compared.
            (Self::Service(a), Self::Service(b)) => key_bytes(a).cmp(key_bytes(b)),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

impl PartialOrd for Subject {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The bytes of `namespace/name`, as the key is displayed.
fn key_bytes(key: &ServiceKey) -> impl Iterator<Item = u8> + '_ {
    let ns = key.namespace.as_str().bytes();
    ns.chain(*b"/").chain(key.name.as_str().bytes())
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub severity: Severity,
    pub object: Subject,
    /// The field, in the API's own spelling: `metadata.annotations["flipbit.io/balance"]`.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn service_error(key: &ServiceKey, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            object: Subject::Service(key.clone()),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn service_warning(key: &ServiceKey, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::service_error(key, field, message)
        }
    }
}

/// Puts `problems` in the order every decision lists them (errors first, then by object; in the
/// order found within one object) and drops repeats.
pub fn sort_and_dedup(problems: &mut Vec<Problem>) {
    problems.sort_by(|a, b| a.severity.cmp(&b.severity).then(a.object.cmp(&b.object)));
    problems.dedup();
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.field.is_empty() {
            write!(f, "{level}: {}: {}", self.object, self.message)
        } else {
            write!(f, "{level}: {}: {}: {}", self.object, self.field, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_sort_and_print_as_their_text() {
        let key = |s: &str| s.parse::<ServiceKey>().expect("key");
        let subjects = [
            Subject::Service(key("a/b")),
            Subject::Service(key("a-x/b")),
            Subject::Service(key("a/b-c")),
            Subject::UnkeyedService {
                namespace: "A".into(),
                name: "b c".into(),
            },
            Subject::Node("worker-1".into()),
            Subject::EndpointSlice {
                namespace: "a".into(),
                name: "b-1".into(),
            },
            Subject::LbHost(LbHostName::new("lb-1").expect("host")),
        ];
        let texts = [
            "Service a/b",
            "Service a-x/b",
            "Service a/b-c",
            "Service \"A\"/\"b c\"",
            "Node \"worker-1\"",
            "EndpointSlice a/b-1",
            "LB host lb-1",
        ];
        for (s, t) in subjects.iter().zip(texts) {
            assert_eq!(s.to_string(), t);
        }
        for a in &subjects {
            for b in &subjects {
                assert_eq!(a.cmp(b), a.to_string().cmp(&b.to_string()), "{a} vs {b}");
            }
        }
    }
}
