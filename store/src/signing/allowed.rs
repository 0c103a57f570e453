//! git's allowed signers file (`gpg.ssh.allowedSignersFile`; ssh-keygen(1), ALLOWED SIGNERS): which
//! SSH keys may sign the state repo's commits. Appliers read the very file an operator gives
//! `git log --show-signature`, so both agree on which commits are good. Parsing is as strict as
//! ssh-keygen's (quoted option values, only its four options): anything it would reject is an error
//! naming the file and line, so a typo can never quietly widen or narrow what is accepted.
//! `cert-authority` lines are refused outright: certificates are not verified here, and skipping
//! such a line would leave an operator believing its signers are trusted.

use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, PublicKey};

use super::options::{self, Options};

#[derive(Debug, thiserror::Error)]
pub enum AllowedSignersError {
    #[error("allowed signers file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("allowed signers file {}, line {line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("allowed signers file {} lists no keys, so no commit could be accepted", path.display())]
    Empty { path: PathBuf },
}

/// One key line of the file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// 1-based line number, for messages.
    pub line: usize,
    /// The principals field as written. Informational: commits are matched by key, as git does.
    pub principals: String,
    pub key: PublicKey,
    pub options: Options,
}

/// A parsed allowed signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    signers: Vec<AllowedSigner>,
}

const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

impl AllowedSigners {
    /// Reads and parses `path`. A missing, unreadable or keyless file is an error, never "accept all".
    pub fn load(path: &Path) -> Result<Self, AllowedSignersError> {
        let text = std::fs::read_to_string(path).map_err(|source| AllowedSignersError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`; `path` only names the file in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AllowedSignersError> {
        let mut signers = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let parsed = parse_line(raw).map_err(|message| AllowedSignersError::Line {
                path: path.to_owned(),
                line,
                message,
            })?;
            if let Some((principals, key, options)) = parsed {
                signers.push(AllowedSigner {
                    line,
                    principals,
                    key,
                    options,
                });
            }
        }
        if signers.is_empty() {
            return Err(AllowedSignersError::Empty { path: path.to_owned() });
        }
        Ok(Self {
            path: path.to_owned(),
            signers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn signers(&self) -> &[AllowedSigner] {
        &self.signers
    }

    /// The lines that list `key` (a key may appear on several lines, e.g. with different validity).
    pub fn for_key<'a>(&'a self, key: &'a KeyData) -> impl Iterator<Item = &'a AllowedSigner> + 'a {
        self.signers.iter().filter(move |s| s.key.key_data() == key)
    }
}

impl AllowedSigner {
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Why this line does not let its key sign in `namespace` at `time` (Unix seconds; for a
    /// commit, its committer date, as git checks it), or `None` when it does.
    pub fn refusal(&self, namespace: &str, time: i64) -> Option<String> {
        self.options.refusal(namespace, time)
    }
}

type Line = (String, PublicKey, Options);

/// `principals [options] keytype base64-key [comment]`; `None` for a blank or comment line.
fn parse_line(raw: &str) -> Result<Option<Line>, String> {
    let rest = raw.trim_start_matches([' ', '\t']);
    if rest.trim_end().is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = principals_field(rest)?;
    if rest.is_empty() {
        return Err("a key is missing after the principals field".into());
    }
    let (first, _) = split_token(rest);
    let (opts, rest) = if is_key_type(first) {
        (Options::default(), rest)
    } else {
        let (field, rest) = options::field(rest)?;
        let opts = options::parse(field)?;
        if rest.is_empty() {
            return Err("a key is missing after the options".into());
        }
        (opts, rest)
    };
    let key = parse_key(rest)?;
    Ok(Some((principals, key, opts)))
}

fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(end) => (&s[..end], s[end..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

/// A pattern-list, optionally in double quotes (then it may hold spaces).
fn principals_field(s: &str) -> Result<(String, &str), String> {
    let (principals, rest) = match s.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted
                .find('"')
                .ok_or("the quoted principals field has no closing quote")?;
            let rest = &quoted[end + 1..];
            if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
                return Err("expected a space after the quoted principals field".into());
            }
            (&quoted[..end], rest.trim_start_matches([' ', '\t']))
        }
        None => {
            let (token, rest) = split_token(s);
            if token.contains('"') {
                return Err("a quote inside the principals field (quote the whole field)".into());
            }
            (token, rest)
        }
    };
    if principals.is_empty() {
        return Err("the principals field is empty".into());
    }
    Ok((principals.to_owned(), rest))
}

/// Tells a key type (`ssh-ed25519`, `sk-ssh-ed25519@openssh.com`, a certificate type) from options.
fn is_key_type(token: &str) -> bool {
    !token.contains(['=', '"', ','])
        && (token.ends_with(CERT_SUFFIX) || Algorithm::new(token).is_ok())
        && !token.eq_ignore_ascii_case("cert-authority")
}

fn parse_key(s: &str) -> Result<PublicKey, String> {
    let (key_type, rest) = split_token(s);
    if key_type.ends_with(CERT_SUFFIX) {
        return Err(format!(
            "{key_type}: certificates are not supported; list the signer's plain public key"
        ));
    }
    let (base64, _comment) = split_token(rest);
    if base64.is_empty() {
        return Err(format!("the base64 key is missing after {key_type}"));
    }
    PublicKey::from_openssh(&format!("{key_type} {base64}")).map_err(|e| format!("invalid {key_type} key: {e}"))
}
