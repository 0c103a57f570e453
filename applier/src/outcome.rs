//! What went wrong in a run, as the state code peers and metrics see (`core::fleet::Cause`): read
//! from the error's chain by type, so the code never depends on a message's wording.

use flipbit_core::fleet::Cause;

use crate::dns::client::DnsError;
use crate::haproxy::HaproxyError;
use crate::nginx::NginxError;

/// A commit refused before anything was staged: its history, signature, output format or files.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A [`Refused`] error with `message`.
pub fn refused(message: String) -> anyhow::Error {
    Refused(message).into()
}

/// The cause code of `error`: the first typed error in its chain that says one.
pub fn cause_of(error: &anyhow::Error) -> Cause {
    for e in error.chain() {
        if e.downcast_ref::<Refused>().is_some() {
            return Cause::Refused;
        }
        if let Some(e) = e.downcast_ref::<NginxError>() {
            return match e {
                NginxError::Invalid(_) => Cause::Invalid,
                _ => Cause::Reload,
            };
        }
        if let Some(e) = e.downcast_ref::<HaproxyError>() {
            return match e {
                HaproxyError::Invalid(_) => Cause::Invalid,
                _ => Cause::Reload,
            };
        }
        if e.downcast_ref::<DnsError>().is_some() {
            return Cause::Dns;
        }
        if let Some(e) = e.downcast_ref::<flipbit_store::StoreError>() {
            return match e {
                flipbit_store::StoreError::Fetch { .. }
                | flipbit_store::StoreError::TimedOut { .. }
                | flipbit_store::StoreError::Untrusted { .. } => Cause::Fetch,
                _ => Cause::Other,
            };
        }
    }
    Cause::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_come_from_the_types_in_the_chain() {
        let e = refused("commit x refused".into()).context("on lb-1");
        assert_eq!(cause_of(&e), Cause::Refused);
        let e = anyhow::Error::from(NginxError::Invalid("x".into())).context("commit x refused for lb-1");
        assert_eq!(cause_of(&e), Cause::Invalid);
        let e = anyhow::Error::from(NginxError::Reload("bind".into()));
        assert_eq!(cause_of(&e), Cause::Reload);
        assert_eq!(cause_of(&anyhow::anyhow!("something")), Cause::Other);
    }
}
