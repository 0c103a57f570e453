use super::*;

/// The wire encoding of an ed25519 key whose 32 key bytes are all `byte`.
fn ed25519(byte: u8) -> Vec<u8> {
    let mut blob = Vec::new();
    for field in [b"ssh-ed25519".as_slice(), &[byte; 32]] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    blob
}

fn rsa_like(byte: u8) -> Vec<u8> {
    let mut blob = Vec::new();
    for field in [b"ssh-rsa".as_slice(), &[1, 0, 1], &[byte; 64]] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    blob
}

fn line(hosts: &str, blob: &[u8]) -> String {
    format!("{hosts} {} {} comment", blob_type(blob).unwrap(), STANDARD.encode(blob))
}

fn file(lines: &[String]) -> KnownHosts {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let mut hosts = KnownHosts::default();
    hosts.read(&path, true).unwrap();
    hosts
}

#[test]
fn hmac_sha1_matches_rfc_2202() {
    let got = hmac_sha1(&[0x0b; 20], b"Hi There");
    let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "b617318655057264e28bc0b6fb378c8ef146be00");
    let long_key = hmac_sha1(&[0xaa; 80], b"Test Using Larger Than Block-Size Key - Hash Key First");
    let hex: String = long_key.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "aa4ae5e15272d00e95705637ce8a3b55ed402112");
}

#[test]
fn plain_names_ports_and_patterns() {
    let hosts = file(&[
        line("git.example.test,10.0.0.1", &ed25519(1)),
        line("[git.example.test]:2222", &ed25519(2)),
        line("*.corp.test,!bad.corp.test", &ed25519(3)),
        line("git?.lab.test", &ed25519(4)),
    ]);
    assert_eq!(hosts.check("git.example.test", 22, &ed25519(1)), Verdict::Known);
    assert_eq!(
        hosts.check("GIT.example.test", 22, &ed25519(1)),
        Verdict::Known,
        "names are case-insensitive"
    );
    assert_eq!(hosts.check("10.0.0.1", 22, &ed25519(1)), Verdict::Known);
    assert_eq!(hosts.check("git.example.test", 2222, &ed25519(2)), Verdict::Known);
    // Port 2222 has its own entry: the port-22 key is a different key there.
    assert!(matches!(
        hosts.check("git.example.test", 2222, &ed25519(1)),
        Verdict::Changed(_)
    ));
    // A port with no entry at all is unknown, not the port-22 host.
    assert!(matches!(
        hosts.check("git.example.test", 2200, &ed25519(1)),
        Verdict::Unknown { .. }
    ));
    assert_eq!(hosts.check("a.corp.test", 22, &ed25519(3)), Verdict::Known);
    assert!(
        matches!(hosts.check("bad.corp.test", 22, &ed25519(3)), Verdict::Unknown { .. }),
        "negated"
    );
    assert_eq!(hosts.check("git1.lab.test", 22, &ed25519(4)), Verdict::Known);
    assert!(matches!(
        hosts.check("git12.lab.test", 22, &ed25519(4)),
        Verdict::Unknown { .. }
    ));
}

#[test]
fn several_keys_per_host_and_a_changed_key() {
    let hosts = file(&[
        line("git.example.test", &ed25519(1)),
        line("git.example.test", &ed25519(2)),
        line("git.example.test", &rsa_like(9)),
    ]);
    assert_eq!(hosts.check("git.example.test", 22, &ed25519(2)), Verdict::Known);
    assert_eq!(hosts.check("git.example.test", 22, &rsa_like(9)), Verdict::Known);
    let Verdict::Changed(known) = hosts.check("git.example.test", 22, &ed25519(7)) else {
        panic!("a new ed25519 key is a changed key");
    };
    assert_eq!(known.iter().map(|p| p.line).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(known[0].fingerprint, fingerprint(&ed25519(1)));
    // Only keys of other types listed: unknown, and the others are named.
    let hosts = file(&[line("git.example.test", &rsa_like(9))]);
    let Verdict::Unknown { other_types, .. } = hosts.check("git.example.test", 22, &ed25519(1)) else {
        panic!("an ed25519 key beside a known RSA key is unknown");
    };
    assert_eq!(other_types[0].key_type, "ssh-rsa");
}

#[test]
fn hashed_hosts_as_ssh_keygen_writes_them() {
    let salt = [7u8; 20];
    let hash = hmac_sha1(&salt, b"[127.0.0.1]:22001");
    let hashed = format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(hash));
    let hosts = file(&[line(&hashed, &ed25519(1))]);
    assert_eq!(hosts.check("127.0.0.1", 22001, &ed25519(1)), Verdict::Known);
    assert!(matches!(
        hosts.check("127.0.0.1", 22, &ed25519(1)),
        Verdict::Unknown { .. }
    ));
    assert!(matches!(
        hosts.check("127.0.0.1", 22001, &ed25519(2)),
        Verdict::Changed(_)
    ));
}

