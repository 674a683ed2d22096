//! The executor end to end against the real Herald: the `herald` binary of this workspace runs as a child
//! process with its own data dir, the executor runs in-process and publishes to it, and a watcher follows
//! the order over Herald's order-streaming socket (`/api/orders/status/{orderId}`) and its REST poll
//! (`/api/orders/{orderId}`), as a design's client would. Nothing is stubbed.
//!
//! The binary is the one built next to this test (`target/debug/herald`), so build it first:
//!
//! ```sh
//! cargo build -p herald && cargo test -p order-executor --test with_herald
//! ```
//!
//! The watcher connects with `since=0`, so Herald replays every event the executor published before the
//! socket opened (an order at this speed may well be over by then) and the test sees the whole sequence
//! whatever the timing. Every wait is bounded; on any failure Herald's stderr is printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use order_executor::executor::Simulation;
use order_executor::herald::ApiKey;
use order_executor::{serve, Config, ServeError};
use rand::distr::{Alphanumeric, SampleString};
use reqwest::Url;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Herald may take to say it listens, and `herald token` to finish.
const STARTUP: Duration = Duration::from_secs(20);
/// How long any one frame, answer or shutdown may take.
const WAIT: Duration = Duration::from_secs(10);
/// The executor's simulated delays at 5% of the realistic pace: an order that goes straight through takes
/// about 60 ms, one that fails three times about 130 ms.
const SPEED: f64 = 0.05;

type Lines = Arc<Mutex<Vec<String>>>;

/// One `herald serve` child process with a fresh data dir and random secrets; killed when dropped.
struct Herald {
    child: Child,
    addr: SocketAddr,
    api_key: String,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    stderr: Lines,
    data_dir: TempDir,
}

impl Herald {
    async fn start() -> Herald {
        let bin = herald_bin();
        let data_dir = tempfile::tempdir().expect("create Herald's data dir");
        let api_key = secret();
        let env =
            vec![("HERALD_JWT_SECRET", secret()), ("HERALD_API_KEYS", api_key.clone()), ("HERALD_LOG", "warn".into())];
        let mut command = herald_command(&bin, &env);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));

        let (stdout, stderr) = (Lines::default(), Lines::default());
        let (addr_tx, addr_rx) = oneshot::channel();
        drain(child.stdout.take().expect("piped stdout"), stdout.clone(), Some(addr_tx));
        drain(child.stderr.take().expect("piped stderr"), stderr.clone(), None);
        let addr = match tokio::time::timeout(STARTUP, addr_rx).await {
            Ok(Ok(addr)) => addr,
            outcome => {
                let why = match outcome {
                    Err(_) => format!("no `listening on` line within {STARTUP:?}"),
                    _ => format!("its stdout closed without a `listening on` line (exit: {:?})", child.try_wait()),
                };
                let _ = child.start_kill();
                panic!(
                    "herald serve did not start: {why}\n--- herald stdout ---\n{}\n--- herald stderr ---\n{}",
                    joined(&stdout),
                    joined(&stderr)
                );
            }
        };
        Herald { child, addr, api_key, bin, env, stderr, data_dir }
    }

    fn url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).expect("Herald's URL")
    }

    /// A watcher's token from `herald token`, signed with this server's secret.
    async fn token(&self, user: &str, topics: &str) -> String {
        let mut command = herald_command(&self.bin, &self.env);
        command.args(["token", "--user", user, "--topics", topics, "--data-dir"]).arg(self.data_dir.path());
        let output = tokio::time::timeout(STARTUP, command.output())
            .await
            .unwrap_or_else(|_| panic!("`herald token` did not finish within {STARTUP:?}"))
            .expect("run herald token");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "`herald token` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let token = stdout.trim().to_owned();
        assert_eq!(token.split('.').count(), 3, "`herald token` printed no JWT: {stdout:?}");
        token
    }
}

impl Drop for Herald {
    /// A failing test shows what Herald logged (at `warn`), so a refusal or a crash explains itself.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- herald stderr ({}) ---\n{}", self.addr, joined(&self.stderr));
        }
        // `kill_on_drop` ends the process when `child` is dropped after this.
        let _ = self.child.start_kill();
    }
}

/// `target/debug/herald`, beside this test binary's `target/debug/deps/`.
fn herald_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("the test binary lives in target/<profile>/deps");
    let bin = dir.join(format!("herald{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build the server first: cargo build -p herald (./scripts/test builds the whole workspace)",
        bin.display()
    );
    bin
}

/// `herald` with `env` and none of the developer's own HERALD_* variables, which would leak into the test
/// (and an unknown one stops Herald).
fn herald_command(bin: &Path, env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// 32 random letters and digits: Herald wants at least 16 bytes for a secret or key.
fn secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Reads `pipe` line by line into `lines` until it closes, so that Herald never blocks on a full pipe, and
/// sends the address of the first `herald VERSION listening on http://ADDR` line to `addr_tx`.
fn drain(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    lines: Lines,
    mut addr_tx: Option<oneshot::Sender<SocketAddr>>,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(addr) = listening_addr(&line) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
            lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
        }
    });
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("herald ")?.split_once(" listening on http://")?.1;
    rest.split(|c: char| c.is_whitespace() || c == '/').next()?.parse().ok()
}

