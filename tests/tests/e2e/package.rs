//! The LB host's package and units. From the source tree (no root): the units pass
//! `systemd-analyze verify`, both services carry the same sandbox, and the sandbox lets the
//! applier write where its defaults point. From the package `scripts/package` built (root): `dpkg
//! -i` puts every file in place with its mode, the installed units verify, the binary names the
//! package's version and its revision, the nginx stream block it ships loads a release under real
//! `nginx -t`, `dpkg -r` keeps the state dir and the conffile, and `dpkg -P` removes the conffile
//! and the state dir, or keeps the state dir while a load balancer's config still loads from it.
//! The package test installs onto this machine and purges what it installed at the end, also on
//! a panic; the other tests run private nginx instances and never touch these paths.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flipbit_tests::cluster::text;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::unit_sandbox::Sandbox;
use flipbit_tests::{probe, tool};

const PACKAGE: &str = "flipbit-applier";
const SERVICES: [&str; 2] = ["flipbit-applier.service", "flipbit-applier-watch.service"];
const TIMER: &str = "flipbit-applier.timer";
const STATE_DIR: &str = "/var/lib/flipbit";
const CONFFILE: &str = "/etc/default/flipbit-applier";
/// Where an operator installs the HAProxy drop-in (deploy/systemd/haproxy.service.d/flipbit.conf).
const HAPROXY_DROP_IN: &str = "/etc/systemd/system/haproxy.service.d/flipbit.conf";

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd` and returns its stdout, failing the test with its stderr when it fails.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `systemd-analyze verify` on unit files: it must pass and say nothing about them.
fn verify_units(units: &[PathBuf]) {
    let out = run(Command::new("systemd-analyze").arg("verify").args(units));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify {units:?}: {stderr}");
    assert!(!stderr.contains("flipbit"), "warnings about the units: {stderr}");
}

/// The lines between the sandbox markers of a service file.
fn sandbox(unit: &str) -> Vec<&str> {
    let lines: Vec<&str> = unit.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("# --- sandbox"));
    let end = lines.iter().position(|l| l.starts_with("# --- end of sandbox"));
    match (start, end) {
        (Some(start), Some(end)) if start < end => lines[start + 1..end].to_vec(),
        _ => panic!("no sandbox markers in:\n{unit}"),
    }
}

/// The values of every `key=` line of a unit, split on white space.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(str::split_whitespace)
        .collect()
}

/// The default of `flag` as `flipbit-applier apply --help` prints it.
fn default_of(help: &str, flag: &str) -> PathBuf {
    let at = help
        .find(&format!("{flag} <"))
        .unwrap_or_else(|| panic!("{flag} not in --help"));
    let rest = &help[at..];
    let value = rest
        .find("[default: ")
        .map(|i| &rest[i + "[default: ".len()..])
        .and_then(|v| v.split(']').next())
        .unwrap_or_else(|| panic!("no default for {flag}"));
    PathBuf::from(value)
}

#[test]
fn units_verify_from_the_source_tree() {
    let Some(()) = flipbit_tests::require(&[tool::SYSTEMD_ANALYZE]) else {
        return;
    };
    let applier = flipbit_tests::bins::applier();
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in SERVICES {
        let text = read(source("deploy/systemd").join(name));
        assert!(text.contains("ExecStart=/usr/bin/flipbit-applier "), "{name}: {text}");
        // verify checks that ExecStart exists: point it at the binary this build produced.
        let text = text.replace("/usr/bin/flipbit-applier", &applier.display().to_string());
        std::fs::write(dir.path().join(name), text).unwrap();
        units.push(dir.path().join(name));
    }
    std::fs::copy(source("deploy/systemd").join(TIMER), dir.path().join(TIMER)).unwrap();
    units.push(dir.path().join(TIMER));
    verify_units(&units);
}

#[test]
fn services_share_one_sandbox_that_fits_the_applier_defaults() {
    let oneshot = read(source("deploy/systemd").join(SERVICES[0]));
    let watch = read(source("deploy/systemd").join(SERVICES[1]));
    assert_eq!(sandbox(&oneshot), sandbox(&watch), "the two services' sandboxes differ");
    assert!(unit_values(&watch, "Conflicts").contains(&TIMER), "{watch}");

    let help = ok(Command::new(flipbit_tests::bins::applier()).args(["apply", "--help"]));
    let writable: Vec<&str> = unit_values(&oneshot, "ReadWritePaths")
        .into_iter()
        .map(|p| p.trim_start_matches('-'))
        .collect();
    // The state dir; the main config's directory (the test copy `nginx -t` checks is written
    // beside it); the pid file's (`nginx -t` opens it read-write).
    let state = default_of(&help, "--state-dir");
    let conf = default_of(&help, "--nginx-conf");
    let pid = default_of(&help, "--nginx-pid");
    for needed in [state.as_path(), conf.parent().unwrap(), pid.parent().unwrap()] {
        assert!(
            writable.contains(&needed.to_str().unwrap()),
            "ReadWritePaths {writable:?} lacks {}",
            needed.display()
        );
    }
    assert_eq!(state, Path::new(STATE_DIR));
    let snippet = read(source("deploy/nginx/flipbit-stream.conf"));
    assert!(
        snippet.contains(&format!("include {}/current/*/*.conf;", state.display())),
        "the nginx stream block does not include the default state dir's release: {snippet}"
    );
}

/// Puts the machine back as it was: purges the package and removes what the test added.
struct Restore {
    state_dir_was_there: bool,
    drop_in_added: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).output();
        if self.drop_in_added {
            let _ = std::fs::remove_file(HAPROXY_DROP_IN);
            let _ = std::fs::remove_dir(Path::new(HAPROXY_DROP_IN).parent().unwrap());
        }
        if !self.state_dir_was_there {
            let _ = std::fs::remove_dir_all(STATE_DIR);
        }
    }
}

fn dpkg_status() -> Option<String> {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|s| !s.contains("not-installed"))
}

/// True when an installed conffile no longer has the checksum dpkg recorded for it.
fn conffile_changed() -> bool {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    let listed = String::from_utf8_lossy(&out.stdout);
    let Some(recorded) = listed
        .lines()
        .find_map(|l| l.trim().strip_prefix(CONFFILE)?.split_whitespace().next())
    else {
        return false;
    };
    Path::new(CONFFILE).exists() && !ok(Command::new("md5sum").arg(CONFFILE)).starts_with(recorded)
}

fn field(deb: &Path, name: &str) -> String {
    ok(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_owned()
}

fn mode_of(path: &str) -> u32 {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} is not root's");
    meta.permissions().mode() & 0o7777
}

/// The package `scripts/package` built for this workspace's version.
fn built_package() -> Option<PathBuf> {
    let arch = ok(Command::new("dpkg").arg("--print-architecture")).trim().to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| source("target"), PathBuf::from);
    let deb = target
        .join("artifacts")
        .join(format!("{PACKAGE}_{}_{arch}.deb", env!("CARGO_PKG_VERSION")));
    deb.exists().then_some(deb)
}

#[test]
fn package_installs_removes_and_purges() {
    // Root to install a package.
    let Some(()) = flipbit_tests::require(&[tool::ROOT, tool::DPKG, tool::SYSTEMD_ANALYZE]) else {
        return;
    };
    let Some(deb) = built_package() else {
        flipbit_tests::skip(
            "no flipbit-applier .deb under target/artifacts: run scripts/package first (scripts/test does)",
        );
        return;
    };
    // Never over an operator's install: a conffile changed since it was installed (a run killed
    // before its purge leaves an unchanged one), or a state dir without the package.
    if conffile_changed() || (dpkg_status().is_none() && Path::new(STATE_DIR).exists()) {
        flipbit_tests::skip("this machine has a configured flipbit-applier or a /var/lib/flipbit of its own");
        return;
    }
    let mut restore = Restore {
        state_dir_was_there: false,
        drop_in_added: false,
    };

    ok(Command::new("dpkg").arg("--install").arg(&deb));
    let status = dpkg_status().unwrap_or_default();
    assert!(status.contains("install ok installed"), "{status}");
    let version = field(&deb, "Version");
    let depends = field(&deb, "Depends");
    assert!(depends.contains("libc6 (>= "), "Depends from dpkg-shlibdeps: {depends}");
    assert!(field(&deb, "Recommends").contains("libnginx-mod-stream"));

    // Every file in place, root's, with its mode, and the same bytes as in the source tree.
    let shipped = [
        (
            "/usr/share/flipbit/nginx-stream.conf",
            "deploy/nginx/flipbit-stream.conf",
            0o644,
        ),
        (
            "/usr/share/flipbit/haproxy.service.d/flipbit.conf",
            "deploy/systemd/haproxy.service.d/flipbit.conf",
            0o644,
        ),
        (
            "/usr/share/flipbit/manage-addresses.conf",
            "deploy/systemd/manage-addresses.conf",
            0o644,
        ),
        (CONFFILE, "deploy/systemd/flipbit-applier.env.example", 0o600),
        ("/usr/share/doc/flipbit-applier/lb-host.md", "docs/lb-host.md", 0o644),
    ];
    let units =
        [SERVICES[0], SERVICES[1], TIMER].map(|u| (format!("/lib/systemd/system/{u}"), format!("deploy/systemd/{u}")));
    let units_shipped = units.iter().map(|(to, from)| (to.as_str(), from.as_str(), 0o644));
    for (installed, from, mode) in shipped.into_iter().chain(units_shipped) {
        assert_eq!(mode_of(installed), mode, "mode of {installed}");
        assert_eq!(read(installed), read(source(from)), "{installed} differs from {from}");
    }
    assert_eq!(mode_of("/usr/bin/flipbit-applier"), 0o755);
    assert_eq!(mode_of(STATE_DIR), 0o750, "the state dir's mode");
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(conffiles.contains(CONFFILE), "conffiles: {conffiles}");

    let installed_units: Vec<PathBuf> = units.iter().map(|(to, _)| PathBuf::from(to)).collect();
    verify_units(&installed_units);

    // `flipbit-applier <version> (<revision>)`.
    let printed = ok(Command::new("/usr/bin/flipbit-applier").arg("--version"));
    let revision = printed
        .trim()
        .strip_prefix(&format!("{PACKAGE} {version} ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version says {printed:?}, the package is {version}"));
    assert!(
        revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "no Git revision in {printed:?}"
    );

    // Without nginx the stream block is not checked.
    if flipbit_tests::require(&[tool::NGINX]).is_some() {
        stream_block_loads_the_current_release();
        the_units_sandbox_runs_an_apply_on_port_80();
    }

    // Removed: the binary and units go, the conffile and the state dir stay.
    std::fs::write(Path::new(STATE_DIR).join("journal"), "kept\n").unwrap();
    ok(Command::new("dpkg").args(["--remove", PACKAGE]));
    assert!(dpkg_status().unwrap_or_default().contains("config-files"));
    assert!(!Path::new("/usr/bin/flipbit-applier").exists());
    assert!(!installed_units[0].exists());
    assert_eq!(read(Path::new(STATE_DIR).join("journal")), "kept\n");
    assert!(Path::new(CONFFILE).exists(), "dpkg -r removed the conffile");

    // Purged: the conffile goes and, with nothing loading from it, the state dir too.
    ok(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert_eq!(dpkg_status(), None);
    assert!(!Path::new(CONFFILE).exists(), "dpkg -P left the conffile");
    assert!(!Path::new(STATE_DIR).exists(), "dpkg -P left an unused state dir");
    assert_no_unit_leftovers();

    // Purged while HAProxy's drop-in still loads from the state dir: the state dir stays.
    ok(Command::new("dpkg").arg("--install").arg(&deb));
    std::fs::create_dir_all(Path::new(HAPROXY_DROP_IN).parent().unwrap()).unwrap();
    restore.drop_in_added = !Path::new(HAPROXY_DROP_IN).exists();
    assert!(restore.drop_in_added, "{HAPROXY_DROP_IN} exists already");
    std::fs::copy("/usr/share/flipbit/haproxy.service.d/flipbit.conf", HAPROXY_DROP_IN).unwrap();
    let said = ok(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert!(
        Path::new(STATE_DIR).is_dir(),
        "dpkg -P removed a state dir HAProxy loads from"
    );
    assert!(
        said.contains(HAPROXY_DROP_IN),
        "purge did not say what keeps the state dir: {said}"
    );
    assert!(!Path::new(CONFFILE).exists());
    drop(restore);
    assert!(!Path::new(STATE_DIR).exists() && !Path::new(HAPROXY_DROP_IN).exists());
}

/// The shipped stream block, pasted into a main config, makes `nginx -t` read the release that
/// `<state dir>/current` points at: a valid one passes, a broken one fails naming its file.
fn stream_block_loads_the_current_release() {
    let dir = tempfile::tempdir().unwrap();
    let release = Path::new(STATE_DIR).join("releases/package-test");
    std::fs::create_dir_all(release.join("web")).unwrap();
    std::os::unix::fs::symlink("releases/package-test", Path::new(STATE_DIR).join("current")).unwrap();
    // An address of this test's own (nginx -t binds it for a moment) and a free port on it.
    let addr = "127.218.0.1";
    let port = std::net::TcpListener::bind((addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = release.join("web/shop.conf");
    std::fs::write(
        &service,
        format!("server {{\n    listen {addr}:{port};\n    return \"ok\";\n}}\n"),
    )
    .unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {};\npid {}/nginx.pid;\nevents {{ worker_connections 64; }}\n{}",
            flipbit_tests::nginx::STREAM_MODULE,
            dir.path().display(),
            read("/usr/share/flipbit/nginx-stream.conf"),
        ),
    )
    .unwrap();
    let nginx_t = || {
        run(Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf))
    };
    let out = nginx_t();
    assert!(
        out.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&service, "server { no_such_directive; }\n").unwrap();
    let out = nginx_t();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // nginx names the file by the include's path, through the `current` link.
    let through_current = Path::new(STATE_DIR).join("current/web/shop.conf");
    assert!(
        !out.status.success() && stderr.contains(through_current.to_str().unwrap()),
        "nginx -t did not read {}: {stderr}",
        through_current.display()
    );
    std::fs::remove_file(Path::new(STATE_DIR).join("current")).unwrap();
    std::fs::remove_dir_all(Path::new(STATE_DIR).join("releases")).unwrap();
}

/// The installed service's sandbox (`tests/src/unit_sandbox.rs`: its capability bounding set,
/// no new privileges, a read-only system but for its ReadWritePaths and the test's own directory)
/// around the installed applier, on a Service listening on port 80: without CAP_NET_BIND_SERVICE
/// the applier's bind probe cannot bind it, so the Service is withheld and nothing is served; with
/// the unit's set the apply goes through the probes, `nginx -t`, the swap and the reload, and the
/// Service answers. Without CAP_SYS_PTRACE a listener in the way is not named; with it, it is.
/// (CAP_DAC_OVERRIDE is for Debian's nginx logs, owned by www-data; this nginx's are root's.)
fn the_units_sandbox_runs_an_apply_on_port_80() {
    let unit = read(Path::new("/lib/systemd/system").join(SERVICES[0]));
    let sandbox = Sandbox::of_unit(&unit);
    assert!(sandbox.strict && sandbox.no_new_privileges, "{unit}");
    let f = Fleet::start(207).expect("nginx is installed");
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 80, 30080)]);
    f.render();
    let args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
    let installed = Path::new("/usr/bin/flipbit-applier");
    let service = f.addr(1, 1, 80);

    let out = sandbox
        .without("CAP_NET_BIND_SERVICE")
        .run(&[f.tmp.path()], installed, &args);
    let said = text(&out);
    assert!(
        said.contains("withheld web/shop: 127.207.1.1:80/tcp cannot be bound: Permission denied"),
        "an apply without CAP_NET_BIND_SERVICE: {said}"
    );
    assert!(probe::tcp(service).is_err(), "{service} answered after a refused apply");

    let out = sandbox.run(&[f.tmp.path()], installed, &args);
    let said = text(&out);
    assert!(out.status.success(), "an apply in the unit's sandbox: {said}");
    assert!(said.contains("nginx reloaded") && !said.contains("withheld"), "{said}");
    let got = probe::answers(service, false, 3);
    assert!(got.iter().all(|a| a.ends_with(":30080")), "{got:?}");

    // CAP_SYS_PTRACE: which process holds an address a new Service needs is read from
    // /proc/<pid>/fd, which a process with fewer capabilities than the holder may not read.
    f.cluster.lb_service("web", "cart", &[], &[("TCP", 81, 30080)]);
    f.render();
    let held = std::net::TcpListener::bind("127.207.1.2:81").expect("binding web/cart's address");
    let out = sandbox.without("CAP_SYS_PTRACE").run(&[f.tmp.path()], installed, &args);
    let said = text(&out);
    assert!(
        said.contains("withheld web/cart: 127.207.1.2:81/tcp is in use by another process"),
        "{said}"
    );
    let out = sandbox.run(&[f.tmp.path()], installed, &args);
    let said = text(&out);
    let holder = "withheld web/cart: 127.207.1.2:81/tcp is in use by ";
    let pid = format!("(pid {})", std::process::id());
    assert!(said.contains(holder) && said.contains(&pid), "{said}");
    drop(held);
    let out = sandbox.run(&[f.tmp.path()], installed, &args);
    assert!(
        out.status.success() && !text(&out).contains("withheld"),
        "{}",
        text(&out)
    );
    assert!(
        probe::answers(f.addr(1, 2, 81), false, 1)
            .iter()
            .all(|a| a.ends_with(":30080"))
    );
}

/// No mask or enablement link of the units under /etc/systemd/system, and no record of them in
/// deb-systemd-helper's state.
fn assert_no_unit_leftovers() {
    let mut left = Vec::new();
    for dir in [
        "/etc/systemd/system",
        "/etc/systemd/system/multi-user.target.wants",
        "/etc/systemd/system/timers.target.wants",
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
    ] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(PACKAGE) {
                left.push(entry.path());
            }
        }
    }
    assert!(left.is_empty(), "left after the purge: {left:?}");
}
