//! Two mock DEXs, Raydium and Meteora, and the choice between their quotes.
//!
//! Prices come from a small table of reference prices in US dollars (any other symbol gets a stable made-up
//! price, so every pair can be quoted); each DEX quotes that mid price with its own small random spread and
//! charges its own fee. Nothing here sleeps or does I/O: the executor decides how long an answer takes.

use std::ops::RangeInclusive;
use std::time::Duration;

use rand::Rng;

use crate::order::OrderRequest;

/// Every amount is shown with this many decimals, and in base units of 10^-DECIMALS (as an SPL token with
/// six decimals, such as USDC, would count it).
pub const DECIMALS: i32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dex {
    Raydium,
    Meteora,
}

impl Dex {
    pub const ALL: [Dex; 2] = [Dex::Raydium, Dex::Meteora];

    pub fn name(self) -> &'static str {
        match self {
            Dex::Raydium => "raydium",
            Dex::Meteora => "meteora",
        }
    }

    /// The fee taken from the amount out, as a fraction.
    pub fn fee(self) -> f64 {
        match self {
            Dex::Raydium => 0.003,
            Dex::Meteora => 0.002,
        }
    }

    /// How far this DEX's price strays from the mid price, as a factor: Meteora's pools are thinner, so its
    /// quotes vary more and are a little worse on average, which its lower fee sometimes makes up for.
    fn spread(self) -> RangeInclusive<f64> {
        match self {
            Dex::Raydium => 0.98..=1.02,
            Dex::Meteora => 0.97..=1.02,
        }
    }

    /// How long this DEX takes to answer a quote request.
    pub fn latency(self, rng: &mut impl Rng) -> Duration {
        let ms = match self {
            Dex::Raydium => rng.random_range(180..=220),
            Dex::Meteora => rng.random_range(150..=250),
        };
        Duration::from_millis(ms)
    }

    pub fn quote(self, order: &OrderRequest, rng: &mut impl Rng) -> Quote {
        let price = mid_price(order.token_in.as_str(), order.token_out.as_str()) * rng.random_range(self.spread());
        let fee = self.fee();
        Quote { dex: self, price, fee, amount_out: order.amount * price * (1.0 - fee) }
    }
}

/// One DEX's offer for an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub dex: Dex,
    /// Units of the token out per unit of the token in, before the fee.
    pub price: f64,
    pub fee: f64,
    /// What the order would receive, after the fee.
    pub amount_out: f64,
}

impl Quote {
    /// The amount out in base units, e.g. `"24925000"` for 24.925.
    pub fn amount_out_units(&self) -> String {
        units(self.amount_out)
    }

    /// The amount out as a decimal, e.g. `"24.925"`.
    pub fn amount_out_decimal(&self) -> String {
        decimal(self.amount_out)
    }
}

/// The quote that gives the most after its fee; on a tie, the first one.
pub fn best(quotes: &[Quote]) -> Option<&Quote> {
    quotes.iter().reduce(|best, q| if q.amount_out > best.amount_out { q } else { best })
}

/// `amount` in base units, rounded to the nearest. Amounts are positive and bounded (see
/// `order::AMOUNT_MAX`), so the float fits; `as` saturates rather than wraps if it ever did not.
pub fn units(amount: f64) -> String {
    ((amount * 10f64.powi(DECIMALS)).round() as u128).to_string()
}

/// `amount` with at most [`DECIMALS`] decimals and no trailing zeros, but at least one decimal.
pub fn decimal(amount: f64) -> String {
    let fixed = format!("{amount:.prec$}", prec = DECIMALS as usize);
    let trimmed = fixed.trim_end_matches('0');
    if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_owned()
    }
}

/// Units of `token_out` one unit of `token_in` is worth.
pub fn mid_price(token_in: &str, token_out: &str) -> f64 {
    usd_price(token_in) / usd_price(token_out)
}

