//! An ordered stream: one user's or one topic's events on this node, delivered in the order of their `seq`
//! (a cluster; see `broker::cluster`). Events from other nodes can arrive out of that order; one that arrives
//! ahead of a missing one waits here for it. The stream starts from a position read from the store once the
//! node is sure to hear every later event (the cluster broker's subscription is active); until then every
//! event waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The most events one stream holds back while one before them is missing; one more and its connections
/// are told to resync.
pub const MAX_HELD_BACK: usize = 1024;

/// How long a stream may take to start (its subscription made and its position read) before its connections
/// are told to resync. Longer than the gap limit: in a storm of connects thousands start at once (measured:
/// 100,000 connections onto 6 nodes on 2 cores took some past 3 s).
pub const START_LIMIT: Duration = Duration::from_secs(10);

pub struct Stream<T> {
    /// Tells this stream from one an earlier presence of the same user or topic had.
    pub generation: u64,
    /// The `seq` of the last event delivered; `None` until the stream has started.
    pub delivered: Option<u64>,
    held_back: BTreeMap<u64, T>,
    /// A position the store has reported: delivery must reach it, or the stream resyncs.
    must_reach: u64,
    /// Since when delivery has been short of where it must be (an event missing, or short of `must_reach`).
    behind_since: Option<Instant>,
    created: Instant,
    /// Told when the stream starts.
    pub started: Arc<Notify>,
    /// The stream's connections were told to resync: nothing more is delivered to them.
    pub resyncing: bool,
}

/// What [`Stream::offer`] did with an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    Delivered,
    /// Held back (or dropped as a repeat, or the stream is resyncing).
    Kept,
    /// Too much is held back: the stream's connections must resync.
    Overflow,
}

impl<T> Stream<T> {
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            delivered: None,
            held_back: BTreeMap::new(),
            must_reach: 0,
            behind_since: None,
            created: Instant::now(),
            started: Arc::new(Notify::new()),
            resyncing: false,
        }
    }

    /// Delivers event `seq` (through `push`) if it follows the last delivered, holds it back if one before
    /// it is missing, drops it if it was delivered already. `make` builds it only if it is kept.
    pub fn offer(&mut self, seq: u64, make: impl FnOnce() -> T, mut push: impl FnMut(&T)) -> Offered {
        if self.resyncing || self.delivered.is_some_and(|last| seq <= last) {
            return Offered::Kept;
        }
        if self.delivered.is_some_and(|last| seq == last + 1) && self.held_back.is_empty() {
            push(&make());
            self.delivered = Some(seq);
            if seq >= self.must_reach {
                self.behind_since = None;
            }
            return Offered::Delivered;
        }
        if self.held_back.len() >= MAX_HELD_BACK {
            return Offered::Overflow;
        }
        self.held_back.insert(seq, make());
        self.release(push);
        Offered::Kept
    }

    /// Starts the stream at `position`, the `seq` of the last event this node need not deliver, and delivers
    /// what followed it. False if it had started.
    pub fn start(&mut self, position: u64, push: impl FnMut(&T)) -> bool {
        if self.delivered.is_some() {
            return false;
        }
        self.delivered = Some(position);
        self.must_reach = self.must_reach.max(position);
        self.release(push);
        self.started.notify_waiters();
        true
    }

    /// Starts over from nothing delivered (a topic that expired and began a new life at `seq` 1).
    pub fn restart(&mut self) {
        self.delivered = Some(0);
        self.held_back.clear();
        self.must_reach = 0;
        self.behind_since = None;
    }

    /// Notes that the events have reached `position` in the store: delivery here must reach it too, or the
    /// stream is overdue.
    pub fn expect(&mut self, position: u64) {
        self.must_reach = self.must_reach.max(position);
        if self.delivered.is_some_and(|last| last < position) && self.behind_since.is_none() {
            self.behind_since = Some(Instant::now());
        }
    }

    /// Whether delivery has been short of where it must be for `limit` or longer, or the stream has not
    /// started within [`START_LIMIT`] (and no resync is under way).
    pub fn overdue(&self, now: Instant, limit: Duration) -> bool {
        if self.resyncing {
            return false;
        }
        match self.delivered {
            None => now.duration_since(self.created) >= START_LIMIT.max(limit),
            Some(_) => self.behind_since.is_some_and(|since| now.duration_since(since) >= limit),
        }
    }

    /// Stops delivering: the stream's connections are being told to resync.
    pub fn resync(&mut self) {
        self.resyncing = true;
        self.held_back.clear();
    }

    /// Delivers what has been held back and now follows the last delivered, and notes whether delivery is
    /// where it must be.
    fn release(&mut self, mut push: impl FnMut(&T)) {
        let Some(mut last) = self.delivered else { return };
        while let Some(entry) = self.held_back.first_entry() {
            if *entry.key() <= last {
                entry.remove();
            } else if *entry.key() == last + 1 {
                last += 1;
                push(&entry.remove());
            } else {
                break;
            }
        }
        self.delivered = Some(last);
        if self.held_back.is_empty() && last >= self.must_reach {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(Instant::now());
        }
    }
}

/// Where a user or topic stands on this node, for the cluster broker's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Absent,
    /// Present, and the stream (generation given) has not started yet.
    Starting(u64),
    Started,
}

/// Waits (at most `limit`) for a stream to start. `started` is the stream's notifier, taken while it had not
/// started; `has_started` looks again once the wait is registered (it may have started in between).
pub async fn wait_started(started: Arc<Notify>, limit: Duration, has_started: impl FnOnce() -> bool) -> bool {
    let notified = started.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if has_started() {
        return true;
    }
    tokio::time::timeout(limit, notified).await.is_ok()
}
