//! `overhead N`: what the applier costs on top of nginx itself. N Services on one LB host; each
//! repetition adds one Service, renders it, and times
//!
//! - `flipbit-applier apply` as a process (wall clock until it returns; it has then confirmed
//!   the reload: new workers running, old ones no longer accepting), and
//! - the floor on the very same release files: point `current` at them, `nginx -t`, SIGHUP to the
//!   master (cheaper than `nginx -s reload`, which parses the whole config once more), then
//!   poll the new Service's address over TCP until a backend answers through it; and the same
//!   floor extended until the old workers stopped accepting, which is what the applier waits for
//!   (nginx itself sleeps ~100 ms before telling them), so the two are compared like for like.
//!
//! Between the two, `current` goes back to the previous release and nginx is reloaded and
//! settled (untimed), so both measure the same change from the same state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flipbit_applier::nginx::{all_children, stopped_accepting};
use flipbit_tests::probe;

use crate::rig::{self, Flags, NODE_PORT_TCP, Rig, median, ms};

/// Longest a reload may take here before the bench gives up (nginx with 10k per-Service
/// listeners needs ~4 s to parse its config, for `nginx -t` and again for the reload).
const RELOAD_DEADLINE: Duration = Duration::from_secs(120);

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let block: u8 = flags.get("block", 131)?;
    let reps: usize = flags.get("reps", 5)?;
    let log: String = flags.get("log", String::new())?;
    // Services spread over this many namespaces (`bench-<k>`): one namespace of 10k Services
    // makes every commit carry a 10k-entry tree.
    let namespaces: usize = flags.get("namespaces", 1)?.max(1);
    let ns = |i: usize| {
        if namespaces == 1 {
            "bench".to_owned()
        } else {
            format!("bench-{:03}", i % namespaces)
        }
    };
    let rig = Rig::start(block, 1, n + reps + 1, None, &flags.host_options)?;
    for i in 0..n {
        rig.cluster
            .lb_service(&ns(i), &format!("svc{i:05}"), &[], &[("TCP", 8080, NODE_PORT_TCP)]);
    }
    let render = rig.render()?;
    let (cold, _) = rig.apply("lb-a", &[])?;
    println!(
        "overhead set-up, {n} Services in {namespaces} namespace(s) on one LB host: render {:.0} ms, cold apply {:.0} ms",
        ms(render),
        ms(cold)
    );
    let nginx = &rig.lbs["lb-a"];
    let state = nginx.state_dir.clone();
    let env: Vec<(&str, &str)> = if log.is_empty() {
        vec![]
    } else {
        vec![("RUST_LOG", log.as_str())]
    };
    let (mut applier, mut after, mut test, mut answer, mut fair) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut applier_cpu, mut test_cpu) = (vec![], vec![]);
    for rep in 0..reps {
        let name = format!("new{rep:03}");
        rig.cluster
            .lb_service(&ns(rep), &name, &[], &[("TCP", 8080, NODE_PORT_TCP)]);
        rig.render()?;
        let ip = *rig
            .addresses(&ns(rep), &name)
            .get("lb-a")
            .ok_or_else(|| format!("{}/{name} has no committed address on lb-a", ns(rep)))?;
        let addr = SocketAddr::new(ip, 8080);
        let previous = rig::current_release(&state).ok_or("no running release before the change")?;

        // The render's files are flushed first, so neither side pays for the other's writeback.
        rig::settle();
        let cpu = rig::children_cpu();
        let (took, out) = rig.apply("lb-a", &env)?;
        applier_cpu.push(ms(rig::children_cpu().saturating_sub(cpu)));
        let returned = Instant::now();
        flipbit_tests::wait::wait_until(Duration::from_secs(5), || probe::tcp(addr))?;
        after.push(ms(returned.elapsed()));
        applier.push(ms(took));
        if !log.is_empty() {
            for line in out.lines() {
                println!("  {line}");
            }
        }
        let release = rig::current_release(&state).ok_or("no running release after the apply")?;

        // Back to the previous release, settled: the new address refuses again.
        rig::switch_current(&state, &previous)?;
        reload_and_settle(nginx)?;
        flipbit_tests::wait::wait_until(Duration::from_secs(10), || match probe::tcp(addr) {
            Ok(_) => Err("still answering".to_string()),
            Err(_) => Ok(()),
        })?;

        rig::settle();
        let (t, c, a, f) = floor(nginx, &state, &release, addr)?;
        test.push(ms(t));
        test_cpu.push(ms(c));
        answer.push(ms(a));
        fair.push(ms(f));
    }
    // What every run costs before it knows there is nothing to do: start, open the cache, fetch.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(ms(rig.apply("lb-a", &[])?.0));
    }
    let runs = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    println!(
        "overhead, {n} Services, one Service added, per run (ms): applier [{}], floor [{}]",
        runs(&applier),
        runs(&fair)
    );
    let (a, f, f0, t) = (
        median(&mut applier),
        median(&mut fair),
        median(&mut answer),
        median(&mut test),
    );
    println!("overhead, {n} Services: flipbit-applier apply, median of {reps}: {a:.1} ms");
    println!(
        "overhead, {n} Services: floor nginx -t + SIGHUP until the new listener answers, median of {reps}: {f0:.1} ms (nginx -t alone {t:.1} ms)"
    );
    println!(
        "overhead, {n} Services: floor until the new listener answers and the old workers stopped accepting, median of {reps}: {f:.1} ms"
    );
    println!(
        "overhead, {n} Services: ratio applier / floor {:.2} (target <= 1.3); against the answer-only floor {:.2}",
        a / f,
        a / f0
    );
    println!(
        "overhead, {n} Services: CPU time, median: the applier and its nginx -t {:.1} ms; the floor's nginx -t {:.1} ms",
        median(&mut applier_cpu),
        median(&mut test_cpu)
    );
    println!(
        "overhead, {n} Services: flipbit-applier apply with nothing to do, median of 5: {:.1} ms",
        median(&mut idle)
    );
    println!(
        "overhead, {n} Services: the new Service answered {:.1} ms after the applier returned (median)",
        median(&mut after)
    );
    Ok(())
}

