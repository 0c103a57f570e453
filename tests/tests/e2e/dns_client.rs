//! The RFC 2136 client against a real BIND `named` on loopback: records land and go exactly as
//! asked, hand-made records survive, re-sending is harmless, and every failure an operator can
//! cause (wrong key, wrong zone, server down) comes back as an error that says so.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use flipbit_applier::dns::client::{AddressRecord, UpdateClient, ZoneUpdate};
use flipbit_applier::dns::key;
use flipbit_tests::bind::{KEY_NAME, NamedInstance, tsig_keygen};
use tempfile::TempDir;

const ZONE: &str = "k8s.example.test";
const TIMEOUT: Duration = Duration::from_secs(3);

/// A temp dir with a running named on `port`, and a client holding its key; None without BIND.
fn named(port: u16) -> Option<(TempDir, NamedInstance, UpdateClient)> {
    flipbit_tests::require(&[flipbit_tests::tool::BIND])?;
    let dir = tempfile::tempdir().unwrap();
    let named = NamedInstance::start(dir.path(), port, ZONE).unwrap();
    let client = UpdateClient {
        server: named.addr(),
        auth: key::load(&named.key_file).unwrap().into(),
        timeout: TIMEOUT,
    };
    Some((dir, named, client))
}

fn rec(name: &str, addr: &str) -> AddressRecord {
    AddressRecord {
        name: format!("{name}.{ZONE}"),
        ttl: 60,
        addr: addr.parse().unwrap(),
    }
}

fn adds(records: Vec<AddressRecord>) -> ZoneUpdate {
    ZoneUpdate {
        zone: ZONE.into(),
        deletes: vec![],
        adds: records,
    }
}

fn dummy_key() -> key::TsigKey {
    key::parse_key_file("key \"k\" { algorithm hmac-sha256; secret \"AAAA\"; };").unwrap()
}

fn fqdn(name: &str) -> String {
    format!("{name}.{ZONE}")
}

#[test]
fn adds_a_and_aaaa_records() {
    let Some((_dir, named, client)) = named(5391) else {
        return;
    };
    let update = adds(vec![
        rec("frontend.blog", "127.93.0.1"),
        rec("frontend.blog", "127.93.0.2"),
        rec("api.shop", "127.93.0.3"),
        rec("frontend.blog", "::1"),
    ]);
    let stats = client.send(&update).unwrap();
    assert_eq!((stats.messages, stats.records, stats.over_tcp), (1, 4, 0));
    assert_eq!(named.query(&fqdn("frontend.blog"), "A"), ["127.93.0.1", "127.93.0.2"]);
    assert_eq!(named.query(&fqdn("frontend.blog"), "AAAA"), ["::1"]);
    assert_eq!(named.query(&fqdn("api.shop"), "A"), ["127.93.0.3"]);
}

#[test]
fn a_delete_removes_only_that_record() {
    let Some((_dir, named, client)) = named(5392) else {
        return;
    };
    let three = vec![
        rec("web", "127.93.0.1"),
        rec("web", "127.93.0.2"),
        rec("web", "127.93.0.3"),
    ];
    client.send(&adds(three)).unwrap();
    // Moving one address: delete .2 and add .4 in one update.
    let update = ZoneUpdate {
        zone: ZONE.into(),
        deletes: vec![rec("web", "127.93.0.2")],
        adds: vec![rec("web", "127.93.0.4")],
    };
    let stats = client.send(&update).unwrap();
    assert_eq!((stats.messages, stats.records), (1, 2));
    assert_eq!(
        named.query(&fqdn("web"), "A"),
        ["127.93.0.1", "127.93.0.3", "127.93.0.4"]
    );
}

#[test]
fn hand_made_records_survive_our_deletes() {
    let Some((_dir, named, client)) = named(5393) else {
        return;
    };
    let ours = vec![rec("shared", "127.93.0.1"), rec("shared", "127.93.0.2")];
    client.send(&adds(ours.clone())).unwrap();
    let name = fqdn("shared");
    named
        .nsupdate(&format!(
            "update add {name} 60 A 192.0.2.99\nupdate add {name} 60 TXT \"hand-made\""
        ))
        .unwrap();
    assert_eq!(named.query(&name, "A"), ["127.93.0.1", "127.93.0.2", "192.0.2.99"]);

    client
        .send(&ZoneUpdate {
            zone: ZONE.into(),
            deletes: ours,
            adds: vec![],
        })
        .unwrap();
    assert_eq!(named.query(&name, "A"), ["192.0.2.99"]);
    assert_eq!(named.query(&name, "TXT"), ["\"hand-made\""]);
}

