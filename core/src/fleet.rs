//! What each LB host's applier publishes about itself after every run, so its peers, the generator
//! and an operator can see the fleet without credentials: a TXT record at `_flipbit.<host>.<zone>`
//! (or in a separate status zone), written with the applier's own TSIG key. DNS is the one thing
//! every applier may already write, it needs no new service, works from a systemd timer and
//! outlives the generator. The zone may be public, so the record says no more than peers need:
//! commits, times, state codes; error text stays in the host's log and metrics.
//!
//! ```text
//! "v=1 c=<applied commit> s=<since> h=<head tried> t=<run time> lb=ok dns=ok w=0 i=1"
//! ```

use std::fmt;

/// The label under which hosts publish their state: `_flipbit.<host>.<zone>`. Tenants cannot
/// claim it (DNS names they give hold no `_`).
pub const STATE_LABEL: &str = "_flipbit";

/// The name of `host`'s state record in `zone`.
pub fn state_name(host: &str, zone: &str) -> String {
    format!("{STATE_LABEL}.{host}.{zone}")
}

/// Why a step failed, as a short code peers and people can read; the text stays local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The repo could not be fetched.
    Fetch,
    /// The commit was refused before staging (history, signature, grammar, format).
    Refused,
    /// `nginx -t` / `haproxy -c` failed.
    Invalid,
    /// The reload did not take.
    Reload,
    /// The reload took but the host's own probe of its listeners failed.
    Probe,
    /// A DNS UPDATE failed.
    Dns,
    /// Anything else.
    Other,
}

impl Cause {
    /// Every cause, in the order metrics list them.
    pub const ALL: [Cause; 7] = [
        Cause::Fetch,
        Cause::Refused,
        Cause::Invalid,
        Cause::Reload,
        Cause::Probe,
        Cause::Dns,
        Cause::Other,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Cause::Fetch => "fetch",
            Cause::Refused => "refused",
            Cause::Invalid => "invalid",
            Cause::Reload => "reload",
            Cause::Probe => "probe",
            Cause::Dns => "dns",
            Cause::Other => "other",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Cause::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// A step's outcome in the last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    Ok,
    /// The step is not configured (DNS without `--dns-server`).
    Off,
    Failed(Cause),
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepState::Ok => f.write_str("ok"),
            StepState::Off => f.write_str("off"),
            StepState::Failed(c) => f.write_str(c.code()),
        }
    }
}

impl StepState {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(StepState::Ok),
            "off" => Some(StepState::Off),
            other => Cause::from_code(other).map(StepState::Failed),
        }
    }
}

/// One host's published state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostState {
    /// The commit the host's load balancer serves (40 hex digits), or none yet.
    pub commit: Option<String>,
    /// Unix seconds since the host has served `commit` without a failure.
    pub since: u64,
    /// The head the last run tried (the commit a failure is about).
    pub head: Option<String>,
    /// Unix seconds of the run that published this.
    pub at: u64,
    pub lb: StepState,
    pub dns: StepState,
    /// A peer took this host's address records out of DNS (it looked down); the host puts them
    /// back on its next good run.
    pub withdrawn: bool,
    /// Seconds between this host's runs, so peers can tell a late heartbeat from a dead host.
    pub interval: u32,
}

impl HostState {
    /// The TXT record's text (one character-string, well under 255 bytes).
    pub fn render(&self) -> String {
        format!(
            "v=1 c={} s={} h={} t={} lb={} dns={} w={} i={}",
            self.commit.as_deref().unwrap_or("-"),
            self.since,
            self.head.as_deref().unwrap_or("-"),
            self.at,
            self.lb,
            self.dns,
            u8::from(self.withdrawn),
            self.interval
        )
    }

    /// Reads a record [`HostState::render`] wrote; anything else is an error saying what.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fields = std::collections::BTreeMap::new();
        for word in text.split(' ') {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{:?} is not key=value", crate::text::escaped(word)))?;
            if fields.insert(key, value).is_some() {
                return Err(format!("{key} given twice"));
            }
        }
        let get = |key: &str| fields.get(key).copied().ok_or_else(|| format!("no {key}="));
        if get("v")? != "1" {
            return Err(format!("version {:?} is not 1", crate::text::escaped(get("v")?)));
        }
        let commit = |key: &str| -> Result<Option<String>, String> {
            match get(key)? {
                "-" => Ok(None),
                c if c.len() == 40 && c.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
                    Ok(Some(c.to_owned()))
                }
                _ => Err(format!("{key}= is not a commit id")),
            }
        };
        let number =
            |key: &str| -> Result<u64, String> { get(key)?.parse().map_err(|_| format!("{key}= is not a number")) };
        let step = |key: &str| StepState::parse(get(key)?).ok_or_else(|| format!("{key}= is not a state code"));
        if fields.len() != 9 {
            return Err("unknown fields".into());
        }
        Ok(HostState {
            commit: commit("c")?,
            since: number("s")?,
            head: commit("h")?,
            at: number("t")?,
            lb: step("lb")?,
            dns: step("dns")?,
            withdrawn: match get("w")? {
                "0" => false,
                "1" => true,
                _ => return Err("w= is not 0 or 1".into()),
            },
            interval: u32::try_from(number("i")?).map_err(|_| "i= is too large".to_owned())?,
        })
    }

    /// Serving its commit, healthy: the load-balancer step succeeded in the last run.
    pub fn serving(&self) -> bool {
        self.commit.is_some() && self.lb == StepState::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> HostState {
        HostState {
            commit: Some("a".repeat(40)),
            since: 1_700_000_000,
            head: Some("b".repeat(40)),
            at: 1_700_000_100,
            lb: StepState::Failed(Cause::Reload),
            dns: StepState::Ok,
            withdrawn: true,
            interval: 1,
        }
    }

    #[test]
    fn round_trips_and_stays_short() {
        let s = state();
        let text = s.render();
        assert!(text.len() < 255, "{text}");
        assert_eq!(HostState::parse(&text), Ok(s));
        assert!(text.contains(" lb=reload ") && text.contains(" w=1 "), "{text}");
        let fresh = HostState {
            commit: None,
            head: None,
            lb: StepState::Ok,
            dns: StepState::Off,
            withdrawn: false,
            ..state()
        };
        assert_eq!(HostState::parse(&fresh.render()), Ok(fresh));
        assert_eq!(state_name("lb-1", "k8s.example.test"), "_flipbit.lb-1.k8s.example.test");
    }

    #[test]
    fn anything_else_is_refused() {
        let text = state().render();
        for bad in [
            "",
            "v=2 c=- s=0 h=- t=0 lb=ok dns=ok w=0 i=1",
            &text.replace("lb=reload", "lb=exploded"),
            &text.replace(" w=1", " w=2"),
            &format!("{text} x=1"),
            &text.replace("c=aaaa", "c=AAAA"),
            &format!("{text}\nerror: forged"),
        ] {
            assert!(HostState::parse(bad).is_err(), "{bad:?}");
        }
    }
}
