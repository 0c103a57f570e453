//! Signed commits end to end. The generator signs with `--signing-key` and the real git accepts
//! the signature; `flipbit-applier --allowed-signers` applies commits signed by listed keys (the
//! generator's, or a human's `git commit -S`) and refuses unsigned ones, unknown keys and unsigned
//! commits hidden under signed ones with one line, while the running config keeps serving. Keys
//! come from the real `ssh-keygen`, human commits from the real git CLI, traffic goes through real
//! nginx in 127.81/16 and 127.82/16.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use flipbit_tests::cluster::{ManifestDir, generator, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::human::Human;
use flipbit_tests::sshkeys::{SshKey, show_signature, write_allowed_signers};
use flipbit_tests::{bins, probe, repo};

const GENERATOR: &str = "flipbit-generator@localhost";

fn render_signed(repo: &Path, cluster: &ManifestDir, key: &SshKey) {
    let key = key.private.display().to_string();
    let out = generator("render", repo, cluster.path(), &["--signing-key", &key]);
    assert!(out.status.success(), "render: {}", text(&out));
}

fn serves(addr: SocketAddr) -> bool {
    flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::tcp(addr)).is_ok()
}

/// The one `error:` line of a failed run.
fn refusal(out: &Output) -> String {
    let all = text(out);
    assert!(!out.status.success(), "the commit was accepted: {all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{all}");
    errors[0].to_owned()
}

fn short(id: &str) -> &str {
    &id[..7]
}

fn head(repo: &Path) -> String {
    repo::head(repo).expect("the repo has a head").to_string()
}

fn applied(f: &Fleet, lb: &str) -> Option<String> {
    f.journal(lb).lb.map(|c| c.to_string())
}

fn apply_ok(f: &Fleet, extra: &[&str]) {
    let out = f.apply("lb-a", extra);
    assert!(out.status.success(), "apply on lb-a: {}", text(&out));
}

fn push(human: &Human) {
    human.git(&["push", "-q", "origin", "HEAD:main"]);
}

#[test]
fn git_itself_accepts_the_generators_signatures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = repo::two_hosts(tmp.path(), "127.82.201.0/24", "127.82.202.0/24");
    let cluster = ManifestDir::new(&tmp.path().join("cluster"));
    cluster.nodes(82);
    cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    let key = SshKey::generate(tmp.path(), "generator");
    let other = SshKey::generate(tmp.path(), "other");
    render_signed(&repo, &cluster, &key);

    let allowed = tmp.path().join("allowed_signers");
    write_allowed_signers(&allowed, &[(GENERATOR, &key)]);
    let log = show_signature(&repo, &allowed);
    let good = format!(
        "Good \"git\" signature for {GENERATOR} with ED25519 key {}",
        key.fingerprint
    );
    assert!(log.contains(&good), "{log}");

    write_allowed_signers(&allowed, &[("other@example.test", &other)]);
    let log = show_signature(&repo, &allowed);
    assert!(!log.contains("signature for"), "{log}");
    assert!(log.contains("No principal matched"), "{log}");
}

