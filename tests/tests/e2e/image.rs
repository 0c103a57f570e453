//! The generator's container image as scripts/image writes it (target/artifacts/*.oci.tar), loaded
//! into a private podman store and run the way a cluster runs it: as uid 65532, read-only root,
//! no network. It must say its version and revision, carry its labels, hold no shell, and render
//! the example into a mounted bare repo exactly as the generator built from this tree does.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use flipbit_tests::podman::{self, Podman};
use flipbit_tests::{bins, repo};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The uid and gid the image runs as (deploy/kubernetes/base/deployment.yaml runs it so too).
const UID: u32 = 65532;
/// Decisions are made at a fixed time, so two renders of the same input give the same commit.
const NOW: &str = "2026-01-01T00:00:00Z";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn archive() -> PathBuf {
    workspace().join(format!("target/artifacts/flipbit-generator-{VERSION}.oci.tar"))
}

/// The archive scripts/image wrote, or a skip (a failure under scripts/test) when it is missing.
fn built_archive() -> Option<PathBuf> {
    let archive = archive();
    if !archive.exists() {
        flipbit_tests::skip(&format!(
            "{} is missing: run scripts/image first (scripts/test does)",
            archive.display()
        ));
        return None;
    }
    Some(archive)
}

/// Every blob file under `lb/` and `dns/` plus the ledger, with its content, at the head of `main`.
fn rendered(bare: &Path) -> BTreeMap<String, String> {
    let mut files: Vec<String> = repo::files_under(bare, "");
    files.retain(|f| f != "flipbit.yaml");
    files
        .into_iter()
        .map(|f| {
            let text = repo::read(bare, &f).unwrap_or_default();
            (f, text)
        })
        .collect()
}

/// A bare state repo holding the example's flipbit.yaml.
fn example_repo(path: &Path) -> PathBuf {
    let config = std::fs::read_to_string(workspace().join("state-repo-example/flipbit.yaml")).expect("example config");
    repo::create(path, &BTreeMap::from([("flipbit.yaml", config)])).expect("bare repo")
}

fn chown_tree(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .status()
        .expect("running chown");
    assert!(status.success(), "chown -R {uid} {}", path.display());
}

