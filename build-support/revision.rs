// Shared by generator/build.rs and applier/build.rs (`include!`d): sets FLIPBIT_REVISION, the
// Git revision the binary is built from, for `--version`. A build from a tarball (no Git) or a
// package build may set FLIPBIT_REVISION itself; without either it is "unknown".

fn revision() -> String {
    if let Ok(given) = std::env::var("FLIPBIT_REVISION")
        && !given.is_empty()
    {
        return given;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Local changes are not marked: the build script reruns when HEAD moves, not on every
    // edit, so a mark would go stale. Release artifacts are built from clean checkouts.
    // Rebuild when HEAD moves: the files Git changes on a commit or a checkout.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for file in ["HEAD", "packed-refs"] {
            println!("cargo:rerun-if-changed={dir}/{file}");
        }
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head_ref}");
        }
    }
    commit
}

fn main() {
    println!("cargo:rerun-if-env-changed=FLIPBIT_REVISION");
    println!("cargo:rustc-env=FLIPBIT_REVISION={}", revision());
}
