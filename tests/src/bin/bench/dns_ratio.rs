//! `dns-ratio N`: the applier's DNS step against the floor, one `nsupdate -k` batch of the same
//! changes to the same `named` in the same run. N Services on one LB host are published first;
//! then each repetition changes the TTL of all N names and times
//!
//! - `flipbit-applier apply` as a process (nginx has nothing to do: a TTL is DNS only, so the
//!   run holds no `nginx -t` or reload), with the DNS step's own figure beside it (read both
//!   commits' zone fragments from Git, diff, sign, send, record). Each repetition sets a TTL no
//!   earlier commit had, so the fetch brings 10k new blobs every time;
//! - one `nsupdate -k KEY FILE` process sending what the applier sends: per name one add with the
//!   new TTL, which replaces the RR and its TTL (RFC 2136 §3.4.2.2), 500 RRs per UPDATE as the
//!   applier packs them (the floor: the same messages, no Git, no diff);
//! - one `nsupdate` batch of the change spelled out, per name a delete of the old RR and an add
//!   of the new one (what the applier sent before it left such deletes out), 500 RRs per UPDATE.
//!
//! Before each nsupdate batch the zone is put back as it was (untimed), and after every timed
//! step names are queried back, so no side can win by doing less.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig::{self, Flags, NODE_PORT_TCP, Rig, ZONE, median, ms};

/// RRs per UPDATE message in the nsupdate batches: the applier's own packing.
const RRS_PER_MESSAGE: usize = flipbit_applier::dns::client::MAX_RRS_PER_MESSAGE;

/// How an nsupdate batch states a TTL change.
#[derive(Clone, Copy)]
enum Spelling {
    /// One add per name: it replaces the RR of the same address and its TTL.
    AddOnly,
    /// A delete of the old RR and an add of the new one per name.
    DeleteAdd,
    /// A delete of the RR per name (to empty the zone again, untimed).
    DeleteOnly,
}

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let block: u8 = flags.get("block", 132)?;
    let port: u16 = flags.get("dns-port", 5441)?;
    let reps: usize = flags.get("reps", 3)?;
    let log: String = flags.get("log", String::new())?;
    let env: Vec<(&str, &str)> = if log.is_empty() {
        vec![]
    } else {
        vec![("RUST_LOG", log.as_str())]
    };
    let rig = Rig::start(block, 1, n + 1, Some(port), &flags.host_options)?;
    let named = rig.named.as_ref().ok_or("no named")?;
    services(&rig, n, None);
    let render = rig.render()?;
    let (cold, out) = rig.apply("lb-a", &[])?;
    println!(
        "dns-ratio set-up, {n} names: render {:.0} ms, first apply {:.0} ms ({})",
        ms(render),
        ms(cold),
        dns_line(&out)
    );
    let addresses: BTreeMap<String, IpAddr> = rig
        .all_addresses()
        .into_iter()
        .filter_map(|(key, by_host)| Some((key, *by_host.get("lb-a")?)))
        .collect();
    if addresses.len() != n {
        return Err(format!("{} of {n} Services have an address on lb-a", addresses.len()));
    }
    let batch = |from: u32, to: u32, spelling: Spelling, timed: bool| -> Result<Duration, String> {
        let file = rig.tmp.path().join("nsupdate.txt");
        std::fs::write(&file, script(port, &addresses, from, to, spelling)).map_err(|e| e.to_string())?;
        if timed {
            rig::settle();
        }
        let took = nsupdate(&named.key_file, &file)?;
        check(port, &addresses, to)?;
        Ok(took)
    };
    // The cold publish: the set-up's DNS step added n names it had never published, reading
    // first what each holds (A and AAAA queries). Its floor: one nsupdate batch of the same adds
    // into a zone without them (emptied again untimed; the batch puts back what the applier had).
    let cold_step = step_ms(&out).ok_or_else(|| format!("no dns line in: {out}"))?;
    let file = rig.tmp.path().join("nsupdate-cold.txt");
    std::fs::write(&file, script(port, &addresses, 300, 300, Spelling::DeleteOnly)).map_err(|e| e.to_string())?;
    nsupdate(&named.key_file, &file)?;
    std::fs::write(&file, script(port, &addresses, 300, 300, Spelling::AddOnly)).map_err(|e| e.to_string())?;
    rig::settle();
    let cold_floor = ms(nsupdate(&named.key_file, &file)?);
    check(port, &addresses, 300)?;
    println!(
        "dns-ratio, {n} new names: the DNS step's cold publish (reading what each name holds first) {cold_step:.1} ms; one nsupdate -k batch of the same {n} adds {cold_floor:.1} ms; ratio {:.2}",
        cold_step / cold_floor
    );
    let (mut applier, mut step, mut same, mut spelled) = (vec![], vec![], vec![], vec![]);
    let mut last = String::new();
    let mut ttl = 300;
    for rep in 0..reps {
        // A TTL no earlier commit had, so every fragment is a blob the applier's cache has not
        // seen (a TTL going back to an earlier value would make its fetch a few trees).
        let (old, new) = (ttl, 60 + u32::try_from(rep).map_err(|e| e.to_string())?);
        ttl = new;
        services(&rig, n, Some(new));
        rig.render()?;
        rig::settle();
        let (took, out) = rig.apply("lb-a", &env)?;
        if !log.is_empty() {
            for line in out.lines() {
                println!("  {line}");
            }
        }
        check(port, &addresses, new)?;
        applier.push(ms(took));
        step.push(step_ms(&out).ok_or_else(|| format!("no dns line in: {out}"))?);
        last = dns_line(&out).to_owned();

        batch(new, old, Spelling::AddOnly, false)?;
        same.push(ms(batch(old, new, Spelling::AddOnly, true)?));
        batch(new, old, Spelling::AddOnly, false)?;
        spelled.push(ms(batch(old, new, Spelling::DeleteAdd, true)?));
    }
    let runs = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    println!(
        "dns-ratio, TTL of {n} names changed, per run (ms): applier [{}], DNS step [{}], nsupdate same messages [{}], nsupdate delete+add [{}]; applier said: {last}",
        runs(&applier),
        runs(&step),
        runs(&same),
        runs(&spelled)
    );
    let (a, s) = (median(&mut applier), median(&mut step));
    let (f, d) = (median(&mut same), median(&mut spelled));
    let adds_only = n.div_ceil(RRS_PER_MESSAGE);
    let both = (2 * n).div_ceil(RRS_PER_MESSAGE);
    println!("dns-ratio, {n} names: the applier's DNS step, median of {reps}: {s:.1} ms");
    println!(
        "dns-ratio, {n} names: one nsupdate -k batch of the same {n} adds ({adds_only} messages), median of {reps}: {f:.1} ms"
    );
    println!(
        "dns-ratio, {n} names: one nsupdate -k batch of {n} deletes + {n} adds ({both} messages), median of {reps}: {d:.1} ms"
    );
    println!(
        "dns-ratio, {n} names: ratio DNS step / nsupdate {:.2} (target <= 1.0); against the delete+add batch {:.2}",
        s / f,
        s / d
    );
    println!(
        "dns-ratio, {n} names: whole flipbit-applier apply (start, fetch of the commit, LB step with nothing to reload, journal, probe, DNS step), median of {reps}: {a:.1} ms"
    );
    println!(
        "dns-ratio, {n} names: ratio whole run / nsupdate {:.2} (target <= 1.3); DNS step / nsupdate {:.2} (target <= 1.0)",
        a / f,
        s / f
    );
    Ok(())
}

