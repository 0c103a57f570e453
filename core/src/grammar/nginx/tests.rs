//! The nginx snippet grammar against `render::nginx::service`, and a refusal per way a hand edit
//! could reach nginx: the attack files, every directive out of place, every value misspelled.

use super::super::tests::{assert_accepts_rendered, assert_format_2, assert_refused, check_blog_web};
use super::*;
use crate::annotations::Balance;
use crate::config::Flavor;

const BASE: &str = "# Flipbit: Service blog/web on LB host lb-1.\n# Generated.\n\nupstream flipbit_blog_web_tcp_80 {\n    server 10.0.0.1:30080;\n}\n\nserver {\n    listen 127.1.1.5:80;\n    proxy_pass flipbit_blog_web_tcp_80;\n    proxy_connect_timeout 5s;\n}\n";

fn run(text: &str) -> Result<Checked, Refusal> {
    check_blog_web(Flavor::Nginx, text, 1)
}

#[test]
fn format_2_adds_client_ranges_timeouts_and_udp_answers() {
    assert_format_2(
        Flavor::Nginx,
        Balance::Hash,
        &[
            "    allow 127.9.0.0/16;\n    allow 2001:db8::/32;\n    deny all;\n    proxy_pass",
            "    proxy_connect_timeout 7s;\n    proxy_timeout 30s;\n",
            "    proxy_timeout 20s;\n    proxy_responses 1;\n",
        ],
        2,
        &[
            ("allow 127.9.0.0/16;", "allow 127.9.0.5/16;", "client range"),
            ("allow 127.9.0.0/16;", "allow all;", "client range"),
            ("    deny all;\n", "", "deny all"),
            ("proxy_timeout 30s;", "proxy_timeout 2d;", "idle timeout"),
            ("proxy_timeout 30s;", "proxy_timeout 86401s;", "idle timeout"),
            (
                "proxy_connect_timeout 7s;",
                "proxy_connect_timeout 601s;",
                "connect timeout",
            ),
            ("proxy_responses 1;", "proxy_responses 0;", "answers"),
        ],
    );
}

#[test]
fn accepts_what_the_renderer_writes() {
    let cases = [
        (Balance::RoundRobin, false),
        (Balance::LeastConn, true),
        (Balance::Hash, false),
    ];
    for checked in assert_accepts_rendered(Flavor::Nginx, &cases, |_| {}) {
        assert!(checked.binds.contains(&Bind {
            protocol: Protocol::Udp,
            addr: BindAddr::Ip("fd00:1::5".parse().expect("ip")),
            port: 53
        }));
    }
    assert_eq!(run(BASE).map(|c| c.binds.len()), Ok(1));
}