#[test]
fn the_image_runs_the_generator_as_a_cluster_would() {
    let Some(archive) = built_archive() else { return };
    if let Some(why) = podman::unavailable() {
        flipbit_tests::skip(&why);
        return;
    }
    let podman = Podman::private_store();
    let archive_arg = archive.display().to_string();
    let loaded = podman.ok(&["load", "--quiet", "--input", &archive_arg]);
    let image = format!("localhost/flipbit-generator:{VERSION}");
    assert!(loaded.contains(&image), "podman load said: {loaded}");

    // Labels, user and entrypoint, as podman reads them from the archive.
    let inspect: Value = serde_json::from_str(&podman.ok(&["image", "inspect", &image])).expect("inspect JSON");
    let config = &inspect[0]["Config"];
    let label = |name: &str| config["Labels"][name].as_str().unwrap_or_default().to_string();
    assert_eq!(label("org.opencontainers.image.version"), VERSION, "{config:#}");
    assert_eq!(label("org.opencontainers.image.title"), "flipbit-generator");
    assert!(!label("org.opencontainers.image.source").is_empty(), "{config:#}");
    let revision = label("org.opencontainers.image.revision");
    assert!(
        revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "the revision label is not a commit id: {revision:?}"
    );
    assert_eq!(config["User"], format!("{UID}:{UID}"), "{config:#}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/flipbit-generator"])
    );
    let size = inspect[0]["Size"].as_u64().unwrap_or(u64::MAX);
    eprintln!("image {image}: {} KiB unpacked", size / 1024);
    assert!(
        size <= 30 * 1024 * 1024,
        "the image holds {size} bytes, more than 30 MB"
    );

    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none", "--read-only"];
        args.extend_from_slice(extra);
        podman.run(&args)
    };

    // --version names the revision the label names.
    let out = run(&[&image, "--version"]);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "--version: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!("flipbit-generator {VERSION} ({})", &revision[..12]);
    assert_eq!(said, expected);

    // Nothing but the generator to run: no shell (FROM scratch).
    let out = run(&["--entrypoint", "/bin/sh", &image, "-c", "true"]);
    assert!(!out.status.success(), "/bin/sh ran in the image");
    let files = file_list(&podman, &image);
    let expected_dirs = ["etc/", "tmp/", "usr/"];
    for f in &files {
        assert!(
            expected_dirs
                .iter()
                .any(|d| f.path.starts_with(d) || f.path == d.trim_end_matches('/'))
                || f.path.starts_with("lib"),
            "unexpected file in the image: {}",
            f.path
        );
    }
    let find = |path: &str| files.iter().find(|f| f.path == path);
    assert!(find("bin/sh").is_none() && find("usr/bin/sh").is_none());
    assert_eq!(find("tmp").map(|f| f.mode.as_str()), Some("drwxrwxrwt"), "{files:#?}");
    assert!(
        find("etc/ssl/certs/ca-certificates.crt").is_some_and(|f| f.size > 1000),
        "{files:#?}"
    );
    assert!(find("usr/local/bin/flipbit-generator").is_some(), "{files:#?}");
    let passwd = extract(&podman, &image, "etc/passwd");
    assert!(passwd.lines().any(|l| l.split(':').nth(2) == Some("65532")), "{passwd}");
    let group = extract(&podman, &image, "etc/group");
    assert!(group.lines().any(|l| l.split(':').nth(2) == Some("65532")), "{group}");

    // validate, as the README's state-repo CI job runs it: a read-only checkout, no network.
    let checkout = format!("{}:/repo:ro", workspace().join("state-repo-example").display());
    let out = run(&["--volume", &checkout, &image, "validate", "--dir", "/repo"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with("ok: /repo"),
        "validate in the container: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // render: the example, from a read-only manifests folder into a mounted bare repo.
    let bare = example_repo(&podman.path("state.git"));
    chown_tree(&bare, UID);
    let before = repo::head(&bare);
    let files_before = walk_files(&bare).len();
    let manifests = workspace().join("state-repo-example/cluster");
    let repo_mount = format!("{}:/state.git", bare.display());
    let manifests_mount = format!("{}:/manifests:ro", manifests.display());
    let out = run(&[
        "--volume",
        &repo_mount,
        "--volume",
        &manifests_mount,
        &image,
        "render",
        "--repo",
        "/state.git",
        "--manifests",
        "/manifests",
        "--now",
        NOW,
    ]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "render in the container: {log}");
    assert_ne!(repo::head(&bare), before, "no commit landed: {log}");
    assert_eq!(repo::commit_count(&bare), 2, "{log}");
    let in_container = rendered(&bare);
    // Run as uid 65532: a file takes its creator's uid, and before the render every file of the
    // repo was chowned to 65532, so a new file of any other owner (root) would show here.
    let after = walk_files(&bare);
    assert!(after.len() > files_before, "the render wrote no file into the repo");
    let owners: std::collections::BTreeSet<u32> = after.iter().map(|m| m.uid()).collect();
    assert_eq!(owners, [UID].into(), "owners of the repo's files after the render");

    // The generator built from this tree renders the same files from the same input.
    let host_repo = example_repo(&podman.path("host.git"));
    let out = Command::new(bins::generator())
        .args(["render", "--repo"])
        .arg(&host_repo)
        .arg("--manifests")
        .arg(&manifests)
        .args(["--now", NOW])
        .output()
        .expect("running flipbit-generator");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let on_host = rendered(&host_repo);
    assert!(
        on_host.keys().any(|f| f.starts_with("lb/")) && on_host.keys().any(|f| f.starts_with("dns/")),
        "{:?}",
        on_host.keys()
    );
    assert_eq!(
        in_container.keys().collect::<Vec<_>>(),
        on_host.keys().collect::<Vec<_>>(),
        "the image rendered other files than this tree's generator (is the archive stale? rerun scripts/image)"
    );
    for (file, text) in &on_host {
        assert_eq!(
            in_container.get(file),
            Some(text),
            "{file} differs (is the archive stale? rerun scripts/image)"
        );
    }
}

/// One entry of the image's file system, as `tar -tv` lists it.
#[derive(Debug)]
struct Entry {
    path: String,
    mode: String,
    size: u64,
}

/// The image's file system, read from an exported container (never started).
fn file_list(podman: &Podman, image: &str) -> Vec<Entry> {
    let tar = export(podman, image);
    let out = Command::new("tar").arg("-tvf").arg(&tar).output().expect("running tar");
    assert!(
        out.status.success(),
        "tar -tvf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mode owner size date time path [-> target]
            let path = fields.get(5)?.trim_start_matches("./").trim_end_matches('/');
            Some(Entry {
                path: path.to_string(),
                mode: fields.first()?.to_string(),
                size: fields.get(2)?.parse().ok()?,
            })
        })
        .filter(|e| !e.path.is_empty() && e.path != ".")
        .collect()
}

fn export(podman: &Podman, image: &str) -> PathBuf {
    let tar = podman.path("rootfs.tar");
    if !tar.exists() {
        let id = podman.ok(&["create", image]).trim().to_string();
        let tar_arg = tar.display().to_string();
        podman.ok(&["export", "--output", &tar_arg, &id]);
        podman.ok(&["rm", &id]);
    }
    tar
}

fn extract(podman: &Podman, image: &str, path: &str) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(export(podman, image))
        .arg(path)
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "tar -xOf {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn walk_files(dir: &Path) -> Vec<std::fs::Metadata> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            out.extend(walk_files(&entry.path()));
        } else {
            out.push(meta);
        }
    }
    out
}

/// An air-gapped site copies the archive with skopeo (into a registry, or a directory as here):
/// skopeo must read it as an image with the generator's labels and one entrypoint.
#[test]
fn skopeo_copies_the_archive_as_an_air_gapped_site_would() {
    let Some(archive) = built_archive() else { return };
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::SKOPEO]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = format!(
        "oci:{}:flipbit-generator:{VERSION}",
        dir.path().join("layout").display()
    );
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo")
            .args(["--tmpdir", &dir.path().display().to_string()])
            .args(args)
            .output()
            .expect("running skopeo");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "skopeo {args:?}: {said}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci-archive:{}", archive.display()),
        &layout,
    ]);
    let inspect: Value = serde_json::from_str(&skopeo(&["inspect", "--config", &layout])).expect("skopeo inspect JSON");
    let config = &inspect["config"];
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"].as_str(),
        Some(VERSION),
        "{inspect:#}"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/flipbit-generator"])
    );
    assert_eq!(config["User"], format!("{UID}:{UID}"), "{inspect:#}");
}