fn usd_price(symbol: &str) -> f64 {
    match symbol.to_ascii_uppercase().as_str() {
        "USDC" | "USDT" => 1.0,
        "SOL" => 150.0,
        "MSOL" | "JITOSOL" => 165.0,
        "ETH" | "WETH" => 3000.0,
        "BTC" | "WBTC" => 60_000.0,
        "JUP" => 0.8,
        "RAY" => 2.0,
        "BONK" => 0.000_02,
        other => made_up_price(other),
    }
}

/// A stable price from 0.1 to 100 dollars for a symbol the table does not know, spread evenly on a log
/// scale by an FNV-1a hash of the symbol.
fn made_up_price(symbol: &str) -> f64 {
    let hash = symbol.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let position = (hash >> 11) as f64 / (1u64 << 53) as f64;
    0.1 * 1000f64.powf(position)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::order::RawOrder;

    fn order(amount: f64) -> OrderRequest {
        OrderRequest::parse(RawOrder { token_in: "SOL".into(), token_out: "USDC".into(), amount, slippage: None })
            .unwrap()
    }

    fn quote(dex: Dex, amount_out: f64) -> Quote {
        Quote { dex, price: 1.0, fee: dex.fee(), amount_out }
    }

    #[test]
    fn the_best_quote_gives_the_most_after_fees() {
        let quotes = [quote(Dex::Raydium, 24.9), quote(Dex::Meteora, 25.1)];
        assert_eq!(best(&quotes).map(|q| q.dex), Some(Dex::Meteora));
        let quotes = [quote(Dex::Raydium, 25.2), quote(Dex::Meteora, 25.1)];
        assert_eq!(best(&quotes).map(|q| q.dex), Some(Dex::Raydium));
        let tie = [quote(Dex::Raydium, 25.0), quote(Dex::Meteora, 25.0)];
        assert_eq!(best(&tie).map(|q| q.dex), Some(Dex::Raydium), "a tie goes to the first");
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn a_lower_fee_can_beat_a_better_price() {
        // Same price, different fees: the amount out already has the fee taken off, so Meteora wins.
        let mut rng = StdRng::seed_from_u64(1);
        let order = order(10.0);
        let mut raydium = Dex::Raydium.quote(&order, &mut rng);
        let mut meteora = Dex::Meteora.quote(&order, &mut rng);
        raydium.price = 150.0;
        meteora.price = 150.0;
        raydium.amount_out = order.amount * raydium.price * (1.0 - raydium.fee);
        meteora.amount_out = order.amount * meteora.price * (1.0 - meteora.fee);
        assert_eq!(best(&[raydium, meteora]).map(|q| q.dex), Some(Dex::Meteora));
    }

    #[test]
    fn quotes_stay_near_the_mid_price_and_take_their_fee() {
        let mut rng = StdRng::seed_from_u64(2);
        let order = order(10.0);
        for _ in 0..200 {
            for dex in Dex::ALL {
                let q = dex.quote(&order, &mut rng);
                assert!((145.5..=153.0).contains(&q.price), "{q:?}");
                assert!((q.amount_out - 10.0 * q.price * (1.0 - dex.fee())).abs() < 1e-9, "{q:?}");
                assert!((150..=250).contains(&dex.latency(&mut rng).as_millis()));
            }
        }
    }

    #[test]
    fn amounts_print_in_units_and_decimals() {
        assert_eq!(units(25.0), "25000000");
        assert_eq!(decimal(25.0), "25.0");
        assert_eq!(units(24.925), "24925000");
        assert_eq!(decimal(24.925), "24.925");
        assert_eq!(decimal(0.000_000_4), "0.0");
    }

    #[test]
    fn any_pair_has_a_stable_positive_price() {
        assert_eq!(mid_price("SOL", "USDC"), 150.0);
        assert_eq!(mid_price("sol", "usdc"), 150.0);
        let made_up = mid_price("FOO", "USDC");
        assert!((0.1..=100.0).contains(&made_up), "{made_up}");
        assert_eq!(made_up, mid_price("FOO", "USDC"));
        assert_ne!(made_up, mid_price("BAR", "USDC"));
    }
}
