//! `flipbit-applier status` reads what each LB host published (`_flipbit.<host>.<zone>`) and says
//! per host its applied commit, how far behind the branch it is, its state and its records; the
//! applier's metrics textfile and `/metrics` parse as Prometheus text. The states are published
//! here with `nsupdate` (one serving, one failed, one withdrawn, one silent), so the test checks
//! the reading side alone.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flipbit_core::fleet::{Cause, HostState, StepState};
use flipbit_tests::cluster::{applier, flipbit_yaml, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::repo;

mod fleet_view;

pub const ZONE: &str = "k8s.example.test";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Publishes `state` as `host`'s record, replacing whatever is there.
fn publish(f: &Fleet, host: &str, state: &HostState) {
    let name = format!("_flipbit.{host}.{ZONE}");
    let named = f.named.as_ref().expect("named");
    named
        .nsupdate(&format!(
            "update delete {name} TXT\nupdate add {name} 60 TXT \"{}\"",
            state.render()
        ))
        .expect("nsupdate");
}

pub fn state(commit: &str, lb: StepState, withdrawn: bool) -> HostState {
    HostState {
        commit: Some(commit.to_owned()),
        since: now() - 100,
        head: Some(commit.to_owned()),
        at: now() - 5,
        lb,
        dns: StepState::Ok,
        withdrawn,
        interval: 15,
    }
}

/// The table's rows, each a map from column header to cell (cells are cut at the header's
/// column starts, so cells with spaces stay whole).
fn table_rows(table: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = table.lines().skip(1);
    let header = lines.next().expect("header");
    let headers = ["HOST", "FLAVOR", "COMMIT", "BEHIND", "LAST RUN", "STATE", "RECORDS"];
    let starts: Vec<usize> = headers.iter().map(|h| header.find(h).expect("column")).collect();
    lines
        .take_while(|l| l.starts_with("lb-"))
        .map(|line| {
            headers
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let end = starts.get(i + 1).copied().unwrap_or(line.len()).min(line.len());
                    let cell = line.get(starts[i]..end).unwrap_or_default().trim();
                    ((*h).to_owned(), cell.to_owned())
                })
                .collect()
        })
        .collect()
}

