//! The result of a run: the shares added up into one flat record, printed as one JSON line
//! for machines and as a table for people.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::histogram::{new_histogram, Quantiles};
use crate::plan::RunPlan;
use crate::share::{DeliveryCounts, ShareReport};

/// The server's memory at the points a run reads it, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Before connecting.
    pub before_kb: Option<u64>,
    /// Idle: after the hold, with every connection open; other modes: after the run.
    pub after_kb: Option<u64>,
    /// Idle with --settle-secs: that long after the connections closed.
    pub settled_kb: Option<u64>,
}

/// One run's results. Fields that do not apply to the mode are `null`. Times are in
/// milliseconds, rates per second, memory in KiB.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub server: String,
    pub peer: &'static str,
    pub run: String,
    pub workers: usize,
    pub params: serde_json::Value,

    pub connections: u64,
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    pub dropped: u64,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    pub connect_max_ms: Option<f64>,
    pub awaiting_hello_max: Option<u64>,

    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub kib_per_conn: Option<f64>,
    pub rss_settled_kb: Option<u64>,

    pub requests: u64,
    pub published: u64,
    pub acked: u64,
    pub publish_failed: u64,
    pub publish_per_sec: Option<f64>,
    pub publish_rtt_p50_ms: Option<f64>,
    pub publish_rtt_p99_ms: Option<f64>,

    pub delivered: u64,
    pub backlog_delivered: u64,
    pub per_sec: Option<f64>,
    pub lost: u64,
    pub duplicated: u64,
    pub misrouted: u64,
    pub reordered: u64,
    pub unacked_delivered: u64,
    pub foreign: u64,
    pub bad_frames: u64,

    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_p999_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,

    pub reconnects: Option<u64>,
    pub caught_up: Option<u64>,
    pub not_caught_up: Option<u64>,
    pub catch_up_ms: Option<f64>,
    pub catch_up_p50_ms: Option<f64>,
    pub catch_up_p99_ms: Option<f64>,

    pub elapsed_ms: u64,
    /// No notification lost, duplicated, misrouted or reordered; every publish acknowledged;
    /// no connection failed (refusals at capacity are not failures); in reconnect mode every
    /// user caught up. The exit code is 0 exactly when this holds.
    pub ok: bool,
    pub errors: Vec<String>,
}