/// The floor for one change: swap `current` to `release`, `nginx -t`, SIGHUP, then poll `addr`.
/// Returns (until `nginx -t` passed, the CPU time `nginx -t` used, until `addr` answered, until
/// it answered and the old workers stopped accepting), times from the swap.
fn floor(
    nginx: &flipbit_tests::nginx::NginxInstance,
    state: &std::path::Path,
    release: &str,
    addr: SocketAddr,
) -> Result<(Duration, Duration, Duration, Duration), String> {
    let master = nginx.master_pid().ok_or("nginx is not running")?;
    let old = all_children(master);
    let cpu = rig::children_cpu();
    let started = Instant::now();
    rig::switch_current(state, release)?;
    let out = flipbit_tests::nginx::command(&nginx.dir, &nginx.conf, &nginx.error_log)
        .arg("-t")
        .arg("-q")
        .output()
        .map_err(|e| format!("nginx -t: {e}"))?;
    if !out.status.success() {
        return Err(format!("nginx -t: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let tested = started.elapsed();
    let test_cpu = rig::children_cpu().saturating_sub(cpu);
    sighup(master)?;
    while probe::tcp(addr).is_err() {
        if started.elapsed() > RELOAD_DEADLINE {
            return Err(format!(
                "{addr} did not answer within {RELOAD_DEADLINE:?} of the reload"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let answered = started.elapsed();
    while !stopped_accepting(&old) {
        if started.elapsed() > RELOAD_DEADLINE {
            return Err("the old nginx workers kept accepting".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((tested, test_cpu, answered, started.elapsed()))
}

fn sighup(master: i32) -> Result<(), String> {
    // SAFETY: plain signal delivery to the nginx master this bench started.
    if unsafe { libc::kill(master, libc::SIGHUP) } != 0 {
        return Err(format!("cannot signal nginx master {master}"));
    }
    Ok(())
}

/// SIGHUP and wait (untimed) until a new worker generation runs and the old one stopped accepting.
fn reload_and_settle(nginx: &flipbit_tests::nginx::NginxInstance) -> Result<(), String> {
    let master = nginx.master_pid().ok_or("nginx is not running")?;
    let old = all_children(master);
    sighup(master)?;
    let started = Instant::now();
    loop {
        let now = all_children(master);
        if now.iter().any(|p| !old.contains(p)) && stopped_accepting(&old) {
            return Ok(());
        }
        if started.elapsed() > RELOAD_DEADLINE {
            return Err("nginx did not reload".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
