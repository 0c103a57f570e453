//! Where nginx writes its errors, found without `--nginx-error-log`: a reload that fails (a port
//! another part of the config holds, a file gone since `nginx -t`) is reported only there, and a
//! stock host's log is wherever its main config says (Debian: `/var/log/nginx/error.log`).
//! Without it the applier could only wait out its reload timeout and say "no new workers".
//!
//! The log is the first `error_log` naming a file at the top level of the main config, or of a
//! file it includes at the top level; else the path nginx was built with (`nginx -V`'s
//! `--error-log-path`). Relative paths are nginx's: a log's against the prefix, an include's
//! against the main config's directory. Only the top level counts: an `error_log` inside `http {}`
//! or `stream {}` is where that module's traffic errors go, not the master's.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where nginx's master logs a failed reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorLog {
    File(PathBuf),
    /// `stderr`, `syslog:...`, `memory:...`: nothing the applier can read back (the string).
    NotAFile(String),
}

/// Includes nested deeper than this are not followed (nginx itself has no limit; a loop would
/// otherwise never end).
const MAX_INCLUDE_DEPTH: usize = 8;

/// The log of the nginx run as `bin [-p prefix] -c conf`, or `None` when neither the config nor
/// the binary says.
pub fn find(bin: &Path, conf: &Path, prefix: Option<&Path>) -> Option<ErrorLog> {
    let conf_dir = conf.parent().unwrap_or(Path::new("/"));
    let built = BuiltWith::read(bin);
    let prefix = prefix
        .map(Path::to_path_buf)
        .or_else(|| built.as_ref().and_then(|b| b.prefix.clone()));
    let found = top_level_error_log(conf, conf_dir, 0).map(|target| resolve(&target, prefix.as_deref()));
    found.or_else(|| built?.error_log_path.map(|p| resolve(&p, prefix.as_deref())))
}

fn resolve(target: &str, prefix: Option<&Path>) -> ErrorLog {
    if target == "stderr" || target.contains(':') {
        return ErrorLog::NotAFile(target.to_owned());
    }
    let path = Path::new(target);
    ErrorLog::File(match prefix {
        Some(prefix) if path.is_relative() => prefix.join(path),
        _ => path.to_path_buf(),
    })
}

/// The first `error_log` target at the top level of `file` and its top-level includes.
fn top_level_error_log(file: &Path, conf_dir: &Path, depth: usize) -> Option<String> {
    if depth > MAX_INCLUDE_DEPTH {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    for directive in top_level(&text) {
        match directive.first().map(String::as_str) {
            Some("error_log") => {
                if let Some(target) = directive.get(1) {
                    return Some(target.clone());
                }
            }
            Some("include") => {
                let Some(pattern) = directive.get(1) else { continue };
                for included in expand(pattern, conf_dir) {
                    if let Some(found) = top_level_error_log(&included, conf_dir, depth + 1) {
                        return Some(found);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// The directives (words up to `;`) outside every block of an nginx config.
fn top_level(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut depth = 0usize;
    for token in tokens(text) {
        match token {
            Token::Word(w) => words.push(w),
            Token::End => {
                if depth == 0 && !words.is_empty() {
                    out.push(std::mem::take(&mut words));
                }
                words.clear();
            }
            Token::Open => {
                depth += 1;
                words.clear();
            }
            Token::Close => {
                depth = depth.saturating_sub(1);
                words.clear();
            }
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    End,
    Open,
    Close,
}

/// nginx's lexer, as much as the top level needs: words, quoted strings (with backslash
/// escapes), `;`, `{`, `}` and `#` comments to the end of the line.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' if word.is_empty() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' if word.is_empty() => {
                let quote = c;
                let mut quoted = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => quoted.extend(chars.next()),
                        c if c == quote => break,
                        c => quoted.push(c),
                    }
                }
                out.push(Token::Word(quoted));
            }
            ';' | '{' | '}' => {
                flush(&mut word, &mut out);
                out.push(match c {
                    ';' => Token::End,
                    '{' => Token::Open,
                    _ => Token::Close,
                });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            '\\' => word.extend(chars.next()),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The files an `include` names, in name order: a path, or a `*` pattern in its last component
/// (the only form distributions use: `modules-enabled/*.conf`).
fn expand(pattern: &str, conf_dir: &Path) -> Vec<PathBuf> {
    let path = conf_dir.join(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if !name.contains('*') {
        return vec![path.clone()];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| matches(name, n)))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Shell-style matching of `*` (any run of characters) in `pattern` against `name`.
fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// What `nginx -V` says it was built with.
struct BuiltWith {
    prefix: Option<PathBuf>,
    error_log_path: Option<String>,
}

impl BuiltWith {
    fn read(bin: &Path) -> Option<Self> {
        let out = Command::new(bin).arg("-V").output().ok()?;
        // nginx prints its version and configure arguments on stderr.
        let text = String::from_utf8_lossy(&out.stderr);
        let arg = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name).map(str::to_owned))
        };
        Some(Self {
            prefix: arg("--prefix=").map(PathBuf::from),
            error_log_path: arg("--error-log-path="),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_top_level_error_log_counts() {
        let conf = "# error_log /commented;\nuser www-data;\nhttp {\n    error_log /var/log/http.log;\n}\nerror_log \"/var/log/nginx/my log.log\" warn;\nerror_log /second.log;\n";
        let found: Vec<Vec<String>> = top_level(conf);
        assert_eq!(found[0], ["user", "www-data"]);
        assert_eq!(found[1], ["error_log", "/var/log/nginx/my log.log", "warn"]);
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, conf).unwrap();
        assert_eq!(
            top_level_error_log(&main, dir.path(), 0).as_deref(),
            Some("/var/log/nginx/my log.log")
        );
    }

    #[test]
    fn top_level_includes_are_followed_in_name_order_and_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let enabled = dir.path().join("modules-enabled");
        std::fs::create_dir(&enabled).unwrap();
        std::fs::write(enabled.join("10-a.conf"), "load_module x.so;\n").unwrap();
        std::fs::write(enabled.join("50-b.conf"), "error_log logs/b.log;\n").unwrap();
        std::fs::write(enabled.join("50-b.conf.bak"), "error_log /wrong;\n").unwrap();
        let main = dir.path().join("nginx.conf");
        std::fs::write(
            &main,
            "include modules-enabled/*.conf;\nstream { include /nowhere/*.conf; }\n",
        )
        .unwrap();
        assert_eq!(top_level_error_log(&main, dir.path(), 0).as_deref(), Some("logs/b.log"));
        assert_eq!(
            resolve("logs/b.log", Some(Path::new("/srv/nginx"))),
            ErrorLog::File("/srv/nginx/logs/b.log".into())
        );
        assert_eq!(
            resolve("syslog:server=unix:/dev/log", None),
            ErrorLog::NotAFile("syslog:server=unix:/dev/log".into())
        );
        assert_eq!(resolve("stderr", None), ErrorLog::NotAFile("stderr".into()));
        // A config that includes itself ends.
        std::fs::write(&main, "include nginx.conf;\n").unwrap();
        assert_eq!(top_level_error_log(&main, dir.path(), 0), None);
    }

    #[test]
    fn patterns_match_as_the_shell_does() {
        assert!(matches("*.conf", "a.conf"));
        assert!(!matches("*.conf", "a.conf.bak"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("a*b*c", "a-c"));
        assert!(matches("exact", "exact"));
        assert!(!matches("*.conf", ".con"));
    }
}