#[test]
fn resending_an_update_changes_nothing() {
    let Some((_dir, named, client)) = named(5394) else {
        return;
    };
    client.send(&adds(vec![rec("old", "127.93.0.9")])).unwrap();
    let update = ZoneUpdate {
        zone: ZONE.into(),
        deletes: vec![rec("old", "127.93.0.9")],
        adds: vec![rec("svc", "127.93.0.1"), rec("svc", "fd00::1")],
    };
    client.send(&update).unwrap();
    let serial = named.query(ZONE, "SOA");
    let again = client.send(&update).unwrap();
    assert_eq!((again.messages, again.records), (1, 3));
    assert_eq!(
        named.query(ZONE, "SOA"),
        serial,
        "a no-op update must not bump the serial"
    );
    assert!(named.query(&fqdn("old"), "A").is_empty());
    assert_eq!(named.query(&fqdn("svc"), "A"), ["127.93.0.1"]);
    assert_eq!(named.query(&fqdn("svc"), "AAAA"), ["fd00::1"]);
}

#[test]
fn a_wrong_key_is_reported_as_rejected() {
    let Some((dir, named, _client)) = named(5395) else {
        return;
    };
    let other = dir.path().join("other-key.conf");
    tsig_keygen(KEY_NAME, &other).unwrap();
    let client = UpdateClient {
        server: named.addr(),
        auth: key::load(&other).unwrap().into(),
        timeout: TIMEOUT,
    };
    let err = client
        .send(&adds(vec![rec("x", "127.93.0.1")]))
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains("rejected"), "{err}");
    assert!(
        err.contains(&format!("TSIG key \"{KEY_NAME}\"")) && err.contains("BADSIG"),
        "{err}"
    );
    assert!(!err.contains("truncated"), "{err}");
    assert!(named.query(&fqdn("x"), "A").is_empty());
}

#[test]
fn a_zone_the_server_does_not_serve() {
    let Some((_dir, named, client)) = named(5396) else {
        return;
    };
    let update = ZoneUpdate {
        zone: "elsewhere.test".into(),
        deletes: vec![],
        adds: vec![AddressRecord {
            name: "x.elsewhere.test".into(),
            ttl: 60,
            addr: "127.93.0.1".parse().unwrap(),
        }],
    };
    let err = client.send(&update).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(
        err.contains("zone elsewhere.test is not served by 127.0.0.1:5396"),
        "{err}"
    );
    assert!(named.query("x.elsewhere.test", "A").is_empty());
}

