//! The DNS step against Active Directory DNS: a real Samba AD DC on 127.0.0.1 whose zone takes
//! only GSS-TSIG ("secure") updates, signed with a service account's Kerberos keytab. Records
//! are created, changed and deleted as with BIND; a record the administrator made survives; every
//! login failure an operator can cause (wrong principal, wrong DC host name, KDC down, a server
//! that does not do GSS-TSIG) fails the step with one line saying what to fix; and a context the
//! server forgot, or one past its age, is negotiated again without a restart. And the demo's
//! `--dns ad` publishes the seed's example to the DC.
//!
//! Only one DC can run at a time (fixed ports 53 and 88): each test holds the DC lock from
//! [`SambaDc::start`] to the end.

use std::time::Duration;

use flipbit_applier::dns::auth::{Auth, GssConfig, GssSecret, ReplyMac};
use flipbit_applier::dns::client::{AddressRecord, DnsError, UpdateClient, ZoneUpdate};
use flipbit_tests::cluster::text;
use flipbit_tests::demo;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::samba::{ACCOUNT, DC_HOST, DOMAIN, REALM, SambaDc, Services};
use flipbit_tests::tool;

const SHOP: &str = "shop.web.k8s.example.test";

fn dc(services: Services) -> Option<SambaDc> {
    flipbit_tests::require(&[tool::SAMBA])?;
    Some(SambaDc::start(services).expect("starting the Samba DC"))
}

fn principal() -> String {
    format!("{ACCOUNT}@{REALM}")
}

