//! Rate limits that protect the service from one client: token buckets, one per live connection (client
//! frames), per publisher API key (calls) and per client address (TCP connection attempts).
//!
//! A bucket holds up to `burst` tokens and gains `per_second` of them each second; each event takes one, and
//! an event that finds none is refused (and counted in `herald_rate_limited_total{limit}`). How a refusal is
//! answered is the caller's: a 429 with `Retry-After`, or close code 4029.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{LimitSettings, Rate};

/// One token bucket. Small (it lives in every connection's state) and with no clock of its own: the caller
/// passes the time, so a connection reads the clock once per frame.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f32,
    at: Instant,
}

impl Bucket {
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self { tokens: rate.burst as f32, at: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f32() * rate.per_second as f32;
        self.tokens = (self.tokens + gained).min(rate.burst as f32);
        self.at = now;
    }

    /// Takes a token; `false` when there is none (the event is refused).
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there again: what `Retry-After` says (rounded up to whole seconds there).
    pub fn retry_after(&self, rate: Rate) -> Duration {
        Duration::from_secs_f32(((1.0 - self.tokens).max(0.0)) / rate.per_second as f32)
    }

    /// Whether the bucket has refilled completely, so forgetting it changes nothing.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut copy = *self;
        copy.refill(rate, now);
        copy.tokens >= rate.burst as f32
    }
}

/// Which limit refused an event: the label of `herald_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Frames,
    Publishes,
    Connects,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Frames => "frames",
            Limit::Publishes => "publishes",
            Limit::Connects => "connects",
        }
    }

    pub fn count(self) {
        metrics::counter!("herald_rate_limited_total", "limit" => self.label()).increment(1);
    }
}

/// A connection's frame limit: `None` when frames are not limited.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimit(Option<(Rate, Bucket)>);

impl FrameLimit {
    pub fn new(rate: Option<Rate>) -> Self {
        Self(rate.map(|rate| (rate, Bucket::full(rate, Instant::now()))))
    }

    /// Takes a token for one client frame; `false`: the connection is over its rate (and it is counted).
    pub fn admit(&mut self, now: Instant) -> bool {
        match &mut self.0 {
            None => true,
            Some((rate, bucket)) => {
                let admitted = bucket.take(*rate, now);
                if !admitted {
                    Limit::Frames.count();
                }
                admitted
            }
        }
    }
}

/// The most client addresses tracked at once (about 40 bytes each). Past it, addresses whose buckets have
/// refilled are forgotten; if every one is still in use (a flood from more addresses than this), a new address
/// goes untracked rather than being refused: the limit is for one address, not for the crowd.
const MAX_ADDRESSES: usize = 65_536;

/// Buckets by key, forgotten once full again.
struct Keyed<K> {
    rate: Rate,
    buckets: Mutex<Table<K>>,
}

struct Table<K> {
    buckets: HashMap<K, Bucket>,
    swept: Instant,
}

impl<K: std::hash::Hash + Eq> Keyed<K> {
    fn new(rate: Rate) -> Self {
        Self { rate, buckets: Mutex::new(Table { buckets: HashMap::new(), swept: Instant::now() }) }
    }

    /// Takes a token for `key`: `Err(retry after)` when it has none.
    fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut table = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if table.buckets.len() >= MAX_ADDRESSES && !table.buckets.contains_key(&key) {
            // At most one sweep a second, so a table full of live buckets does not cost a scan per event.
            if now.saturating_duration_since(table.swept) >= Duration::from_secs(1) {
                table.buckets.retain(|_, bucket| !bucket.is_full(rate, now));
                table.swept = now;
            }
            if table.buckets.len() >= MAX_ADDRESSES {
                return Ok(());
            }
        }
        let bucket = table.buckets.entry(key).or_insert_with(|| Bucket::full(rate, now));
        if bucket.take(rate, now) {
            Ok(())
        } else {
            Err(bucket.retry_after(rate))
        }
    }
}

/// The limits the server enforces, shared by every connection and request.
pub struct Limits {
    pub frames: Option<Rate>,
    publishes: Option<Keyed<usize>>,
    connects: Option<Keyed<IpAddr>>,
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            frames: settings.frames,
            publishes: settings.publishes.map(Keyed::new),
            connects: settings.connects.map(Keyed::new),
        }
    }

    /// One call with the API key numbered `key`: `Err(retry after)` when the key is over its rate.
    pub fn publish(&self, key: usize) -> Result<(), Duration> {
        let Some(keyed) = &self.publishes else { return Ok(()) };
        keyed.take(key, Instant::now()).inspect_err(|_| Limit::Publishes.count())
    }

    /// One TCP connection attempt from `address`: `Err(retry after)` when the address is over its rate.
    pub fn connect(&self, address: IpAddr) -> Result<(), Duration> {
        let Some(keyed) = &self.connects else { return Ok(()) };
        keyed.take(address, Instant::now()).inspect_err(|_| Limit::Connects.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate { per_second: 10, burst: 3 };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::full(RATE, start);
        assert!((0..3).all(|_| bucket.take(RATE, start)));
        assert!(!bucket.take(RATE, start));
        let wait = bucket.retry_after(RATE);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(101), "{wait:?}");
        // A tenth of a second later, one more; a long wait refills only up to the burst.
        assert!(bucket.take(RATE, start + Duration::from_millis(100)));
        assert!(!bucket.take(RATE, start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.take(RATE, later)));
        assert!(!bucket.take(RATE, later));
    }

    #[test]
    fn keys_have_buckets_of_their_own_and_full_ones_are_forgotten() {
        let keyed = Keyed::new(RATE);
        let now = Instant::now();
        assert!((0..3).all(|_| keyed.take(1usize, now).is_ok()));
        assert!(keyed.take(1, now).is_err());
        assert!(keyed.take(2, now).is_ok(), "another key is not limited by the first");
        let mut table = keyed.buckets.lock().unwrap();
        let later = now + Duration::from_secs(1);
        table.buckets.retain(|_, b| !b.is_full(RATE, later));
        assert!(table.buckets.is_empty(), "refilled buckets are the same as none");
    }

    #[test]
    fn unlimited_when_off() {
        let limits = Limits::new(&LimitSettings::default());
        assert!((0..10_000).all(|_| limits.publish(0).is_ok() && limits.connect([127, 0, 0, 1].into()).is_ok()));
        let mut frames = FrameLimit::new(None);
        assert!((0..10_000).all(|_| frames.admit(Instant::now())));
    }
}
