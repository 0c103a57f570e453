//! The addresses a release serves: every address its files make the load balancer accept
//! connections on (each `listen`/`bind` address, and on a shared-listeners host each `.map`
//! route's address, which the wildcard listener accepts), inside this host's pools, leaving out
//! the Services withheld from the release. Read from the release's commit with the same
//! grammar that let the files in, so the addresses are exactly those the load balancer was
//! confirmed to serve.
//!
//! A withheld Service's address is left out on purpose: another process holds a socket the
//! Service needs (a default site's `*:80`), so traffic for the address would reach that process
//! instead; it gets no DNS record from this host either.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

use anyhow::{Result, anyhow};

use flipbit_core::config::LbHost;
use flipbit_core::grammar::{self, BindAddr, LbFile};
use flipbit_core::repo_paths;
use flipbit_core::text::escaped;
use flipbit_store::Store;

use crate::journal::Release;

/// The last answer, by host and release: a `watch` asks every second about the same release,
/// and a release's addresses never change (they are a function of its commit and withheld set).
static LAST: Mutex<Option<(String, BTreeSet<IpAddr>)>> = Mutex::new(None);

/// The addresses `host` serves in `release`, whose commit's output format is `format`.
pub fn addresses(store: &Store, release: &Release, host: &LbHost, format: u32) -> Result<BTreeSet<IpAddr>> {
    let key = format!("{} {}", host.name, release.id());
    if let Ok(last) = LAST.lock()
        && let Some((k, served)) = last.as_ref()
        && *k == key
    {
        return Ok(served.clone());
    }
    let served = read(store, release, host, format)?;
    if let Ok(mut last) = LAST.lock() {
        *last = Some((key, served.clone()));
    }
    Ok(served)
}

fn read(store: &Store, release: &Release, host: &LbHost, format: u32) -> Result<BTreeSet<IpAddr>> {
    let commit = release.commit;
    let dir = repo_paths::lb_host_dir(&host.name);
    let mut served = BTreeSet::new();
    for (path, blob) in store.list(commit, &dir)? {
        let Some(kind) = LbFile::of_path(&path, &host.name).filter(|k| crate::verify::reads(host, k)) else {
            continue;
        };
        let service = match &kind {
            LbFile::NginxService(key) | LbFile::ServiceMap(key) | LbFile::Haproxy(key) => key,
            // Wildcards and the node list name no address.
            LbFile::HostListeners | LbFile::HostNodes => continue,
        };
        if release.withheld.contains(service) {
            continue;
        }
        let text = store.blob(blob)?;
        let checked = grammar::check(&kind, &String::from_utf8_lossy(&text), host, format)
            .map_err(|refusal| anyhow!("commit {commit}: {}: {refusal}", escaped(&path)))?;
        let binds = checked.binds.iter().filter_map(|b| match b.addr {
            BindAddr::Ip(ip) => Some(ip),
            BindAddr::AnyV4 | BindAddr::AnyV6 => None,
        });
        let routes = checked.routes.iter().map(|(_, socket)| socket.ip());
        served.extend(
            binds
                .chain(routes)
                .filter(|ip| host.pools.iter().any(|p| p.contains(*ip))),
        );
    }
    Ok(served)
}
