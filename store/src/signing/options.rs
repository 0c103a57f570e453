//! The options field of an allowed signers line, as ssh-keygen parses it (`sshsigopt_parse`):
//! comma-separated, keywords case-insensitive, values in double quotes (`\"` escapes a quote),
//! no spaces outside quotes. Only `namespaces`, `valid-after` and `valid-before` are accepted;
//! `cert-authority` is ssh-keygen's fourth and is refused (see the parent module).

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// What a line's options restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `namespaces="..."`: a pattern-list the signature's namespace must match.
    pub namespaces: Option<String>,
    /// `valid-after`, Unix seconds: the key signs nothing dated earlier.
    pub valid_after: Option<i64>,
    /// `valid-before`, Unix seconds: the key signs nothing dated later.
    pub valid_before: Option<i64>,
}

impl Options {
    /// Why these options refuse a signature in `namespace` dated `time`, or `None`.
    pub fn refusal(&self, namespace: &str, time: i64) -> Option<String> {
        if let Some(list) = &self.namespaces
            && !pattern_list_matches(namespace, list)
        {
            return Some(format!("its namespaces=\"{list}\" does not include \"{namespace}\""));
        }
        if let Some(after) = self.valid_after
            && time < after
        {
            return Some(format!(
                "the key is valid only from {} and the commit is dated {}",
                show(after),
                show(time)
            ));
        }
        if let Some(before) = self.valid_before
            && time > before
        {
            return Some(format!(
                "the key expired at {} and the commit is dated {}",
                show(before),
                show(time)
            ));
        }
        None
    }
}

fn show(time: i64) -> String {
    Timestamp::from_second(time).map_or_else(|_| format!("@{time}"), |t| t.to_string())
}

/// Splits the options field off `s`: up to the first space or tab outside double quotes.
pub fn field(s: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Ok((&s[..i], s[i..].trim_start_matches([' ', '\t']))),
            _ => {}
        }
    }
    if quoted {
        return Err("an option value has no closing quote".into());
    }
    Ok((s, ""))
}

/// Parses a whole options field (`namespaces="git",valid-after="20240101"`).
pub fn parse(field: &str) -> Result<Options, String> {
    let mut out = Options::default();
    for option in split_commas(field) {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "" => return Err("an empty option (a stray comma?)".into()),
            "cert-authority" => {
                return Err(
                    "cert-authority lines are not supported: Flipbit verifies plain keys only; list each signer's public key instead"
                        .into(),
                );
            }
            "namespaces" => {
                let list = dequote(name, value)?;
                if out.namespaces.replace(list).is_some() {
                    return Err("namespaces is given twice".into());
                }
            }
            "valid-after" => {
                let time = parse_time(&dequote(name, value)?).map_err(|e| format!("valid-after: {e}"))?;
                if out.valid_after.replace(time).is_some() {
                    return Err("valid-after is given twice".into());
                }
            }
            "valid-before" => {
                let time = parse_time(&dequote(name, value)?).map_err(|e| format!("valid-before: {e}"))?;
                if out.valid_before.replace(time).is_some() {
                    return Err("valid-before is given twice".into());
                }
            }
            other => {
                return Err(format!(
                    "unsupported option \"{other}\" (expected namespaces=, valid-after=, valid-before= or a key type)"
                ));
            }
        }
    }
    if let (Some(after), Some(before)) = (out.valid_after, out.valid_before)
        && before <= after
    {
        return Err("valid-before is not after valid-after".into());
    }
    Ok(out)
}

/// The field split at commas outside double quotes.
fn split_commas(field: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in field.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&field[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&field[start..]);
    parts
}

/// A value in double quotes, `\"` unescaped (ssh-keygen requires the quotes).
fn dequote(name: &str, value: Option<&str>) -> Result<String, String> {
    let needs_quotes = || format!("{name} needs a value in double quotes, e.g. {name}=\"...\"");
    let mut chars = value
        .and_then(|v| v.strip_prefix('"'))
        .ok_or_else(needs_quotes)?
        .chars();
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(format!("{name}: the value has no closing quote")),
            Some('"') => break,
            Some('\\') if chars.as_str().starts_with('"') => {
                out.push('"');
                chars.next();
            }
            Some(c) => out.push(c),
        }
    }
    if !chars.as_str().is_empty() {
        return Err(format!("{name}: text after the closing quote"));
    }
    Ok(out)
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, then `Z` (or `UTC`) for UTC; without it, the
/// system's time zone, as ssh-keygen reads it.
fn parse_time(text: &str) -> Result<i64, String> {
    let upper = text.to_ascii_uppercase();
    let (digits, tz) = if let Some(d) = upper.strip_suffix("UTC") {
        (d, TimeZone::UTC)
    } else if let Some(d) = upper.strip_suffix('Z') {
        (d, TimeZone::UTC)
    } else {
        (upper.as_str(), TimeZone::system())
    };
    let bad = || format!("\"{text}\" is not YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]");
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |from: usize| -> i16 { digits.get(from..from + 2).and_then(|d| d.parse().ok()).unwrap_or(0) };
    let year: i16 = digits[..4].parse().map_err(|_| bad())?;
    let date_time = DateTime::new(
        year,
        num(4) as i8,
        num(6) as i8,
        num(8) as i8,
        num(10) as i8,
        num(12) as i8,
        0,
    )
    .map_err(|e| format!("\"{text}\": {e}"))?;
    let zoned = date_time.to_zoned(tz).map_err(|e| format!("\"{text}\": {e}"))?;
    Ok(zoned.timestamp().as_second())
}

/// ssh's pattern-list match (`match_pattern_list`): comma-separated `*`/`?` globs; a match of a
/// `!`-negated pattern refuses whatever else matches.
pub fn pattern_list_matches(text: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob(text.as_bytes(), pattern.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn glob(text: &[u8], pattern: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(&text[i..], rest)),
        Some((b'?', rest)) => !text.is_empty() && glob(&text[1..], rest),
        Some((c, rest)) => text.first() == Some(c) && glob(&text[1..], rest),
    }
}
