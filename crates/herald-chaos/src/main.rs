//! `herald-chaos`: Herald on PostgreSQL through a fault proxy, numbered notifications published with
//! acknowledgements while faults are injected, clients connected throughout (reconnecting with `since` as
//! the protocol says), and then everything counted:
//!
//! - acknowledged but lost (not in the inbox at the end): must be 0;
//! - duplicates in any inbox (one number stored twice): must be 0;
//! - duplicates seen by a client (one id received twice across its reconnects): must be 0;
//! - acknowledged but never delivered to the connected client by the end: must be 0.
//!
//! The faults, one after another, at random: the proxy to PostgreSQL reset, stalled, blackholed or slowed
//! and healed; PostgreSQL's backends for Herald terminated; Herald killed with SIGKILL and started again.
//! Publishers retry what was not acknowledged with the same idempotency key, as a producer would.
//!
//! Prints one JSON line of counts and exits 1 if any count that must be 0 is not.

mod proxy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use proxy::{Mode, Proxy};

const SECRET: &str = "chaos-jwt-secret-0123456789abcdef";
const API_KEY: &str = "chaos-publisher-key-0123456789";
const POSTGRES: &str = "127.0.0.1:5432";

#[derive(Parser, Debug, Clone)]
#[command(about = "Fault runs against Herald: publish with acknowledgements under faults, then count what was lost")]
struct Args {
    /// The herald binary.
    #[arg(long, default_value = "target/debug/herald")]
    herald: PathBuf,
    /// Notifications to publish.
    #[arg(long, default_value_t = 400)]
    notifications: u64,
    /// Users they are spread over (one live client each).
    #[arg(long, default_value_t = 8)]
    users: u64,
    /// Publishes in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long faults are injected (the publishing is paced to last about as long).
    #[arg(long, default_value_t = 15)]
    fault_secs: u64,
    /// How long the end may wait for the clients to catch up.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    /// Show Herald's warnings and errors (its stderr).
    #[arg(long)]
    verbose: bool,
    /// Delete one acknowledged notification behind Herald's back before counting: the run must then fail
    /// with `lost` 1, which shows the checker can see a loss.
    #[arg(long)]
    sabotage: bool,
}

/// One Herald process on a fixed port, killed and started again by the faults.
struct Herald {
    binary: PathBuf,
    listen: SocketAddr,
    data_dir: tempfile::TempDir,
    database_url: String,
    verbose: bool,
    child: Option<Child>,
}

impl Herald {
    async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_API_KEYS", API_KEY)
            .env("HERALD_DATABASE_URL", &self.database_url)
            .env("HERALD_SHUTDOWN_TIMEOUT_MS", "2000")
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if self.verbose { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {}", self.binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on") {
                    return true;
                }
            }
            false
        })
        .await;
        if listening != Ok(true) {
            bail!("herald did not start listening on {}", self.listen);
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 7200;
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": user, "exp": exp}), &key).unwrap()
}

fn user_of(number: u64, users: u64) -> String {
    format!("u{}", number % users)
}

/// What one client received, across all its connections.
#[derive(Default)]
struct Seen {
    /// Notification id → times received.
    ids: HashMap<String, u32>,
    /// Numbers (from the titles) received.
    numbers: HashSet<u64>,
    last: Option<String>,
    connects: u64,
}

fn record(seen: &Mutex<Seen>, notification: &Value) {
    let (Some(id), Some(title)) = (notification["id"].as_str(), notification["title"].as_str()) else { return };
    let mut seen = seen.lock().unwrap();
    *seen.ids.entry(id.to_owned()).or_default() += 1;
    if let Some(number) = title.strip_prefix("n-").and_then(|n| n.parse().ok()) {
        seen.numbers.insert(number);
    }
    if seen.last.as_deref().is_none_or(|last| id > last) {
        seen.last = Some(id.to_owned());
    }
}

