//! Wall-clock time in Unix microseconds: the unit of the `t` stamp in every published payload.
//! Wall-clock rather than monotonic time, because publisher and receiver may be different
//! processes; they share the machine's clock.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub fn unix_secs() -> u64 {
    unix_micros() / 1_000_000
}
