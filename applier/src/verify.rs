//! Every file the applier stages is one the generator could have written (docs/design.md §5.2).
//! The state repo is untrusted here: nginx and HAProxy run as root, and
//! `nginx -t` accepts a hand-pushed `access_log /any/path` or a `listen` on the host's own port
//! 22. So each file is checked against `flipbit_core::grammar` (exactly the renderers' output,
//! listen addresses inside this host's pools) before it is written into a release, and a commit
//! holding anything else is refused whole, naming the file and line. Links and submodules are
//! refused the same way on every host.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use flipbit_core::config::LbHost;
use flipbit_core::exposure::Protocol;
use flipbit_core::format;
use flipbit_core::grammar::{self, BindAddr, Checked, LbFile};
use flipbit_core::names::LbHostName;
use flipbit_core::text::escaped;
use flipbit_store::{CommitId, Store};

use crate::outcome::refused;

/// The output format `head` was written in: `format.yaml`, or format 1 for a repo from before
/// it. A format this build does not read refuses the commit with one line that says to upgrade;
/// an older one is read by its own grammar.
pub fn output_format(store: &Store, head: CommitId) -> Result<u32> {
    let Some(bytes) = store.read(head, format::FORMAT_FILE)? else {
        return Ok(format::UNRECORDED_FORMAT);
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| refused(format!("commit {head} refused: {} is not UTF-8", format::FORMAT_FILE)))?;
    let version = format::parse(&text).map_err(|e| refused(format!("commit {head} refused: {}", escaped(&e))))?;
    if version > format::OUTPUT_FORMAT {
        return Err(refused(format!(
            "commit {head} was written by a newer flipbit-generator (output format {version}; this flipbit-applier reads up to {}): upgrade flipbit-applier on this host",
            format::OUTPUT_FORMAT
        )));
    }
    Ok(version)
}

/// Refuses `head` when this host's directory holds links or submodules (`not_files`).
pub fn refuse_links(head: CommitId, not_files: &[String]) -> Result<()> {
    match not_files.first() {
        None => Ok(()),
        Some(path) => Err(refused(format!(
            "commit {head} refused: {} is a symbolic link or a submodule; the generator writes plain files only",
            escaped(path)
        ))),
    }
}

/// What a file of this host holds, once checked.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    pub kind: LbFile,
    pub checked: Checked,
}

/// Checks each of `files` (repo path → blob, all under `lb/<host>/`) that the host's load
/// balancer reads; returns what each holds by path. Files of no kind the generator writes for
/// this host are not checked: the caller never stages them.
pub fn check_files(
    store: &Store,
    head: CommitId,
    host: &LbHost,
    format: u32,
    files: &BTreeMap<String, CommitId>,
) -> Result<BTreeMap<String, CheckedFile>> {
    let mut out = BTreeMap::new();
    for (path, blob) in files {
        let Some(kind) = LbFile::of_path(path, &host.name).filter(|k| reads(host, k)) else {
            continue;
        };
        let refuse = |why: String| {
            refused(format!(
                "commit {head} refused for {}: {}: {why}",
                host.name,
                escaped(path)
            ))
        };
        let text = String::from_utf8(store.blob(*blob)?).map_err(|_| refuse("not UTF-8 text".into()))?;
        let checked = grammar::check(&kind, &text, host, format).map_err(|r| refuse(r.to_string()))?;
        out.insert(path.clone(), CheckedFile { kind, checked });
    }
    Ok(out)
}

/// True when the host's flavour loads files of `kind` (the other flavour's are skipped).
pub fn reads(host: &LbHost, kind: &LbFile) -> bool {
    matches!(kind, LbFile::Haproxy(_)) == (host.flavor == flipbit_core::config::Flavor::Haproxy)
}

/// Refuses `head` when its listeners file (`checked` holds every file of the host) listens on a
/// port no Service of the host uses: the generator opens a wildcard port only for a Service, and
/// a hand-pushed `listen 22;` would take port 22 on every address of the host.
pub fn wildcards_used(head: CommitId, host: &LbHostName, checked: &BTreeMap<String, CheckedFile>) -> Result<()> {
    let used: BTreeSet<(Protocol, u16, bool)> = checked
        .values()
        .flat_map(|f| {
            let routes = f.checked.routes.iter().map(|(p, a)| (*p, a.port(), a.is_ipv6()));
            let binds = f.checked.binds.iter().filter_map(|b| match b.addr {
                BindAddr::Ip(ip) => Some((b.protocol, b.port, ip.is_ipv6())),
                _ => None,
            });
            routes.chain(binds).collect::<Vec<_>>()
        })
        .collect();
    for (path, file) in checked.iter().filter(|(_, f)| f.kind == LbFile::HostListeners) {
        for bind in &file.checked.binds {
            let v6 = bind.addr == BindAddr::AnyV6;
            if !matches!(bind.addr, BindAddr::Ip(_)) && !used.contains(&(bind.protocol, bind.port, v6)) {
                return Err(refused(format!(
                    "commit {head} refused for {host}: {} listens on {}, which no Service of this host uses",
                    escaped(path),
                    crate::binds::describe(bind)
                )));
            }
        }
    }
    Ok(())
}
