//! Git over SSH and HTTPS against real servers on loopback: a private OpenSSH `sshd` and nginx in
//! front of `git http-backend` (fcgiwrap). The generator pushes and the applier fetches through
//! each; an unknown, changed or revoked SSH host key and an untrusted certificate are refused
//! with one line that says what to do, and nothing is pushed or applied.
//!
//! Ports 22001-22099 on 127.0.0.1 are this file's; address blocks 127.220-224.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flipbit_store::{ServerTrust, Store, StoreError};
use flipbit_tests::cluster::{ManifestDir, apply_args, text};
use flipbit_tests::githttp::{self, GitHttps, TestCa};
use flipbit_tests::nginx::NginxInstance;
use flipbit_tests::sshd::Sshd;
use flipbit_tests::sshkeys::SshKey;
use flipbit_tests::{bins, repo, require, tool};
use tempfile::TempDir;

/// The variables a run sets itself; the test process's own are never passed on.
const GIT_VARS: [&str; 5] = [
    "FLIPBIT_GIT_KNOWN_HOSTS",
    "FLIPBIT_GIT_CA_BUNDLE",
    "FLIPBIT_GIT_SSH_KEY",
    "FLIPBIT_GIT_USERNAME",
    "FLIPBIT_GIT_PASSWORD",
];

fn run(bin: PathBuf, args: &[String], env: &[(&str, OsString)]) -> Output {
    let mut cmd = Command::new(&bin);
    for var in GIT_VARS {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// A state repo with hosts lb-a (127.<block>.1.0/24) and lb-b, and one LoadBalancer Service.
struct Setup {
    tmp: TempDir,
    repo: PathBuf,
    cluster: ManifestDir,
    /// HOME of every run: no known_hosts of the machine's user leaks in.
    home: PathBuf,
}

fn setup(block: u8) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = repo::two_hosts(
        tmp.path(),
        &format!("127.{block}.1.0/24"),
        &format!("127.{block}.2.0/24"),
    );
    let cluster = ManifestDir::new(&tmp.path().join("cluster"));
    cluster.nodes(block);
    cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    Setup {
        tmp,
        repo,
        cluster,
        home,
    }
}

impl Setup {
    fn render(&self, url: &str, env: &[(&str, OsString)]) -> Output {
        let args = [
            "render".into(),
            "--repo".into(),
            url.into(),
            "--manifests".into(),
            self.cluster.path().display().to_string(),
        ];
        let mut env = env.to_vec();
        env.push(("HOME", self.home.clone().into()));
        run(bins::generator(), &args, &env)
    }

    fn apply(&self, args: Vec<String>, env: &[(&str, OsString)]) -> Output {
        let mut env = env.to_vec();
        env.push(("HOME", self.home.clone().into()));
        run(bins::applier(), &args, &env)
    }

    /// A private nginx for lb-a, and the applier's arguments to fetch `url` for it.
    fn lb_a(&self, url: &str) -> (NginxInstance, Vec<String>) {
        let nginx = NginxInstance::start(&self.tmp.path().join("lb-a")).expect("nginx");
        let args = nginx.applier_args(Path::new(url), "lb-a");
        (nginx, args)
    }
}

/// sshd logs in as root here.
fn ssh_servers_available() -> bool {
    require(&[tool::ROOT, tool::SSHD, tool::NGINX]).is_some()
}

fn https_servers_available() -> bool {
    require(&[tool::GIT_HTTPS, tool::NGINX]).is_some()
}

/// The one `error:` line of a failed run.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "the run succeeded: {}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    errors[0].to_owned()
}

