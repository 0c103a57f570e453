//! The golden outputs pass the real tools: every nginx snippet `nginx -t` (included the way the
//! applier includes it), every HAProxy file `haproxy -c` (staged flat the way the applier stages
//! it), every zone fragment `named-checkzone`.

use std::path::Path;
use std::process::Command;

use flipbit_tests::nginx::STREAM_MODULE;
use flipbit_tests::tool;

/// IPv6 addresses the snippets under `dir` listen on (other than ::1, which loopback has).
fn ipv6_listens(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for ns in std::fs::read_dir(dir).unwrap().flatten() {
        for file in std::fs::read_dir(ns.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(file.path()).unwrap();
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("listen [")
                    && let Some((addr, _)) = rest.split_once(']')
                    && addr != "::1"
                {
                    out.push(addr.to_owned());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A network namespace with `addresses` on its loopback, deleted on drop; `None` unless root.
struct Netns(String);

impl Netns {
    fn with(addresses: &[String]) -> Option<Netns> {
        flipbit_tests::require(&[tool::ROOT, tool::IPROUTE])?;
        let name = format!("flipbit-golden-{}", std::process::id());
        let ip = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]).then_some(())?;
        for a in addresses {
            ip(&["-n", &ns.0, "addr", "add", &format!("{a}/128"), "dev", "lo"]).then_some(())?;
        }
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn golden_snippets_pass_nginx_t() {
    let Some(()) = flipbit_tests::require(&[tool::NGINX]) else {
        return;
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../generator/tests/golden");
    let mut checked = 0;
    for case in std::fs::read_dir(&golden).unwrap().flatten() {
        let lb = case.path().join("expected/lb");
        for host in std::fs::read_dir(&lb).unwrap().flatten() {
            let tmp = tempfile::tempdir().unwrap();
            let conf = tmp.path().join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "load_module {STREAM_MODULE};\npid {dir}/nginx.pid;\nevents {{}}\nstream {{\n    include {host}/*/*.conf;\n}}\n",
                    dir = tmp.path().display(),
                    host = host.path().display()
                ),
            )
            .unwrap();
            // nginx binds every listener even for -t, so IPv6 LB addresses must exist: they get
            // a network namespace of their own with those addresses on its loopback.
            let v6 = ipv6_listens(&host.path());
            let netns = if v6.is_empty() { None } else { Netns::with(&v6) };
            if !v6.is_empty() && netns.is_none() {
                flipbit_tests::skip(&format!(
                    "{}: IPv6 listeners need root for a network namespace",
                    host.path().display()
                ));
                continue;
            }
            let mut cmd = match &netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", &ns.0, "nginx"]);
                    c
                }
                None => Command::new("nginx"),
            };
            let out = cmd
                .arg("-t")
                .arg("-p")
                .arg(tmp.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(tmp.path().join("error.log"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                host.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} host directories checked");
}

/// The golden zone fragments of each case, assembled under an SOA and NS as a zone file, pass the
/// real `named-checkzone`.
#[test]
fn golden_zone_fragments_pass_named_checkzone() {
    let Some(()) = flipbit_tests::require(&[tool::NAMED_CHECKZONE]) else {
        return;
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../generator/tests/golden");
    let mut checked = 0;
    for case in std::fs::read_dir(&golden).unwrap().flatten() {
        let dns = case.path().join("expected/dns");
        for zone in std::fs::read_dir(&dns).unwrap().flatten() {
            let name = zone.file_name().to_string_lossy().into_owned();
            let mut text = format!(
                "$TTL 300\n@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 300\n@ IN NS ns.{name}.\nns IN A 127.0.0.1\n"
            );
            let mut fragments = 0;
            for ns in std::fs::read_dir(zone.path()).unwrap().flatten() {
                for file in std::fs::read_dir(ns.path()).unwrap().flatten() {
                    text.push_str(&std::fs::read_to_string(file.path()).unwrap());
                    fragments += 1;
                }
            }
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("zone.db");
            std::fs::write(&path, &text).unwrap();
            let out = Command::new("named-checkzone")
                .arg("-i")
                .arg("full")
                .arg(&name)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}\n{text}",
                zone.path().display(),
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(fragments >= 3, "{}: only {fragments} fragments", zone.path().display());
            checked += 1;
        }
    }
    let cases = std::fs::read_dir(&golden).unwrap().count();
    assert_eq!(checked, cases, "expected one zone per golden case");
}

#[test]
fn golden_haproxy_files_pass_haproxy_c() {
    let Some(()) = flipbit_tests::require(&[tool::HAPROXY]) else {
        return;
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../generator/tests/golden");
    let mut checked = 0;
    for host in std::fs::read_dir(golden.join("haproxy/expected/lb")).unwrap().flatten() {
        let mut files = 0;
        let tmp = tempfile::tempdir().unwrap();
        for ns in std::fs::read_dir(host.path()).unwrap().flatten() {
            for file in std::fs::read_dir(ns.path()).unwrap().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if let Some(svc) = name.strip_suffix(".cfg") {
                    let flat = format!("{}.{svc}.cfg", ns.file_name().to_string_lossy());
                    std::fs::copy(file.path(), tmp.path().join(flat)).unwrap();
                    files += 1;
                }
            }
        }
        if files == 0 {
            continue;
        }
        let main = tmp.path().join("main.cfg.d");
        std::fs::create_dir(&main).unwrap();
        std::fs::write(main.join("haproxy.cfg"), "global\n    nbthread 1\n").unwrap();
        let out = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(main.join("haproxy.cfg"))
            .arg("-f")
            .arg(tmp.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", host.path().display());
        assert!(!stderr.contains("[WARNING]"), "{}: {stderr}", host.path().display());
        checked += files;
    }
    assert!(checked >= 4, "only {checked} HAProxy files checked");
}
