//! The rollout line of `flipbit-applier status`: where the branch head stands in flipbit.yaml's
//! staged rollout, decided by the same `flipbit_core::rollout::gate` every later-wave applier
//! runs, from the same published records, so the command says what the hosts will do.

use std::collections::BTreeMap;

use serde::Serialize;

use flipbit_core::config::Config;
use flipbit_core::names::LbHostName;
use flipbit_core::rollout::{self, Gate};

use super::published::Published;

/// Where the head stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutStatus {
    /// `halted`: an earlier wave failed the head and the later ones keep their commit;
    /// `waiting`: a wave waits for the earlier ones; `open`: every wave may apply the head.
    pub state: &'static str,
    /// The first wave held (1-based, as flipbit.yaml lists them; the implicit last wave counts
    /// after the listed ones), when one is.
    pub wave: Option<usize>,
    /// The gate's reason: `halted at <commit12> on <host>: <cause>` or `waiting for <host>: ...`.
    pub why: Option<String>,
}

/// The head's place in `config`'s rollout, or `None` without one.
pub fn of(config: &Config, head: &str, states: &BTreeMap<LbHostName, Published>, now: u64) -> Option<RolloutStatus> {
    let plan = config.rollout.as_ref()?;
    let published: rollout::Published = states
        .iter()
        .filter_map(|(host, p)| match p {
            Published::Missing => None,
            Published::Unreadable(why) => Some((host.clone(), Err(why.clone()))),
            Published::State(s) => Some((host.clone(), Ok(s.clone()))),
        })
        .collect();
    // One host stands for its wave: the gate looks at the earlier waves only.
    let mut waves: Vec<&LbHostName> = plan.waves.iter().filter_map(|w| w.first()).collect();
    if let Some(unlisted) = config
        .lb_hosts
        .iter()
        .find(|h| plan.wave_of(&h.name) == plan.waves.len())
    {
        waves.push(&unlisted.name);
    }
    for (i, host) in waves.iter().enumerate().skip(1) {
        let gate = rollout::gate(config, host, head, &published, now);
        let state = match gate {
            Gate::Apply => continue,
            Gate::Halted { .. } => "halted",
            Gate::Wait { .. } => "waiting",
        };
        return Some(RolloutStatus {
            state,
            wave: Some(i + 1),
            why: gate.why(),
        });
    }
    Some(RolloutStatus {
        state: "open",
        wave: None,
        why: None,
    })
}

impl RolloutStatus {
    /// The table's line: `rollout: halted at <commit12> on lb-1: invalid (wave 2 and later keep
    /// their commit)`.
    pub fn line(&self) -> String {
        match (self.state, self.wave, &self.why) {
            ("halted", Some(wave), Some(why)) => {
                format!("rollout: {why} (wave {wave} and later keep their commit)\n")
            }
            (_, Some(wave), Some(why)) => format!("rollout: wave {wave} is {why}\n"),
            _ => "rollout: every wave may apply the head\n".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use flipbit_core::fleet::{Cause, HostState, StepState};

    use super::*;

    const HEAD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const OLD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const NOW: u64 = 1_700_000_000;

    fn config(rollout: &str) -> Config {
        let hosts = "zone: k8s.example.test\nlbHosts:\n  - name: lb-1\n    pools: [127.1.1.0/24]\n  - name: lb-2\n    pools: [127.1.2.0/24]\n  - name: lb-3\n    pools: [127.1.3.0/24]\n";
        Config::parse(&format!("{hosts}{rollout}")).expect("flipbit.yaml")
    }

    fn lb1(commit: &str, head: &str, lb: StepState, healthy: u64) -> BTreeMap<LbHostName, Published> {
        let state = HostState {
            commit: Some(commit.into()),
            since: NOW - healthy,
            head: Some(head.into()),
            at: NOW,
            lb,
            dns: StepState::Ok,
            withdrawn: false,
            interval: 1,
        };
        BTreeMap::from([("lb-1".parse().expect("name"), Published::State(state))])
    }

    #[test]
    fn the_line_says_where_the_head_stands() {
        let c = config("rollout:\n  waves: [[lb-1], [lb-2]]\n  soakSeconds: 30\n");
        assert_eq!(of(&config(""), HEAD, &BTreeMap::new(), NOW), None);

        let halted = of(&c, HEAD, &lb1(OLD, HEAD, StepState::Failed(Cause::Invalid), 100), NOW).expect("a rollout");
        assert_eq!((halted.state, halted.wave), ("halted", Some(2)));
        assert_eq!(
            halted.line(),
            "rollout: halted at bbbbbbbbbbbb on lb-1: invalid (wave 2 and later keep their commit)\n"
        );

        let soaking = of(&c, HEAD, &lb1(HEAD, HEAD, StepState::Ok, 10), NOW).expect("a rollout");
        assert_eq!(
            soaking.line(),
            "rollout: wave 2 is waiting for lb-1: it has served bbbbbbbbbbbb healthy for 10 s of the 30 s soak\n"
        );

        // lb-1 soaked: wave 2 may go; lb-3, in no wave, waits for lb-2.
        let next = of(&c, HEAD, &lb1(HEAD, HEAD, StepState::Ok, 31), NOW).expect("a rollout");
        assert_eq!((next.state, next.wave), ("waiting", Some(3)));
        assert!(
            next.line().contains("waiting for lb-2: it has published no state"),
            "{}",
            next.line()
        );

        let all = config("rollout:\n  waves: [[lb-1], [lb-2, lb-3]]\n");
        let open = of(&all, HEAD, &lb1(HEAD, HEAD, StepState::Ok, 0), NOW).expect("a rollout");
        assert_eq!(open.line(), "rollout: every wave may apply the head\n");
    }
}