fn env_of(pairs: &[(&'static str, &Path)]) -> Vec<(&'static str, OsString)> {
    pairs.iter().map(|(k, v)| (*k, v.as_os_str().to_owned())).collect()
}

/// `sh -c COMMAND`, which must succeed.
fn shell(command: &str) {
    let out = Command::new("sh").args(["-c", command]).output().expect("sh");
    assert!(out.status.success(), "{command}: {}", text(&out));
}

fn assert_says(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
}

/// A test's state repo served by its own sshd, a known_hosts path (not written yet) and the
/// environment that points the binaries at both.
struct OverSsh {
    s: Setup,
    sshd: Sshd,
    url: String,
    known_hosts: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

fn over_ssh(block: u8, port: u16) -> Option<OverSsh> {
    if !ssh_servers_available() {
        return None;
    }
    let s = setup(block);
    let sshd = Sshd::start(&s.tmp.path().join("sshd"), port).expect("sshd");
    let url = sshd.url(&s.repo);
    let known_hosts = s.tmp.path().join("known_hosts");
    let env = env_of(&[
        ("FLIPBIT_GIT_SSH_KEY", &sshd.client_key),
        ("FLIPBIT_GIT_KNOWN_HOSTS", &known_hosts),
    ]);
    Some(OverSsh {
        s,
        sshd,
        url,
        known_hosts,
        env,
    })
}

#[test]
fn over_ssh_the_generator_pushes_and_the_applier_fetches_keys_from_known_hosts() {
    let Some(OverSsh {
        s,
        sshd,
        url,
        known_hosts,
        env,
    }) = over_ssh(220, 22001)
    else {
        return;
    };
    // What an operator runs, with the real ssh-keyscan.
    shell(&format!("ssh-keyscan -p 22001 127.0.0.1 > {}", known_hosts.display()));
    let out = s.render(&url, &env);
    assert!(out.status.success(), "render over ssh: {}", text(&out));
    assert!(text(&out).contains("committed"), "{}", text(&out));
    assert_eq!(repo::commit_count(&s.repo), 2, "the commit reached the server's repo");
    let head = repo::head(&s.repo).expect("head");

    // The applier, through --git-known-hosts and a file `ssh-keygen -H` hashed.
    shell(&format!("ssh-keygen -q -H -f {}", known_hosts.display()));
    let hashed = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    assert!(hashed.contains("|1|") && !hashed.contains("127.0.0.1"), "{hashed}");
    let (_nginx, mut args) = s.lb_a(&url);
    args.extend(["--git-known-hosts".into(), known_hosts.display().to_string()]);
    let out = s.apply(args, &env_of(&[("FLIPBIT_GIT_SSH_KEY", &sshd.client_key)]));
    assert!(out.status.success(), "apply over ssh: {}", text(&out));
    assert!(text(&out).contains(&format!("applied {head}")), "{}", text(&out));

    // Without the setting: $HOME/.ssh/known_hosts, as OpenSSH reads it. Missing: refused, and
    // the refusal names the defaults and the setting.
    let env = env_of(&[("FLIPBIT_GIT_SSH_KEY", &sshd.client_key)]);
    let line = error_line(&s.render(&url, &env));
    let home_file = s.home.join(".ssh/known_hosts");
    assert!(line.contains(&format!("not in {}", home_file.display())), "{line}");
    assert!(line.contains("--git-known-hosts / FLIPBIT_GIT_KNOWN_HOSTS"), "{line}");
    std::fs::create_dir_all(s.home.join(".ssh")).expect(".ssh");
    std::fs::write(&home_file, format!("{}\n", sshd.known_hosts_line())).expect("known_hosts");
    let out = s.render(&url, &env);
    assert!(out.status.success(), "render with ~/.ssh/known_hosts: {}", text(&out));
    assert!(text(&out).contains("no change"), "{}", text(&out));
}

#[test]
fn over_ssh_an_unknown_host_key_is_refused_with_the_line_that_adds_it() {
    let Some(OverSsh {
        s,
        sshd,
        url,
        known_hosts,
        env,
    }) = over_ssh(221, 22002)
    else {
        return;
    };
    // A file that knows another host only.
    let stranger = SshKey::generate(s.tmp.path(), "stranger");
    std::fs::write(&known_hosts, format!("git.example.test {}\n", stranger.public)).expect("write");

    let line = error_line(&s.render(&url, &env));
    let fix = format!("ssh-keyscan -p 22002 127.0.0.1 >> {}", known_hosts.display());
    assert_says(
        &line,
        &[
            &format!("fetching main from {url}: host 127.0.0.1 port 22002"),
            &format!("offered the SSH host key ssh-ed25519 {}", sshd.host_key.fingerprint),
            &format!("not in {}", known_hosts.display()),
            &format!("`{fix}`"),
        ],
    );
    assert!(
        !line.contains("class=") && !line.contains("invalid or unknown"),
        "libgit2's words: {line}"
    );
    assert_eq!(repo::commit_count(&s.repo), 1, "nothing was pushed");

    // The applier refuses the same way, before anything is applied.
    let state = s.tmp.path().join("applier-state");
    let line = error_line(&s.apply(apply_args(Path::new(&url), "lb-a", &state), &env));
    assert!(
        line.contains(&format!("fetching main from {url}: host 127.0.0.1 port 22002")),
        "{line}"
    );
    assert!(line.contains(&format!("`{fix}`")), "{line}");

    // The line's own command is the fix.
    shell(&fix);
    let out = s.render(&url, &env);
    assert!(out.status.success(), "render after ssh-keyscan: {}", text(&out));
    assert_eq!(repo::commit_count(&s.repo), 2);
}

#[test]
fn over_ssh_a_changed_or_revoked_host_key_is_refused() {
    let Some(OverSsh {
        s,
        sshd,
        url,
        known_hosts,
        env,
    }) = over_ssh(222, 22003)
    else {
        return;
    };

    // The file holds the key the server had before (another ed25519 key for the same host).
    let before = SshKey::generate(s.tmp.path(), "old_host_key");
    std::fs::write(
        &known_hosts,
        format!("# the Git server\n[127.0.0.1]:22003 {}\n", before.public),
    )
    .expect("write");
    let line = error_line(&s.render(&url, &env));
    assert_says(
        &line,
        &[
            "the SSH host key of host 127.0.0.1 port 22003 CHANGED",
            &format!("it offered ssh-ed25519 {}", sshd.host_key.fingerprint),
            &format!("ssh-ed25519 {} ({} line 2)", before.fingerprint, known_hosts.display()),
            "confirm the new fingerprint with the Git server's admin",
        ],
    );
    assert!(
        !line.contains("ssh-keyscan"),
        "a changed key is not to be re-scanned blindly: {line}"
    );
    assert_eq!(repo::commit_count(&s.repo), 1, "nothing was pushed");

    // The right key, but revoked: refused although a line lists it.
    std::fs::write(
        &known_hosts,
        format!("{}\n@revoked * {}\n", sshd.known_hosts_line(), sshd.host_key.public),
    )
    .expect("write");
    let line = error_line(&s.render(&url, &env));
    assert!(
        line.contains(&format!(
            "which {} line 2 marks @revoked: refused",
            known_hosts.display()
        )),
        "{line}"
    );
    assert_eq!(repo::commit_count(&s.repo), 1, "nothing was pushed");

    // A push checks the server as a fetch does (the generator fetches first, so its pushes are
    // seen here through the library). The host key is checked before any login.
    let old = s.tmp.path().join("old_known_hosts");
    std::fs::write(&old, format!("[127.0.0.1]:22003 {}\n", before.public)).expect("write");
    let mut store = Store::open(&s.tmp.path().join("cache.git"), &url, "main").expect("cache");
    store
        .trust_server(ServerTrust {
            known_hosts: Some(old),
            ca_bundle: None,
        })
        .expect("trust");
    match store.push_branch("flipbit/probe", None, true) {
        Err(e @ StoreError::Untrusted { .. }) => {
            let line = e.to_string();
            let expected = format!("pushing to {url}: the SSH host key of host 127.0.0.1 port 22003 CHANGED");
            assert!(line.starts_with(&expected), "{line}");
        }
        other => panic!("a push to a server with a changed key: {other:?}"),
    }
}

fn https_env(ca_bundle: Option<&Path>, password: Option<&str>) -> Vec<(&'static str, OsString)> {
    let mut env = vec![("FLIPBIT_GIT_USERNAME", githttp::USER.into())];
    if let Some(password) = password {
        env.push(("FLIPBIT_GIT_PASSWORD", password.into()));
    }
    if let Some(bundle) = ca_bundle {
        env.push(("FLIPBIT_GIT_CA_BUNDLE", bundle.into()));
    }
    env
}

#[test]
fn over_https_the_generator_pushes_and_the_applier_fetches_with_a_ca_bundle() {
    if !https_servers_available() {
        return;
    }
    let s = setup(223);
    let server = GitHttps::start(&s.tmp.path().join("https"), s.tmp.path(), 22011).expect("https server");
    let url = server.url("state.git");

    // Basic auth is required: without the password nothing is pushed.
    let out = s.render(&url, &https_env(Some(&server.ca.cert), None));
    assert!(!out.status.success(), "pushed without credentials: {}", text(&out));
    assert_eq!(repo::commit_count(&s.repo), 1);

    let env = https_env(Some(&server.ca.cert), Some(githttp::PASSWORD));
    let out = s.render(&url, &env);
    assert!(
        out.status.success(),
        "render over https: {} {}",
        text(&out),
        server.error_log()
    );
    assert_eq!(repo::commit_count(&s.repo), 2, "the commit reached the server's repo");
    let head = repo::head(&s.repo).expect("head");

    // The applier, through --git-ca-bundle.
    let (_nginx, mut args) = s.lb_a(&url);
    args.extend(["--git-ca-bundle".into(), server.ca.cert.display().to_string()]);
    let out = s.apply(args, &https_env(None, Some(githttp::PASSWORD)));
    assert!(out.status.success(), "apply over https: {}", text(&out));
    assert!(text(&out).contains(&format!("applied {head}")), "{}", text(&out));
}

#[test]
fn over_https_an_untrusted_certificate_is_refused() {
    if !https_servers_available() {
        return;
    }
    let s = setup(224);
    let server = GitHttps::start(&s.tmp.path().join("https"), s.tmp.path(), 22012).expect("https server");
    let url = server.url("state.git");
    let presented = "host 127.0.0.1 port 22012 (CN=Flipbit test server, issued by CN=Flipbit test CA)";

    // No CA bundle: the system's CAs do not know the test's CA.
    let line = error_line(&s.render(&url, &https_env(None, Some(githttp::PASSWORD))));
    assert_says(
        &line,
        &[
            &format!("fetching main from {url}: refusing the TLS certificate of {presented}"),
            "CN=Flipbit test CA is not a CA in the system's CAs",
            "--git-ca-bundle / FLIPBIT_GIT_CA_BUNDLE",
        ],
    );
    assert_eq!(repo::commit_count(&s.repo), 1, "nothing was pushed");

    // A bundle with another CA: refused, naming the bundle.
    let other = TestCa::new(&s.tmp.path().join("other-ca"), "Some other CA").expect("CA");
    let line = error_line(&s.render(&url, &https_env(Some(&other.cert), Some(githttp::PASSWORD))));
    assert!(
        line.contains(&format!(
            "CN=Flipbit test CA is not a CA in {} or the system's CAs",
            other.cert.display()
        )),
        "{line}"
    );
    assert_eq!(repo::commit_count(&s.repo), 1, "nothing was pushed");

    // The applier refuses it too.
    let state = s.tmp.path().join("applier-state");
    let line = error_line(&s.apply(
        apply_args(Path::new(&url), "lb-a", &state),
        &https_env(None, Some(githttp::PASSWORD)),
    ));
    assert!(
        line.contains(&format!(
            "fetching main from {url}: refusing the TLS certificate of {presented}"
        )),
        "{line}"
    );
}
