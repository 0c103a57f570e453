//! OpenSSH's known_hosts format (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT), read here rather than by
//! libssh2: libgit2 only ever consults `~/.ssh/known_hosts`, which a read-only container has no
//! say in, and answers a miss with "invalid or unknown remote ssh hostkey" and nothing else.
//!
//! A line is `[marker] hosts keytype base64-key [comment]`. Hosts are comma-separated patterns
//! (`*` and `?` wildcards, `!` negates, `[host]:port` for a port other than 22) or one hashed
//! entry `|1|base64(salt)|base64(HMAC-SHA1(salt, name))` (`ssh-keygen -H`). A host may have
//! several lines and several keys; the offered key is good when any line for the host lists it.
//! `@revoked` lines refuse their key; `@cert-authority` lines are read but cannot vouch for
//! anything, because libssh2 hands over plain host keys only: they are named in the refusal.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::Digest as _;

/// One key line of a known_hosts file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number, for messages.
    pub line: usize,
    pub marker: Marker,
    hosts: Hosts,
    /// The key type, as the key blob names itself (`ssh-ed25519`, `ssh-rsa`, ...).
    pub key_type: String,
    /// The SSH wire encoding of the key, what the server sends and libssh2 hands over.
    pub blob: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// Comma-separated patterns; `(negated, lowercase pattern)`.
    Patterns(Vec<(bool, String)>),
    /// `|1|salt|hash`.
    Hashed { salt: Vec<u8>, hash: [u8; 20] },
}

/// The known_hosts files of one check, each with its entries.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    pub files: Vec<(PathBuf, Vec<Entry>)>,
}

/// Where a known key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub line: usize,
    pub key_type: String,
    pub fingerprint: String,
}

/// What the files say about a key a server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host lists the key.
    Known,
    /// An `@revoked` line for this host lists the key.
    Revoked(Place),
    /// Lines for this host list other keys of the same type, and none this one.
    Changed(Vec<Place>),
    /// Nothing for this host lists the key or another of its type. `other_types`: keys of other
    /// types the host has; `authorities`: `@cert-authority` lines that match the host.
    Unknown {
        other_types: Vec<Place>,
        authorities: Vec<Place>,
    },
}

impl KnownHosts {
    /// Reads `path`. `strict`: a line that does not parse is an error (a file the operator named);
    /// otherwise it is skipped (the user's and the system's own files, written by OpenSSH).
    pub fn read(&mut self, path: &Path, strict: bool) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            match parse_line(raw) {
                Ok(Some(mut entry)) => {
                    entry.line = i + 1;
                    entries.push(entry);
                }
                Ok(None) => {}
                Err(why) if strict => return Err(format!("line {}: {why}", i + 1)),
                Err(why) => tracing::debug!(file = %path.display(), line = i + 1, %why, "known_hosts line skipped"),
            }
        }
        self.files.push((path.to_owned(), entries));
        Ok(())
    }

    /// What the files say about `blob`, offered by `host` on `port`.
    pub fn check(&self, host: &str, port: u16, blob: &[u8]) -> Verdict {
        let name = lookup_name(host, port);
        let offered_type = blob_type(blob).unwrap_or_default();
        let (mut known, mut changed, mut other_types, mut authorities) = (false, vec![], vec![], vec![]);
        for (file, entries) in &self.files {
            for entry in entries.iter().filter(|e| e.hosts.matches(&name)) {
                let place = || entry.place(file);
                match entry.marker {
                    Marker::Revoked if entry.blob == blob => return Verdict::Revoked(place()),
                    Marker::Revoked => {}
                    Marker::CertAuthority => authorities.push(place()),
                    Marker::None if entry.blob == blob => known = true,
                    Marker::None if entry.key_type == offered_type => changed.push(place()),
                    Marker::None => other_types.push(place()),
                }
            }
        }
        if known {
            Verdict::Known
        } else if !changed.is_empty() {
            Verdict::Changed(changed)
        } else {
            Verdict::Unknown {
                other_types,
                authorities,
            }
        }
    }
}