impl Report {
    pub fn build(plan: &RunPlan, shares: &[ShareReport], memory: Memory, elapsed: Duration) -> Self {
        let sum = |f: fn(&ShareReport) -> u64| shares.iter().map(f).sum::<u64>();
        let merge = |f: fn(&ShareReport) -> &crate::histogram::HistogramData| {
            let mut h = new_histogram();
            for share in shares {
                f(share).add_to(&mut h);
            }
            h
        };
        let mut counts = DeliveryCounts::default();
        for share in shares {
            counts.add(&share.counts);
        }
        let accepted = sum(|s| s.accepted);
        let connect = Quantiles::of(&merge(|s| &s.connect_us));
        let rtt = Quantiles::of(&merge(|s| &s.publish_rtt_us));
        let latency = Quantiles::of(&merge(|s| &s.latency_us));
        let catch_up_hist: Histogram<u64> = merge(|s| &s.catch_up_us);
        let catch_up = Quantiles::of(&catch_up_hist);
        let is_reconnect = plan.mode == "reconnect";

        let publish_started = shares.iter().filter_map(|s| s.publish_started_us).min();
        let publish_finished = shares.iter().filter_map(|s| s.publish_finished_us).max();
        let last_delivery = shares.iter().filter_map(|s| s.last_delivery_us).max();
        let acked = sum(|s| s.acked);
        let publish_failed = shares.iter().flat_map(|s| &s.unacked).map(|r| r.end - r.start).sum::<u64>();
        let lost = sum(|s| s.lost) + broadcast_lost(shares);
        let not_caught_up = is_reconnect.then(|| sum(|s| s.not_caught_up));

        let mut errors = Vec::new();
        for share in shares {
            for e in &share.errors {
                crate::share::note_error(&mut errors, e.clone());
            }
        }
        let failed = sum(|s| s.failed);
        let ok = accepted > 0
            && failed == 0
            && publish_failed == 0
            && lost == 0
            && counts.duplicated == 0
            && counts.misrouted == 0
            && counts.reordered == 0
            && not_caught_up.unwrap_or(0) == 0;

        Self {
            mode: plan.mode,
            server: plan.server.to_string(),
            peer: plan.peer.name(),
            run: plan.run_id.clone(),
            workers: plan.shares.len(),
            params: plan.params.clone(),
            connections: plan.connections,
            accepted,
            refused: sum(|s| s.refused),
            failed,
            dropped: counts.dropped,
            connect_p50_ms: connect.map(|q| q.p50),
            connect_p99_ms: connect.map(|q| q.p99),
            connect_max_ms: connect.map(|q| q.max),
            awaiting_hello_max: plan.peer.sends_hello().then(|| sum(|s| s.awaiting_hello_max)),
            rss_before_kb: memory.before_kb,
            rss_after_kb: memory.after_kb,
            rss_settled_kb: memory.settled_kb,
            kib_per_conn: match (plan.hold, memory.before_kb, memory.after_kb) {
                (Some(_), Some(before), Some(after)) if accepted > 0 => {
                    Some(round2((after as f64 - before as f64) / accepted as f64))
                }
                _ => None,
            },
            requests: sum(|s| s.requests),
            published: sum(|s| s.published),
            acked,
            publish_failed,
            publish_per_sec: rate(acked, publish_started, publish_finished),
            publish_rtt_p50_ms: rtt.map(|q| q.p50),
            publish_rtt_p99_ms: rtt.map(|q| q.p99),
            delivered: counts.delivered,
            backlog_delivered: counts.backlog,
            per_sec: rate(counts.delivered, publish_started, last_delivery),
            lost,
            duplicated: counts.duplicated,
            misrouted: counts.misrouted,
            reordered: counts.reordered,
            unacked_delivered: sum(|s| s.unacked_delivered),
            foreign: counts.foreign,
            bad_frames: counts.bad_frames,
            latency_p50_ms: latency.map(|q| q.p50),
            latency_p90_ms: latency.map(|q| q.p90),
            latency_p99_ms: latency.map(|q| q.p99),
            latency_p999_ms: latency.map(|q| q.p999),
            latency_max_ms: latency.map(|q| q.max),
            reconnects: is_reconnect.then(|| sum(|s| s.reconnects)),
            caught_up: is_reconnect.then(|| sum(|s| s.caught_up)),
            not_caught_up,
            catch_up_ms: catch_up.map(|q| q.max),
            catch_up_p50_ms: catch_up.map(|q| q.p50),
            catch_up_p99_ms: catch_up.map(|q| q.p99),
            elapsed_ms: elapsed.as_millis() as u64,
            ok,
            errors,
        }
    }

