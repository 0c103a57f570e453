//! The golden outputs pass the real tools: every nginx snippet `nginx -t` (included the way the
//! applier includes it), every zone fragment `named-checkzone`.

use std::path::Path;
use std::process::Command;

use flipbit_tests::have_nginx;
use flipbit_tests::nginx::STREAM_MODULE;

#[test]
fn golden_snippets_pass_nginx_t() {
    if !have_nginx() {
        eprintln!("skipped: nginx with the stream module is not installed");
        return;
    }
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
            let out = Command::new("nginx")
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
    assert!(checked >= 5, "only {checked} host directories checked");
}

/// The golden zone fragments of each case, assembled under an SOA and NS as a zone file, pass the
/// real `named-checkzone`.
#[test]
fn golden_zone_fragments_pass_named_checkzone() {
    if Command::new("named-checkzone").arg("-v").output().is_err() {
        eprintln!("skipped: named-checkzone (bind9) is not installed");
        return;
    }
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
    assert_eq!(checked, 2, "expected one zone per golden case");
}
