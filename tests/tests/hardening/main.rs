//! An LB host trusts only what the generator could have written, and comes back right from any
//! crash: hand-pushed commits (directives, links, other zones, infrastructure names, forged log
//! lines, a newer output format), kill -9 at every step, a dangling `current`, a corrupt journal,
//! a silent Git server, and a Service whose listener another process holds. Real nginx, HAProxy,
//! BIND and Git throughout; one test binary, a module per concern.

mod crash;
mod fleet;
mod isolation;
mod rollout;
mod status;
mod untrusted;
mod watch;

use std::collections::BTreeMap;
use std::net::IpAddr;

use flipbit_tests::fleet::Fleet;

/// The address records `named` holds for `name`, sorted.
pub fn records(f: &Fleet, name: &str) -> Vec<String> {
    let named = f.named.as_ref().expect("a fleet with DNS");
    let mut out = named.query(name, "A");
    out.extend(named.query(name, "AAAA"));
    out
}

/// Every address record `named` holds for `names` that lies in lb-a's pool (127.<block>.1.0/24).
pub fn lb_a_records(f: &Fleet, names: &[String]) -> BTreeMap<String, Vec<IpAddr>> {
    let prefix = format!("127.{}.1.", f.block);
    names
        .iter()
        .map(|n| {
            let addrs = records(f, n)
                .into_iter()
                .filter(|a| a.starts_with(&prefix))
                .filter_map(|a| a.parse().ok())
                .collect();
            (n.clone(), addrs)
        })
        .collect()
}
