//! Problems in the live generator's log: each object's problems are logged when they appear, when
//! they change and when they are resolved, not at every cycle. A problem that persists (a Service
//! no pool admits on three LB hosts) would otherwise repeat at every resync: 46 such Services gave
//! 138 WARN lines a cycle, 1,000 would give 3,000 lines a minute. One line per object names all
//! its problems (every LB host of a Service), so the count is per Service, not per host.

use std::collections::BTreeMap;

use flipbit_core::problem::{Problem, Subject};
use flipbit_core::text::escaped;

/// What changed in the problems since the last cycle, one entry per object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Logged {
    /// An object with problems it did not have last cycle: the problems as text.
    New(Subject, Vec<String>),
    /// An object whose problems differ from last cycle's: the problems now.
    Changed(Subject, Vec<String>),
    /// An object that had problems and has none now.
    Resolved(Subject),
}

/// The problems logged so far, by object (the text of each, in decision order).
#[derive(Debug, Default)]
pub(crate) struct ProblemLog {
    logged: BTreeMap<Subject, Vec<String>>,
}

impl ProblemLog {
    /// What to log for this cycle's `problems` (each object at most once); remembers them.
    pub(crate) fn changes(&mut self, problems: &[Problem]) -> Vec<Logged> {
        let mut now: BTreeMap<Subject, Vec<String>> = BTreeMap::new();
        for p in problems {
            now.entry(p.object.clone()).or_default().push(p.to_string());
        }
        let mut out = Vec::new();
        for (subject, texts) in &now {
            match self.logged.get(subject) {
                None => out.push(Logged::New(subject.clone(), texts.clone())),
                Some(before) if before != texts => out.push(Logged::Changed(subject.clone(), texts.clone())),
                Some(_) => {}
            }
        }
        for subject in self.logged.keys().filter(|s| !now.contains_key(*s)) {
            out.push(Logged::Resolved(subject.clone()));
        }
        self.logged = now;
        out
    }

    /// Logs what changed: WARN for new and changed problems, INFO for resolved ones.
    pub(crate) fn log(&mut self, problems: &[Problem]) {
        for change in self.changes(problems) {
            match change {
                Logged::New(subject, texts) => {
                    tracing::warn!(object = %escaped(&subject.to_string()), problems = ?texts, "problem");
                }
                Logged::Changed(subject, texts) => {
                    tracing::warn!(object = %escaped(&subject.to_string()), problems = ?texts, "problem changed");
                }
                Logged::Resolved(subject) => {
                    tracing::info!(object = %escaped(&subject.to_string()), "resolved");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flipbit_core::names::ServiceKey;

    fn no_address(key: &ServiceKey, host: &str) -> Problem {
        Problem::service_warning(
            key,
            "",
            format!("no pool of LB host {host} admits it; not exposed there"),
        )
    }

    #[test]
    fn a_persisting_problem_is_logged_once_per_object_until_it_changes_or_goes() {
        let keys: Vec<ServiceKey> = (0..46).map(|i| format!("team/svc-{i}").parse().expect("key")).collect();
        let hosts = ["lb-1", "lb-2", "lb-3"];
        let problems: Vec<Problem> = keys
            .iter()
            .flat_map(|k| hosts.iter().map(move |h| no_address(k, h)))
            .collect();
        let mut log = ProblemLog::default();

        // First cycle: one line per Service (not per host), each naming its three hosts.
        let first = log.changes(&problems);
        assert_eq!(first.len(), 46);
        assert!(
            first
                .iter()
                .all(|c| matches!(c, Logged::New(_, texts) if texts.len() == 3))
        );

        // The same problems at every resync: nothing.
        for _ in 0..5 {
            assert_eq!(log.changes(&problems), vec![]);
        }

        // One Service's problem changes (a host admits it now), another's is resolved.
        let mut next: Vec<Problem> = problems
            .iter()
            .filter(|p| p.object.service() != Some(&keys[1]))
            .cloned()
            .collect();
        next.retain(|p| !(p.object.service() == Some(&keys[0]) && p.message.contains("lb-3")));
        let second = log.changes(&next);
        assert_eq!(
            second,
            vec![
                Logged::Changed(
                    Subject::Service(keys[0].clone()),
                    vec![
                        no_address(&keys[0], "lb-1").to_string(),
                        no_address(&keys[0], "lb-2").to_string()
                    ]
                ),
                Logged::Resolved(Subject::Service(keys[1].clone())),
            ]
        );
        assert_eq!(log.changes(&next), vec![]);

        // It comes back: logged as new again.
        let third = log.changes(&problems);
        assert_eq!(third.len(), 2);
        assert!(third.contains(&Logged::New(
            Subject::Service(keys[1].clone()),
            hosts.iter().map(|h| no_address(&keys[1], h).to_string()).collect()
        )));
    }

    #[test]
    fn the_log_lines_are_counted_once_per_object() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt as _;

        /// Counts events by level.
        struct Count(Arc<Mutex<BTreeMap<String, usize>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
            fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                if let Ok(mut counts) = self.0.lock() {
                    *counts.entry(event.metadata().level().to_string()).or_default() += 1;
                }
            }
        }
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let subscriber = tracing_subscriber::registry().with(Count(counts.clone()));
        let key: ServiceKey = "team/svc".parse().expect("key");
        let problems: Vec<Problem> = ["lb-1", "lb-2", "lb-3"].iter().map(|h| no_address(&key, h)).collect();
        tracing::subscriber::with_default(subscriber, || {
            let mut log = ProblemLog::default();
            for _ in 0..10 {
                log.log(&problems);
            }
            log.log(&[]);
            log.log(&[]);
        });
        let counts = counts.lock().expect("counts").clone();
        assert_eq!(counts.get("WARN"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("INFO"), Some(&1), "{counts:?}");
    }
}
