//! Golden tests of the rendered tree: `golden/<case>/` holds the input manifests (or points at the
//! example) and `expected/`, the exact files a first render writes. Review changes to `expected/`
//! like code; regenerate with `UPDATE_GOLDEN=1 cargo test -p flipbit-generator --test golden`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flipbit_core::config::Config;
use flipbit_core::decide::decide;
use flipbit_core::ledger::Ledger;

fn read_tree(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if entry.path().is_dir() {
            read_tree(&entry.path(), &rel, out);
        } else {
            out.insert(rel, std::fs::read_to_string(entry.path()).unwrap());
        }
    }
}

fn check(case: &str, config: PathBuf, manifests: PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(case);
    let config = Config::parse(&std::fs::read_to_string(config).unwrap()).unwrap();
    let (snapshot, problems) = flipbit_generator::manifests::load_dir(&manifests).unwrap();
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let decision = decide(&snapshot, &config, &Ledger::empty(), now);
    let mut actual = decision.files.clone();
    let mut report: Vec<String> = problems
        .iter()
        .chain(&decision.problems)
        .map(|p| format!("{p}\n"))
        .collect();
    report.sort();
    actual.insert("problems.txt".into(), report.concat());

    let expected_dir = root.join("expected");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&expected_dir);
        for (path, text) in &actual {
            let p = expected_dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }
    let mut expected = BTreeMap::new();
    read_tree(&expected_dir, "", &mut expected);
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{case}: the set of rendered files differs from {}",
        expected_dir.display()
    );
    for (path, text) in &actual {
        assert_eq!(text, &expected[path], "{case}: {path} differs from the golden file");
    }
}

#[test]
fn golden_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-repo-example");
    check("example", example.join("flipbit.yaml"), example.join("cluster"));
}

#[test]
fn golden_features() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/features");
    check("features", case.join("flipbit.yaml"), case.join("input"));
}

/// One HAProxy host (lb-1, dual-stack pools) beside an nginx host: TCP ports as frontends and
/// backends, UDP ports skipped with a warning, a UDP-only Service without an address on lb-1.
#[test]
fn golden_haproxy() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/haproxy");
    check("haproxy", case.join("flipbit.yaml"), case.join("input"));
}
