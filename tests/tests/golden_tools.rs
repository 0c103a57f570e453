//! Every golden snippet passes the real `nginx -t` when included the way the applier includes it.

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
