//! What one share of a run reports back: counts, and histograms as bucket lists, so that a
//! worker process can send it to its parent as one JSON line and the parent can add the
//! shares up exactly.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::histogram::HistogramData;
use crate::publish::PublishOutcome;

/// Most distinct error messages a share keeps.
const MAX_ERRORS: usize = 5;

/// What happened to the frames one connection (or a whole share) received.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Distinct notifications received by the user they were sent to.
    pub delivered: u64,
    /// Of those, the ones that came in a backlog (`notifications`) frame.
    pub backlog: u64,
    pub duplicated: u64,
    pub misrouted: u64,
    /// Received with an id lower than one already received on that user's connection.
    pub reordered: u64,
    /// Not published by this run.
    pub foreign: u64,
    pub bad_frames: u64,
    /// Connections the server closed before the run ended them.
    pub dropped: u64,
}

impl DeliveryCounts {
    pub fn add(&mut self, other: &Self) {
        self.delivered += other.delivered;
        self.backlog += other.backlog;
        self.duplicated += other.duplicated;
        self.misrouted += other.misrouted;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
        self.bad_frames += other.bad_frames;
        self.dropped += other.dropped;
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShareReport {
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    /// Time from TCP connect to the `hello` frame, in microseconds.
    pub connect_us: HistogramData,
    /// The most connections of this share that were waiting for their hello at once.
    #[serde(default)]
    pub awaiting_hello_max: u64,

    pub requests: u64,
    pub published: u64,
    pub acked: u64,
    pub publish_rtt_us: HistogramData,
    pub publish_started_us: Option<u64>,
    pub publish_finished_us: Option<u64>,
    /// Ranges of sequence numbers this share published without acknowledgement.
    pub unacked: Vec<Range<u64>>,

    pub counts: DeliveryCounts,
    /// Acknowledged and never delivered (user modes; broadcast reports `missing` instead).
    pub lost: u64,
    pub unacked_delivered: u64,
    pub last_delivery_us: Option<u64>,
    /// Publish→deliver latency of live frames, in microseconds.
    pub latency_us: HistogramData,

    /// Broadcast: `(seq, subscribers that never received it)`, for seqs some subscriber
    /// missed. Whether that is a loss depends on whether the publisher share got it
    /// acknowledged, which only the parent knows.
    pub missing: Vec<(u64, u64)>,

    /// Reconnect: users whose reconnect backlog arrived, and when, after the drop.
    pub caught_up: u64,
    pub not_caught_up: u64,
    pub catch_up_us: HistogramData,
    pub reconnects: u64,

    pub errors: Vec<String>,
}

impl ShareReport {
    pub fn add_publish(&mut self, outcome: &PublishOutcome) {
        self.requests += outcome.requests;
        self.published += outcome.published;
        self.acked += outcome.acked;
        self.publish_rtt_us = HistogramData::from_histogram(&outcome.rtt);
        self.publish_started_us = Some(outcome.started_us);
        self.publish_finished_us = Some(outcome.finished_us);
        self.unacked.extend(outcome.unacked.iter().cloned());
        if let Some(e) = &outcome.first_error {
            self.note_error(format!("publish: {e}"));
        }
    }

    pub fn note_error(&mut self, message: String) {
        note_error(&mut self.errors, message);
    }
}

/// Keeps `message` unless it is already there or the list is full: the first few distinct
/// errors say what went wrong; thousands of copies of one would only bury it.
pub fn note_error(errors: &mut Vec<String>, message: String) {
    if errors.len() < MAX_ERRORS && !errors.contains(&message) {
        errors.push(message);
    }
}