#[test]
fn appliers_apply_only_commits_signed_by_allowed_keys() {
    let Some(f) = Fleet::start(81) else { return };
    let keys = f.tmp.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let gen_key = SshKey::generate(&keys, "generator");
    let alice = SshKey::generate(&keys, "alice");
    let mallory = SshKey::generate(&keys, "mallory");
    let allowed = keys.join("allowed_signers");
    write_allowed_signers(&allowed, &[(GENERATOR, &gen_key), ("alice@example.test", &alice)]);
    // The harness made the repo's first commit unsigned: signing starts after it.
    let root = head(&f.repo);
    let allowed_arg = allowed.display().to_string();
    let sign = [
        "--allowed-signers",
        allowed_arg.as_str(),
        "--signed-since",
        root.as_str(),
    ];
    let not_signed = |head: &str, commit: &str, subject: &str| {
        format!(
            "error: refusing commit {head}: commit {} \"{subject}\" is not signed (every commit must be signed by a key in {})",
            short(commit),
            allowed.display()
        )
    };

    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    render_signed(&f.repo, &f.cluster, &gen_key);
    let out = f.apply("lb-a", &sign);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nginx reloaded"), "{}", text(&out));
    let shop = f.addr(1, 1, 8080);
    assert!(serves(shop));
    let good_applied = applied(&f, "lb-a").expect("applied commit");
    let good_release = f.current("lb-a");

    // An unsigned commit that changes none of lb-a's files is refused too: nothing is recorded.
    let human = Human::clone(&f.repo, &f.tmp.path().join("human"), "Alice", "alice@example.test");
    human.write("NOTES.md", "lb-a is in rack 3\n");
    let notes = human.commit_all("notes about the fleet");
    push(&human);
    let line = refusal(&f.apply("lb-a", &sign));
    assert_eq!(line, not_signed(&notes, &notes, "notes about the fleet"));
    assert_eq!(applied(&f, "lb-a").as_ref(), Some(&good_applied));
    // The human withdraws it; the host is up to date again.
    human.git(&["reset", "-q", "--hard", "HEAD~1"]);
    human.git(&["push", "-q", "--force", "origin", "HEAD:main"]);
    assert!(text(&f.apply("lb-a", &sign)).contains("up to date"));

    // An unsigned hand-added listener: refused, the running config keeps serving, nothing new listens.
    // A listener as the generator would write it (anything else is refused whoever signed it).
    let extra = "upstream flipbit_web_extra_tcp_8081 {\n    server 127.81.0.10:30080;\n}\n\nserver {\n    listen 127.81.1.50:8081;\n    proxy_pass flipbit_web_extra_tcp_8081;\n    proxy_connect_timeout 5s;\n}\n";
    human.write("lb/lb-a/web/extra.conf", extra);
    let unsigned = human.commit_all("hand-add a listener");
    push(&human);
    let line = refusal(&f.apply("lb-a", &sign));
    assert_eq!(line, not_signed(&unsigned, &unsigned, "hand-add a listener"));
    assert_eq!(applied(&f, "lb-a").as_ref(), Some(&good_applied));
    assert_eq!(f.current("lb-a"), good_release);
    assert!(serves(shop), "the running config stopped serving");
    assert!(
        probe::tcp(f.addr(1, 50, 8081)).is_err(),
        "the unsigned listener is served"
    );

    // A signed generator commit on top does not carry it in: the whole range is checked.
    f.cluster.lb_service("web", "api", &[], &[("TCP", 8082, 30080)]);
    render_signed(&f.repo, &f.cluster, &gen_key);
    let on_top = head(&f.repo);
    assert_ne!(on_top, unsigned, "the generator did not commit");
    let line = refusal(&f.apply("lb-a", &sign));
    assert_eq!(line, not_signed(&on_top, &unsigned, "hand-add a listener"));
    assert_eq!(applied(&f, "lb-a").as_ref(), Some(&good_applied));
    assert_eq!(f.current("lb-a"), good_release);

    // The human withdraws both and signs the change with a listed key: applied and served, and the
    // generator's next signed commit applies on top of it.
    human.git(&["fetch", "-q"]);
    human.git(&["reset", "-q", "--hard", &good_applied]);
    human.write("lb/lb-a/web/extra.conf", extra);
    let signed = alice.commit_all(&human, "hand-add a listener, signed");
    human.git(&["push", "-q", "--force", "origin", "HEAD:main"]);
    let out = f.apply("lb-a", &sign);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(applied(&f, "lb-a").as_deref(), Some(signed.as_str()));
    assert!(serves(f.addr(1, 50, 8081)), "the signed listener is not served");
    render_signed(&f.repo, &f.cluster, &gen_key);
    apply_ok(&f, &sign);
    assert!(serves(shop));

    // A key that is not in the file: refused, naming the key.
    human.pull();
    human.write("lb/lb-a/web/extra.conf", &extra.replace("8081", "8083"));
    let foreign = mallory.commit_all(&human, "move the listener");
    push(&human);
    let line = refusal(&f.apply("lb-a", &sign));
    assert_eq!(
        line,
        format!(
            "error: refusing commit {foreign}: commit {} \"move the listener\" is signed by an unknown key {} (every commit must be signed by a key in {})",
            short(&foreign),
            mallory.fingerprint,
            allowed.display()
        )
    );
    assert!(serves(f.addr(1, 50, 8081)));
    assert!(probe::tcp(f.addr(1, 50, 8083)).is_err());

    // The file is read on every run: once the operator lists the key, the same commit applies.
    write_allowed_signers(
        &allowed,
        &[
            (GENERATOR, &gen_key),
            ("alice@example.test", &alice),
            ("mallory@example.test", &mallory),
        ],
    );
    apply_ok(&f, &sign);
    assert!(serves(f.addr(1, 50, 8083)));
}

