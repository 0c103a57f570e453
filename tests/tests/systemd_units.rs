//! The shipped systemd units pass `systemd-analyze verify` (with ExecStart pointed at the binary
//! this build produced, since verify checks that it exists).

use std::process::Command;

#[test]
fn applier_units_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        flipbit_tests::skip("systemd-analyze is not installed");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(root.join("deploy/systemd/flipbit-applier.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/flipbit-applier apply"));
    let service = service.replace(
        "/usr/local/bin/flipbit-applier",
        &flipbit_tests::bins::applier().display().to_string(),
    );
    std::fs::write(dir.path().join("flipbit-applier.service"), service).unwrap();
    std::fs::copy(
        root.join("deploy/systemd/flipbit-applier.timer"),
        dir.path().join("flipbit-applier.timer"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("flipbit-applier.service"))
        .arg(dir.path().join("flipbit-applier.timer"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("flipbit-applier"),
        "warnings about the units: {stderr}"
    );
}
