//! Per-notification bookkeeping for the user modes (targeted, reconnect): who each sequence
//! number was sent to, whether the server acknowledged it, and whether it arrived.
//!
//! Each notification carries its sequence number in `data.seq` and goes to exactly one user,
//! who holds one connection at a time, so a flag per sequence number detects duplicates and
//! losses exactly, with two bytes per notification instead of a set of ids per connection.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What one delivered item means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The first delivery of this notification, to the user it was sent to.
    Fresh,
    /// Already delivered to this user before.
    Duplicate,
    /// It was sent to a different user.
    Misrouted,
    /// Its sequence number is not one this run published.
    Unknown,
}

pub struct Tally {
    /// The local user index each sequence number is published to, fixed before publishing.
    targets: Box<[u32]>,
    acked: Box<[AtomicBool]>,
    seen: Box<[AtomicBool]>,
    fresh: AtomicU64,
    acked_count: AtomicU64,
}

impl Tally {
    pub fn new(targets: Vec<u32>) -> Self {
        let len = targets.len();
        Self {
            targets: targets.into_boxed_slice(),
            acked: (0..len).map(|_| AtomicBool::new(false)).collect(),
            seen: (0..len).map(|_| AtomicBool::new(false)).collect(),
            fresh: AtomicU64::new(0),
            acked_count: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> u64 {
        self.targets.len() as u64
    }

    /// The local user index that `seq` goes to.
    pub fn target(&self, seq: u64) -> u32 {
        self.targets[seq as usize]
    }

    /// Marks a published range as acknowledged by the server (HTTP 201).
    pub fn ack(&self, seqs: Range<u64>) {
        for seq in seqs.clone() {
            self.acked[seq as usize].store(true, Ordering::Relaxed);
        }
        self.acked_count.fetch_add(seqs.end - seqs.start, Ordering::Relaxed);
    }

    /// Records that local user `user` received `seq`.
    pub fn deliver(&self, seq: u64, user: u32) -> Delivery {
        let Some(&target) = self.targets.get(seq as usize) else {
            return Delivery::Unknown;
        };
        if target != user {
            return Delivery::Misrouted;
        }
        if self.seen[seq as usize].swap(true, Ordering::Relaxed) {
            Delivery::Duplicate
        } else {
            self.fresh.fetch_add(1, Ordering::Relaxed);
            Delivery::Fresh
        }
    }

    /// Distinct notifications delivered so far.
    pub fn fresh(&self) -> u64 {
        self.fresh.load(Ordering::Relaxed)
    }

    pub fn acked(&self) -> u64 {
        self.acked_count.load(Ordering::Relaxed)
    }

    /// Acknowledged but never delivered.
    pub fn lost(&self) -> u64 {
        self.count(|acked, seen| acked && !seen)
    }

    /// Delivered although the publish request failed: the server stored it but its answer
    /// never arrived. Not an error of the server's, but worth showing.
    pub fn unacked_delivered(&self) -> u64 {
        self.count(|acked, seen| !acked && seen)
    }

    fn count(&self, pick: impl Fn(bool, bool) -> bool) -> u64 {
        self.acked
            .iter()
            .zip(self.seen.iter())
            .filter(|(a, s)| pick(a.load(Ordering::Relaxed), s.load(Ordering::Relaxed)))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fresh_duplicate_misrouted_and_lost() {
        let tally = Tally::new(vec![0, 1, 0, 2]);
        tally.ack(0..4);
        assert_eq!(tally.deliver(0, 0), Delivery::Fresh);
        assert_eq!(tally.deliver(0, 0), Delivery::Duplicate);
        assert_eq!(tally.deliver(1, 0), Delivery::Misrouted);
        assert_eq!(tally.deliver(1, 1), Delivery::Fresh);
        assert_eq!(tally.deliver(9, 1), Delivery::Unknown);
        assert_eq!(tally.fresh(), 2);
        assert_eq!(tally.acked(), 4);
        assert_eq!(tally.lost(), 2);
        assert_eq!(tally.unacked_delivered(), 0);
    }
}
