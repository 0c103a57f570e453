//! The post-apply probe (docs/design.md §5.6): right after a confirmed reload, this host
//! connects to a few of its own listeners from the release just loaded. The reload's
//! confirmation proves the load balancer took a new config; it cannot tell whether that config
//! holds our files or whether connections reach the new listeners. A main config whose include
//! does not point at `current`, a `--reload-command` that reloads something else, a local
//! firewall rule dropping the new addresses: each reloads fine and serves nothing new. A failed
//! probe is the `probe` cause a host publishes, which halts a staged rollout's later waves.
//!
//! What it proves: the kernel accepts TCP connections on those sockets, which the load balancer
//! opened for this release. What it cannot: that the upstreams answer (it sends nothing, reads
//! nothing and closes at once, so nginx or HAProxy sees a connection that closes; it may open
//! and close one upstream connection for it), and a UDP port proves nothing by a connect, so
//! UDP listeners (a UDP-only Service) are not probed.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use flipbit_core::config::LbHost;
use flipbit_core::exposure::Protocol;
use flipbit_core::grammar::{self, BindAddr, Checked, LbFile};
use flipbit_core::names::ServiceKey;
use flipbit_core::repo_paths;
use flipbit_core::text::escaped;
use flipbit_store::{CommitId, Store};

/// How many sockets a probe connects to by default. The listeners new in the release come
/// first, so a reload that adds up to 8 has every one probed; past that a sample, which is
/// enough for the faults the probe is for (they take every listener of the release, not one).
pub const DEFAULT_LIMIT: usize = 8;

/// How long one connect may take by default. A local listener answers in microseconds and a
/// missing one is refused at once; only a firewall that drops packets makes it wait this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe of the release the load balancer runs for `commit`.
pub struct Probe<'a> {
    pub store: &'a Store,
    /// The commit the load balancer was just confirmed to run.
    pub commit: CommitId,
    /// The commit it ran before, so that the listeners new in `commit` are probed first.
    pub previous: Option<CommitId>,
    /// This host's entry in `commit`'s flipbit.yaml.
    pub host: &'a LbHost,
    /// `commit`'s output format (`verify::output_format`).
    pub format: u32,
    /// The Services withheld from the release (their sockets are another process's).
    pub withheld: &'a BTreeSet<ServiceKey>,
    /// At most this many sockets ([`DEFAULT_LIMIT`]).
    pub limit: usize,
    /// Per connect ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl Probe<'_> {
    /// Connects to up to `limit` TCP sockets of the release: `Ok(n)` when all `n` accepted (0
    /// for a release with no TCP listener), `Err` naming the first that did not. Worst case
    /// `limit × timeout`.
    pub fn run(&self) -> Result<usize, String> {
        let sockets = self.sockets()?;
        connect_all(&sockets, self.timeout)
    }

    /// The sockets to probe with the Service each belongs to: those of the files that changed
    /// since `previous` first, then the others, in path order, each once.
    pub fn sockets(&self) -> Result<Vec<(SocketAddr, ServiceKey)>, String> {
        let (store, commit, host) = (self.store, self.commit, self.host);
        let dir = repo_paths::lb_host_dir(&host.name);
        let read_err = |e: flipbit_store::StoreError| format!("probe: reading {dir} at {commit}: {e}");
        let files = store.list(commit, &dir).map_err(read_err)?;
        let changed: Vec<String> = match self.previous.filter(|p| *p != commit) {
            Some(previous) => store
                .diff_dir(previous, commit, &dir)
                .map_err(read_err)?
                .changed
                .into_iter()
                .filter(|(_, blob)| blob.is_some())
                .map(|(path, _)| path)
                .collect(),
            None => Vec::new(),
        };
        let order = changed.iter().chain(files.keys().filter(|p| !changed.contains(p)));
        let mut out: Vec<(SocketAddr, ServiceKey)> = Vec::new();
        for path in order {
            if out.len() >= self.limit {
                break;
            }
            let Some(kind) = LbFile::of_path(path, &host.name).filter(|k| crate::verify::reads(host, k)) else {
                continue;
            };
            let key = match &kind {
                LbFile::NginxService(key) | LbFile::ServiceMap(key) | LbFile::Haproxy(key) => key.clone(),
                // The wildcard listeners are probed through the Services' `.map` routes.
                LbFile::HostListeners | LbFile::HostNodes => continue,
            };
            if self.withheld.contains(&key) {
                continue;
            }
            let Some(blob) = files.get(path) else { continue };
            let text = store.blob(*blob).map_err(read_err)?;
            let text = String::from_utf8_lossy(&text);
            let checked = grammar::check(&kind, &text, host, self.format)
                .map_err(|r| format!("probe: {}: {r}", escaped(path)))?;
            for socket in tcp_sockets(&checked) {
                if out.len() < self.limit && !out.iter().any(|(s, _)| *s == socket) {
                    out.push((socket, key.clone()));
                }
            }
        }
        Ok(out)
    }
}

