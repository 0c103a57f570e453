//! `flipbit-bench render|dns N | example`: small measurements for BENCHMARKS.md, run on loopback with the
//! real binaries, nginx and named. Prints one line per figure; asserts nothing.
//!
//! - `render N`: N Services × 2 LB hosts × 5 nodes: cold `flipbit-generator render`, then a
//!   render with one Service changed, then one with nothing changed.
//! - `dns N`: N Services on one LB host with the DNS step on: the first apply (N adds), then a
//!   TTL change of all N (N deletes + N adds), both as the applier reports its DNS step.
//! - `live N`: `flipbit-generator run` (production timings: 200 ms debounce) against the test API
//!   server; N Services created one by one, each timed from its creation to its commit.
//! - `scale N [NODES] [shared]`: the generator in process at scale (see scale.rs).
//! - `synth N DIR [NODES]`: writes a synthetic cluster as manifests.
//! - `overhead N`, `dns-ratio N`, `convergence N`, `under-load`: issue 7's applier, DNS,
//!   convergence and reloads-under-load figures beside their floors (see each module; options
//!   such as `--block B` keep runs apart).
//! - `fleet N`: a dead LB host's records leaving DNS and coming back, N Services (see fleet.rs).
//! - `pods-rollout N`: a rolling update of a pod-backed Service of N endpoints (see pods.rs).
//! - `status-writes N`: status and Events of N Services written off the decision path, and
//!   create -> commit meanwhile vs idle (see status_writes.rs).
//! - `render-cli N`: `flipbit-generator render --cache-dir` (a fresh process each time) with one
//!   Service changed and with none, beside `git commit -a` of one changed file (see render_cli.rs).
//! - `ad-dns N`: N names over GSS-TSIG to a Samba AD DC vs over HMAC TSIG to named, and a fresh
//!   GSS-TSIG context vs a reused one (see ad_dns.rs; needs root and Samba).
//! - `example`: the seed's example as the demo runs it (needs root): the render and, per LB
//!   host, the apply and its DNS step, as the binaries report them.

mod ad_dns;
mod classic;
mod convergence;
mod dns_ratio;
mod fleet;
mod inproc;
mod overhead;
mod pods;
mod render_cli;
mod rig;
mod scale;
mod status_writes;
mod under_load;

/// The generator binary's allocator, so in-process figures are the generator's (see its main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    flipbit_generator::allocator::return_freed_memory_at_once();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    match args.first().map(String::as_str) {
        Some("render") => classic::render(n),
        Some("dns") => classic::dns(n),
        Some("example") => classic::example(),
        Some("live") => classic::live(n),
        Some("scale") => scale::scale(
            n,
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500),
            args.get(3).is_some_and(|s| s == "shared"),
        ),
        Some("synth") => match (args.get(2), args.get(3)) {
            (Some(dir), nodes) => {
                let nodes = nodes.and_then(|s| s.parse().ok()).unwrap_or(500);
                let snapshot = flipbit_tests::synth::snapshot(n, nodes);
                if let Err(e) = flipbit_tests::synth::write_manifests(&snapshot, std::path::Path::new(dir)) {
                    eprintln!("error: {dir}: {e}");
                    std::process::exit(1);
                }
            }
            _ => eprintln!("usage: flipbit-bench synth N DIR [NODES]"),
        },
        Some("overhead") => figure(overhead::run(n, &args[2..])),
        Some("dns-ratio") => figure(dns_ratio::run(n, &args[2..])),
        Some("ad-dns") => figure(ad_dns::run(n, &args[2..])),
        Some("convergence") => figure(convergence::run(n, &args[2..])),
        Some("under-load") => figure(under_load::run(&args[1..])),
        Some("fleet") => figure(fleet::run(n, &args[2..])),
        Some("status-writes") => figure(status_writes::run(n, &args[2..])),
        Some("render-cli") => figure(render_cli::run(n, &args[2..])),
        Some("pods-rollout") => figure(pods::run(
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500),
            args.get(2..).unwrap_or_default(),
        )),
        _ => {
            eprintln!("usage: flipbit-bench render|dns|live N | example");
            std::process::exit(2);
        }
    }
}

/// Ends the process non-zero with the figure's one-line error, so scripts/bench and the smoke
/// tests see a failed figure as a failure rather than as missing lines.
fn figure(result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
