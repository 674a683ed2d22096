//! Lifecycles: which status may follow which in a namespace. An event that breaks its namespace's
//! lifecycle is refused (409 `invalid_transition`) with the current status and the allowed next ones.
//!
//! The rules every lifecycle shares: a new topic starts at one of the initial statuses; repeating the
//! current status (with new progress) is allowed; progress never goes backwards within a status; a terminal
//! status is final; an event without a status keeps the current one (and is refused after a terminal one).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub initial: BTreeSet<String>,
    /// Status → the statuses that may follow it (besides itself). A status with no entry is terminal.
    pub next: BTreeMap<String, BTreeSet<String>>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("status {status:?} is not one of this namespace's statuses")]
    UnknownStatus { status: String, allowed: Vec<String> },
    #[error("{}", transition_message(current.as_deref(), status, allowed))]
    Transition { current: Option<String>, status: String, allowed: Vec<String> },
    #[error("progress may not go back within status {status:?} (from {current} to {requested})")]
    ProgressBackwards { status: String, current: u8, requested: u8 },
}

fn transition_message(current: Option<&str>, status: &str, allowed: &[String]) -> String {
    let allowed = if allowed.is_empty() { "none: it is final".to_owned() } else { allowed.join(", ") };
    match current {
        None => format!("a new topic cannot start at {status:?}; it starts at: {allowed}"),
        Some(current) => format!("{current:?} cannot be followed by {status:?}; allowed next: {allowed}"),
    }
}

/// The status and progress a topic has now, as far as its lifecycle is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    pub status: Option<&'a str>,
    pub progress: Option<u8>,
}

impl Lifecycle {
    fn chain(initial: &[&str], edges: &[(&str, &[&str])]) -> Self {
        let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        Self { initial: set(initial), next: edges.iter().map(|(from, to)| ((*from).to_owned(), set(to))).collect() }
    }

    /// Mint intents: pending → broadcast → confirming → ready; any non-terminal → failed.
    pub fn intent() -> Self {
        Self::chain(
            &["pending"],
            &[
                ("pending", &["broadcast", "failed"]),
                ("broadcast", &["confirming", "failed"]),
                ("confirming", &["ready", "failed"]),
            ],
        )
    }

    /// DEX orders: pending → routing → building → submitted → confirmed | failed. A failed execution may be
    /// retried: submitted → execution-failed → retry-pending → building or submitted again.
    pub fn order() -> Self {
        Self::chain(
            &["pending"],
            &[
                ("pending", &["routing", "failed"]),
                ("routing", &["building", "failed"]),
                ("building", &["submitted", "failed"]),
                ("submitted", &["confirmed", "execution-failed", "failed"]),
                ("execution-failed", &["retry-pending", "failed"]),
                ("retry-pending", &["building", "submitted", "failed"]),
            ],
        )
    }

    pub fn statuses(&self) -> BTreeSet<&str> {
        let mut all: BTreeSet<&str> = self.initial.iter().map(String::as_str).collect();
        for (from, to) in &self.next {
            all.insert(from);
            all.extend(to.iter().map(String::as_str));
        }
        all
    }

    pub fn is_terminal(&self, status: &str) -> bool {
        !self.next.contains_key(status)
    }

