//! The allowed signers parser (options, quoting, comments, errors with line numbers) and commit
//! verification on real git2 commits signed by `SshSigner`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ssh_key::private::Ed25519Keypair;
use ssh_key::{LineEnding, PrivateKey};

use super::*;
use crate::Store;

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

fn public(seed: u8) -> String {
    key(seed).public_key().to_openssh().expect("encoding a public key")
}

fn parse(text: &str) -> Result<AllowedSigners, AllowedSignersError> {
    AllowedSigners::parse(Path::new("/etc/flipbit/allowed_signers"), text)
}

fn parse_err(text: &str) -> String {
    parse(text).expect_err("should not parse").to_string()
}

#[test]
fn plain_lines_comments_and_blank_lines() {
    let text = format!(
        "# signers\n\n   # indented comment\ngen@flipbit {} generator key\n\"ops@example.test, alice@example.test\"\t{}\n",
        public(1),
        public(2)
    );
    let signers = parse(&text).expect("parses");
    let lines: Vec<_> = signers
        .signers()
        .iter()
        .map(|s| (s.line, s.principals.as_str()))
        .collect();
    assert_eq!(lines, [(4, "gen@flipbit"), (5, "ops@example.test, alice@example.test")]);
    assert_eq!(signers.signers()[0].options, SignerOptions::default());
    assert_eq!(signers.for_key(key(2).public_key().key_data()).count(), 1);
    assert_eq!(signers.for_key(key(3).public_key().key_data()).count(), 0);
}

#[test]
fn options_quoted_values_and_case() {
    let text = format!(
        "a@x NameSpaces=\"file,git\",valid-after=\"20240101Z\",VALID-BEFORE=\"202501021530Z\" {}\n\
         b@x namespaces=\"we \\\"quote\\\", and comma\" {}\n",
        public(1),
        public(2)
    );
    let signers = parse(&text).expect("parses");
    let a = &signers.signers()[0].options;
    assert_eq!(a.namespaces.as_deref(), Some("file,git"));
    assert_eq!(a.valid_after, Some(1_704_067_200));
    assert_eq!(a.valid_before, Some(1_735_831_800));
    assert_eq!(
        signers.signers()[1].options.namespaces.as_deref(),
        Some("we \"quote\", and comma")
    );
}

#[test]
fn namespaces_and_validity_decide_per_signature() {
    let opts = |n: &str| SignerOptions {
        namespaces: Some(n.into()),
        ..Default::default()
    };
    assert!(opts("git").refusal("git", 0).is_none());
    assert!(opts("file,g*").refusal("git", 0).is_none());
    assert!(opts("*,!git").refusal("git", 0).is_some());
    let refused = opts("file").refusal("git", 0).expect("refused");
    assert!(refused.contains("namespaces=\"file\""), "{refused}");

    let window = SignerOptions {
        valid_after: Some(1000),
        valid_before: Some(2000),
        ..Default::default()
    };
    assert!(window.refusal("git", 1000).is_none());
    assert!(window.refusal("git", 2000).is_none());
    assert!(window.refusal("git", 999).expect("early").contains("valid only from"));
    assert!(window.refusal("git", 2001).expect("late").contains("expired"));
}

#[test]
fn errors_name_the_file_and_line() {
    let good = format!("ok@x {}\n", public(1));
    let cases = [
        ("who@x\n", "a key is missing"),
        ("who@x namespaces=\"git\"\n", "a key is missing after the options"),
        ("who@x ssh-ed25519 !!!notbase64\n", "invalid ssh-ed25519 key"),
        ("who@x ssh-ed25519\n", "base64 key is missing"),
        (
            "who@x namespaces=git KEY\n",
            "namespaces needs a value in double quotes",
        ),
        ("who@x namespaces=\"git KEY\n", "no closing quote"),
        (
            "who@x no-touch-required KEY\n",
            "unsupported option \"no-touch-required\"",
        ),
        (
            "who@x namespaces=\"git\",,valid-after=\"20240101\" KEY\n",
            "empty option",
        ),
        (
            "who@x namespaces=\"a\",namespaces=\"b\" KEY\n",
            "namespaces is given twice",
        ),
        (
            "who@x valid-after=\"2024\" KEY\n",
            "valid-after: \"2024\" is not YYYYMMDD",
        ),
        ("who@x valid-after=\"20241301\" KEY\n", "valid-after: \"20241301\""),
        (
            "who@x valid-after=\"20250101Z\",valid-before=\"20240101Z\" KEY\n",
            "valid-before is not after valid-after",
        ),
        ("\"who@x KEY\n", "no closing quote"),
        ("who@\"x\" KEY\n", "a quote inside the principals field"),
    ];
    for (line, want) in cases {
        let text = format!("{good}# two\n{}", line.replace("KEY", &public(2)));
        let err = parse_err(&text);
        assert!(
            err.starts_with("allowed signers file /etc/flipbit/allowed_signers, line 3: "),
            "{line}: {err}"
        );
        assert!(err.contains(want), "{line}: wanted {want:?} in {err}");
    }
}

#[test]
fn cert_authority_and_certificates_are_refused() {
    let err = parse_err(&format!("*@example.test cert-authority {}\n", public(1)));
    assert!(
        err.contains("line 1") && err.contains("cert-authority lines are not supported"),
        "{err}"
    );
    let err = parse_err(&format!("*@x namespaces=\"git\",Cert-Authority {}\n", public(1)));
    assert!(err.contains("cert-authority lines are not supported"), "{err}");
    let err = parse_err("who@x ssh-ed25519-cert-v01@openssh.com AAAA\n");
    assert!(err.contains("certificates are not supported"), "{err}");
}