/// The applier flags for GSS-TSIG against `dc`, with `principal` and the account's keytab.
fn gss_args(dc: &SambaDc, principal: &str, dc_host: &str) -> Vec<String> {
    [
        "--dns-server",
        "127.0.0.1:53",
        "--dns-timeout",
        "3",
        "--dns-auth",
        "gss-tsig",
        "--kerberos-principal",
        principal,
        "--keytab",
        &dc.keytab.display().to_string(),
        "--dns-dc-host",
        dc_host,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn apply(f: &Fleet, dc: &SambaDc, lb: &str, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let krb5 = dc.krb5_conf.display().to_string();
    f.apply_with_env(lb, &args, &[("KRB5_CONFIG", &krb5)])
}

fn apply_ok(f: &Fleet, dc: &SambaDc, lb: &str) -> String {
    let out = apply(f, dc, lb, &gss_args(dc, &principal(), DC_HOST));
    assert!(out.status.success(), "apply on {lb}: {}", text(&out));
    text(&out)
}

/// The one `error:` line of a failed run.
fn error_line(out: &std::process::Output) -> String {
    let all = text(out);
    assert!(!out.status.success(), "the run should have failed: {all}");
    all.lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {all}"))
        .to_owned()
}

#[test]
fn records_are_created_changed_and_deleted_and_foreign_ones_survive() {
    let Some(dc) = dc(Services::All) else { return };
    let Some(f) = Fleet::start(242) else { return };
    dc.admin_add_a("taken", "127.99.242.9")
        .expect("adding a record as the administrator");
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();

    // Create: each host publishes its own address, signed with the account's keytab.
    let out = apply_ok(&f, &dc, "lb-a");
    assert!(out.contains("dns: 1 records added, 0 deleted"), "{out}");
    apply_ok(&f, &dc, "lb-b");
    assert_eq!(dc.query(SHOP, "A"), vec!["127.242.1.1", "127.242.2.1"]);

    // Change: new names; the old name goes, the new ones carry both addresses. One of them is
    // already the administrator's: left alone, and said so.
    f.cluster.lb_service(
        "web",
        "shop",
        &[("flipbit.io/hostname", "www.k8s.example.test, taken.k8s.example.test")],
        &[("TCP", 8080, 30080)],
    );
    f.render();
    let out = apply_ok(&f, &dc, "lb-a");
    assert!(out.contains("127.99.242.9 not written by Flipbit"), "{out}");
    apply_ok(&f, &dc, "lb-b");
    assert!(dc.query(SHOP, "A").is_empty(), "the old name still answers");
    assert_eq!(
        dc.query("www.k8s.example.test", "A"),
        vec!["127.242.1.1", "127.242.2.1"]
    );
    assert_eq!(dc.query("taken.k8s.example.test", "A"), vec!["127.99.242.9"]);

    // Delete: the Service goes, its records go; the administrator's stays.
    f.cluster.remove("svc-web-shop.yaml");
    f.render();
    let out = apply_ok(&f, &dc, "lb-a");
    assert!(out.contains("0 records added, 1 deleted"), "{out}");
    apply_ok(&f, &dc, "lb-b");
    assert!(dc.query("www.k8s.example.test", "A").is_empty());
    assert_eq!(dc.query("taken.k8s.example.test", "A"), vec!["127.99.242.9"]);
}

#[test]
fn login_failures_fail_the_dns_step_with_one_line_each() {
    let Some(mut dc) = dc(Services::All) else { return };
    let Some(f) = Fleet::start(243) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();

    // A principal the keytab has no key for.
    let out = apply(&f, &dc, "lb-a", &gss_args(&dc, &format!("nobody@{REALM}"), DC_HOST));
    let line = error_line(&out);
    assert!(line.contains(&format!("nobody@{REALM}")), "{line}");
    // nginx was applied all the same: the DNS step alone failed.
    assert!(f.current("lb-a").is_some(), "{}", text(&out));

    // A principal the KDC does not know, with a keytab of its own (so the KDC is asked).
    let ghost = dc.keytab_for_unknown_principal(&format!("ghost@{REALM}"));
    let mut args = gss_args(&dc, &format!("ghost@{REALM}"), DC_HOST);
    let at = args.iter().position(|a| a == "--keytab").expect("--keytab");
    args[at + 1] = ghost.display().to_string();
    let line = error_line(&apply(&f, &dc, "lb-a", &args));
    assert!(
        line.contains(&format!("does not know principal ghost@{REALM}")),
        "{line}"
    );

    // The DC's name wrong: no DNS/<host> service. The error names the host to try.
    let line = error_line(&apply(
        &f,
        &dc,
        "lb-a",
        &gss_args(&dc, &principal(), "dc9.k8s.example.test"),
    ));
    assert!(
        line.contains("knows no service DNS/dc9.k8s.example.test") && line.contains(&format!("try {DC_HOST}")),
        "{line}"
    );

    // A keytab that cannot be read.
    let mut args = gss_args(&dc, &principal(), DC_HOST);
    let at = args.iter().position(|a| a == "--keytab").expect("--keytab");
    args[at + 1] = dc.dir.join("missing.keytab").display().to_string();
    let line = error_line(&apply(&f, &dc, "lb-a", &args));
    assert!(
        line.contains("cannot read keytab") && line.contains("missing.keytab"),
        "{line}"
    );

    // The KDC stopped (the DC's DNS still answers).
    dc.restart(Services::NoKdc).expect("restarting the DC without its KDC");
    let line = error_line(&apply(&f, &dc, "lb-a", &gss_args(&dc, &principal(), DC_HOST)));
    assert!(
        line.contains(&format!("cannot reach a Kerberos KDC for realm {REALM}")),
        "{line}"
    );

    // Back up: the step goes through (retried on the next run).
    dc.restart(Services::All).expect("restarting the DC");
    apply_ok(&f, &dc, "lb-a");
    assert_eq!(dc.query(SHOP, "A"), vec!["127.242.1.1".replace("242", "243")]);
}

fn rec(name: &str, addr: &str) -> AddressRecord {
    AddressRecord {
        name: format!("{name}.{DOMAIN}"),
        ttl: 60,
        addr: addr.parse().expect("address"),
    }
}

fn gss_client(dc: &SambaDc, max_age: Option<Duration>) -> UpdateClient {
    UpdateClient {
        server: dc.dns(),
        auth: Auth::Gss(GssConfig {
            principal: principal(),
            secret: GssSecret::Keytab(dc.keytab.clone()),
            dc_host: DC_HOST.into(),
            reply_mac: ReplyMac::Detect,
            max_context_age: max_age,
        }),
        timeout: Duration::from_secs(3),
    }
}

/// Points this process's Kerberos library at the DC's krb5.conf. Only in a process that runs
/// one test alone ([`flipbit_tests::alone`]): no other thread reads the environment meanwhile.
fn use_krb5_conf(dc: &SambaDc) {
    assert!(
        flipbit_tests::alone::alone(),
        "KRB5_CONFIG is set only in a process of one test"
    );
    // SAFETY: see above: this process runs this one test, on this thread.
    unsafe { std::env::set_var("KRB5_CONFIG", &dc.krb5_conf) };
}

#[test]
fn a_context_is_reused_renegotiated_when_old_and_after_the_server_forgets_it() {
    // It sets KRB5_CONFIG for the in-process client: a process-wide change, made in a process of
    // its own while the other tests run on.
    if flipbit_tests::alone::in_own_process(concat!(
        module_path!(),
        "::a_context_is_reused_renegotiated_when_old_and_after_the_server_forgets_it"
    )) {
        return;
    }
    let Some(mut dc) = dc(Services::All) else { return };
    use_krb5_conf(&dc);
    let client = gss_client(&dc, None);
    let add = |names: &[(&str, &str)]| ZoneUpdate {
        zone: DOMAIN.into(),
        deletes: vec![],
        adds: names.iter().map(|(n, a)| rec(n, a)).collect(),
    };

    let stats = client.send(&add(&[("ctx1", "127.244.0.1")])).expect("first update");
    let first = stats.negotiations;
    let stats = client.send(&add(&[("ctx2", "127.244.0.2")])).expect("second update");
    assert_eq!(stats.negotiations, 0, "the context in use was not reused");
    assert!(first <= 1);

    // A big change over TCP on the same context.
    let many: Vec<(String, String)> = (0..300)
        .map(|i| (format!("bulk{i}"), format!("127.244.1.{}", i % 250 + 1)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    let stats = client.send(&add(&many)).expect("a big update");
    assert!(stats.over_tcp >= 1 && stats.negotiations == 0, "{stats:?}");
    assert_eq!(dc.query("bulk299.k8s.example.test", "A"), vec!["127.244.1.50"]);

    // The server restarts and forgets the context: the client notices and negotiates again.
    dc.restart(Services::All).expect("restarting the DC");
    let stats = client
        .send(&add(&[("ctx3", "127.244.0.3")]))
        .expect("update after the restart");
    assert_eq!(stats.negotiations, 1, "{stats:?}");
    assert_eq!(dc.query("ctx3.k8s.example.test", "A"), vec!["127.244.0.3"]);

    // A context past its age is not used again.
    let aged = gss_client(&dc, Some(Duration::ZERO));
    for name in ["ctx4", "ctx5"] {
        let stats = aged
            .send(&add(&[(name, "127.244.0.4")]))
            .expect("update with an aged context");
        assert_eq!(stats.negotiations, 1, "{stats:?}");
    }
    // Deletes are signed the same way.
    let stats = client
        .send(&ZoneUpdate {
            zone: DOMAIN.into(),
            deletes: vec![rec("ctx1", "127.244.0.1")],
            adds: vec![],
        })
        .expect("a delete");
    assert_eq!(stats.records, 1);
    assert!(dc.query("ctx1.k8s.example.test", "A").is_empty());
    assert_eq!(dc.query("ctx2.k8s.example.test", "A"), vec!["127.244.0.2"]);
}

#[test]
fn a_server_that_does_not_do_gss_tsig_is_named_as_such() {
    // KRB5_CONFIG again: see the test above.
    if flipbit_tests::alone::in_own_process(concat!(
        module_path!(),
        "::a_server_that_does_not_do_gss_tsig_is_named_as_such"
    )) {
        return;
    }
    let Some(dc) = dc(Services::All) else { return };
    let Some(()) = flipbit_tests::require(&[tool::BIND]) else {
        return;
    };
    use_krb5_conf(&dc);
    let dir = tempfile::tempdir().expect("tempdir");
    let named = flipbit_tests::bind::NamedInstance::start(dir.path(), 5425, DOMAIN).expect("named");
    let client = UpdateClient {
        server: named.addr(),
        ..gss_client(&dc, None)
    };
    let err = client
        .send(&ZoneUpdate {
            zone: DOMAIN.into(),
            deletes: vec![],
            adds: vec![rec("x", "127.245.0.1")],
        })
        .expect_err("BIND without a GSS keytab cannot take GSS-TSIG");
    assert!(matches!(err, DnsError::NotGssTsig { .. }), "{err}");
    assert!(err.to_string().contains("does not do GSS-TSIG"), "{err}");
}

/// `scripts/demo --dns ad`: the seed's example with its records published to the DC over
/// GSS-TSIG, every DNS name of the example answered by the DC with the Service's three LB
/// addresses (the demo takes the DC lock itself, as [`SambaDc::start`] does).
#[test]
fn the_demo_publishes_the_example_to_the_dc() {
    let Some(()) = flipbit_tests::require(&[tool::SAMBA, tool::NGINX]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let opts = demo::DemoOptions {
        ad_dns: true,
        ..demo::DemoOptions::example(work.path())
    };
    let running = demo::start(&opts).unwrap_or_else(|e| panic!("demo setup with --dns ad: {e}"));
    assert!(running.named.is_none() && running.dc.is_some());
    let report = demo::prove(&running).unwrap_or_else(|e| panic!("demo proof: {e}"));
    for c in &report.checks {
        assert!(c.ok, "{} {}: {:?}\n{}", c.service, c.target, c.answer, report.dns_table);
    }
    let dns: Vec<(&str, &Result<String, String>)> = report
        .checks
        .iter()
        .filter(|c| c.target.starts_with("dns "))
        .map(|c| (c.target.as_str(), &c.answer))
        .collect();
    // One name per exposed Service of the example, each with one address per LB host.
    assert_eq!(dns.len(), 3, "{}", report.dns_table);
    assert!(
        dns.contains(&(
            "dns frontend.blog.k8s.example.test",
            &Ok("127.1.1.1, 127.1.5.1, 127.1.7.1".to_owned())
        )),
        "{}",
        report.dns_table
    );
    assert!(
        report
            .dns_table
            .starts_with("DNS answered by the Samba AD domain controller on 127.0.0.1:53"),
        "{}",
        report.dns_table
    );
    // The answers come from the DC itself, not from a copy of the zone elsewhere.
    let dc = running.dc.as_ref().expect("the DC");
    assert_eq!(
        dc.query("frontend.blog.k8s.example.test", "A"),
        vec!["127.1.1.1", "127.1.5.1", "127.1.7.1"]
    );
}
