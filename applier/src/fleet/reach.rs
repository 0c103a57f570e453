//! Whether a host's load balancer answers: a TCP connect to a few of the sockets its files at a
//! commit make it listen on (the grammar reads them back: a `listen`/`bind` address, or a
//! shared-listeners map key reached through the wildcard). A connect proves the listener
//! accepts; it says nothing of the upstreams, and a UDP-only host has nothing to try.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use flipbit_core::config::LbHost;
use flipbit_store::{CommitId, Store};

use crate::selfcheck::Probe;

/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Up to `limit` TCP sockets `host` serves at `commit` (as the post-apply probe picks them:
/// `selfcheck::Probe::sockets`).
pub fn served_sockets(
    store: &Store,
    commit: CommitId,
    host: &LbHost,
    format: u32,
    limit: usize,
) -> Result<Vec<SocketAddr>, String> {
    let withheld = BTreeSet::new();
    let probe = Probe {
        store,
        commit,
        previous: None,
        host,
        format,
        withheld: &withheld,
        limit,
        timeout: CONNECT_TIMEOUT,
    };
    Ok(probe.sockets()?.into_iter().map(|(socket, _)| socket).collect())
}

/// `Some(true)` when one of `sockets` accepts a connection, `Some(false)` when none does,
/// `None` when there is none to try.
pub fn any_answers(sockets: &[SocketAddr]) -> Option<bool> {
    if sockets.is_empty() {
        return None;
    }
    Some(
        sockets
            .iter()
            .any(|s| crate::selfcheck::listening(s, CONNECT_TIMEOUT).is_ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_listener_answers_a_closed_one_does_not() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = open.local_addr().unwrap();
        assert_eq!(any_answers(&[addr]), Some(true));
        drop(open);
        assert_eq!(any_answers(&[addr]), Some(false));
        assert_eq!(any_answers(&[]), None);
    }
}