#[test]
fn a_dead_server_fails_within_the_timeout() {
    // Needs no BIND: nothing listens on the port.
    let server: SocketAddr = "127.0.0.1:5397".parse().unwrap();
    let client = UpdateClient {
        server,
        auth: dummy_key().into(),
        timeout: Duration::from_secs(1),
    };
    let started = Instant::now();
    let small = client
        .send(&adds(vec![rec("x", "127.93.0.1")]))
        .unwrap_err()
        .to_string();
    let big: Vec<_> = (0..200).map(|i| rec(&format!("h{i}"), "127.93.0.1")).collect();
    let over_tcp = client.send(&adds(big)).unwrap_err().to_string();
    eprintln!("{small}\n{over_tcp}");
    for err in [&small, &over_tcp] {
        assert!(err.contains("did not answer") || err.contains("refused"), "{err}");
        assert!(err.contains("127.0.0.1:5397") && err.contains(ZONE), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_silent_server_times_out() {
    // Needs no BIND: a UDP socket and a TCP listener that take requests and never answer.
    let server: SocketAddr = "127.0.0.1:5399".parse().unwrap();
    let _udp = UdpSocket::bind(server).unwrap();
    let _tcp = TcpListener::bind(server).unwrap();
    let client = UpdateClient {
        server,
        auth: dummy_key().into(),
        timeout: Duration::from_millis(600),
    };
    let big: Vec<_> = (0..200).map(|i| rec(&format!("h{i}"), "127.93.0.1")).collect();
    for update in [adds(vec![rec("x", "127.93.0.1")]), adds(big)] {
        let started = Instant::now();
        let err = client.send(&update).unwrap_err().to_string();
        eprintln!("{err}");
        let want = format!("DNS server {server} did not answer the update of zone {ZONE} (timed out after 600ms)");
        assert_eq!(err, want);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_big_update_goes_over_tcp_in_several_messages() {
    let Some((_dir, named, client)) = named(5398) else {
        return;
    };
    let records: Vec<_> = (0..2000u32)
        .map(|i| {
            rec(
                &format!("host-{i}.big"),
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff),
            )
        })
        .collect();
    let started = Instant::now();
    let stats = client.send(&adds(records.clone())).unwrap();
    let add_time = started.elapsed();
    assert_eq!(stats.records, 2000);
    assert!(stats.messages > 1 && stats.over_tcp > 0, "{stats:?}");
    for i in [0u32, 499, 500, 1234, 1999] {
        let want = format!("10.0.{}.{}", i >> 8, i & 0xff);
        assert_eq!(named.query(&fqdn(&format!("host-{i}.big")), "A"), [want]);
    }
    let started = Instant::now();
    let stats = client
        .send(&ZoneUpdate {
            zone: ZONE.into(),
            deletes: records,
            adds: vec![],
        })
        .unwrap();
    let delete_time = started.elapsed();
    assert!(named.query(&fqdn("host-1234.big"), "A").is_empty());
    println!("2000 adds: {add_time:?}, 2000 deletes: {delete_time:?} ({stats:?})");
}

#[test]
fn a_ttl_change_is_one_add_per_record_and_replaces_the_ttl() {
    let Some((_dir, named, client)) = named(5412) else {
        return;
    };
    let at = |ttl: u32| {
        ["127.93.0.1", "127.93.0.2"]
            .iter()
            .map(|a| AddressRecord { ttl, ..rec("ttl", a) })
            .collect::<Vec<_>>()
    };
    client.send(&adds(at(300))).unwrap();
    let stats = client
        .send(&ZoneUpdate {
            zone: ZONE.into(),
            deletes: at(300),
            adds: at(60),
        })
        .unwrap();
    // The deletes of the re-added addresses are left out: the adds replace them.
    assert_eq!((stats.messages, stats.records), (1, 2));
    let out = std::process::Command::new("dig")
        .args(["+noall", "+answer", "-p", &named.port.to_string(), "@127.0.0.1"])
        .arg(fqdn("ttl"))
        .arg("A")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    let ttls: Vec<&str> = answer.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(ttls, ["60", "60"], "{answer}");
}

#[test]
fn every_address_of_a_big_update_moves_in_batches() {
    let Some((_dir, named, client)) = named(5413) else {
        return;
    };
    // 600 names with one address each, then every address moves: 1,200 RRs, three messages of
    // at most 500, each name's delete and add in the same one.
    let old: Vec<_> = (0..600u32)
        .map(|i| rec(&format!("n{i:03}.move"), &format!("10.1.{}.{}", i >> 8, i & 0xff)))
        .collect();
    let new: Vec<_> = (0..600u32)
        .map(|i| rec(&format!("n{i:03}.move"), &format!("10.2.{}.{}", i >> 8, i & 0xff)))
        .collect();
    client.send(&adds(old.clone())).unwrap();
    let stats = client
        .send(&ZoneUpdate {
            zone: ZONE.into(),
            deletes: old,
            adds: new,
        })
        .unwrap();
    assert_eq!((stats.messages, stats.records, stats.over_tcp), (3, 1200, 3));
    for i in [0u32, 249, 250, 599] {
        let want = format!("10.2.{}.{}", i >> 8, i & 0xff);
        assert_eq!(named.query(&fqdn(&format!("n{i:03}.move")), "A"), [want]);
    }
}
