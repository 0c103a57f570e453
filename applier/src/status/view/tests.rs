use flipbit_core::fleet::{Cause, HostState, StepState};

use super::*;

const NOW: u64 = 1_700_000_100;

fn state(lb: StepState, withdrawn: bool) -> Published {
    Published::State(HostState {
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        since: 1_700_000_000,
        head: Some("fedcba9876543210fedcba9876543210fedcba98".into()),
        at: NOW - 7,
        lb,
        dns: StepState::Ok,
        withdrawn,
        interval: 15,
    })
}

fn fleet() -> FleetStatus {
    let facts = |behind, records, error: Option<&str>| Facts {
        behind,
        records,
        error: error.map(str::to_owned),
    };
    FleetStatus {
        branch: "main".into(),
        head: "fedcba9876543210fedcba9876543210fedcba98".into(),
        zone: "k8s.example.test".into(),
        at: NOW,
        hosts: vec![
            HostStatus::new(
                "lb-a",
                "nginx",
                &state(StepState::Ok, false),
                NOW,
                facts(Some(0), Some(3), None),
            ),
            HostStatus::new(
                "lb-b",
                "nginx",
                &state(StepState::Failed(Cause::Reload), false),
                NOW,
                facts(Some(2), Some(3), Some("lb step: nginx reload failed")),
            ),
            HostStatus::new(
                "lb-c",
                "haproxy",
                &state(StepState::Ok, true),
                NOW,
                facts(Some(0), Some(3), None),
            ),
            HostStatus::new("lb-d", "nginx", &Published::Missing, NOW, facts(None, None, None)),
        ],
        rollout: None,
    }
}

#[test]
fn the_table_has_a_row_per_host_in_fixed_columns() {
    let expected = "\
branch main at fedcba987654, zone k8s.example.test
HOST  FLAVOR   COMMIT        BEHIND  LAST RUN  STATE           RECORDS
lb-a  nginx    0123456789ab  0       7s ago    serving         3
lb-b  nginx    0123456789ab  2       7s ago    failed: reload  3
lb-c  haproxy  0123456789ab  0       7s ago    withdrawn       0
lb-d  nginx    -             -       -         unknown         -

lb-b: lb step: nginx reload failed
lb-d: no state published
";
    assert_eq!(fleet().table(), expected);
}

#[test]
fn the_json_shape_is_stable() {
    let value: serde_json::Value = serde_json::from_str(&fleet().json()).expect("json");
    assert_eq!(value["head"], "fedcba9876543210fedcba9876543210fedcba98");
    assert_eq!(value["zone"], "k8s.example.test");
    let hosts = value["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 4);
    let b = &hosts[1];
    let keys: Vec<&str> = b.as_object().expect("object").keys().map(String::as_str).collect();
    let mut want = vec![
        "host",
        "flavor",
        "state",
        "cause",
        "error",
        "commit",
        "behind",
        "since",
        "head_tried",
        "last_run",
        "age_seconds",
        "lb",
        "dns",
        "interval_seconds",
        "records",
        "problem",
    ];
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys_sorted, want);
    assert_eq!(b["state"], "failed");
    assert_eq!(b["cause"], "reload");
    assert_eq!(b["lb"], "reload");
    assert_eq!(b["behind"], 2);
    assert_eq!(b["age_seconds"], 7);
    assert_eq!(b["error"], "lb step: nginx reload failed");
    assert_eq!(hosts[2]["state"], "withdrawn");
    assert_eq!(hosts[2]["records"], 0);
    assert_eq!(hosts[3]["state"], "unknown");
    assert!(hosts[3]["commit"].is_null() && hosts[3]["records"].is_null());
    assert_eq!(hosts[3]["problem"], "no state published");
}

#[test]
fn a_failure_text_shows_only_for_a_failed_host() {
    let row = HostStatus::new(
        "lb-a",
        "nginx",
        &state(StepState::Ok, false),
        NOW,
        Facts {
            error: Some("old".into()),
            ..Facts::default()
        },
    );
    assert_eq!(row.error, None);
    let dns_failed = Published::State(HostState {
        dns: StepState::Failed(Cause::Dns),
        ..state(StepState::Ok, false).state().cloned().expect("state")
    });
    assert_eq!(judge(&dns_failed).0, State::Failed);
    assert_eq!(judge(&Published::Unreadable("x".into())).2.as_deref(), Some("x"));
}

#[test]
fn ages_read_at_a_glance() {
    assert_eq!(
        [0, 119, 120, 7199, 7200, 172_799, 172_800].map(age),
        ["0s", "119s", "2m", "119m", "2h", "47h", "2d"]
    );
}
