//! Builders the grammar's unit tests share, and the tests of what `check` decides before any
//! parser runs: which file a path is, where each file may be, which formats are known.

use super::*;
use crate::annotations::{Balance, Settings};
use crate::config::Config;
use crate::exposure::{ExposedService, ServicePort};
use crate::nodes::Node;

/// `lb-1` with pools 127.1.1.0/24 and fd00:1::/120.
pub(super) fn host(layout: Layout, flavor: Flavor) -> LbHost {
    let config = Config::parse("zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.1.1.0/24, \"fd00:1::/120\"]}\n")
        .expect("config");
    let mut host = config.lb_hosts[0].clone();
    host.layout = layout;
    host.flavor = flavor;
    host
}

pub(super) fn node(ip: &str) -> Node {
    Node {
        name: format!("n-{ip}").into(),
        ip: ip.parse().expect("node ip"),
    }
}

/// `key` with TCP 80 → 30080 and UDP 53 → 30053.
pub(super) fn svc(key: &str, balance: Balance, proxy_protocol: bool) -> ExposedService {
    let mut s = crate::exposure::test_service(key, &[(Protocol::Tcp, 80, 30080), (Protocol::Udp, 53, 30053)]);
    s.settings = Settings {
        balance,
        proxy_protocol,
        ..Settings::default()
    };
    s.ports.sort_by_key(|p: &ServicePort| (p.protocol, p.port));
    s
}

/// [`svc`] with every traffic setting of format 2: two client ranges, both timeouts, one UDP
/// answer per session.
pub(super) fn tuned(key: &str, balance: Balance) -> ExposedService {
    let mut s = svc(key, balance, false);
    s.settings.traffic = std::sync::Arc::new(crate::traffic::Traffic {
        source_ranges: vec![
            "127.9.0.0/16".parse().expect("range"),
            "2001:db8::/32".parse().expect("range"),
        ],
        idle_timeout: Some(crate::traffic::Seconds(30)),
        connect_timeout: Some(crate::traffic::Seconds(7)),
        udp_responses: Some(1),
        backends: crate::traffic::Backends::Nodes,
    });
    s
}

/// Checks every (text, line, reason fragment) of `table` is refused at that line with that
/// fragment, and that no refusal's Display holds a control or line-separator character.
pub(super) fn assert_refused<T: std::fmt::Debug>(
    table: Vec<(String, usize, &str)>,
    check: impl Fn(&str) -> Result<T, Refusal>,
) {
    let mut failures = Vec::new();
    for (text, line, fragment) in table {
        match check(&text) {
            Ok(t) => failures.push(format!("accepted ({t:?}):\n{text}")),
            Err(r) => {
                let shown = r.to_string();
                if r.line != line || !r.reason.contains(fragment) {
                    failures.push(format!("want line {line} {fragment:?}, got {shown:?} for:\n{text}"));
                }
                if shown
                    .chars()
                    .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
                {
                    failures.push(format!("raw text in {shown:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn paths_name_the_generated_files_of_one_host() {
    let lb1: LbHostName = "lb-1".parse().expect("host");
    let key: ServiceKey = "blog/web".parse().expect("key");
    for (path, want) in [
        ("lb/lb-1/blog/web.conf", Some(LbFile::NginxService(key.clone()))),
        ("lb/lb-1/blog/web.map", Some(LbFile::ServiceMap(key.clone()))),
        ("lb/lb-1/blog/web.cfg", Some(LbFile::Haproxy(key.clone()))),
        ("lb/lb-1/_flipbit/listeners.conf", Some(LbFile::HostListeners)),
        ("lb/lb-1/_flipbit/nodes.conf", Some(LbFile::HostNodes)),
        ("lb/lb-2/blog/web.conf", None),
        ("lb/lb-2/_flipbit/nodes.conf", None),
        ("lb/lb-1/_flipbit/other.conf", None),
        ("lb/lb-1/_flipbit/nodes.map", None),
        ("lb/lb-1/blog/web.txt", None),
        ("lb/lb-1/blog/Web.conf", None),
        ("lb/lb-1/blog/web.map.conf", None),
        ("lb/lb-1/a/b/web.conf", None),
        ("lb/lb-1/blog_x/web.conf", None),
        ("dns/k.test/blog/web.zone", None),
        ("lb/lb-1/blog/web.conf/", None),
    ] {
        assert_eq!(LbFile::of_path(path, &lb1), want, "{path}");
    }
}

#[test]
fn files_only_where_the_generator_writes_them() {
    let key: ServiceKey = "blog/web".parse().expect("key");
    let nginx = host(Layout::PerService, Flavor::Nginx);
    let shared = host(Layout::SharedListeners, Flavor::Nginx);
    let haproxy = host(Layout::PerService, Flavor::Haproxy);
    let comment = "# nothing\n";
    for (file, on, ok) in [
        (LbFile::NginxService(key.clone()), &nginx, true),
        (LbFile::NginxService(key.clone()), &shared, true),
        (LbFile::NginxService(key.clone()), &haproxy, false),
        (LbFile::Haproxy(key.clone()), &haproxy, true),
        (LbFile::Haproxy(key.clone()), &nginx, false),
        (LbFile::ServiceMap(key.clone()), &shared, true),
        (LbFile::ServiceMap(key.clone()), &nginx, false),
        (LbFile::ServiceMap(key.clone()), &haproxy, false),
        (LbFile::HostListeners, &nginx, false),
        (LbFile::HostNodes, &nginx, false),
        (LbFile::HostNodes, &haproxy, false),
    ] {
        let got = check(&file, comment, on, 1);
        if ok {
            assert_eq!(got, Ok(Checked::default()), "{file:?} on {:?}", on.flavor);
        } else {
            assert_eq!(
                got.map_err(|r| r.line),
                Err(0),
                "{file:?} on {:?} {:?}",
                on.flavor,
                on.layout
            );
        }
    }
    let err = check(&LbFile::Haproxy(key.clone()), comment, &nginx, 1).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "line 0: LB host lb-1 runs nginx, and this file is haproxy's"
    );
}

#[test]
fn unknown_formats_are_refused() {
    let key: ServiceKey = "blog/web".parse().expect("key");
    let nginx = host(Layout::PerService, Flavor::Nginx);
    for format in [0, crate::format::OUTPUT_FORMAT + 1, u32::MAX] {
        let err = check(&LbFile::NginxService(key.clone()), "# x\n", &nginx, format).expect_err("refused");
        assert_eq!(
            err,
            Refusal {
                line: 0,
                reason: format!("output format {format} is not known to this version")
            }
        );
    }
}
