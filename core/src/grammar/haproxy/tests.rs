//! The HAProxy grammar against `render::haproxy::service`, and a refusal per way a hand
//! edit could reach HAProxy: other sections, other directives, foreign names, binds, servers.

use super::super::tests::{assert_accepts_rendered, assert_format_2, assert_refused, check_blog_web};
use super::*;
use crate::annotations::Balance;
use crate::config::Flavor;

const BASE: &str = "# Flipbit: Service blog/web on LB host lb-1 (HAProxy: TCP only).\n# UDP/53 is not served on this host: HAProxy carries TCP only.\n\nfrontend flipbit_blog_web_80\n    mode tcp\n    bind 127.1.1.5:80\n    bind [fd00:1::5]:80\n    timeout client 10m\n    default_backend flipbit_blog_web_80\n\nbackend flipbit_blog_web_80\n    mode tcp\n    balance source\n    hash-type consistent\n    timeout connect 5s\n    timeout server 10m\n    retries 2\n    option redispatch\n    server 10.0.0.1:30080 10.0.0.1:30080 check send-proxy-v2\n    server fd00:9::1:30080 [fd00:9::1]:30080 check send-proxy-v2\n";

fn run(text: &str) -> Result<Checked, Refusal> {
    check_blog_web(Flavor::Haproxy, text, 1)
}

#[test]
fn format_2_adds_client_ranges_and_timeouts() {
    assert_format_2(
        Flavor::Haproxy,
        Balance::RoundRobin,
        &[
            "    bind 127.1.1.5:80\n    acl flipbit_allowed src 127.9.0.0/16 2001:db8::/32\n    tcp-request connection reject if !flipbit_allowed\n    timeout client 30s\n",
            "    timeout connect 7s\n    timeout server 30s\n",
        ],
        1,
        &[
            (" 127.9.0.0/16", " 127.9.0.1/16", "client range"),
            (" src 127.9.0.0/16 2001:db8::/32", " src", "acl flipbit_allowed"),
            ("reject if !flipbit_allowed", "accept", "tcp-request connection reject"),
            ("timeout server 30s", "timeout server 31s", "timeout server 30s"),
            ("timeout client 30s", "timeout client 2d", "idle timeout"),
            ("timeout connect 7s", "timeout connect 0s", "connect timeout"),
        ],
    );
}

#[test]
fn accepts_what_the_renderer_writes() {
    let cases = [
        (Balance::RoundRobin, false),
        (Balance::LeastConn, true),
        (Balance::Hash, true),
    ];
    assert_accepts_rendered(Flavor::Haproxy, &cases, |s| s.ports[1].protocol = Protocol::Tcp);
    let binds = run(BASE).expect("accepted").binds;
    assert_eq!(
        binds.iter().map(|b| (b.protocol, b.port)).collect::<Vec<_>>(),
        [(Protocol::Tcp, 80); 2]
    );
}