    pub fn json_line(&self) -> String {
        // A struct of numbers, strings and a JSON value always serializes.
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// The same figures laid out for a person.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
        let per_s = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}/s"));
        // Writing to a String cannot fail.
        let _ = writeln!(
            t,
            "\n{} run {} against {} ({}, {} worker{})",
            self.mode,
            self.run,
            self.server,
            self.peer,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        let mut row = |name: &str, value: String| {
            let _ = writeln!(t, "  {name:<13} {value}");
        };
        row("params", self.params.to_string());
        row(
            "connections",
            format!(
                "{} of {} accepted, {} refused, {} failed, {} dropped",
                self.accepted, self.connections, self.refused, self.failed, self.dropped
            ),
        );
        row(
            "connect",
            format!(
                "p50 {}  p99 {}  max {}{}",
                ms(self.connect_p50_ms),
                ms(self.connect_p99_ms),
                ms(self.connect_max_ms),
                self.awaiting_hello_max
                    .map_or_else(String::new, |n| format!(", at most {n} waiting for hello at once"))
            ),
        );
        if self.rss_before_kb.is_some() || self.rss_after_kb.is_some() {
            let kb = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} KiB"));
            let per_conn = self.kib_per_conn.map_or_else(String::new, |v| format!(", {v:.2} KiB per connection"));
            let settled =
                self.rss_settled_kb.map_or_else(String::new, |v| format!(", {v} KiB once the connections had closed"));
            row(
                "server rss",
                format!("{} before, {} after{per_conn}{settled}", kb(self.rss_before_kb), kb(self.rss_after_kb)),
            );
        }
        if self.requests > 0 || self.publish_failed > 0 {
            row(
                "published",
                format!(
                    "{} acked of {} in {} requests ({}), {} failed, rtt p50 {} p99 {}",
                    self.acked,
                    self.published,
                    self.requests,
                    per_s(self.publish_per_sec),
                    self.publish_failed,
                    ms(self.publish_rtt_p50_ms),
                    ms(self.publish_rtt_p99_ms)
                ),
            );
            row(
                "delivered",
                format!("{} ({}), {} from backlogs", self.delivered, per_s(self.per_sec), self.backlog_delivered),
            );
            row(
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    ms(self.latency_p50_ms),
                    ms(self.latency_p90_ms),
                    ms(self.latency_p99_ms),
                    ms(self.latency_p999_ms),
                    ms(self.latency_max_ms)
                ),
            );
        }
        if let Some(caught_up) = self.caught_up {
            row(
                "catch-up",
                format!(
                    "{} users caught up, {} not, after {} reconnects: all by {} (p50 {}, p99 {})",
                    caught_up,
                    self.not_caught_up.unwrap_or(0),
                    self.reconnects.unwrap_or(0),
                    ms(self.catch_up_ms),
                    ms(self.catch_up_p50_ms),
                    ms(self.catch_up_p99_ms)
                ),
            );
        }
        row(
            "correctness",
            format!(
                "{} lost, {} duplicated, {} misrouted, {} reordered, {} foreign, {} bad frames",
                self.lost, self.duplicated, self.misrouted, self.reordered, self.foreign, self.bad_frames
            ),
        );
        for e in &self.errors {
            row("error", e.clone());
        }
        row("result", format!("{} in {:.1} s", if self.ok { "OK" } else { "FAILED" }, self.elapsed_ms as f64 / 1000.0));
        t
    }
}

/// Broadcast losses: for each event some subscriber missed, the subscribers that missed it,
/// unless the publisher never got the event acknowledged.
fn broadcast_lost(shares: &[ShareReport]) -> u64 {
    let unacked: Vec<_> = shares.iter().flat_map(|s| s.unacked.iter()).collect();
    shares
        .iter()
        .flat_map(|s| &s.missing)
        .filter(|(seq, _)| !unacked.iter().any(|r| r.contains(seq)))
        .map(|(_, n)| n)
        .sum()
}

fn rate(count: u64, from_us: Option<u64>, to_us: Option<u64>) -> Option<f64> {
    let (from, to) = (from_us?, to_us?);
    (to > from && count > 0).then(|| round2(count as f64 * 1e6 / (to - from) as f64))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_losses_skip_unacknowledged_events() {
        let publisher =
            ShareReport { unacked: vec![5..6, 9..9], missing: vec![(1, 2), (5, 3)], ..ShareReport::default() };
        let other = ShareReport { missing: vec![(5, 1), (7, 1)], ..ShareReport::default() };
        assert_eq!(broadcast_lost(&[publisher, other]), 3);
    }

    #[test]
    fn rates_need_a_window() {
        assert_eq!(rate(100, Some(0), Some(1_000_000)), Some(100.0));
        assert_eq!(rate(100, Some(5), Some(5)), None);
        assert_eq!(rate(100, None, Some(5)), None);
    }
}