#[test]
fn a_fresh_host_checks_the_whole_history_unless_told_where_signing_began() {
    let Some(f) = Fleet::start(82) else { return };
    let keys = f.tmp.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let gen_key = SshKey::generate(&keys, "generator");
    let alice = SshKey::generate(&keys, "alice");
    let allowed = keys.join("allowed_signers");
    write_allowed_signers(&allowed, &[(GENERATOR, &gen_key), ("alice@example.test", &alice)]);
    let allowed_arg = allowed.display().to_string();
    let root = head(&f.repo);
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    render_signed(&f.repo, &f.cluster, &gen_key);
    let top = head(&f.repo);
    let shop = f.addr(1, 1, 8080);

    // Without --signed-since the harness's unsigned first commit is refused.
    let line = refusal(&f.apply("lb-a", &["--allowed-signers", &allowed_arg]));
    assert_eq!(
        line,
        format!(
            "error: refusing commit {top}: commit {} \"add flipbit.yaml\" is not signed (every commit must be signed by a key in {allowed_arg})",
            short(&root)
        )
    );
    assert_eq!(applied(&f, "lb-a"), None);
    assert_eq!(f.current("lb-a"), None);
    assert!(probe::tcp(shop).is_err());

    // A missing or unusable file is an error, never "accept everything".
    let missing = keys.join("missing");
    let line = refusal(&f.apply("lb-a", &["--allowed-signers", &missing.display().to_string()]));
    assert!(line.contains(&missing.display().to_string()), "{line}");
    let with_ca = keys.join("with_ca");
    std::fs::write(
        &with_ca,
        format!(
            "{GENERATOR} {}\n*@example.test cert-authority {}\n",
            gen_key.public, alice.public
        ),
    )
    .expect("writing");
    let line = refusal(&f.apply(
        "lb-a",
        &[
            "--allowed-signers",
            &with_ca.display().to_string(),
            "--signed-since",
            &root,
        ],
    ));
    assert!(
        line.contains(&format!(
            "{}, line 2: cert-authority lines are not supported",
            with_ca.display()
        )),
        "{line}"
    );
    assert_eq!(applied(&f, "lb-a"), None);

    // The trust anchor, from the environment and abbreviated: applied.
    let out = Command::new(bins::applier())
        .args(f.lbs["lb-a"].applier_args(&f.repo, "lb-a"))
        .env("FLIPBIT_ALLOWED_SIGNERS", &allowed)
        .env("FLIPBIT_SIGNED_SINCE", short(&root))
        .output()
        .expect("running flipbit-applier");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(applied(&f, "lb-a").as_deref(), Some(top.as_str()));
    assert!(serves(shop));

    // A signed merge does not vouch for an unsigned commit on its side branch.
    let human = Human::clone(&f.repo, &f.tmp.path().join("human"), "Alice", "alice@example.test");
    human.git(&["checkout", "-q", "-b", "side"]);
    human.write("NOTES.md", "side work\n");
    let side = human.commit_all("side note");
    human.git(&["checkout", "-q", "main"]);
    let signing_key = format!("user.signingkey={}", alice.private.display());
    human.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &signing_key,
        "merge",
        "-q",
        "--no-ff",
        "-S",
        "-m",
        "merge side",
        "side",
    ]);
    push(&human);
    let merge = head(&f.repo);
    let line = refusal(&f.apply("lb-a", &["--allowed-signers", &allowed_arg, "--signed-since", &root]));
    assert!(
        line.starts_with(&format!(
            "error: refusing commit {merge}: commit {} \"side note\" is not signed",
            short(&side)
        )),
        "{line}"
    );
    assert_eq!(applied(&f, "lb-a").as_deref(), Some(top.as_str()));
    assert!(serves(shop));

    // An operator vouches for that commit by moving the anchor onto it; the signed merge above it
    // is still checked, and lb-a's files did not change, so the commit is recorded.
    let out = f.apply("lb-a", &["--allowed-signers", &allowed_arg, "--signed-since", &side]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("recorded {merge}")), "{}", text(&out));
    assert_eq!(applied(&f, "lb-a").as_deref(), Some(merge.as_str()));
}
