//! A mock DEX order executor that streams every order's status through Herald.
//!
//! ```text
//! client ──POST /api/orders/execute──▶ api ──pending──▶ Herald ◀──ws /api/orders/status/{id}── watcher
//!                                       │                  ▲
//!                                       └─▶ executor ──────┘ routing, building, submitted, …, confirmed
//!                                             └─ dex (mock quotes)
//! ```
//!
//! Code map: [`order`] is what an order is (parsed once), [`api`] the HTTP routes and their errors,
//! [`executor`] the steps of one order, [`dex`] the mock quotes and the choice between them, [`herald`] the
//! client that publishes each step.

use std::future::Future;

use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::Url;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod api;
pub mod dex;
pub mod executor;
pub mod herald;
pub mod order;

use executor::Simulation;
use herald::{ApiKey, Herald, Retry};

#[derive(Debug, Clone)]
pub struct Config {
    /// Herald's HTTP address, e.g. `http://127.0.0.1:8004`.
    pub herald_url: Url,
    pub herald_api_key: ApiKey,
    /// Where watchers reach Herald's WebSockets, e.g. `ws://127.0.0.1:8004`, for the `wsUrl` answered.
    pub public_ws_base: String,
    pub simulation: Simulation,
    /// Seeds the simulation (not the order ids), so that a run repeats.
    pub seed: Option<u64>,
    pub max_in_flight: usize,
    pub herald_retry: Retry,
}

pub const MAX_IN_FLIGHT_DEFAULT: usize = 256;

impl Config {
    /// A configuration with the defaults: the WebSocket base derived from `herald_url`, speed 1, a fail
    /// rate of 0.2, 256 orders in flight.
    pub fn new(herald_url: Url, herald_api_key: ApiKey) -> Result<Self, ConfigError> {
        let public_ws_base = ws_base(&herald_url)?;
        Ok(Self {
            herald_url,
            herald_api_key,
            public_ws_base,
            simulation: Simulation::default(),
            seed: None,
            max_in_flight: MAX_IN_FLIGHT_DEFAULT,
            herald_retry: Retry::default(),
        })
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("the Herald URL must start with http:// or https://, not {0}")]
    Scheme(String),
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("could not build the Herald client")]
    Client(#[source] reqwest::Error),
    #[error("serving HTTP failed")]
    Io(#[source] std::io::Error),
}

/// Herald's WebSocket base for its HTTP address: `http` becomes `ws` and `https` becomes `wss`.
pub fn ws_base(herald_url: &Url) -> Result<String, ConfigError> {
    let scheme = match herald_url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => return Err(ConfigError::Scheme(other.to_owned())),
    };
    let rest = &herald_url.as_str()[herald_url.scheme().len()..];
    Ok(format!("{scheme}{}", rest.trim_end_matches('/')))
}

/// Serves the API on `listener` until `shutdown` resolves, then stops in order: the orders in flight are
/// told to stop (each publishes `failed` and ends), the server stops taking connections and finishes the
/// requests it has, and `serve` returns once every order task has ended.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let herald =
        Herald::new(&config.herald_url, config.herald_api_key, config.herald_retry).map_err(ServeError::Client)?;
    let seeds = config.seed.map_or_else(|| StdRng::from_rng(&mut rand::rng()), StdRng::seed_from_u64);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let state = api::AppState::new(
        herald,
        config.simulation,
        config.public_ws_base,
        config.max_in_flight,
        seeds,
        tracker.clone(),
        cancel.clone(),
    );

    let stop = cancel.clone();
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: stopping the orders in flight");
            stop.cancel();
        })
        .await;

    // Even if serving failed, the order tasks are stopped and awaited: none outlives `serve`.
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    served.map_err(ServeError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ws_base_follows_the_herald_url() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(ws_base(&url("http://127.0.0.1:8004")).unwrap(), "ws://127.0.0.1:8004");
        assert_eq!(ws_base(&url("https://herald.example/")).unwrap(), "wss://herald.example");
        assert_eq!(ws_base(&url("http://h:1/prefix/")).unwrap(), "ws://h:1/prefix");
        assert!(ws_base(&url("ftp://h")).is_err());
    }
}