fn joined(lines: &Lines) -> String {
    lines.lock().unwrap_or_else(PoisonError::into_inner).join("\n")
}

/// The executor in-process on an ephemeral port, publishing to `herald`.
struct Executor {
    url: String,
    http: reqwest::Client,
    stop: oneshot::Sender<()>,
    served: JoinHandle<Result<(), ServeError>>,
}

impl Executor {
    async fn start(herald: &Herald, fail_rate: f64) -> Executor {
        // The executor's own logs (every publish with its seq, and any refusal) show with a failing test.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter("order_executor=debug")
            .try_init();
        let mut config = Config::new(herald.url(), ApiKey::new(herald.api_key.clone())).expect("executor config");
        config.simulation = Simulation::new(SPEED, fail_rate).expect("simulation");
        config.seed = Some(7);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the executor");
        let url = format!("http://{}", listener.local_addr().expect("the executor's address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, config, async {
            let _ = stopped.await;
        }));
        Executor { url, http: reqwest::Client::new(), stop, served }
    }

    /// Posts an order and returns its id and the `wsUrl` answered, once the executor has answered 200.
    async fn execute(&self, order: Value) -> (String, String) {
        let answer =
            tokio::time::timeout(WAIT, self.http.post(format!("{}/api/orders/execute", self.url)).json(&order).send())
                .await
                .expect("the executor did not answer the order in time")
                .expect("POST /api/orders/execute");
        let status = answer.status();
        let body: Value = answer.json().await.expect("the executor's answer is JSON");
        assert_eq!(status, 200, "the executor refused the order: {body}");
        assert_eq!(body["success"], true, "{body}");
        assert_eq!(body["status"], "pending", "{body}");
        let id = body["orderId"].as_str().unwrap_or_else(|| panic!("no orderId: {body}")).to_owned();
        let ws_url = body["wsUrl"].as_str().unwrap_or_else(|| panic!("no wsUrl: {body}")).to_owned();
        (id, ws_url)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let served = tokio::time::timeout(WAIT, self.served).await.expect("the executor did not stop in time");
        served.expect("the executor's task panicked").expect("the executor stopped with an error");
    }
}

/// A watcher's socket on Herald.
struct Watcher {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every JSON frame received, for the panic messages.
    seen: Vec<Value>,
}

impl Watcher {
    async fn connect(url: &str) -> Watcher {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("no WebSocket upgrade within {WAIT:?} from {url}"))
            .unwrap_or_else(|e| panic!("Herald refused the watcher's socket at {url}: {e}"));
        Watcher { ws, seen: Vec::new() }
    }

    /// The next JSON text frame; pings and pongs are skipped.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame within {WAIT:?}; the frames so far: {:#?}", self.seen))
                .unwrap_or_else(|| panic!("Herald closed the socket; the frames so far: {:#?}", self.seen))
                .unwrap_or_else(|e| panic!("reading the socket failed: {e}; the frames so far: {:#?}", self.seen));
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                    self.seen.push(frame.clone());
                    return frame;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("an unexpected frame {other:?}; the frames so far: {:#?}", self.seen),
            }
        }
    }

    /// The order's event frames, in order, up to and including the first `confirmed` or `failed`.
    async fn events_until_final(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let frame = self.next().await;
            let done = matches!(frame["type"].as_str(), Some("confirmed" | "failed"));
            events.push(frame);
            if done {
                return events;
            }
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
    }
}

/// A SOL → USDC order with a slippage of 1%: the mock price moves at most 0.6% in flight, so the order is
/// never refused for slippage and its path depends on the fail rate alone.
fn sol_usdc() -> Value {
    json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 10, "slippage": 1})
}

/// Posts an order, checks its `wsUrl`, and opens the watcher's socket there with `since=0`. Herald's design
/// socket sends `connection` and then `subscribed` (checked here); the events follow.
async fn watch_new_order(herald: &Herald, executor: &Executor, token: &str) -> (String, Watcher) {
    let (id, ws_url) = executor.execute(sol_usdc()).await;
    assert_eq!(ws_url, format!("ws://{}/api/orders/status/{id}", herald.addr));
    let mut watcher = Watcher::connect(&format!("{ws_url}?token={token}&since=0")).await;

    let connection = watcher.next().await;
    assert_eq!(connection["type"], "connection", "{connection}");
    assert_eq!(connection["orderId"], id.as_str(), "{connection}");
    assert!(connection["timestamp"].is_string(), "{connection}");
    let subscribed = watcher.next().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["orderId"], id.as_str(), "{subscribed}");
    (id, watcher)
}

