//! The TSIG key the applier signs its DNS updates with, read from the file BIND's own
//! `tsig-keygen -a hmac-sha256 NAME` writes. Using BIND's format means the operator generates the
//! key once and includes the very same file in `named.conf`: there is no second copy to drift.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// A shared secret known to the DNS server by `name`.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name as written in the key file, e.g. `flipbit` (no trailing dot).
    pub name: String,
    pub algorithm: KeyAlgorithm,
    pub secret: Vec<u8>,
}

/// Keeps the secret out of logs and panic messages.
impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

/// The HMAC algorithms both BIND and the signer support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl KeyAlgorithm {
    /// The name BIND uses in `algorithm NAME;`.
    pub fn bind_name(self) -> &'static str {
        match self {
            KeyAlgorithm::HmacSha256 => "hmac-sha256",
            KeyAlgorithm::HmacSha384 => "hmac-sha384",
            KeyAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn from_bind_name(name: &str) -> Option<Self> {
        [
            KeyAlgorithm::HmacSha256,
            KeyAlgorithm::HmacSha384,
            KeyAlgorithm::HmacSha512,
        ]
        .into_iter()
        .find(|alg| alg.bind_name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.bind_name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("key file {}: {problem}", path.display())]
    InFile { path: PathBuf, problem: KeyProblem },
    #[error("key file: {0}")]
    Parse(#[from] KeyProblem),
}

/// What is wrong inside a key file; [`KeyError`] says which file.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("{0}")]
    Syntax(String),
    #[error("no `key \"NAME\" {{ ... }};` statement (expected the output of `tsig-keygen`)")]
    NoKey,
    #[error("more than one key (\"{first}\" and \"{second}\"); keep only the one for DNS updates")]
    MoreThanOneKey { first: String, second: String },
    #[error("no `{field}` in key \"{key}\"")]
    Missing { field: &'static str, key: String },
    #[error("`{field}` given twice in key \"{key}\"")]
    Duplicate { field: &'static str, key: String },
    #[error("unknown statement `{statement}` in key \"{key}\"")]
    UnknownStatement { statement: String, key: String },
    #[error("unsupported algorithm `{algorithm}` in key \"{key}\" (use hmac-sha256, hmac-sha384 or hmac-sha512)")]
    UnsupportedAlgorithm { algorithm: String, key: String },
    #[error("secret of key \"{key}\" is not valid base64: {source}")]
    BadSecret { key: String, source: base64::DecodeError },
    #[error("secret of key \"{key}\" is empty")]
    EmptySecret { key: String },
    #[error("key name \"{key}\" is not a valid DNS name")]
    BadName { key: String },
}

/// Reads and parses a key file.
pub fn load(path: &Path) -> Result<TsigKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key_file(&text).map_err(|err| match err {
        KeyError::Parse(problem) => KeyError::InFile {
            path: path.to_path_buf(),
            problem,
        },
        other => other,
    })
}

/// Parses BIND's `key "NAME" { algorithm ALG; secret "BASE64"; };`. Comments (`#`, `//`,
/// `/* */`) and any whitespace are allowed; the file must hold exactly one key.
pub fn parse_key_file(text: &str) -> Result<TsigKey, KeyError> {
    let tokens = tokenize(text)?;
    let mut rest = tokens.as_slice();
    let mut found: Option<TsigKey> = None;
    while !rest.is_empty() {
        let (key, after) = parse_key_statement(rest)?;
        if let Some(first) = &found {
            return Err(KeyProblem::MoreThanOneKey {
                first: first.name.clone(),
                second: key.name,
            }
            .into());
        }
        found = Some(key);
        rest = after;
    }
    found.ok_or(KeyError::Parse(KeyProblem::NoKey))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semi,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "`{w}`"),
            Token::Quoted(q) => write!(f, "\"{q}\""),
            Token::Open => f.write_str("`{`"),
            Token::Close => f.write_str("`}`"),
            Token::Semi => f.write_str("`;`"),
        }
    }
}