#[test]
fn refuses_anything_else() {
    let r = |from: &str, to: &str| BASE.replacen(from, to, 1);
    let tail = BASE[BASE.find("frontend").unwrap_or(0)..]
        .replace("_80", "_81")
        .replace(":80", ":81");
    let two = |from: &str, to: &str| format!("{BASE}\n{}", tail.replacen(from, to, 1));
    let table: Vec<(String, usize, &str)> = vec![
        (
            format!("global\n    log /dev/log local0\n{BASE}"),
            1,
            "expected `frontend",
        ),
        (
            format!("{BASE}\nlisten ssh\n    bind 127.1.1.5:22\n"),
            22,
            "expected `frontend",
        ),
        (
            format!("{BASE}    http-request return status 200 file /etc/shadow\n"),
            21,
            "expected `server",
        ),
        (
            r(
                "    timeout client 10m",
                "    log-format %[env(SECRET)]\n    timeout client 10m",
            ),
            8,
            "found \"log-format\"",
        ),
        (r("bind 127.1.1.5:80", "bind 127.1.1.5:22"), 6, "binds port 22"),
        (
            r("bind 127.1.1.5:80", "bind 10.9.9.9:80"),
            6,
            "address 10.9.9.9 is outside LB host lb-1's pools",
        ),
        (
            r("bind 127.1.1.5:80", "bind 127.1.1.5:80 ssl crt /etc/shadow"),
            6,
            "arguments differ",
        ),
        (r("bind 127.1.1.5:80", "bind :80"), 6, "\":80\""),
        (
            r("    bind [fd00:1::5]:80\n", "    bind 127.1.1.5:80\n"),
            7,
            "a second `bind`",
        ),
        (
            r("    bind 127.1.1.5:80\n    bind [fd00:1::5]:80\n", ""),
            6,
            "found \"timeout\"",
        ),
        (
            r("frontend flipbit_blog_web_80", "frontend flipbit_other_web_80"),
            4,
            "a proxy of Service blog/web",
        ),
        (
            r("frontend flipbit_blog_web_80", "frontend flipbit_blog_web_0"),
            4,
            "\"0\" is not a port",
        ),
        (
            r("frontend flipbit_blog_web_80", "frontend  flipbit_blog_web_80"),
            4,
            "exactly one space",
        ),
        (
            r("\nbackend flipbit_blog_web_80", "\nbackend flipbit_other_web_80"),
            11,
            "expected `backend flipbit_blog_web_80`",
        ),
        (
            r(
                "default_backend flipbit_blog_web_80",
                "default_backend flipbit_other_web_80",
            ),
            9,
            "arguments differ",
        ),
        (
            r("    mode tcp\n    bind", "    mode http\n    bind"),
            5,
            "arguments differ",
        ),
        (
            r("    hash-type consistent\n", ""),
            14,
            "expected `hash-type consistent`",
        ),
        (
            r("balance source", "balance roundrobin"),
            14,
            "expected `timeout connect <seconds>`",
        ),
        (
            r("balance source", "balance uri"),
            13,
            "expected `balance roundrobin|leastconn|source`",
        ),
        (r("    retries 2", "    retries 2 #"), 17, "arguments differ"),
        (
            r("    server 10.0.0.1:30080 10.0.0.1", "    server web 10.0.0.1"),
            19,
            "\"web\" is not named after its address",
        ),
        (
            r("10.0.0.1:30080 check send-proxy-v2", "10.0.0.1:30080 check"),
            20,
            "send-proxy-v2 on some servers",
        ),
        (
            r("10.0.0.1:30080 check send-proxy-v2", "127.0.0.1:22 check send-proxy-v2"),
            19,
            "not named after",
        ),
        (
            r("[fd00:9::1]:30080 check", "[fd00:9::1]:30080 check inter 1"),
            20,
            "expected `server",
        ),
        (
            r(
                "    server fd00:9::1:30080 [fd00:9::1]:30080",
                "    server 10.0.0.1:30080 10.0.0.1:30080",
            ),
            20,
            "a second server",
        ),
        (
            BASE.split_inclusive('\n').take(18).collect(),
            11,
            "a backend without a `server`",
        ),
        (
            BASE.split_inclusive('\n').take(10).collect(),
            10,
            "the file ends where `backend",
        ),
        (
            format!("{BASE}{}", &BASE[BASE.find("\nfrontend").unwrap_or(0)..]),
            22,
            "a second frontend for port 80",
        ),
        (
            two(
                "    balance source\n    hash-type consistent\n",
                "    balance leastconn\n",
            ),
            29,
            "balance: not as",
        ),
        (two("    bind [fd00:1::5]:81\n", ""), 22, "bind addresses: not as"),
        (
            format!("{BASE}\n{}", tail.replace(" send-proxy-v2", "")),
            29,
            "PROXY protocol: not as",
        ),
        (BASE.replace('\n', "\r\n"), 1, "'\\r'"),
        (r("    mode tcp\n    bind", "\tmode tcp\n    bind"), 5, "'\\t'"),
    ];
    assert_refused(table, run);
    assert!(run(&two("", "")).is_ok());
}
