//! The steps of one order, each published to Herald before the next begins:
//!
//! ```text
//! pending 0 → routing 10 → (two quotes, fetched at once) → routing 30 → building 50 → building 70
//!   → submitted 80 ─┬─ confirmed 100
//!                   ├─ failed 0 ("slippage exceeded")
//!                   └─ execution-failed 80 → retry-pending 80 → submitted 85 → … → failed 0
//! ```
//!
//! Architecture invariant: the sequence above is valid for Herald's `order` lifecycle, so Herald never
//! refuses one of these events for its status or progress. Statuses only move along the lifecycle's edges;
//! within a status progress only rises (submitted is 75 + 5 × attempt, and execution-failed and
//! retry-pending keep their attempt's progress). The tests check this for many random runs.
//!
//! An order stops at its first event Herald does not take: a refusal (409 `invalid_transition`, a bad key)
//! will not improve, and when Herald is unavailable even after the client's retries the order's stream is
//! broken anyway. A cancelled order (the executor is shutting down) publishes `failed` and stops.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::dex::{self, Dex, Quote};
use crate::herald::{Event, Publish, PublishError};
use crate::order::{OrderId, OrderRequest, Status};

pub const MAX_ATTEMPTS: u32 = 3;
/// How far the price may move between the quote and the submission, as a fraction either way. With the
/// default slippage of 0.5% about one order in twelve is refused for it.
pub const PRICE_MOVE: f64 = 0.006;

const PICKUP: Duration = Duration::from_millis(50);
const BUILD: std::ops::RangeInclusive<u64> = 250..=350;
const SUBMIT: std::ops::RangeInclusive<u64> = 300..=600;
const RETRY_BASE: Duration = Duration::from_millis(100);

type Map = serde_json::Map<String, Value>;

const SUBMISSION_ERRORS: [&str; 3] =
    ["blockhash expired before the transaction landed", "RPC node timed out", "transaction dropped by the leader"];

/// How the mock market behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulation {
    speed: f64,
    fail_rate: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSimulation {
    #[error("speed must be a number from 0 to 1000, not {0}")]
    Speed(f64),
    #[error("fail rate must be a probability from 0 to 1, not {0}")]
    FailRate(f64),
}

impl Simulation {
    /// `speed` multiplies every simulated delay (0.01 runs a hundred times faster, 0 not at all);
    /// `fail_rate` is the chance that one submission attempt fails.
    pub fn new(speed: f64, fail_rate: f64) -> Result<Self, InvalidSimulation> {
        if !(0.0..=1000.0).contains(&speed) {
            return Err(InvalidSimulation::Speed(speed));
        }
        if !(0.0..=1.0).contains(&fail_rate) {
            return Err(InvalidSimulation::FailRate(fail_rate));
        }
        Ok(Self { speed, fail_rate })
    }

    pub fn delay(&self, base: Duration) -> Duration {
        base.mul_f64(self.speed)
    }
}

impl Default for Simulation {
    fn default() -> Self {
        Self { speed: 1.0, fail_rate: 0.2 }
    }
}

/// The first event of every order, published while the caller waits for its answer.
pub fn pending(order: &OrderRequest) -> Event {
    Event::new(Status::Pending, 0, "Order created and enqueued for processing")
        .with("tokenIn", order.token_in.as_str())
        .with("tokenOut", order.token_out.as_str())
        .with("amount", order.amount)
        .with("slippage", order.slippage_percent)
}

/// How an order ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Confirmed {
        tx_hash: String,
        dex: Dex,
    },
    /// The order failed and Herald has its `failed` event.
    Failed {
        error: String,
    },
    /// Herald did not take an event, so the order was left where it was.
    Stopped(PublishError),
}

/// Why the steps stopped early.
enum Halt {
    Publish(PublishError),
    Cancelled,
}

impl From<PublishError> for Halt {
    fn from(e: PublishError) -> Self {
        Halt::Publish(e)
    }
}