fn syntax(message: String) -> KeyError {
    KeyError::Parse(KeyProblem::Syntax(message))
}

fn tokenize(text: &str) -> Result<Vec<Token>, KeyError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => skip_line(&mut chars, &mut line),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars, &mut line),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let start = line;
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        None => return Err(syntax(format!("comment opened on line {start} is never closed"))),
                        Some('/') if prev == '*' => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            prev = c;
                        }
                    }
                }
            }
            '{' => tokens.push(Token::Open),
            '}' => tokens.push(Token::Close),
            ';' => tokens.push(Token::Semi),
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(syntax(format!("string opened on line {start} is never closed"))),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => s.push(escaped),
                            None => return Err(syntax(format!("string opened on line {start} is never closed"))),
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                tokens.push(Token::Quoted(s));
            }
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || matches!(next, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, line: &mut usize) {
    for c in chars.by_ref() {
        if c == '\n' {
            *line += 1;
            break;
        }
    }
}

/// `key NAME { ... };` at the start of `tokens`; returns the key and the tokens after it.
fn parse_key_statement(tokens: &[Token]) -> Result<(TsigKey, &[Token]), KeyError> {
    let name = match tokens {
        [
            Token::Word(kw),
            Token::Quoted(name) | Token::Word(name),
            Token::Open,
            ..,
        ] if kw == "key" => name.clone(),
        [Token::Word(kw), ..] if kw == "key" => {
            return Err(syntax(
                "expected `key \"NAME\" {` at the start of the key statement".to_string(),
            ));
        }
        [first, ..] => return Err(syntax(format!("expected `key`, found {first}"))),
        [] => return Err(KeyError::Parse(KeyProblem::NoKey)),
    };
    let name = name.trim_end_matches('.').to_string();
    if name.is_empty() || hickory_proto::rr::Name::from_ascii(&name).is_err() {
        return Err(KeyProblem::BadName { key: name }.into());
    }
    let mut rest = &tokens[3..];
    let mut algorithm: Option<String> = None;
    let mut secret: Option<String> = None;
    loop {
        match rest {
            [Token::Close, Token::Semi, after @ ..] => {
                rest = after;
                break;
            }
            [Token::Close, ..] => return Err(syntax(format!("missing `;` after the closing `}}` of key \"{name}\""))),
            [
                Token::Word(field),
                Token::Word(value) | Token::Quoted(value),
                Token::Semi,
                after @ ..,
            ] => {
                let slot = match field.as_str() {
                    "algorithm" => &mut algorithm,
                    "secret" => &mut secret,
                    other => {
                        return Err(KeyProblem::UnknownStatement {
                            statement: other.to_string(),
                            key: name,
                        }
                        .into());
                    }
                };
                if slot.is_some() {
                    let field = if field == "algorithm" { "algorithm" } else { "secret" };
                    return Err(KeyProblem::Duplicate { field, key: name }.into());
                }
                *slot = Some(value.clone());
                rest = after;
            }
            [Token::Word(field), ..] => {
                return Err(syntax(format!("expected `{field} VALUE;` in key \"{name}\"")));
            }
            [other, ..] => return Err(syntax(format!("unexpected {other} in key \"{name}\""))),
            [] => return Err(syntax(format!("key \"{name}\" is not closed with `}};`"))),
        }
    }
    let algorithm = algorithm.ok_or_else(|| KeyProblem::Missing {
        field: "algorithm",
        key: name.clone(),
    })?;
    let algorithm = KeyAlgorithm::from_bind_name(&algorithm).ok_or_else(|| KeyProblem::UnsupportedAlgorithm {
        algorithm,
        key: name.clone(),
    })?;
    let secret = secret.ok_or_else(|| KeyProblem::Missing {
        field: "secret",
        key: name.clone(),
    })?;
    // BIND allows the base64 text to be split by whitespace.
    let compact: String = secret.chars().filter(|c| !c.is_whitespace()).collect();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|source| KeyProblem::BadSecret {
            key: name.clone(),
            source,
        })?;
    if secret.is_empty() {
        return Err(KeyProblem::EmptySecret { key: name }.into());
    }
    Ok((
        TsigKey {
            name,
            algorithm,
            secret,
        },
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYGEN: &str = "key \"flipbit-test\" {\n\talgorithm hmac-sha256;\n\tsecret \"sOGQynOCgAAcEgngDxjiJWw5A0TBtVuHgm0jnvc5vDs=\";\n};\n";

    #[test]
    fn parses_tsig_keygen_output() {
        let key = parse_key_file(KEYGEN).unwrap();
        assert_eq!(key.name, "flipbit-test");
        assert_eq!(key.algorithm, KeyAlgorithm::HmacSha256);
        assert_eq!(key.secret.len(), 32);
        assert_eq!(key.secret[0], 0xb0);
    }

    #[test]
    fn comments_and_free_whitespace() {
        let text = "# generated\n// by hand\n/* multi\n line */ key\n\"k.example.\"{secret \"AAEC\nAw==\"; # s\nalgorithm HMAC-SHA512 ;}\n;";
        let key = parse_key_file(text).unwrap();
        assert_eq!(key.name, "k.example");
        assert_eq!(key.algorithm, KeyAlgorithm::HmacSha512);
        assert_eq!(key.secret, vec![0, 1, 2, 3]);
    }

    #[test]
    fn missing_secret_names_the_key() {
        let err = parse_key_file("key \"x\" { algorithm hmac-sha256; };").unwrap_err();
        assert_eq!(err.to_string(), "key file: no `secret` in key \"x\"");
    }

    #[test]
    fn missing_algorithm() {
        let err = parse_key_file("key x { secret \"AAAA\"; };").unwrap_err();
        assert_eq!(err.to_string(), "key file: no `algorithm` in key \"x\"");
    }

    #[test]
    fn unsupported_algorithm_is_named() {
        let err = parse_key_file("key \"x\" { algorithm hmac-md5; secret \"AAAA\"; };").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unsupported algorithm `hmac-md5` in key \"x\""), "{msg}");
    }

    #[test]
    fn bad_base64() {
        let err = parse_key_file("key \"x\" { algorithm hmac-sha256; secret \"not*base64\"; };").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("key file: secret of key \"x\" is not valid base64"),
            "{err}"
        );
    }

    #[test]
    fn empty_file_and_garbage() {
        assert_eq!(
            parse_key_file("# nothing\n").unwrap_err().to_string(),
            KeyError::from(KeyProblem::NoKey).to_string()
        );
        assert!(
            parse_key_file("options { };")
                .unwrap_err()
                .to_string()
                .contains("expected `key`, found `options`")
        );
        assert!(
            parse_key_file("key \"x\" { algorithm hmac-sha256;")
                .unwrap_err()
                .to_string()
                .contains("not closed")
        );
        assert!(
            parse_key_file("key \"x\" { secret \"AA")
                .unwrap_err()
                .to_string()
                .contains("never closed")
        );
        assert!(
            parse_key_file("key \"x\" { foo bar; };")
                .unwrap_err()
                .to_string()
                .contains("unknown statement `foo`")
        );
    }

    #[test]
    fn two_keys_are_refused() {
        let text = format!("{KEYGEN}{}", KEYGEN.replace("flipbit-test", "other"));
        let err = parse_key_file(&text).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than one key (\"flipbit-test\" and \"other\")"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = parse_key_file(KEYGEN).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<32 bytes>") && !shown.contains("176"), "{shown}");
    }

    #[test]
    fn load_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns.key");
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read key file {}", path.display())),
            "{err}"
        );
        std::fs::write(&path, "key \"x\" { algorithm hmac-sha256; };").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert_eq!(err, format!("key file {}: no `secret` in key \"x\"", path.display()));
        std::fs::write(&path, KEYGEN).unwrap();
        assert_eq!(load(&path).unwrap().name, "flipbit-test");
    }
}