/// Writes the N Services, with `flipbit.io/dns-ttl` when given.
fn services(rig: &Rig, n: usize, ttl: Option<u32>) {
    let ttl = ttl.map(|t| t.to_string());
    let annotations: Vec<(&str, &str)> = ttl.iter().map(|t| ("flipbit.io/dns-ttl", t.as_str())).collect();
    for i in 0..n {
        rig.cluster.lb_service(
            "bench",
            &format!("svc{i:05}"),
            &annotations,
            &[("TCP", 8080, NODE_PORT_TCP)],
        );
    }
}

fn name_of(key: &str) -> String {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    format!("{name}.{ns}.{ZONE}")
}

/// The nsupdate input that moves every name from TTL `from` to TTL `to`, spelled as asked, in
/// messages of [`RRS_PER_MESSAGE`] RRs that never split a name.
fn script(port: u16, addresses: &BTreeMap<String, IpAddr>, from: u32, to: u32, spelling: Spelling) -> String {
    let mut s = format!("server 127.0.0.1 {port}\nzone {ZONE}\n");
    let mut in_message = 0;
    for (key, ip) in addresses {
        let name = name_of(key);
        let rrs = match spelling {
            Spelling::AddOnly | Spelling::DeleteOnly => 1,
            Spelling::DeleteAdd => 2,
        };
        if in_message + rrs > RRS_PER_MESSAGE {
            s.push_str("send\n");
            in_message = 0;
        }
        if let Spelling::DeleteAdd | Spelling::DeleteOnly = spelling {
            let _ = writeln!(s, "update delete {name}. {from} IN A {ip}");
        }
        if !matches!(spelling, Spelling::DeleteOnly) {
            let _ = writeln!(s, "update add {name}. {to} IN A {ip}");
        }
        in_message += rrs;
    }
    if in_message > 0 {
        s.push_str("send\n");
    }
    s
}

/// One `nsupdate -k KEY FILE` process; its wall-clock time.
fn nsupdate(key: &std::path::Path, file: &std::path::Path) -> Result<Duration, String> {
    let started = Instant::now();
    let out = Command::new("nsupdate")
        .arg("-k")
        .arg(key)
        .arg(file)
        .output()
        .map_err(|e| format!("running nsupdate: {e}"))?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "nsupdate failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

/// A sample of names (first, last and every 97th) answers its address with TTL `ttl`.
fn check(port: u16, addresses: &BTreeMap<String, IpAddr>, ttl: u32) -> Result<(), String> {
    let last = addresses.len().saturating_sub(1);
    for (i, (key, ip)) in addresses.iter().enumerate() {
        if i % 97 != 0 && i != last {
            continue;
        }
        let name = name_of(key);
        let got = rig::query_a(port, &name, Duration::from_secs(2));
        let want = match ip {
            IpAddr::V4(v4) => vec![(*v4, ttl)],
            IpAddr::V6(_) => continue,
        };
        if got != want {
            return Err(format!("{name}: named answers {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

/// The applier's `dns: ...` line.
fn dns_line(out: &str) -> &str {
    out.lines().find(|l| l.starts_with("dns:")).unwrap_or("no dns line")
}

/// The DNS step's own milliseconds, from `dns: ... in T ms`.
fn step_ms(out: &str) -> Option<f64> {
    let line = dns_line(out);
    line.rsplit(" in ").next()?.trim_end_matches(" ms").trim().parse().ok()
}