/// What every flattened event frame carries: `type` = `status`, the order's id, a message and a timestamp,
/// and seq 1, 2, 3, … with no gap, which shows Herald took every step the executor published (the
/// executor stops an order at the first event Herald refuses).
fn assert_well_formed(events: &[Value], id: &str) {
    for (i, frame) in events.iter().enumerate() {
        assert_eq!(frame["type"], frame["status"], "{frame}");
        assert_eq!(frame["orderId"], id, "{frame}");
        assert!(frame["message"].is_string(), "{frame}");
        assert!(frame["timestamp"].is_string(), "{frame}");
        assert_eq!(frame["seq"], i as u64 + 1, "seq must count up by one: {frame}");
    }
}

fn steps(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|f| (f["type"].as_str().unwrap_or("?").to_owned(), f["progress"].as_u64().unwrap_or(u64::MAX)))
        .collect()
}

fn expect_steps(events: &[Value], expected: &[(&str, u64)]) {
    let expected: Vec<(String, u64)> = expected.iter().map(|(s, p)| ((*s).to_owned(), *p)).collect();
    assert_eq!(steps(events), expected, "the frames: {events:#?}");
}

/// The order's state from Herald's REST poll, `GET /api/orders/{orderId}` with the watcher's token.
async fn poll_state(herald: &Herald, id: &str, token: &str) -> Value {
    let url = format!("http://{}/api/orders/{id}", herald.addr);
    let answer = tokio::time::timeout(WAIT, reqwest::Client::new().get(&url).bearer_auth(token).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url} did not answer within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = answer.status();
    let body: Value = answer.json().await.expect("the order's state is JSON");
    assert_eq!(status, 200, "GET {url}: {body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["orderId"], id, "{body}");
    body
}

#[tokio::test]
async fn an_order_streams_through_herald_until_confirmed() {
    let herald = Herald::start().await;
    let token = herald.token("trader", "order:*").await;
    let executor = Executor::start(&herald, 0.0).await;

    let (id, mut watcher) = watch_new_order(&herald, &executor, &token).await;
    let events = watcher.events_until_final().await;
    expect_steps(
        &events,
        &[
            ("pending", 0),
            ("routing", 10),
            ("routing", 30),
            ("building", 50),
            ("building", 70),
            ("submitted", 80),
            ("confirmed", 100),
        ],
    );
    assert_well_formed(&events, &id);
    assert_eq!(events[0]["tokenIn"], "SOL");
    assert_eq!(events[2]["quotes"].as_array().map(Vec::len), Some(2), "{}", events[2]);
    assert_eq!(events[5]["attempt"], 1);
    let confirmed = &events[6];
    let tx_hash = confirmed["txHash"].as_str().unwrap_or_else(|| panic!("no txHash: {confirmed}"));
    assert_eq!(tx_hash.len(), 44, "{confirmed}");
    assert_eq!(confirmed["dex"], events[3]["chosenDex"], "{confirmed}");
    watcher.close().await;

    // Herald commits an event before pushing it, so the poll already sees the end.
    let state = poll_state(&herald, &id, &token).await;
    assert_eq!(state["status"], "confirmed", "{state}");
    assert_eq!(state["progress"], 100, "{state}");
    assert_eq!(state["txHash"], tx_hash, "{state}");

    executor.stop().await;
}

#[tokio::test]
async fn an_order_whose_every_submission_fails_ends_failed_after_three_attempts() {
    let herald = Herald::start().await;
    let token = herald.token("trader", "order:*").await;
    let executor = Executor::start(&herald, 1.0).await;

    let (id, mut watcher) = watch_new_order(&herald, &executor, &token).await;
    let events = watcher.events_until_final().await;
    expect_steps(
        &events,
        &[
            ("pending", 0),
            ("routing", 10),
            ("routing", 30),
            ("building", 50),
            ("building", 70),
            ("submitted", 80),
            ("execution-failed", 80),
            ("retry-pending", 80),
            ("submitted", 85),
            ("execution-failed", 85),
            ("retry-pending", 85),
            ("submitted", 90),
            ("execution-failed", 90),
            ("failed", 0),
        ],
    );
    assert_well_formed(&events, &id);
    let attempts = |kind: &str| -> Vec<Value> {
        events.iter().filter(|f| f["type"] == kind).map(|f| f["attempt"].clone()).collect()
    };
    assert_eq!(attempts("submitted"), [1, 2, 3]);
    assert_eq!(attempts("execution-failed"), [1, 2, 3]);
    for failed in events.iter().filter(|f| f["type"] == "execution-failed") {
        assert!(failed["error"].is_string(), "{failed}");
    }
    let failed = &events[13];
    let error = failed["error"].as_str().unwrap_or_else(|| panic!("no error: {failed}"));
    assert!(error.starts_with("all 3 attempts failed"), "{failed}");
    assert_eq!(failed["totalAttempts"], 3, "{failed}");
    watcher.close().await;

    let state = poll_state(&herald, &id, &token).await;
    assert_eq!(state["status"], "failed", "{state}");
    assert_eq!(state["error"], error, "{state}");

    executor.stop().await;
}
