//! What went wrong with one object, said so an operator can find it: the object, the field, why.

use std::fmt;

use crate::names::ServiceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The object is skipped and keeps its last committed state.
    Error,
    /// The object is handled; something about it deserves a look.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub severity: Severity,
    /// `Service blog/frontend`, `Node worker-1`, `flipbit.yaml`.
    pub object: String,
    /// The field, in the API's own spelling: `metadata.annotations["flipbit.io/balance"]`.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn service_error(key: &ServiceKey, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            object: format!("Service {key}"),
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
