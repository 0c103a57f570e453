//! The first slice's figures: `render`, `dns`, `live` and `example` (see main.rs).

use std::time::Instant;

use flipbit_tests::cluster::{generator, text};
use flipbit_tests::fleet::Fleet;

fn services(f: &Fleet, n: usize, annotations: &[(&str, &str)]) {
    for i in 0..n {
        f.cluster
            .lb_service("bench", &format!("svc{i:05}"), annotations, &[("TCP", 8080, 30080)]);
    }
}

fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    println!("{label}: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    out
}

pub fn render(n: usize) {
    let Some(f) = Fleet::with_pools(91, None, "127.91.32.0/19", "127.91.64.0/19") else {
        return;
    };
    services(&f, n, &[]);
    timed(&format!("render cold, {n} Services x 2 LB hosts"), || f.render());
    f.cluster.lb_service(
        "bench",
        "svc00000",
        &[("flipbit.io/balance", "least-conn")],
        &[("TCP", 8080, 30080)],
    );
    timed(&format!("render one changed Service of {n}"), || f.render());
    timed(&format!("render with no change, {n} Services"), || f.render());
    let cache = f.tmp.path().join("bench-cache.git");
    let cache_arg = ["--cache-dir", cache.to_str().unwrap_or_default()];
    let run = |label: &str| {
        timed(label, || {
            let out = generator("render", &f.repo, f.cluster.path(), &cache_arg);
            assert!(out.status.success(), "{}", text(&out));
        })
    };
    run(&format!(
        "render with a warm --cache-dir, no change, {n} Services (first fills the cache)"
    ));
    run(&format!("render with a warm --cache-dir, no change, {n} Services"));
    f.cluster.lb_service(
        "bench",
        "svc00001",
        &[("flipbit.io/balance", "hash")],
        &[("TCP", 8080, 30080)],
    );
    run(&format!("render with a warm --cache-dir, one changed Service of {n}"));
    let out = timed(&format!("apply lb-a cold, {n} Services"), || f.apply_ok("lb-a"));
    for line in out.lines() {
        println!("  {line}");
    }
    f.cluster.lb_service("bench", "svc00000", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let out = timed(&format!("apply lb-a one changed Service of {n}"), || f.apply_ok("lb-a"));
    for line in out.lines() {
        println!("  {line}");
    }
}

pub fn dns(n: usize) {
    let Some(f) = Fleet::with_pools(92, Some(5380), "127.92.32.0/19", "127.92.64.0/19") else {
        return;
    };
    services(&f, n, &[("flipbit.io/load-balancers", "lb-a")]);
    f.render();
    let out = f.apply_ok("lb-a");
    report(&format!("first DNS step, {n} names"), &out);
    services(
        &f,
        n,
        &[("flipbit.io/load-balancers", "lb-a"), ("flipbit.io/dns-ttl", "60")],
    );
    f.render();
    let out = f.apply_ok("lb-a");
    report(&format!("DNS step, TTL of {n} names changed"), &out);
    let named = f
        .named
        .as_ref()
        .map(|n| n.query("svc00000.bench.k8s.example.test", "A"));
    println!("  check: svc00000 answers {named:?}");
}

fn report(label: &str, out: &str) {
    let line = out.lines().find(|l| l.starts_with("dns:")).unwrap_or("no dns line");
    println!("{label}: {line}");
}

pub fn example() {
    let work = match tempfile::tempdir() {
        Ok(w) => w,
        Err(e) => return eprintln!("error: {e}"),
    };
    let opts = flipbit_tests::demo::DemoOptions {
        dns_port: Some(15398),
        ..flipbit_tests::demo::DemoOptions::example(work.path())
    };
    let started = Instant::now();
    match flipbit_tests::demo::start(&opts) {
        Ok(running) => {
            println!(
                "example end to end (repo, named, render, 3 applies): {:.0} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            for line in running
                .log
                .lines()
                .filter(|l| l.starts_with("applied") || l.starts_with("dns:"))
            {
                println!("  {line}");
            }
            let args = [
                "plan",
                "--repo",
                &running.repo.display().to_string(),
                "--manifests",
                &opts.example.join("cluster").display().to_string(),
            ]
            .map(String::from);
            let mut samples: Vec<f64> = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let _ = std::process::Command::new(&opts.generator).args(&args).output();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            samples.sort_by(f64::total_cmp);
            println!(
                "flipbit-generator plan on the example (no change), median of 5: {:.1} ms",
                samples[2]
            );
        }
        Err(e) => eprintln!("error: {e}"),
    }
}

pub fn live(n: usize) {
    use flipbit_tests::genproc::{GeneratorProcess, objects};
    use flipbit_tests::live_cluster::LiveCluster;
    let LiveCluster {
        tmp,
        api,
        kubeconfig,
        repo,
        ..
    } = LiveCluster::with_hosts(&[("lb-a", "127.93.32.0/19"), ("lb-b", "127.93.64.0/19")], 93, 5);
    let cache = tmp.path().join("cache.git");
    let cache = cache.display().to_string();
    let generator = GeneratorProcess::spawn(
        &repo,
        &kubeconfig,
        "bench",
        &["--lease-renew", "1"],
        &["--cache-dir", &cache],
    );
    if generator
        .wait_for_log("leading=true", std::time::Duration::from_secs(30))
        .is_err()
    {
        return eprintln!("the generator did not start:\n{}", generator.log());
    }
    let mut samples = Vec::new();
    for i in 0..n {
        let name = format!("svc{i:03}");
        let path = format!("lb/lb-a/bench/{name}.conf");
        let started = Instant::now();
        api.apply(objects::lb_service("bench", &name, &[], &[(8080, 30080)]));
        while flipbit_tests::repo::read(&repo, &path).is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                return eprintln!("{name} was not committed within 30 s:\n{}", generator.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "Service created in the API server -> committed in the bare repo, {n} Services: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
}
