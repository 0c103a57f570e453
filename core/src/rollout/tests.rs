use super::*;

const HOSTS: &str = "zone: k8s.example.test\nlbHosts:\n  - name: lb-1\n    pools: [127.1.1.0/24]\n  - name: lb-2\n    pools: [127.1.2.0/24]\n  - name: lb-3\n    pools: [127.1.3.0/24]\n  - name: lb-10\n    pools: [127.1.4.0/24]\n";

fn config(rollout: &str) -> Config {
    Config::parse(&format!("{HOSTS}{rollout}")).unwrap()
}

fn refused(rollout: &str) -> String {
    Config::parse(&format!("{HOSTS}{rollout}")).unwrap_err().to_string()
}

fn name(n: &str) -> LbHostName {
    n.parse().unwrap()
}

const HEAD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const OLD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NOW: u64 = 1_700_000_000;

/// lb-1 serving `commit` healthy since `since`, last run `at`.
fn serving(commit: &str, since: u64, at: u64) -> HostState {
    HostState {
        commit: Some(commit.to_owned()),
        since,
        head: Some(commit.to_owned()),
        at,
        lb: StepState::Ok,
        dns: StepState::Ok,
        withdrawn: false,
        interval: 15,
    }
}

fn published(states: &[(&str, HostState)]) -> Published {
    states.iter().map(|(h, s)| (name(h), Ok(s.clone()))).collect()
}

const WAVES: &str = "rollout:\n  waves: [[lb-1], [lb-2]]\n  soakSeconds: 30\n";

#[test]
fn the_config_reads_waves_and_a_soak() {
    let c = config(WAVES);
    let r = c.rollout.as_ref().unwrap();
    assert_eq!(r.waves, vec![vec![name("lb-1")], vec![name("lb-2")]]);
    assert_eq!(r.soak_seconds, 30);
    assert_eq!((r.wave_of(&name("lb-1")), r.wave_of(&name("lb-2"))), (0, 1));
    // Hosts no wave lists make one last wave after every listed one.
    assert_eq!(r.wave_of(&name("lb-3")), 2);
    assert_eq!(r.earlier(&name("lb-3")), [&name("lb-1"), &name("lb-2")]);
    assert!(r.earlier(&name("lb-1")).is_empty());
    let block = config("rollout:\n  waves:\n    - [lb-1]\n    - - lb-2\n      - lb-3\n");
    let r = block.rollout.as_ref().unwrap();
    assert_eq!(r.soak_seconds, 0, "no soak by default");
    assert_eq!(r.earlier(&name("lb-3")), [&name("lb-1")]);
    assert!(config("").rollout.is_none());
    // Written back, it reads the same.
    let again = serde_norway::to_string(&c).unwrap();
    assert_eq!(Config::parse(&again).unwrap(), c, "{again}");
}

#[test]
fn the_config_refuses_unknown_hosts_duplicates_and_empty_waves_by_line() {
    for (rollout, why) in [
        (
            "rollout:\n  waves: [[lb-1], [lb-9]]\n",
            "rollout.waves[1][0]: lb-9 is not in lbHosts (line 12)",
        ),
        (
            "rollout:\n  waves:\n    - [lb-1, lb-10]\n    - [lb-2, lb-1]\n",
            "rollout.waves[1][1]: lb-1 is already in rollout.waves[0][0]; a host belongs to one wave (line 14)",
        ),
        (
            "rollout:\n  waves:\n    - [lb-1]\n    - []\n",
            "rollout.waves[1]: a wave lists at least one LB host (line 14)",
        ),
        (
            "rollout:\n  waves: []\n",
            "rollout.waves: at least one wave is needed (line 12)",
        ),
        ("rollout:\n  soakSeconds: 30\n", "rollout: missing field `waves`"),
        ("rollout:\n  waves: [[lb-1]]\n  soak: 30\n", "unknown field `soak`"),
        ("rollout:\n  waves: [[lb-1]]\n  soakSeconds: -1\n", "soakSeconds"),
        ("rollout:\n  waves: [[LB_1]]\n", "LB_1"),
    ] {
        let err = refused(rollout);
        assert!(err.contains(why), "{rollout}:\n{err}");
    }
}

#[test]
fn no_rollout_and_the_first_wave_apply_at_once() {
    assert_eq!(
        gate(&config(""), &name("lb-2"), HEAD, &Published::new(), NOW),
        Gate::Apply
    );
    assert_eq!(
        gate(&config(WAVES), &name("lb-1"), HEAD, &Published::new(), NOW),
        Gate::Apply
    );
    assert_eq!(Gate::Apply.why(), None);
}

