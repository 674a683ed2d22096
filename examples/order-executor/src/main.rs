use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use order_executor::executor::Simulation;
use order_executor::herald::ApiKey;
use order_executor::{serve, Config};
use reqwest::Url;
use tracing_subscriber::EnvFilter;

/// A mock DEX order executor that streams each order's status through Herald.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where this executor's API listens.
    #[arg(long, env = "ORDER_EXECUTOR_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Herald's HTTP address.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8004")]
    herald_url: Url,
    /// Herald's API key (Herald writes it to data/api_key).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    herald_api_key: String,
    /// Herald's WebSocket base as watchers reach it, for the `wsUrl` answered [default: the Herald URL
    /// with http → ws].
    #[arg(long, env = "ORDER_EXECUTOR_WS_BASE")]
    public_ws_base: Option<String>,
    /// Multiplies every simulated delay: 0.01 runs a hundred times faster.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// The chance that one submission attempt fails, from 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    fail_rate: f64,
    /// Seeds the simulation so that runs repeat (order ids stay random).
    #[arg(long)]
    seed: Option<u64>,
    /// How many orders may run at once; more are answered 503.
    #[arg(long, default_value_t = order_executor::MAX_IN_FLIGHT_DEFAULT, value_parser = at_least_one)]
    max_in_flight: usize,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".to_owned()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let args = Args::parse();

    let mut config = Config::new(args.herald_url, ApiKey::new(args.herald_api_key))?;
    if let Some(base) = args.public_ws_base {
        config.public_ws_base = base;
    }
    config.simulation = Simulation::new(args.speed, args.fail_rate)?;
    config.seed = args.seed;
    config.max_in_flight = args.max_in_flight;

    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        herald = %config.herald_url,
        ws_base = %config.public_ws_base,
        "order executor ready: POST /api/orders/execute, GET /health"
    );
    let ctrl_c = async {
        // If the signal cannot be listened for, the executor runs until it is killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    serve(listener, config, ctrl_c).await?;
    Ok(())
}