#[test]
fn revoked_keys_are_refused_and_authorities_named() {
    let hosts = file(&[
        line("git.example.test", &ed25519(1)),
        format!("@revoked {}", line("*", &ed25519(1))),
        format!("@cert-authority {}", line("*.example.test", &ed25519(5))),
    ]);
    let Verdict::Revoked(place) = hosts.check("git.example.test", 22, &ed25519(1)) else {
        panic!("a revoked key is refused even where a line lists it");
    };
    assert_eq!(place.line, 2);
    let Verdict::Unknown { authorities, .. } = hosts.check("other.example.test", 22, &ed25519(2)) else {
        panic!("a certificate authority does not vouch for a plain key");
    };
    assert_eq!(authorities[0].line, 3);
}

#[test]
fn bad_lines_are_errors_in_a_named_file_and_skipped_in_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    let good = line("git.example.test", &ed25519(1));
    for (bad, says) in [
        ("git.example.test ssh-ed25519 !!!", "not base64"),
        ("git.example.test ssh-rsa", "base64 key is missing"),
        ("@trusted git.example.test ssh-ed25519 AAAA", "unknown marker"),
        ("|2|abc|def ssh-ed25519 AAAA", "only |1|"),
        (
            &line("git.example.test", &ed25519(1)).replacen("ssh-ed25519", "ssh-rsa", 1),
            "the key says",
        ),
    ] {
        std::fs::write(&path, format!("# comment\n\n{good}\n{bad}\n")).unwrap();
        let err = KnownHosts::default().read(&path, true).unwrap_err();
        assert!(err.starts_with("line 4: ") && err.contains(says), "{bad}: {err}");
        let mut lenient = KnownHosts::default();
        lenient.read(&path, false).unwrap();
        assert_eq!(lenient.check("git.example.test", 22, &ed25519(1)), Verdict::Known);
    }
}

#[test]
fn fingerprints_are_ssh_keygen_s() {
    // `ssh-keygen -lf -` on this key prints SHA256:bUF3nxg/D/JaCIE2pu+EtsSfrUWnxey9O8YHhCdTJJY.
    let blob = STANDARD
        .decode("AAAAC3NzaC1lZDI1NTE5AAAAIK/8RzPf7fnKBZKPYtBVai0qjo9O+WjpAdXgUiFX7BbO")
        .unwrap();
    assert_eq!(fingerprint(&blob), "SHA256:bUF3nxg/D/JaCIE2pu+EtsSfrUWnxey9O8YHhCdTJJY");
    assert_eq!(blob_type(&blob).as_deref(), Some("ssh-ed25519"));
    assert_eq!(blob_type(&blob[..6]), None, "a truncated blob names no type");
}

#[test]
fn wildcards() {
    assert!(wildcard(b"*", b"anything"));
    assert!(wildcard(b"a*c", b"abbbc"));
    assert!(wildcard(b"a*b*c", b"axbyc"));
    assert!(!wildcard(b"a*c", b"abcd"));
    assert!(wildcard(b"[10.0.0.?]:22*", b"[10.0.0.5]:2200"));
    assert!(!wildcard(b"?", b""));
}