#[test]
fn a_later_wave_waits_for_a_state_the_head_and_the_soak() {
    let c = config(WAVES);
    let lb2 = name("lb-2");
    let why = |p: &Published| gate(&c, &lb2, HEAD, p, NOW).why().unwrap_or_default();
    assert_eq!(why(&Published::new()), "waiting for lb-1: it has published no state");
    let unreadable = Published::from([(name("lb-1"), Err("no v=".to_owned()))]);
    assert_eq!(
        why(&unreadable),
        "waiting for lb-1: its state record does not read (no v=)"
    );
    assert_eq!(
        why(&published(&[("lb-1", serving(OLD, NOW - 900, NOW))])),
        "waiting for lb-1: it serves aaaaaaaaaaaa, not bbbbbbbbbbbb"
    );
    let fresh = HostState {
        commit: None,
        ..serving(OLD, 0, NOW)
    };
    assert!(why(&published(&[("lb-1", fresh)])).contains("it serves nothing yet"));
    // Healthy for 20 s so far: 10 s to go.
    assert_eq!(
        why(&published(&[("lb-1", serving(HEAD, NOW - 20, NOW))])),
        "waiting for lb-1: it has served bbbbbbbbbbbb healthy for 20 s of the 30 s soak"
    );
    // The soak counts what the host saw (since → its last run), not the time since: a host that
    // went quiet right after applying has proven nothing.
    assert!(why(&published(&[("lb-1", serving(HEAD, NOW - 100, NOW - 95))])).contains("for 5 s of the 30 s"));
    // A clock ahead of ours proves nothing extra.
    assert!(why(&published(&[("lb-1", serving(HEAD, NOW - 10, NOW + 600))])).contains("for 10 s of"));
    assert_eq!(
        gate(
            &c,
            &lb2,
            HEAD,
            &published(&[("lb-1", serving(HEAD, NOW - 30, NOW))]),
            NOW
        ),
        Gate::Apply
    );
}

#[test]
fn the_implicit_last_wave_waits_for_every_listed_host() {
    let c = config(WAVES);
    let lb3 = name("lb-3");
    let lb1_only = published(&[("lb-1", serving(HEAD, NOW - 60, NOW))]);
    assert_eq!(
        gate(&c, &lb3, HEAD, &lb1_only, NOW).why().as_deref(),
        Some("waiting for lb-2: it has published no state")
    );
    let both = published(&[
        ("lb-1", serving(HEAD, NOW - 60, NOW)),
        ("lb-2", serving(HEAD, NOW - 31, NOW)),
    ]);
    assert_eq!(gate(&c, &lb3, HEAD, &both, NOW), Gate::Apply);
}

#[test]
fn an_earlier_host_that_failed_the_head_halts_the_rollout() {
    let c = config(WAVES);
    let lb2 = name("lb-2");
    let failed = |cause, commit: &str, head: &str| HostState {
        commit: Some(commit.to_owned()),
        head: Some(head.to_owned()),
        lb: StepState::Failed(cause),
        ..serving(commit, NOW - 900, NOW)
    };
    // It tried the head and `nginx -t` refused it: it keeps serving the old commit.
    let halted = gate(
        &c,
        &lb2,
        HEAD,
        &published(&[("lb-1", failed(Cause::Invalid, OLD, HEAD))]),
        NOW,
    );
    assert_eq!(
        halted,
        Gate::Halted {
            at: HEAD.to_owned(),
            host: name("lb-1"),
            cause: Cause::Invalid
        }
    );
    assert_eq!(halted.why().as_deref(), Some("halted at bbbbbbbbbbbb on lb-1: invalid"));
    // It serves the head, but its probe of its own listeners failed.
    let probe = gate(
        &c,
        &lb2,
        HEAD,
        &published(&[("lb-1", failed(Cause::Probe, HEAD, HEAD))]),
        NOW,
    );
    assert_eq!(probe.why().as_deref(), Some("halted at bbbbbbbbbbbb on lb-1: probe"));
    // A halt wins over another host's wait.
    let c3 = config(WAVES);
    let mixed = Published::from([(name("lb-2"), Ok(failed(Cause::Reload, OLD, HEAD)))]);
    assert_eq!(
        gate(&c3, &name("lb-3"), HEAD, &mixed, NOW).why().as_deref(),
        Some("halted at bbbbbbbbbbbb on lb-2: reload")
    );
    // A fetch failure or another error is the host's trouble, not the head's: wait for it.
    let fetch = gate(
        &c,
        &lb2,
        HEAD,
        &published(&[("lb-1", failed(Cause::Fetch, HEAD, HEAD))]),
        NOW,
    );
    assert_eq!(
        fetch.why().as_deref(),
        Some("waiting for lb-1: its last run failed (fetch)")
    );
    let other = gate(
        &c,
        &lb2,
        HEAD,
        &published(&[("lb-1", failed(Cause::Other, OLD, HEAD))]),
        NOW,
    );
    assert!(matches!(other, Gate::Wait { .. }), "{other:?}");
}

#[test]
fn a_new_head_replaces_a_halted_one() {
    let c = config(WAVES);
    let lb2 = name("lb-2");
    const NEXT: &str = "cccccccccccccccccccccccccccccccccccccccc";
    // lb-1 failed HEAD; NEXT comes and lb-1 has not run yet: the later wave waits (for NEXT).
    let failed_head = HostState {
        commit: Some(OLD.to_owned()),
        head: Some(HEAD.to_owned()),
        lb: StepState::Failed(Cause::Invalid),
        ..serving(OLD, NOW - 900, NOW)
    };
    assert_eq!(
        gate(&c, &lb2, NEXT, &published(&[("lb-1", failed_head)]), NOW)
            .why()
            .as_deref(),
        Some("waiting for lb-1: it serves aaaaaaaaaaaa, not cccccccccccc")
    );
    // lb-1 serves NEXT healthy for the soak: the rollout resumes.
    assert_eq!(
        gate(
            &c,
            &lb2,
            NEXT,
            &published(&[("lb-1", serving(NEXT, NOW - 45, NOW))]),
            NOW
        ),
        Gate::Apply
    );
}
