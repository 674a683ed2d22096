//! The `[limits]` section: the rates that protect the service from one client. Each is a token bucket: a
//! sustained rate per second and a burst (default twice the rate); `0` turns a limit off.
//!
//! ```toml
//! [limits]
//! frames_per_second = 100     # client frames per live connection (WebSocket, GraphQL); default 100
//! publishes_per_second = 0    # calls per publisher API key; default off
//! connects_per_second = 0     # TCP connection attempts per client address; default off
//! ```
//!
//! The last two are off by default: producers are the operator's own services, and behind a reverse proxy
//! every connection comes from the proxy's address.

use serde::Deserialize;

use super::{invalid, number, ConfigError};

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsLayer {
    pub frames_per_second: Option<u32>,
    pub frames_burst: Option<u32>,
    pub publishes_per_second: Option<u32>,
    pub publishes_burst: Option<u32>,
    pub connects_per_second: Option<u32>,
    pub connects_burst: Option<u32>,
}

/// The keys of the section, with their environment variables (listed in the config's one table).
pub const KEYS: &[&str] = &[
    "limits.frames_per_second",
    "limits.frames_burst",
    "limits.publishes_per_second",
    "limits.publishes_burst",
    "limits.connects_per_second",
    "limits.connects_burst",
];

impl LimitsLayer {
    pub fn set(&mut self, key: &'static str, value: &str) -> Result<(), ConfigError> {
        let slot = match key {
            "limits.frames_per_second" => &mut self.frames_per_second,
            "limits.frames_burst" => &mut self.frames_burst,
            "limits.publishes_per_second" => &mut self.publishes_per_second,
            "limits.publishes_burst" => &mut self.publishes_burst,
            "limits.connects_per_second" => &mut self.connects_per_second,
            "limits.connects_burst" => &mut self.connects_burst,
            _ => return Err(invalid(key, "not a configuration key")),
        };
        *slot = Some(number(key, value)?);
        Ok(())
    }

    /// `self` wins over `lower` key by key.
    pub fn over(self, lower: LimitsLayer) -> LimitsLayer {
        LimitsLayer {
            frames_per_second: self.frames_per_second.or(lower.frames_per_second),
            frames_burst: self.frames_burst.or(lower.frames_burst),
            publishes_per_second: self.publishes_per_second.or(lower.publishes_per_second),
            publishes_burst: self.publishes_burst.or(lower.publishes_burst),
            connects_per_second: self.connects_per_second.or(lower.connects_per_second),
            connects_burst: self.connects_burst.or(lower.connects_burst),
        }
    }
}

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitSettings {
    /// Client frames per live connection; `None`: unlimited.
    pub frames: Option<Rate>,
    /// Calls per publisher API key; `None`: unlimited.
    pub publishes: Option<Rate>,
    /// TCP connection attempts per client address; `None`: unlimited.
    pub connects: Option<Rate>,
}

/// Client frames per connection by default: far above what the protocol needs (a ping every few seconds,
/// a mark_read per click, a subscribe per page), far below a flood.
pub const DEFAULT_FRAMES_PER_SECOND: u32 = 100;

fn rate(
    rate_key: &'static str,
    burst_key: &'static str,
    per_second: Option<u32>,
    burst: Option<u32>,
    default: u32,
) -> Result<Option<Rate>, ConfigError> {
    let per_second = per_second.unwrap_or(default);
    if per_second == 0 {
        if burst.is_some_and(|b| b > 0) {
            return Err(invalid(burst_key, format!("is set, but {rate_key} is 0 (off)")));
        }
        return Ok(None);
    }
    let burst = burst.unwrap_or(per_second.saturating_mul(2));
    if burst == 0 {
        return Err(invalid(burst_key, "must be at least 1 (set the rate to 0 to turn the limit off)"));
    }
    Ok(Some(Rate { per_second, burst }))
}

pub fn resolve(layer: LimitsLayer) -> Result<LimitSettings, ConfigError> {
    Ok(LimitSettings {
        frames: rate(
            "limits.frames_per_second",
            "limits.frames_burst",
            layer.frames_per_second,
            layer.frames_burst,
            DEFAULT_FRAMES_PER_SECOND,
        )?,
        publishes: rate(
            "limits.publishes_per_second",
            "limits.publishes_burst",
            layer.publishes_per_second,
            layer.publishes_burst,
            0,
        )?,
        connects: rate(
            "limits.connects_per_second",
            "limits.connects_burst",
            layer.connects_per_second,
            layer.connects_burst,
            0,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bursts_and_off() {
        let settings = resolve(LimitsLayer::default()).unwrap();
        assert_eq!(settings.frames, Some(Rate { per_second: 100, burst: 200 }));
        assert_eq!((settings.publishes, settings.connects), (None, None));
        let layer = LimitsLayer {
            frames_per_second: Some(0),
            publishes_per_second: Some(50),
            connects_per_second: Some(5),
            connects_burst: Some(1),
            ..Default::default()
        };
        let settings = resolve(layer).unwrap();
        assert_eq!(settings.frames, None);
        assert_eq!(settings.publishes, Some(Rate { per_second: 50, burst: 100 }));
        assert_eq!(settings.connects, Some(Rate { per_second: 5, burst: 1 }));
    }

    #[test]
    fn a_burst_without_a_rate_or_of_zero_is_refused() {
        let e = resolve(LimitsLayer { publishes_burst: Some(5), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("limits.publishes_burst"), "{e}");
        let e = resolve(LimitsLayer { frames_burst: Some(0), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("HERALD_LIMIT_FRAMES_BURST"), "{e}");
    }
}