#[test]
fn an_empty_or_missing_file_accepts_nothing() {
    assert!(parse_err("# nobody yet\n\n").contains("lists no keys"));
    let err = AllowedSigners::load(Path::new("/nonexistent/allowed_signers"))
        .expect_err("missing file")
        .to_string();
    assert!(err.contains("/nonexistent/allowed_signers"), "{err}");
}

/// A store with a signer (seed 1) and an unsigned root commit.
fn store(dir: &Path) -> (Store, git2::Oid) {
    let key_file = dir.join("id_ed25519");
    let pem = key(1).to_openssh(LineEnding::LF).expect("encoding a private key");
    std::fs::write(&key_file, pem.as_bytes()).expect("writing the key");
    let mut store = Store::open(&dir.join("cache.git"), "unused", "main").expect("opening the store");
    let sig = Store::signature("Operator", "op@example.test").expect("signature");
    let root = {
        let tree = store
            .repo
            .treebuilder(None)
            .and_then(|b| b.write())
            .expect("empty tree");
        let tree = store.repo.find_tree(tree).expect("tree");
        store
            .repo
            .commit(None, &sig, &sig, "root", &tree, &[])
            .expect("root commit")
    };
    store.sign_with(SshSigner::load(&key_file).expect("loading the key"));
    (store, root)
}

fn change(store: &Store, parent: git2::Oid, file: &str) -> git2::Oid {
    let sig = Store::signature("flipbit-generator", "gen@localhost").expect("signature");
    let writes = BTreeMap::from([(file.to_owned(), format!("{file}\n"))]);
    store
        .commit(
            parent,
            &writes,
            &BTreeSet::new(),
            |_| Some(format!("write {file}")),
            &sig,
        )
        .expect("commit")
        .expect("a change")
        .id
}

#[test]
fn signed_unsigned_forged_and_foreign_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, root) = store(dir.path());
    let signed = change(&store, root, "a");
    let signers = parse(&format!("gen@flipbit {}\n", public(1))).expect("parses");

    let good = store.verify_commit(signed, &signers).expect("a good signature");
    assert_eq!(good.principals, "gen@flipbit");
    assert!(good.fingerprint.starts_with("SHA256:"));

    let err = store.verify_commit(root, &signers).expect_err("unsigned").to_string();
    let short = &root.to_string()[..7];
    assert_eq!(err, format!("commit {short} \"root\" is not signed"));

    let others = parse(&format!("ops@x {}\n", public(2))).expect("parses");
    let err = store
        .verify_commit(signed, &others)
        .expect_err("unknown key")
        .to_string();
    assert!(
        err.contains("unknown key SHA256:") && err.contains("\"write a\""),
        "{err}"
    );

    let expired = parse(&format!("gen@flipbit valid-before=\"20000101Z\" {}\n", public(1))).expect("parses");
    let err = store.verify_commit(signed, &expired).expect_err("expired").to_string();
    assert!(err.contains("line 1") && err.contains("expired at 2000-01-01"), "{err}");

    // The same signature on another message: what a hand-edited signed commit looks like.
    let (sig, data) = store
        .repo
        .extract_signature(&signed, Some("gpgsig"))
        .expect("signature");
    let forged_text = String::from_utf8_lossy(&data).replace("write a", "write b");
    let forged = store
        .repo
        .commit_signed(&forged_text, &String::from_utf8_lossy(&sig), Some("gpgsig"))
        .expect("forged commit");
    let err = store.verify_commit(forged, &signers).expect_err("forged").to_string();
    assert!(
        err.contains("bad signature by SHA256:") && err.contains("(gen@flipbit)"),
        "{err}"
    );

    let pgp = "-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----";
    let pgp_commit = store
        .repo
        .commit_signed(&String::from_utf8_lossy(&data), pgp, Some("gpgsig"))
        .expect("pgp commit");
    let err = store.verify_commit(pgp_commit, &signers).expect_err("pgp").to_string();
    assert!(err.contains("OpenPGP signature"), "{err}");
}

#[test]
fn the_range_holds_both_sides_of_a_merge_and_stops_at_trusted_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, root) = store(dir.path());
    let base = change(&store, root, "base");
    let left = change(&store, base, "left");
    let right = change(&store, base, "right");
    let sig = Store::signature("Operator", "op@example.test").expect("signature");
    let (l, r) = (
        store.repo.find_commit(left).expect("left"),
        store.repo.find_commit(right).expect("right"),
    );
    let tree = r.tree().expect("tree");
    let merge = store
        .repo
        .commit(None, &sig, &sig, "merge", &tree, &[&l, &r])
        .expect("merge");

    let all = store.commits_to_verify(merge, &[]).expect("range");
    assert_eq!(all.len(), 5);
    assert_eq!((all[0], all[4]), (root, merge), "oldest first");
    let since_base = store.commits_to_verify(merge, &[base]).expect("range");
    assert_eq!(BTreeSet::from_iter(since_base), BTreeSet::from([left, right, merge]));
    let past_left = store.commits_to_verify(merge, &[left, root]).expect("range");
    assert_eq!(past_left, [right, merge]);
    let missing = git2::Oid::from_str("1234567890123456789012345678901234567890").expect("oid");
    assert_eq!(store.commits_to_verify(left, &[missing]).expect("range").len(), 3);

    assert_eq!(store.find_commit_id(&base.to_string()[..10]).expect("prefix"), base);
    assert!(
        store.find_commit_id("main").is_err(),
        "a ref name is not a trust anchor"
    );
}
