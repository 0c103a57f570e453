//! `flipbit-demo EXAMPLE_DIR WORK_DIR [--haproxy]`: runs the seed's example on loopback and proves
//! it with real traffic (with `--haproxy`, lb-3 is a HAProxy host). Exits 0 only when every check
//! passed; everything it started stops on exit.

use std::path::PathBuf;
use std::process::ExitCode;

use flipbit_tests::{bins, demo};

/// The port of the demo's `named` on 127.0.0.1.
const DEMO_DNS_PORT: u16 = 15353;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (example, work, haproxy) = match args.as_slice() {
        [example, work] => (example, work, false),
        [example, work, flag] if flag == "--haproxy" => (example, work, true),
        _ => {
            eprintln!("usage: flipbit-demo EXAMPLE_DIR WORK_DIR [--haproxy]");
            return ExitCode::from(2);
        }
    };
    let opts = demo::DemoOptions {
        example: PathBuf::from(example),
        work: PathBuf::from(work),
        generator: bins::generator(),
        applier: bins::applier(),
        dns_port: Some(DEMO_DNS_PORT),
        haproxy,
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
