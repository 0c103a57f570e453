//! `ad-dns N`: the DNS client's cost with GSS-TSIG against a Samba AD DC beside HMAC TSIG against
//! BIND, in the same run on the same machine. Samba's DNS server takes no HMAC TSIG keys (its zones
//! accept GSS-TSIG or, when set insecure, unsigned updates), so the HMAC side needs another server:
//! a private `named`. Each repetition times, per side, N names added, their TTL changed (N adds,
//! as the applier sends it) and deleted, with the context in use reused; every name is queried
//! back after the adds, so neither side can win by doing less. Then the cost of a context: a one-
//! name update on a fresh context (TKEY negotiation with the KDC and the server) vs on a reused one.

use std::time::{Duration, Instant};

use flipbit_applier::dns::auth::{Auth, GssConfig, GssSecret, ReplyMac};
use flipbit_applier::dns::client::{AddressRecord, UpdateClient, ZoneUpdate};
use flipbit_applier::dns::key;
use flipbit_tests::bind::NamedInstance;
use flipbit_tests::samba::{ACCOUNT, DC_HOST, DOMAIN, REALM, SambaDc, Services};

use crate::rig::{Flags, median, ms};

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let reps: usize = flags.get("reps", 3)?;
    let port: u16 = flags.get("dns-port", 5426)?;
    let contexts: usize = flags.get("contexts", 20)?;
    let dc = SambaDc::start(Services::All)?;
    // SAFETY: the bench is single-threaded here; the Kerberos library reads it on first use.
    unsafe { std::env::set_var("KRB5_CONFIG", &dc.krb5_conf) };
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let named = NamedInstance::start(tmp.path(), port, DOMAIN)?;
    let timeout = Duration::from_secs(10);
    let gss = |max_age: Option<Duration>| UpdateClient {
        server: dc.dns(),
        auth: Auth::Gss(GssConfig {
            principal: format!("{ACCOUNT}@{REALM}"),
            secret: GssSecret::Keytab(dc.keytab.clone()),
            dc_host: DC_HOST.into(),
            reply_mac: ReplyMac::Detect,
            max_context_age: max_age,
        }),
        timeout,
    };
    let hmac = UpdateClient {
        server: named.addr(),
        auth: key::load(&named.key_file).map_err(|e| e.to_string())?.into(),
        timeout,
    };
    let reused = gss(None);
    // The first context, untimed: the figures below are for a context in use.
    reused
        .send(&update(&[], &records(1, 60, "warm")))
        .map_err(|e| e.to_string())?;

    let (mut g, mut h) = (Phases::default(), Phases::default());
    for rep in 0..reps {
        let tag = format!("r{rep}");
        g.add(time_side(&reused, n, &tag, |name| dc.query(name, "A"))?);
        h.add(time_side(&hmac, n, &tag, |name| named.query(name, "A"))?);
    }
    println!(
        "ad-dns {n} names, median of {reps}: GSS-TSIG to Samba {} | HMAC TSIG to BIND {} | GSS/HMAC ratio add {:.2}x, TTL change {:.2}x, delete {:.2}x",
        g.line(),
        h.line(),
        median(&mut g.add.clone()) / median(&mut h.add.clone()),
        median(&mut g.ttl.clone()) / median(&mut h.ttl.clone()),
        median(&mut g.delete.clone()) / median(&mut h.delete.clone()),
    );

    // A context's cost: one-name updates on a fresh context each vs on the one in use.
    let fresh = gss(Some(Duration::ZERO));
    let (mut fresh_ms, mut reused_ms) = (Vec::new(), Vec::new());
    for i in 0..contexts {
        let one = records(1, 60, &format!("ctx{i}"));
        let started = Instant::now();
        let stats = fresh.send(&update(&[], &one)).map_err(|e| e.to_string())?;
        fresh_ms.push(ms(started.elapsed()));
        if stats.negotiations != 1 {
            return Err(format!(
                "a fresh-context update negotiated {} times",
                stats.negotiations
            ));
        }
        let started = Instant::now();
        let stats = reused.send(&update(&one, &[])).map_err(|e| e.to_string())?;
        reused_ms.push(ms(started.elapsed()));
        if stats.negotiations != 0 {
            return Err("the reused context was renegotiated".into());
        }
    }
    let (f, r) = (median(&mut fresh_ms), median(&mut reused_ms));
    println!(
        "ad-dns one-name update, median of {contexts}: fresh context {f:.1} ms (TKEY negotiation + update) | reused context {r:.1} ms | a negotiation costs {:.1} ms",
        f - r
    );
    println!("ad-dns machine: shared with other builds (contended); compare the ratios, not the absolute figures");
    drop(dc);
    flipbit_tests::samba::remove_template();
    Ok(())
}

#[derive(Default)]
struct Phases {
    add: Vec<f64>,
    ttl: Vec<f64>,
    delete: Vec<f64>,
}

impl Phases {
    fn add(&mut self, (add, ttl, delete): (f64, f64, f64)) {
        self.add.push(add);
        self.ttl.push(ttl);
        self.delete.push(delete);
    }

    fn line(&self) -> String {
        format!(
            "add {:.0} ms, TTL change {:.0} ms, delete {:.0} ms",
            median(&mut self.add.clone()),
            median(&mut self.ttl.clone()),
            median(&mut self.delete.clone())
        )
    }
}

fn records(n: usize, ttl: u32, tag: &str) -> Vec<AddressRecord> {
    (0..n)
        .map(|i| AddressRecord {
            name: format!("{tag}-{i}.{DOMAIN}"),
            ttl,
            addr: std::net::IpAddr::from([127, 246, (i / 250) as u8, (i % 250 + 1) as u8]),
        })
        .collect()
}

fn update(deletes: &[AddressRecord], adds: &[AddressRecord]) -> ZoneUpdate {
    ZoneUpdate {
        zone: DOMAIN.into(),
        deletes: deletes.to_vec(),
        adds: adds.to_vec(),
    }
}

/// Times N adds, a TTL change of all N and their deletes through `client`; checks the adds with
/// `query`.
fn time_side(
    client: &UpdateClient,
    n: usize,
    tag: &str,
    query: impl Fn(&str) -> Vec<String>,
) -> Result<(f64, f64, f64), String> {
    let first = records(n, 60, tag);
    let second = records(n, 120, tag);
    let started = Instant::now();
    client.send(&update(&[], &first)).map_err(|e| e.to_string())?;
    let add = ms(started.elapsed());
    for r in [&first[0], &first[n - 1]] {
        if query(&r.name) != vec![r.addr.to_string()] {
            return Err(format!("{} does not answer after the adds", r.name));
        }
    }
    let started = Instant::now();
    client.send(&update(&first, &second)).map_err(|e| e.to_string())?;
    let ttl = ms(started.elapsed());
    let started = Instant::now();
    client.send(&update(&second, &[])).map_err(|e| e.to_string())?;
    let delete = ms(started.elapsed());
    if !query(&first[0].name).is_empty() {
        return Err(format!("{} still answers after the deletes", first[0].name));
    }
    Ok((add, ttl, delete))
}
