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

/// Service blog/web's file for `flavor` (nginx's snippet, HAProxy's file) checked by that file's
/// own parser on a per-service [`host`], in output format `format`.
pub(super) fn check_blog_web(flavor: Flavor, text: &str, format: u32) -> Result<Checked, Refusal> {
    let check = match flavor {
        Flavor::Nginx => nginx::check,
        Flavor::Haproxy => haproxy::check,
    };
    check(
        &"blog/web".parse().expect("key"),
        text,
        &host(Layout::PerService, flavor),
        format,
    )
}

/// `svc`'s file for `flavor`, rendered on `lb-1` listening at `addresses` and sending to a [`node`]
/// at each of `nodes`.
pub(super) fn render_on_lb1(flavor: Flavor, svc: &ExposedService, addresses: &[&str], nodes: &[&str]) -> String {
    let addresses: Vec<IpAddr> = addresses.iter().map(|a| a.parse().expect("ip")).collect();
    let nodes: Vec<Node> = nodes.iter().map(|ip| node(ip)).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    render::service_to_nodes(flavor, svc, &"lb-1".parse().expect("host"), &addresses, &refs).expect("render")
}

/// `flavor`'s files of [`svc`] blog/web, as `edit` leaves it, with each (balance, PROXY protocol)
/// of `cases`, rendered on lb-1 at 127.1.1.5 and fd00:1::5: with nodes 10.0.0.1, fd00:9::1 and
/// 10.0.0.1 again, accepted with 4 binds (returned, one per case, for the caller's own checks);
/// without nodes, accepted binding nothing.
pub(super) fn assert_accepts_rendered(
    flavor: Flavor,
    cases: &[(Balance, bool)],
    edit: impl Fn(&mut ExposedService),
) -> Vec<Checked> {
    let addresses = ["127.1.1.5", "fd00:1::5"];
    let mut accepted = Vec::new();
    for &(balance, proxy_protocol) in cases {
        let mut s = svc("blog/web", balance, proxy_protocol);
        edit(&mut s);
        let text = render_on_lb1(flavor, &s, &addresses, &["10.0.0.1", "fd00:9::1", "10.0.0.1"]);
        let checked = check_blog_web(flavor, &text, 1).unwrap_or_else(|r| panic!("{r}:\n{text}"));
        assert_eq!(checked.binds.len(), 4, "{checked:?} from:\n{text}");
        let idle = render_on_lb1(flavor, &s, &addresses, &[]);
        assert_eq!(check_blog_web(flavor, &idle, 1), Ok(Checked::default()));
        accepted.push(checked);
    }
    accepted
}

/// What output format 2 adds to `flavor`'s file of [`tuned`] blog/web, rendered at 127.1.1.5 to
/// one node: the text holds each of `wants`; format 2 accepts it with `binds` binds, format 1
/// (which says none of it: an applier reading format 1 refuses it) does not; and format 2 refuses
/// each of `refused`, rows of [`edits`] of the text.
pub(super) fn assert_format_2(
    flavor: Flavor,
    balance: Balance,
    wants: &[&str],
    binds: usize,
    refused: &[(&str, &str, &str)],
) {
    let text = render_on_lb1(flavor, &tuned("blog/web", balance), &["127.1.1.5"], &["10.0.0.1"]);
    for want in wants {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    assert_eq!(check_blog_web(flavor, &text, 2).map(|c| c.binds.len()), Ok(binds));
    assert!(check_blog_web(flavor, &text, 1).is_err());
    assert_refused(edits(&text, refused), |t| check_blog_web(flavor, t, 2));
}

/// The rows of an [`assert_refused`] table made by editing `text`: each (from, to, fragment)
/// replaces the first `from` with `to`, and wants the refusal at the line where that `from`
/// began, with `fragment` in its reason.
pub(super) fn edits<'a>(text: &str, rows: &[(&str, &str, &'a str)]) -> Vec<(String, usize, &'a str)> {
    rows.iter()
        .map(|&(from, to, fragment)| {
            let at = text.find(from).unwrap_or_else(|| panic!("{from:?} is not in:\n{text}"));
            (
                text.replacen(from, to, 1),
                text[..at].matches('\n').count() + 1,
                fragment,
            )
        })
        .collect()
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