#[test]
fn refuses_anything_else() {
    let pair = "upstream flipbit_blog_web_udp_53 {\n    server 10.0.0.1:30053;\n}\nserver {\n    listen 127.1.1.5:53 udp;\n    proxy_pass flipbit_blog_web_udp_53;\n    proxy_timeout 20s;\n}\n";
    let r = |from: &str, to: &str| BASE.replacen(from, to, 1);
    let table: Vec<(String, usize, &str)> = vec![
        (
            r(
                "\n\nupstream",
                "\n\nlog_format x \"$remote_addr\";\naccess_log /var/x x;\nupstream",
            ),
            4,
            "expected `upstream",
        ),
        (
            r("\n\nupstream", "\n\ninclude /etc/shadow;\nupstream"),
            4,
            "expected `upstream",
        ),
        (
            format!("{BASE}server {{\n    listen 127.1.1.5:22;\n    proxy_pass 127.0.0.1:22;\n}}\n"),
            13,
            "expected `upstream",
        ),
        (r("127.1.1.5:80;", "127.1.1.5:22;"), 9, "listens on port 22"),
        (
            r("127.1.1.5:80;", "10.9.9.9:80;"),
            9,
            "address 10.9.9.9 is outside LB host lb-1's pools",
        ),
        (
            r("    proxy_pass", "    access_log /tmp/x;\n    proxy_pass"),
            10,
            "found \"access_log\"",
        ),
        (
            r(
                "    proxy_connect_timeout 5s;\n",
                "    proxy_connect_timeout 5s;\n    error_log /tmp/x;\n",
            ),
            12,
            "closing the server",
        ),
        (
            r(
                "    server 10.0.0.1:30080;",
                "    server 10.0.0.1:30080;\n    js_import x.js;",
            ),
            6,
            "expected `server",
        ),
        (
            r("    server 10.0.0.1:30080;", "    server 10.0.0.1:30080 max_fails=0;"),
            5,
            "arguments differ",
        ),
        (
            r(
                "    server 10.0.0.1:30080;",
                "    server 10.0.0.1:30080;\n    least_conn;",
            ),
            6,
            "found \"least_conn\"",
        ),
        (r("    server 10.0.0.1:30080;\n", ""), 5, "without a `server`"),
        (
            r("listen 127.1.1.5:80;", "listen 127.1.1.5:80 reuseport;"),
            9,
            "expected `listen <address>:80`",
        ),
        (
            r("listen 127.1.1.5:80;", "listen 127.1.1.5:80 udp;"),
            9,
            "expected `listen <address>:80`",
        ),
        (
            r("listen 127.1.1.5:80;", "listen 127.1.1.5:80; include /etc/shadow;"),
            9,
            "one directive per line",
        ),
        (
            r("listen 127.1.1.5:80;", "listen 127.1.1.5:80;\n    listen 127.1.1.5:80;"),
            10,
            "a second `listen`",
        ),
        (r("listen 127.1.1.5:80;", "listen 127.1.1.5:0;"), 9, "\"127.1.1.5:0\""),
        (
            r("listen 127.1.1.5:80;", "listen 127.1.1.5:http;"),
            9,
            "\"127.1.1.5:http\"",
        ),
        (r("    listen", "\n    listen"), 9, "four spaces"),
        (r("    listen", "  listen"), 9, "four spaces"),
        (r("    listen", "    # listen"), 9, "found \"#\""),
        (r("_tcp_80 {", "_tcp_0 {"), 4, "\"0\" is not a port"),
        (r("_tcp_80 {", "_tcp_http {"), 4, "\"http\" is not a port"),
        (
            BASE.replace("blog_web", "other_web"),
            4,
            "an upstream of Service blog/web",
        ),
        (
            r(
                "proxy_pass flipbit_blog_web_tcp_80;",
                "proxy_pass flipbit_other_web_tcp_80;",
            ),
            10,
            "expected `proxy_pass flipbit_blog_web_tcp_80`",
        ),
        (
            r("    proxy_connect_timeout 5s;", "    proxy_timeout 20s;"),
            11,
            "found \"proxy_timeout\"",
        ),
        (
            r(
                "    proxy_connect_timeout 5s;",
                "    proxy_connect_timeout 5s;\n    proxy_protocol off;",
            ),
            12,
            "expected `proxy_protocol on`",
        ),
        (format!("{BASE}{BASE}"), 16, "a second upstream for TCP/80"),
        (
            format!(
                "{BASE}{}",
                pair.replace("server 10", "hash $remote_addr consistent;\n    server 10")
            ),
            13,
            "balance: not as for the first port",
        ),
        (
            format!("{BASE}{}", pair.replace("20s;\n", "20s;\n    proxy_protocol on;\n")),
            13,
            "PROXY protocol: not as for the first port",
        ),
        (r("}\n\nserver", "}\n\nserver {}\nserver"), 8, "expected `server {`"),
        (BASE.trim_end().to_owned(), 0, "newline"),
        (BASE.replace('\n', "\r\n"), 1, "control character '\\r'"),
        (r("blog/web", "blog/web\u{85}"), 1, "'\\u{85}'"),
        (
            r("    server 10.0.0.1", "    server 10.0.0.1\u{2028}line1:ok"),
            5,
            "\\u{2028}",
        ),
        (
            BASE.split_inclusive('\n').take(5).collect(),
            5,
            "the file ends where the `}` closing the upstream",
        ),
    ];
    assert_refused(table, run);
}