/// A client that follows the protocol: connect with `since` the newest id received, read until the
/// connection ends, reconnect after a short backoff.
async fn client(addr: SocketAddr, user: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let token = token(&user);
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::Relaxed) {
        let since = seen.lock().unwrap().last.clone();
        let url = match &since {
            Some(since) => format!("ws://{addr}/ws?token={token}&since={since}"),
            None => format!("ws://{addr}/ws?token={token}"),
        };
        let connected = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await;
        let Ok(Ok((mut ws, _))) = connected else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        seen.lock().unwrap().connects += 1;
        backoff = Duration::from_millis(50);
        loop {
            let message = tokio::select! {
                message = ws.next() => message,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return } else { continue }
                }
            };
            let Some(Ok(message)) = message else { break };
            let Message::Text(text) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
            match frame["type"].as_str() {
                Some("notifications") => {
                    for item in frame["items"].as_array().into_iter().flatten() {
                        record(&seen, item);
                    }
                    // More than one batch's worth: reconnect from the newest to get the rest.
                    if frame["more"] == true {
                        break;
                    }
                }
                Some("notification") => record(&seen, &frame["data"]),
                _ => {}
            }
        }
    }
}

/// What the publishing workers share.
#[derive(Clone)]
struct Publishing {
    http: reqwest::Client,
    addr: SocketAddr,
    run: String,
    users: u64,
    /// The next number to publish.
    next: Arc<AtomicU64>,
    total: u64,
    /// The pause after each publish, so that publishing lasts about as long as the faults.
    pace: Duration,
    acked: Arc<Mutex<HashSet<u64>>>,
    deadline: Instant,
}