/// One order's run, from the step after `pending` to a final status. `rng` decides everything random about
/// it (quotes, latencies, failures, the tx hash), so a seeded run repeats.
pub async fn run<P: Publish>(
    id: &OrderId,
    order: &OrderRequest,
    herald: &P,
    simulation: &Simulation,
    rng: StdRng,
    cancel: &CancellationToken,
) -> Outcome {
    let mut execution = Execution { id, order, herald, simulation, rng, cancel };
    match execution.steps().await {
        Ok(outcome) => outcome,
        Err(Halt::Publish(e)) => Outcome::Stopped(e),
        Err(Halt::Cancelled) => {
            let error = "the executor shut down before the order finished".to_owned();
            match execution.fail(&error, Map::new()).await {
                Ok(()) => Outcome::Failed { error },
                Err(e) => Outcome::Stopped(e),
            }
        }
    }
}

struct Execution<'a, P> {
    id: &'a OrderId,
    order: &'a OrderRequest,
    herald: &'a P,
    simulation: &'a Simulation,
    rng: StdRng,
    cancel: &'a CancellationToken,
}

impl<P: Publish> Execution<'_, P> {
    async fn steps(&mut self) -> Result<Outcome, Halt> {
        self.pause(PICKUP).await?;

        self.publish(Event::new(Status::Routing, 10, "Fetching quotes from multiple DEXs...")).await?;
        let quotes = self.fetch_quotes().await?;
        let listed: Vec<Value> = quotes.iter().map(quote_json).collect();
        self.publish(
            Event::new(Status::Routing, 30, format!("Received {} quotes", quotes.len()))
                .with("quotesFetched", quotes.len())
                .with("quotes", listed),
        )
        .await?;

        // Both DEXs always answer, so there is always a best quote; the `else` keeps that an assumption
        // of this mock rather than a panic.
        let Some(chosen) = dex::best(&quotes).cloned() else {
            let error = "no DEX returned a quote".to_owned();
            self.fail(&error, Map::new()).await?;
            return Ok(Outcome::Failed { error });
        };
        let dex = chosen.dex.name();
        self.publish(
            Event::new(Status::Building, 50, format!("Building transaction on {dex}..."))
                .with("chosenDex", dex)
                .with("quote", quote_summary(&chosen)),
        )
        .await?;
        let build = Duration::from_millis(self.rng.random_range(BUILD));
        self.pause(build).await?;
        self.publish(Event::new(Status::Building, 70, "Transaction built, ready to submit")).await?;

        self.submit(&chosen).await
    }

    /// Submits up to [`MAX_ATTEMPTS`] times, backing off 100 ms × 2^attempt between attempts.
    async fn submit(&mut self, quote: &Quote) -> Result<Outcome, Halt> {
        let mut last_error = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let progress = submitted_progress(attempt);
            self.publish(
                Event::new(
                    Status::Submitted,
                    progress,
                    format!("Submitting transaction (attempt {attempt}/{MAX_ATTEMPTS})..."),
                )
                .with("attempt", attempt)
                .with("maxAttempts", MAX_ATTEMPTS),
            )
            .await?;
            let submit = Duration::from_millis(self.rng.random_range(SUBMIT));
            self.pause(submit).await?;

            if self.rng.random_bool(self.simulation.fail_rate) {
                let error = SUBMISSION_ERRORS[self.rng.random_range(0..SUBMISSION_ERRORS.len())];
                last_error = error.to_owned();
                self.publish(
                    Event::new(
                        Status::ExecutionFailed,
                        progress,
                        format!("Attempt {attempt}/{MAX_ATTEMPTS} failed: {error}"),
                    )
                    .with("error", error)
                    .with("attempt", attempt)
                    .with("retriesRemaining", MAX_ATTEMPTS - attempt),
                )
                .await?;
                if attempt == MAX_ATTEMPTS {
                    break;
                }
                let wait = self.simulation.delay(RETRY_BASE * 2u32.pow(attempt));
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                self.publish(
                    Event::new(Status::RetryPending, progress, format!("Retrying in {wait_ms} ms..."))
                        .with("retryInMs", wait_ms)
                        .with("nextAttempt", attempt + 1),
                )
                .await?;
                self.sleep(wait).await?;
                continue;
            }

            // The price moved while the transaction was in flight: refuse to settle below the slippage limit.
            let moved = quote.amount_out * (1.0 + self.rng.random_range(-PRICE_MOVE..=PRICE_MOVE));
            let minimum = quote.amount_out * (1.0 - self.order.slippage_percent / 100.0);
            if moved < minimum {
                let error = "slippage exceeded".to_owned();
                let mut data = Map::new();
                data.insert("expectedAmountOutDecimal".into(), dex::decimal(quote.amount_out).into());
                data.insert("minimumAmountOutDecimal".into(), dex::decimal(minimum).into());
                data.insert("amountOutDecimal".into(), dex::decimal(moved).into());
                data.insert("slippage".into(), self.order.slippage_percent.into());
                self.fail(&error, data).await?;
                return Ok(Outcome::Failed { error });
            }

            let tx_hash = tx_hash(&mut self.rng);
            self.publish(
                Event::new(Status::Confirmed, 100, "Order successfully executed")
                    .with("txHash", tx_hash.as_str())
                    .with("dex", quote.dex.name())
                    .with("amountOut", dex::units(moved))
                    .with("amountOutDecimal", dex::decimal(moved))
                    .with("attempt", attempt),
            )
            .await?;
            return Ok(Outcome::Confirmed { tx_hash, dex: quote.dex });
        }
        let error = format!("all {MAX_ATTEMPTS} attempts failed; the last: {last_error}");
        let mut data = Map::new();
        data.insert("totalAttempts".into(), MAX_ATTEMPTS.into());
        self.fail(&error, data).await?;
        Ok(Outcome::Failed { error })
    }

    /// Asks both DEXs at once, as a router would; each answers after its own latency.
    async fn fetch_quotes(&mut self) -> Result<Vec<Quote>, Halt> {
        let ask = |dex: Dex, rng: &mut StdRng| {
            let latency = self.simulation.delay(dex.latency(rng));
            let quote = dex.quote(self.order, rng);
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                quote
            }
        };
        let raydium = ask(Dex::Raydium, &mut self.rng);
        let meteora = ask(Dex::Meteora, &mut self.rng);
        tokio::select! {
            () = self.cancel.cancelled() => Err(Halt::Cancelled),
            (r, m) = async { tokio::join!(raydium, meteora) } => Ok(vec![r, m]),
        }
    }

    async fn fail(&self, error: &str, mut data: Map) -> Result<(), PublishError> {
        data.insert("error".into(), error.into());
        let mut event = Event::new(Status::Failed, 0, format!("Order failed: {error}"));
        event.data = data;
        self.herald.publish(self.id, &event).await.map(drop)
    }

    async fn publish(&self, event: Event) -> Result<(), PublishError> {
        let seq = self.herald.publish(self.id, &event).await?;
        tracing::debug!(order = %self.id, status = %event.status, progress = event.progress, seq, "published");
        Ok(())
    }

    /// A simulated delay, scaled by the speed.
    async fn pause(&self, base: Duration) -> Result<(), Halt> {
        self.sleep(self.simulation.delay(base)).await
    }

    async fn sleep(&self, wait: Duration) -> Result<(), Halt> {
        // tokio's timers tick in milliseconds, so even a zero sleep would wait for the next tick.
        if wait.is_zero() {
            return if self.cancel.is_cancelled() { Err(Halt::Cancelled) } else { Ok(()) };
        }
        tokio::select! {
            () = self.cancel.cancelled() => Err(Halt::Cancelled),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }
}

pub fn submitted_progress(attempt: u32) -> u8 {
    // At most 75 + 5 × MAX_ATTEMPTS = 90.
    u8::try_from(75 + 5 * attempt.min(MAX_ATTEMPTS)).unwrap_or(90)
}

fn quote_json(q: &Quote) -> Value {
    json!({
        "dex": q.dex.name(),
        "price": q.price,
        "fee": q.fee,
        "amountOut": q.amount_out_units(),
        "amountOutDecimal": q.amount_out_decimal(),
    })
}

fn quote_summary(q: &Quote) -> Value {
    json!({"dex": q.dex.name(), "amountOut": q.amount_out_units(), "amountOutDecimal": q.amount_out_decimal()})
}

/// A Solana-looking transaction signature: 44 characters of the base58 alphabet.
pub fn tx_hash(rng: &mut impl Rng) -> String {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (0..44).map(|_| char::from(BASE58[rng.random_range(0..BASE58.len())])).collect()
}

/// A seed for each order from the executor's own generator, so that `--seed` makes runs repeat.
pub fn order_rng(seeds: &mut StdRng) -> StdRng {
    StdRng::seed_from_u64(seeds.random())
}

#[cfg(test)]
mod tests;