fn status(f: &Fleet, extra: &[&str]) -> String {
    let port = f.named.as_ref().expect("named").port;
    let mut args: Vec<String> = vec![
        "status".into(),
        "--repo".into(),
        f.repo.display().to_string(),
        "--dns-server".into(),
        format!("127.0.0.1:{port}"),
    ];
    if !extra.contains(&"--state-dir") {
        // An operator's machine: a state dir of its own.
        args.extend([
            "--state-dir".into(),
            f.tmp.path().join("operator").display().to_string(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = applier(&args);
    assert!(out.status.success(), "status: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The samples of a Prometheus text, read by a parser that is not ours; every sample line must
/// be read and typed.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let lines = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    assert_eq!(scrape.samples.len(), lines, "a line was not read:\n{text}");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                other => panic!("{} is not a counter or gauge: {other:?}", s.metric),
            };
            let labels: BTreeMap<_, _> = s.labels.iter().collect();
            let series = if labels.is_empty() {
                s.metric
            } else {
                format!("{}{labels:?}", s.metric)
            };
            (series, value)
        })
        .collect()
}

#[test]
fn status_reports_each_host_as_published_and_metrics_parse() {
    let Some(f) = Fleet::with_dns(196, 5366) else { return };
    // Two more hosts in flipbit.yaml with no applier here: lb-c (HAProxy) and lb-d.
    let config = flipbit_yaml(&[
        ("lb-a", "127.196.1.0/24"),
        ("lb-b", "127.196.2.0/24"),
        ("lb-c", "127.196.3.0/24"),
        ("lb-d", "127.196.4.0/24"),
    ])
    .replace("  - name: lb-c\n", "  - name: lb-c\n    flavor: haproxy\n");
    repo::human_commit(&f.repo, &BTreeMap::from([("flipbit.yaml", config)]), &[], "four hosts").expect("flipbit.yaml");
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let metrics_file = f.tmp.path().join("textfile").join("flipbit.prom");
    std::fs::create_dir_all(metrics_file.parent().expect("dir")).expect("textfile dir");
    let with_metrics = ["--metrics-file", metrics_file.to_str().expect("utf-8")];
    let first = f.apply("lb-a", &with_metrics);
    assert!(first.status.success(), "{}", text(&first));
    f.apply_ok("lb-b");
    let old = repo::head(&f.repo).expect("head").to_string();
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.render();
    let head = repo::head(&f.repo).expect("head").to_string();
    let second = f.apply("lb-a", &with_metrics);
    assert!(second.status.success(), "{}", text(&second));

    // lb-b's next run fails on the fetch (a repo that is gone): its text stays on the host.
    let mut failing = f.lbs["lb-b"].applier_args(&f.tmp.path().join("gone.git"), "lb-b");
    failing.extend(f.dns_args(&f.named.as_ref().expect("named").key_file));
    let out = applier(&failing);
    assert!(!out.status.success(), "{}", text(&out));

    publish(&f, "lb-a", &state(&head, StepState::Ok, false));
    publish(
        &f,
        "lb-b",
        &HostState {
            head: Some(head.clone()),
            ..state(&old, StepState::Failed(Cause::Fetch), false)
        },
    );
    publish(&f, "lb-c", &state(&head, StepState::Ok, true));
    f.named
        .as_ref()
        .expect("named")
        .nsupdate(&format!("update delete _flipbit.lb-d.{ZONE} TXT"))
        .expect("nsupdate");

    let table = status(&f, &[]);
    assert!(
        table.starts_with(&format!("branch main at {}, zone {ZONE}\n", &head[..12])),
        "{table}"
    );
    let rows = table_rows(&table);
    let cells = |row: &BTreeMap<String, String>| {
        ["HOST", "FLAVOR", "COMMIT", "BEHIND", "STATE", "RECORDS"].map(|h| row[h].clone())
    };
    assert_eq!(
        rows.iter().map(cells).collect::<Vec<_>>(),
        vec![
            ["lb-a", "nginx", &head[..12], "0", "serving", "2"].map(str::to_owned),
            ["lb-b", "nginx", &old[..12], "1", "failed: fetch", "1"].map(str::to_owned),
            ["lb-c", "haproxy", &head[..12], "0", "withdrawn", "0"].map(str::to_owned),
            ["lb-d", "nginx", "-", "-", "unknown", "-"].map(str::to_owned),
        ],
        "{table}"
    );
    assert!(rows[0]["LAST RUN"].ends_with("s ago"), "{table}");
    assert!(table.contains("lb-d: no state published"), "{table}");

    let json: serde_json::Value = serde_json::from_str(&status(&f, &["--output", "json"])).expect("json");
    assert_eq!(json["head"], head.as_str());
    let hosts = json["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 4);
    assert_eq!(hosts[0]["state"], "serving");
    assert_eq!(hosts[0]["commit"], head.as_str());
    assert!(
        hosts[0]["age_seconds"].as_u64().is_some_and(|a| (5..60).contains(&a)),
        "{json}"
    );
    assert_eq!(hosts[1]["state"], "failed");
    assert_eq!(hosts[1]["cause"], "fetch");
    assert_eq!(hosts[1]["behind"], 1);
    assert_eq!(hosts[1]["head_tried"], head.as_str());
    assert!(
        hosts[1]["error"].is_null(),
        "the failure text is only known on the host"
    );
    assert_eq!(hosts[2]["state"], "withdrawn");
    assert_eq!(hosts[2]["records"], 0);
    assert_eq!(hosts[3]["state"], "unknown");

    // On lb-b itself, its row is explained by its last failure's text.
    let state_dir = f.state_dir("lb-b").display().to_string();
    let json: serde_json::Value = serde_json::from_str(&status(
        &f,
        &["--output", "json", "--lb", "lb-b", "--state-dir", &state_dir],
    ))
    .expect("json");
    let error = json["hosts"][1]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("lb step: ") && error.contains("gone.git"), "{json}");

    // The textfile of lb-a's two runs: two runs, two reloads, the head's commit time.
    let metrics = samples(&std::fs::read_to_string(&metrics_file).expect("metrics file"));
    assert_eq!(metrics["flipbit_applier_runs_total"], 2.0);
    assert_eq!(metrics["flipbit_applier_reloads_total"], 2.0);
    assert_eq!(metrics["flipbit_applier_last_run_success"], 1.0);
    let commit_time = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(&f.repo)
        .output()
        .expect("git log");
    let commit_time: f64 = String::from_utf8_lossy(&commit_time.stdout)
        .trim()
        .parse()
        .expect("time");
    assert_eq!(metrics["flipbit_applier_applied_commit_timestamp_seconds"], commit_time);
    assert!(metrics["flipbit_applier_dns_step_duration_seconds"] > 0.0);

    // An unreachable DNS server is an error, not a silent fleet.
    let unreachable = applier(&[
        "status".into(),
        "--repo".into(),
        f.repo.display().to_string(),
        "--dns-server".into(),
        "127.0.0.1:9".into(),
        "--dns-timeout".into(),
        "1".into(),
        "--state-dir".into(),
        f.tmp.path().join("operator").display().to_string(),
    ]);
    assert!(!unreachable.status.success(), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("127.0.0.1:9"), "{}", text(&unreachable));
}

#[test]
fn watch_serves_its_metrics_over_http() {
    let Some(f) = Fleet::with_dns(197, 5367) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
    args[0] = "watch".into();
    args.extend(f.dns_args(&f.named.as_ref().expect("named").key_file));
    args.extend([
        "--interval".into(),
        "0.2".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let (mut child, bound) = super::spawn_with_metrics(&args, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let mut stream = TcpStream::connect(bound).expect("connect");
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let runs = samples(body).get("flipbit_applier_runs_total").copied().unwrap_or(0.0);
        if runs >= 3.0 || Instant::now() > deadline {
            break (runs, samples(body));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(runs.0 >= 3.0, "counters grow across a watch's runs: {:?}", runs.1);
    assert_eq!(runs.1["flipbit_applier_reloads_total"], 1.0, "{:?}", runs.1);
    assert_eq!(runs.1["flipbit_applier_last_run_success"], 1.0, "{:?}", runs.1);
}
