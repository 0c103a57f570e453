//! `flipbit-demo EXAMPLE_DIR WORK_DIR [--haproxy] [--dns bind|ad]`: runs the seed's example on loopback
//! and proves it with real traffic (with `--haproxy`, lb-3 is a HAProxy host; with `--dns ad` the
//! DNS records go to a throwaway Samba AD domain controller over GSS-TSIG instead of a private
//! `named`). Exits 0 only when every check passed; everything it started stops on exit.

use std::path::PathBuf;
use std::process::ExitCode;

use flipbit_tests::{bins, demo};

/// The port of the demo's `named` on 127.0.0.1.
const DEMO_DNS_PORT: u16 = 15353;

const USAGE: &str = "usage: flipbit-demo EXAMPLE_DIR WORK_DIR [--haproxy] [--dns bind|ad]";

/// EXAMPLE_DIR, WORK_DIR, `--haproxy`, `--dns ad`.
fn parse(args: &[String]) -> Option<(&str, &str, bool, bool)> {
    let [example, work, flags @ ..] = args else {
        return None;
    };
    let (mut haproxy, mut ad) = (false, false);
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--haproxy" => haproxy = true,
            "--dns" => match flags.next().map(String::as_str) {
                Some("ad") => ad = true,
                Some("bind") => ad = false,
                _ => return None,
            },
            _ => return None,
        }
    }
    Some((example, work, haproxy, ad))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((example, work, haproxy, ad_dns)) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let code = run(example, work, haproxy, ad_dns);
    if ad_dns {
        // The DC stopped with the demo; its provisioned template goes too.
        flipbit_tests::samba::remove_template();
    }
    code
}

fn run(example: &str, work: &str, haproxy: bool, ad_dns: bool) -> ExitCode {
    let opts = demo::DemoOptions {
        example: PathBuf::from(example),
        work: PathBuf::from(work),
        generator: bins::generator(),
        applier: bins::applier(),
        dns_port: Some(DEMO_DNS_PORT),
        haproxy,
        ad_dns,
    };
    let running = match demo::start(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", running.log);
    let report = match demo::prove(&running) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("\n{}", report.table);
    println!("{}", report.dns_table);
    for c in &report.checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        let answer = match &c.answer {
            Ok(a) => format!("answered by {a}"),
            Err(e) => e.clone(),
        };
        println!("{mark} {:<18} {:<22} {answer}", c.service, c.target);
    }
    let passed = report.checks.iter().filter(|c| c.ok).count();
    let failed = report.checks.len() - passed;
    println!("\n{passed} passed, {failed} failed");
    if !report.all_ok() {
        return ExitCode::FAILURE;
    }
    // The last act: lb-2 dies, leaves DNS, comes back.
    let mut running = running;
    match flipbit_tests::failover::run(&mut running, &bins::applier(), &PathBuf::from(work)) {
        Ok(log) => {
            println!("\n{log}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the failover act: {e}");
            ExitCode::FAILURE
        }
    }
}