/// Publishes numbers with retries (same idempotency key) until each is acknowledged or the deadline.
async fn publisher(p: Publishing) {
    let Publishing { http, addr, run, users, next, total, pace, acked, deadline } = p;
    loop {
        let number = next.fetch_add(1, Ordering::Relaxed);
        if number >= total {
            return;
        }
        let body = json!({
            "user_id": user_of(number, users),
            "type": "chaos",
            "title": format!("n-{number}"),
            "idempotency_key": format!("{run}-{number}"),
        });
        while Instant::now() < deadline {
            let response = http
                .post(format!("http://{addr}/api/v1/notifications"))
                .bearer_auth(API_KEY)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(response) = response {
                if response.status().is_success() {
                    acked.lock().unwrap().insert(number);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(pace).await;
    }
}

fn psql(sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every notification of `user`, newest first, paged through the REST API.
async fn inbox(http: &reqwest::Client, addr: SocketAddr, user: &str) -> anyhow::Result<Vec<Value>> {
    let token = token(user);
    let mut items = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("http://{addr}/api/v1/notifications?limit=100");
        if let Some(before) = &before {
            url.push_str(&format!("&before={before}"));
        }
        let page: Value = http.get(url).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
        let batch = page["items"].as_array().cloned().unwrap_or_default();
        items.extend(batch);
        match page["next_before"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => return Ok(items),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let schema = format!("chaos_{run}");
    let created = psql(&format!("CREATE SCHEMA {schema}"));
    if !created.status.success() {
        bail!("PostgreSQL at {POSTGRES} (database test): {}", String::from_utf8_lossy(&created.stderr));
    }
    let pg_proxy = Proxy::start(POSTGRES.parse()?).await?;
    let application = format!("herald-{schema}");
    let mut herald = Herald {
        binary: args.herald.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
        data_dir: tempfile::tempdir()?,
        database_url: format!(
            "postgres://postgres@{}/test?options[search_path]={schema}&application_name={application}",
            pg_proxy.addr
        ),
        verbose: args.verbose,
        child: None,
    };
    herald.start().await?;
    let addr = herald.listen;
    let http = reqwest::Client::builder().no_proxy().build()?;

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<Mutex<Seen>>> = (0..args.users).map(|_| Arc::default()).collect();
    let clients: Vec<_> = (0..args.users)
        .map(|u| tokio::spawn(client(addr, format!("u{u}"), seen[u as usize].clone(), stop.clone())))
        .collect();

    let started = Instant::now();
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let per_worker = args.notifications.div_ceil(args.concurrency as u64).max(1);
    let pace = Duration::from_secs(args.fault_secs) / u32::try_from(per_worker).unwrap_or(u32::MAX);
    let deadline = started + Duration::from_secs(args.fault_secs + args.settle_secs);
    let publishing = Publishing {
        http: http.clone(),
        addr,
        run: run.clone(),
        users: args.users,
        next,
        total: args.notifications,
        pace,
        acked: acked.clone(),
        deadline,
    };
    let publishers: Vec<_> = (0..args.concurrency).map(|_| tokio::spawn(publisher(publishing.clone()))).collect();

    // The faults.
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut rng = rand::rng();
    let fault_end = started + Duration::from_secs(args.fault_secs);
    while Instant::now() < fault_end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
        let kind = rng.random_range(0..6);
        let name = match kind {
            0 => {
                pg_proxy.reset_all();
                "postgres_link_reset"
            }
            1 => {
                pg_proxy.set(Mode::Stall);
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                pg_proxy.heal();
                "postgres_link_stalled"
            }
            2 => {
                pg_proxy.set(Mode::Blackhole);
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                pg_proxy.heal();
                "postgres_blackholed"
            }
            3 => {
                pg_proxy.set(Mode::Latency(Duration::from_millis(rng.random_range(5..50))));
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
                pg_proxy.heal();
                "postgres_latency"
            }
            4 => {
                let sql = format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{application}'"
                );
                let _ = psql(&sql);
                "postgres_backends_terminated"
            }
            _ => {
                herald.kill9().await;
                herald.start().await?;
                "herald_kill9"
            }
        };
        *faults.entry(name).or_default() += 1;
    }
    pg_proxy.heal();

    for publisher in publishers {
        let _ = publisher.await;
    }
    let acked = acked.lock().unwrap().clone();
    let publish_secs = started.elapsed().as_secs_f64();

    // Everything acknowledged must reach its user's client.
    let settle = Instant::now() + Duration::from_secs(args.settle_secs);
    let missing = |seen: &[Arc<Mutex<Seen>>]| {
        acked.iter().filter(|n| !seen[(**n % args.users) as usize].lock().unwrap().numbers.contains(n)).count()
    };
    while missing(&seen) > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let never_delivered = missing(&seen);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }

    if args.sabotage {
        if let Some(victim) = acked.iter().min() {
            let _ = psql(&format!("DELETE FROM {schema}.notifications WHERE title = 'n-{victim}'"));
        }
    }

    // And be in its inbox, once.
    let (mut lost, mut inbox_duplicates, mut stored) = (0usize, 0usize, 0usize);
    for u in 0..args.users {
        let user = format!("u{u}");
        let items = inbox(&http, addr, &user).await.context("reading an inbox at the end")?;
        stored += items.len();
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for item in &items {
            if let Some(number) = item["title"].as_str().and_then(|t| t.strip_prefix("n-")).and_then(|n| n.parse().ok())
            {
                *counts.entry(number).or_default() += 1;
            }
        }
        inbox_duplicates += counts.values().filter(|c| **c > 1).count();
        lost += acked.iter().filter(|n| user_of(**n, args.users) == user && !counts.contains_key(n)).count();
    }
    let client_duplicates: usize =
        seen.iter().map(|s| s.lock().unwrap().ids.values().filter(|c| **c > 1).count()).sum();
    let reconnects: u64 = seen.iter().map(|s| s.lock().unwrap().connects.saturating_sub(1)).sum();

    herald.kill9().await;
    let _ = psql(&format!("DROP SCHEMA {schema} CASCADE"));

    let ok = lost == 0 && inbox_duplicates == 0 && client_duplicates == 0 && never_delivered == 0;
    let report = json!({
        "run": run,
        "notifications": args.notifications,
        "acknowledged": acked.len(),
        "stored": stored,
        "lost": lost,
        "inbox_duplicates": inbox_duplicates,
        "client_duplicates": client_duplicates,
        "never_delivered": never_delivered,
        "client_reconnects": reconnects,
        "faults": faults,
        "publish_secs": (publish_secs * 10.0).round() / 10.0,
        "ok": ok,
    });
    println!("{report}");
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