impl Entry {
    fn place(&self, file: &Path) -> Place {
        Place {
            file: file.to_owned(),
            line: self.line,
            key_type: self.key_type.clone(),
            fingerprint: fingerprint(&self.blob),
        }
    }
}

/// The name a host is listed under: `host` on port 22, `[host]:port` on any other.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// `SHA256:...`, as `ssh-keygen -l` prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob)))
}

/// The key type a key blob names first (`string keytype`, then the key's fields).
pub fn blob_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    std::str::from_utf8(name).ok().map(str::to_owned)
}

/// `None` for a blank or comment line.
fn parse_line(raw: &str) -> Result<Option<Entry>, String> {
    let mut fields = raw.split_ascii_whitespace();
    let Some(mut first) = fields.next() else {
        return Ok(None);
    };
    if first.starts_with('#') {
        return Ok(None);
    }
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return Err(format!("unknown marker {m:?} (only @revoked and @cert-authority)")),
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next().ok_or("the hosts field is missing after the marker")?;
    }
    let hosts = parse_hosts(first)?;
    let key_type = fields.next().ok_or("the key type is missing after the hosts")?;
    let encoded = fields.next().ok_or("the base64 key is missing after the key type")?;
    let blob = STANDARD
        .decode(encoded)
        .map_err(|e| format!("the {key_type} key is not base64: {e}"))?;
    match blob_type(&blob) {
        Some(t) if t == key_type => {}
        Some(t) => return Err(format!("the key says it is {t:?}, the line says {key_type:?}")),
        None => return Err(format!("the {key_type} key is truncated")),
    }
    Ok(Some(Entry {
        line: 0,
        marker,
        hosts,
        key_type: key_type.to_owned(),
        blob,
    }))
}

fn parse_hosts(field: &str) -> Result<Hosts, String> {
    if let Some(hashed) = field.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|').ok_or("a hashed host is |1|salt|hash")?;
        let salt = STANDARD.decode(salt).map_err(|e| format!("hashed host salt: {e}"))?;
        let hash = STANDARD.decode(hash).map_err(|e| format!("hashed host: {e}"))?;
        let hash = hash.try_into().map_err(|_| "a hashed host is 20 bytes (HMAC-SHA1)")?;
        return Ok(Hosts::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        return Err("only |1| hashed hosts exist".into());
    }
    let patterns = field
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix('!') {
            Some(negated) => (true, negated.to_ascii_lowercase()),
            None => (false, p.to_ascii_lowercase()),
        })
        .collect::<Vec<_>>();
    if patterns.is_empty() {
        return Err("the hosts field is empty".into());
    }
    Ok(Hosts::Patterns(patterns))
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => hmac_sha1(salt, name.as_bytes()) == *hash,
            // As OpenSSH's match_hostname: a negated pattern that matches rules the line out.
            Hosts::Patterns(patterns) => {
                let mut any = false;
                for (negated, pattern) in patterns {
                    if wildcard(pattern.as_bytes(), name.as_bytes()) {
                        if *negated {
                            return false;
                        }
                        any = true;
                    }
                }
                any
            }
        }
    }
}

/// `*` matches any run of characters, `?` any one; everything else itself.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// HMAC-SHA1 (RFC 2104), what `ssh-keygen -H` hashes host names with.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    if key.len() > BLOCK {
        padded[..20].copy_from_slice(&sha1_smol::Sha1::from(key).digest().bytes());
    } else {
        padded[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha1_smol::Sha1::new();
    inner.update(&padded.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = sha1_smol::Sha1::new();
    outer.update(&padded.map(|b| b ^ 0x5c));
    outer.update(&inner.digest().bytes());
    outer.digest().bytes()
}

#[cfg(test)]
#[path = "known_hosts_tests.rs"]
mod tests;