/// The TCP sockets a client reaches the file's Service on: its own `listen`/`bind` addresses,
/// and on a shared-listeners host its `.map` routes (the Service's address on the wildcard
/// listener's port). UDP ones are left out: a connect proves nothing there.
pub fn tcp_sockets(checked: &Checked) -> Vec<SocketAddr> {
    let binds = checked.binds.iter().filter_map(|b| match b.addr {
        BindAddr::Ip(ip) if b.protocol == Protocol::Tcp => Some(SocketAddr::new(ip, b.port)),
        _ => None,
    });
    let routes = checked
        .routes
        .iter()
        .filter(|(protocol, _)| *protocol == Protocol::Tcp)
        .map(|(_, addr)| *addr);
    binds.chain(routes).collect()
}

/// Connects to each of `sockets` in turn and closes at once; `Ok(n)` when all accepted, `Err`
/// naming the first that did not (and its Service).
pub fn connect_all(sockets: &[(SocketAddr, ServiceKey)], timeout: Duration) -> Result<usize, String> {
    for (socket, key) in sockets {
        listening(socket, timeout)
            .map_err(|e| format!("probe: {socket}/tcp of {key} does not accept connections: {e}"))?;
    }
    Ok(sockets.len())
}

/// Whether something listens on `socket`: a connection made, or one reset or aborted as it was
/// made. A load balancer that turns the prober away (a Service's source ranges: HAProxy's
/// `tcp-request connection reject`, nginx's `deny`) completed the handshake first, and its
/// reset can reach the connect before the connect returns; that is a listener, not a fault.
/// Refused (nothing bound) and timeouts (a firewall dropping) are not.
pub fn listening(socket: &SocketAddr, timeout: Duration) -> std::io::Result<()> {
    match TcpStream::connect_timeout(socket, timeout) {
        Ok(_) => Ok(()),
        Err(e) if turned_away(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A connect that reached a listener which closed it at once.
fn turned_away(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, TcpListener};

    use flipbit_core::grammar::Bind;

    use super::*;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("web", name).unwrap()
    }

    #[test]
    fn a_listener_that_turns_the_prober_away_still_listens() {
        use std::io::{Error, ErrorKind};
        assert!(turned_away(&Error::from(ErrorKind::ConnectionReset)));
        assert!(turned_away(&Error::from(ErrorKind::ConnectionAborted)));
        assert!(!turned_away(&Error::from(ErrorKind::ConnectionRefused)));
        assert!(!turned_away(&Error::from(ErrorKind::TimedOut)));
    }

    #[test]
    fn every_listener_that_accepts_passes_and_the_first_that_does_not_is_named() {
        let open: Vec<TcpListener> = (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let mut sockets: Vec<(SocketAddr, ServiceKey)> = open
            .iter()
            .enumerate()
            .map(|(i, l)| (l.local_addr().unwrap(), key(&format!("s{i}"))))
            .collect();
        assert_eq!(connect_all(&sockets, DEFAULT_TIMEOUT), Ok(2));
        assert_eq!(connect_all(&[], DEFAULT_TIMEOUT), Ok(0));
        // A port nothing listens on any more: refused at once, named with its Service.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = gone.local_addr().unwrap();
        drop(gone);
        sockets.insert(1, (closed, key("gone")));
        let err = connect_all(&sockets, DEFAULT_TIMEOUT).unwrap_err();
        assert!(
            err.starts_with(&format!("probe: {closed}/tcp of web/gone does not accept connections:")),
            "{err}"
        );
    }

    #[test]
    fn sockets_are_tcp_binds_and_routes_never_wildcards_or_udp() {
        let ip: IpAddr = "127.1.1.5".parse().unwrap();
        let bind = |protocol, addr, port| Bind { protocol, addr, port };
        let checked = Checked {
            binds: vec![
                bind(Protocol::Tcp, BindAddr::Ip(ip), 443),
                bind(Protocol::Udp, BindAddr::Ip(ip), 53),
                bind(Protocol::Tcp, BindAddr::AnyV4, 80),
                bind(Protocol::Tcp, BindAddr::AnyV6, 80),
            ],
            routes: vec![
                (Protocol::Tcp, SocketAddr::new(ip, 80)),
                (Protocol::Udp, SocketAddr::new(ip, 5353)),
            ],
            ..Checked::default()
        };
        assert_eq!(
            tcp_sockets(&checked),
            [SocketAddr::new(ip, 443), SocketAddr::new(ip, 80)]
        );
        assert!(tcp_sockets(&Checked::default()).is_empty());
    }
}