    /// The shortest way from `from` (`None`: a new topic) to `to` that this lifecycle allows: the statuses to
    /// append, in order, ending with `to`. Empty when the topic is at `to` already; `None` when there is no way
    /// (`from` is terminal or unknown, or `to` cannot be reached from it). Ties go to the status first in
    /// order, so the answer is always the same.
    pub fn path(&self, from: Option<&str>, to: &str) -> Option<Vec<String>> {
        if from == Some(to) {
            return Some(Vec::new());
        }
        let starts: Vec<&str> = match from {
            None => self.initial.iter().map(String::as_str).collect(),
            Some(from) => self.next.get(from)?.iter().map(String::as_str).collect(),
        };
        // Breadth first, remembering how each status was reached (`None`: it is a first step).
        let mut reached: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut queue = VecDeque::new();
        for start in starts {
            reached.insert(start, None);
            queue.push_back(start);
        }
        while let Some(status) = queue.pop_front() {
            if status == to {
                let mut path = vec![to.to_owned()];
                let mut at = status;
                while let Some(Some(before)) = reached.get(at) {
                    path.push((*before).to_owned());
                    at = before;
                }
                path.reverse();
                return Some(path);
            }
            for next in self.next.get(status).into_iter().flatten() {
                if Some(next.as_str()) != from && !reached.contains_key(next.as_str()) {
                    reached.insert(next, Some(status));
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// Checks an event's status and progress against the topic's current state.
    pub fn check(&self, current: Current<'_>, status: Option<&str>, progress: Option<u8>) -> Result<(), Refusal> {
        if let Some(status) = status {
            if !self.statuses().contains(status) {
                return Err(Refusal::UnknownStatus {
                    status: status.to_owned(),
                    allowed: self.statuses().into_iter().map(str::to_owned).collect(),
                });
            }
        }
        let Some(now) = current.status else {
            return match status {
                Some(s) if !self.initial.contains(s) => Err(Refusal::Transition {
                    current: None,
                    status: s.to_owned(),
                    allowed: self.initial.iter().cloned().collect(),
                }),
                _ => Ok(()),
            };
        };
        let requested = status.unwrap_or(now);
        if self.is_terminal(now) {
            return Err(Refusal::Transition {
                current: Some(now.to_owned()),
                status: requested.to_owned(),
                allowed: vec![],
            });
        }
        if requested == now {
            if let (Some(before), Some(after)) = (current.progress, progress) {
                if after < before {
                    return Err(Refusal::ProgressBackwards {
                        status: now.to_owned(),
                        current: before,
                        requested: after,
                    });
                }
            }
            return Ok(());
        }
        let allowed = &self.next[now];
        if allowed.contains(requested) {
            Ok(())
        } else {
            let mut listed: Vec<String> = vec![now.to_owned()];
            listed.extend(allowed.iter().cloned());
            Err(Refusal::Transition { current: Some(now.to_owned()), status: requested.to_owned(), allowed: listed })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: &str, progress: Option<u8>) -> Current<'_> {
        Current { status: Some(status), progress }
    }
    const NEW: Current<'static> = Current { status: None, progress: None };

    #[test]
    fn intents_follow_their_chain_and_may_fail_from_any_open_status() {
        let l = Lifecycle::intent();
        assert!(l.check(NEW, Some("pending"), None).is_ok());
        assert!(l.check(at("pending", None), Some("broadcast"), None).is_ok());
        assert!(l.check(at("confirming", None), Some("ready"), None).is_ok());
        for open in ["pending", "broadcast", "confirming"] {
            assert!(l.check(at(open, None), Some("failed"), None).is_ok(), "{open} → failed");
        }
        let skipped = l.check(at("pending", None), Some("ready"), None).unwrap_err();
        assert_eq!(
            skipped,
            Refusal::Transition {
                current: Some("pending".into()),
                status: "ready".into(),
                allowed: vec!["pending".into(), "broadcast".into(), "failed".into()]
            }
        );
        assert!(skipped.to_string().contains("allowed next: pending, broadcast, failed"), "{skipped}");
        assert!(matches!(l.check(NEW, Some("ready"), None), Err(Refusal::Transition { current: None, .. })));
        assert!(matches!(l.check(NEW, Some("shipped"), None), Err(Refusal::UnknownStatus { .. })));
    }

    #[test]
    fn terminal_statuses_are_final() {
        let l = Lifecycle::intent();
        for after in [Some("ready"), Some("failed"), None] {
            let refused = l.check(at("ready", Some(100)), after, None).unwrap_err();
            assert!(refused.to_string().contains("final"), "{refused}");
        }
    }

    #[test]
    fn progress_moves_forward_within_a_status() {
        let l = Lifecycle::order();
        assert!(l.check(at("routing", Some(10)), Some("routing"), Some(30)).is_ok());
        assert!(l.check(at("routing", Some(30)), None, Some(30)).is_ok());
        assert!(matches!(
            l.check(at("routing", Some(30)), Some("routing"), Some(10)),
            Err(Refusal::ProgressBackwards { current: 30, requested: 10, .. })
        ));
        // A new status may start lower.
        assert!(l.check(at("routing", Some(30)), Some("building"), Some(0)).is_ok());
    }

    #[test]
    fn the_shortest_path_to_a_status_is_found_from_anywhere_open() {
        let l = Lifecycle::intent();
        let path = |from: Option<&str>| l.path(from, "ready");
        assert_eq!(path(None).unwrap(), ["pending", "broadcast", "confirming", "ready"]);
        assert_eq!(path(Some("pending")).unwrap(), ["broadcast", "confirming", "ready"]);
        assert_eq!(path(Some("broadcast")).unwrap(), ["confirming", "ready"]);
        assert_eq!(path(Some("confirming")).unwrap(), ["ready"]);
        assert_eq!(path(Some("ready")).unwrap(), Vec::<String>::new(), "already there");
        assert_eq!(path(Some("failed")), None, "a terminal status goes nowhere");
        assert_eq!(path(Some("shipped")), None, "nor does an unknown one");
        assert_eq!(l.path(Some("pending"), "shipped"), None);
        // Every step of every path is one the lifecycle accepts.
        for from in [None, Some("pending"), Some("broadcast"), Some("confirming")] {
            let mut at = from.map(str::to_owned);
            for step in path(from).unwrap() {
                let current = Current { status: at.as_deref(), progress: None };
                assert!(l.check(current, Some(&step), None).is_ok(), "{at:?} → {step}");
                at = Some(step);
            }
        }
    }

    #[test]
    fn the_shortest_path_takes_the_shortcut_and_never_loops() {
        let o = Lifecycle::order();
        assert_eq!(o.path(Some("execution-failed"), "submitted").unwrap(), ["retry-pending", "submitted"]);
        assert_eq!(o.path(Some("submitted"), "confirmed").unwrap(), ["confirmed"]);
        assert_eq!(o.path(Some("retry-pending"), "confirmed").unwrap(), ["submitted", "confirmed"]);
        assert_eq!(o.path(Some("confirmed"), "submitted"), None);
        let looped = Lifecycle::chain(&["a"], &[("a", &["b"]), ("b", &["a", "c"])]);
        assert_eq!(looped.path(Some("b"), "c").unwrap(), ["c"]);
        assert_eq!(looped.path(Some("a"), "d"), None);
    }

    #[test]
    fn orders_may_retry_a_failed_execution() {
        let l = Lifecycle::order();
        let path = [
            "pending",
            "routing",
            "building",
            "submitted",
            "execution-failed",
            "retry-pending",
            "submitted",
            "confirmed",
        ];
        for pair in path.windows(2) {
            assert!(l.check(at(pair[0], None), Some(pair[1]), None).is_ok(), "{} → {}", pair[0], pair[1]);
        }
        assert!(l.check(at("confirmed", None), Some("failed"), None).is_err());
        assert!(l.check(at("routing", None), Some("submitted"), None).is_err());
    }
}
