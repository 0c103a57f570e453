//! What the applier repeats of nginx's or HAProxy's own error messages. They quote the text they
//! choke on, and that text may come from a file the load balancer read as root: an `include` of
//! a root-only file made `nginx -t` print the file's first token. A message is repeated with
//! every quoted token replaced by `"…"` unless it names a directive or keyword (what the reader
//! needs to find the fault; the file and line stay), and escaped, so it stays one line.

use flipbit_core::text::escaped;

/// Directive and keyword names a message may quote: what Flipbit's files and the main configs
/// around them use, and the punctuation nginx says it expected.
const NAMES: &[&str] = &[
    // nginx
    "stream",
    "http",
    "events",
    "server",
    "upstream",
    "listen",
    "proxy_pass",
    "proxy_timeout",
    "proxy_connect_timeout",
    "proxy_protocol",
    "proxy_responses",
    "least_conn",
    "hash",
    "map",
    "map_hash_max_size",
    "map_hash_bucket_size",
    "split_clients",
    "include",
    "worker_connections",
    "worker_processes",
    "worker_rlimit_nofile",
    "load_module",
    "pid",
    "error_log",
    "user",
    "daemon",
    ";",
    "{",
    "}",
    // HAProxy
    "global",
    "defaults",
    "frontend",
    "backend",
    "bind",
    "mode",
    "balance",
    "hash-type",
    "timeout",
    "default_backend",
    "retries",
    "option",
    "redispatch",
];

/// `message` with quoted tokens that name no known directive replaced by `"…"`, escaped.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '\'']) {
        let quote = &rest[start..start + 1];
        let Some(len) = rest[start + 1..].find(quote) else {
            break;
        };
        let token = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        out.push_str(quote);
        out.push_str(if NAMES.contains(&token) { token } else { "…" });
        out.push_str(quote);
        rest = &rest[start + len + 2..];
    }
    // An unmatched quote: whatever follows it is dropped too.
    match rest.find(['"', '\'']) {
        Some(at) => {
            out.push_str(&rest[..at]);
            out.push_str("\"…");
        }
        None => out.push_str(rest),
    }
    escaped(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directive_names_are_quoted() {
        assert_eq!(
            redact(r#"[emerg] unknown directive "root:$6$secret" in /etc/shadow:1"#),
            r#"[emerg] unknown directive "…" in /etc/shadow:1"#
        );
        assert_eq!(
            redact(r#"invalid number of arguments in "listen" directive in /x/a.conf:3"#),
            r#"invalid number of arguments in "listen" directive in /x/a.conf:3"#
        );
        assert_eq!(
            redact("parsing [/x/a.cfg:4] : unknown keyword 'SECRET' in 'frontend' section"),
            "parsing [/x/a.cfg:4] : unknown keyword '…' in 'frontend' section"
        );
        assert_eq!(
            redact(r#"unexpected end of file, expecting ";" or "}""#),
            r#"unexpected end of file, expecting ";" or "}""#
        );
        assert_eq!(redact("dangling \"secret\nerror: forged"), "dangling \"…");
        assert_eq!(redact("a\nb"), "a\\nb");
    }
}
