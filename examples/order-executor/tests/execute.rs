//! The executor end to end, in-process, against a stub Herald that records what it is sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use order_executor::executor::Simulation;
use order_executor::herald::{ApiKey, Retry};
use order_executor::{serve, Config, ServeError};
use reqwest::Url;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const API_KEY: &str = "test-key";
const WAIT: Duration = Duration::from_secs(10);

/// One request the stub Herald received.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    authorization: Option<String>,
    body: Value,
    /// The status the stub answered.
    answered: u16,
    seq: Option<u64>,
}

impl Received {
    fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or_default()
    }

    fn progress(&self) -> u64 {
        self.body["progress"].as_u64().unwrap_or(u64::MAX)
    }

    fn data(&self, key: &str) -> &Value {
        &self.body["data"][key]
    }
}

/// Stands in for Herald's `POST /api/v1/topics/{topic}/events`: answers 201 `{"seq": n}`, n counting up per
/// topic, except that it first answers the statuses it was scripted to, one request each.
#[derive(Clone)]
struct StubHerald {
    url: Url,
    received: watch::Sender<Vec<Received>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl StubHerald {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let stub = Self { url, received: watch::Sender::new(Vec::new()), script: Arc::default() };
        let app = Router::new().route("/api/v1/topics/{topic}/events", post(publish)).with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        stub
    }

    /// The next requests are answered with these statuses, in turn.
    fn answer_next(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    fn received(&self) -> Vec<Received> {
        self.received.borrow().clone()
    }

    /// Waits until Herald has taken a final event for `order_id`, and returns what the topic received.
    async fn final_event(&self, order_id: &str) -> Vec<Received> {
        let topic = format!("order:{order_id}");
        let is_final =
            |r: &Received| r.topic == topic && r.answered == 201 && ["confirmed", "failed"].contains(&r.status());
        let mut rx = self.received.subscribe();
        let seen = tokio::time::timeout(WAIT, rx.wait_for(|all| all.iter().any(is_final)))
            .await
            .unwrap_or_else(|_| panic!("no final event for {topic} within {WAIT:?}: {:#?}", self.received()))
            .unwrap();
        seen.iter().filter(|r| r.topic == topic).cloned().collect()
    }
}

async fn publish(
    State(stub): State<StubHerald>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let scripted = stub.script.lock().unwrap().pop_front();
    let answered = scripted.unwrap_or(201);
    let mut seq = None;
    stub.received.send_modify(|all| {
        if answered == 201 {
            seq = Some(all.iter().filter(|r| r.topic == topic && r.answered == 201).count() as u64 + 1);
        }
        all.push(Received {
            topic,
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            answered,
            seq,
        });
    });
    let status = StatusCode::from_u16(answered).unwrap();
    match seq {
        Some(seq) => (status, Json(json!({"seq": seq}))),
        None => (status, Json(json!({"error": {"code": "scripted", "message": "the test said so"}}))),
    }
}

struct TestApp {
    url: String,
    http: reqwest::Client,
    herald: StubHerald,
    stop: oneshot::Sender<()>,
    served: JoinHandle<Result<(), ServeError>>,
}

/// The executor on an ephemeral port in front of a fresh stub Herald, fast (speed 0.001) and, unless
/// `tweak` says otherwise, with no submission failures and a slippage no price move exceeds.
async fn spawn_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let herald = StubHerald::start().await;
    let mut config = Config::new(herald.url.clone(), ApiKey::new(API_KEY)).unwrap();
    config.simulation = Simulation::new(0.001, 0.0).unwrap();
    config.seed = Some(42);
    config.herald_retry = Retry { retries: 5, first_backoff: Duration::from_millis(5) };
    tweak(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, config, async {
        let _ = stopped.await;
    }));
    TestApp { url: format!("http://{addr}"), http: reqwest::Client::new(), herald, stop, served }
}

impl TestApp {
    async fn execute(&self, body: Value) -> (u16, Value) {
        self.execute_raw(body.to_string()).await
    }

    async fn execute_raw(&self, body: String) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}/api/orders/execute", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    async fn health(&self) -> Value {
        self.http.get(format!("{}/health", self.url)).send().await.unwrap().json().await.unwrap()
    }

    async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.served).await.expect("serve did not return").unwrap()
    }
}

fn sol_usdc() -> Value {
    json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 10, "slippage": 50})
}

fn accepted(events: &[Received]) -> Vec<&Received> {
    events.iter().filter(|r| r.answered == 201).collect()
}

fn steps(events: &[&Received]) -> Vec<(String, u64)> {
    events.iter().map(|r| (r.status().to_owned(), r.progress())).collect()
}

fn expect_steps(events: &[&Received], expected: &[(&str, u64)]) {
    let expected: Vec<(String, u64)> = expected.iter().map(|(s, p)| ((*s).to_owned(), *p)).collect();
    assert_eq!(steps(events), expected);
}

/// The rules every accepted event keeps: the API key, `type` = `status`, a message, and seq 1, 2, 3, … in
/// the order they were published (one at a time).
fn assert_well_formed(events: &[&Received]) {
    for (i, r) in events.iter().enumerate() {
        assert_eq!(r.authorization.as_deref(), Some("Bearer test-key"), "{r:?}");
        assert_eq!(r.body["type"], r.body["status"], "{r:?}");
        assert!(r.data("message").is_string(), "{r:?}");
        assert_eq!(r.seq, Some(i as u64 + 1), "{r:?}");
    }
}

#[tokio::test]
async fn an_order_streams_every_step_to_herald_until_confirmed() {
    let app = spawn_app(|_| {}).await;
    let (status, answer) = app.execute(sol_usdc()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["status"], "pending");
    assert_eq!(answer["message"], "Order created and enqueued for processing");
    let id = answer["orderId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    let ws_base = app.herald.url.as_str().replacen("http", "ws", 1);
    assert_eq!(answer["wsUrl"], format!("{}api/orders/status/{id}", ws_base));

    let events = app.herald.final_event(&id).await;
    let events = accepted(&events);
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
    assert_well_formed(&events);
    assert_eq!(events[1].data("message"), "Fetching quotes from multiple DEXs...");
    assert_eq!(events[2].data("quotesFetched"), 2);
    assert_eq!(events[2].data("quotes").as_array().map(Vec::len), Some(2));
    let dex = events[3].data("chosenDex").as_str().unwrap();
    assert!(["raydium", "meteora"].contains(&dex));
    assert_eq!(events[3].data("quote")["dex"], dex);
    assert_eq!(events[4].data("message"), "Transaction built, ready to submit");
    assert_eq!(events[5].data("message"), "Submitting transaction (attempt 1/3)...");
    assert_eq!(events[6].data("txHash").as_str().map(str::len), Some(44));
    assert_eq!(events[6].data("dex"), dex);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn failed_submissions_are_retried_then_the_order_fails() {
    let app = spawn_app(|c| c.simulation = Simulation::new(0.001, 1.0).unwrap()).await;
    let (status, answer) = app.execute(sol_usdc()).await;
    assert_eq!(status, 200, "{answer}");
    let events = app.herald.final_event(answer["orderId"].as_str().unwrap()).await;
    let events = accepted(&events);
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
    assert_well_formed(&events);
    assert!(events[6].data("error").is_string());
    assert_eq!(events[7].data("retryInMs"), 0, "200 ms at speed 0.001");
    assert!(events[13].data("error").as_str().is_some_and(|e| e.starts_with("all 3 attempts failed")));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_503_from_herald_is_retried() {
    let app = spawn_app(|_| {}).await;
    // The pending event meets two 503s before Herald takes it, and routing 10 after it meets one.
    app.herald.answer_next(&[503, 503, 201, 503]);
    let (status, answer) = app.execute(sol_usdc()).await;
    assert_eq!(status, 200, "{answer}");
    let all = app.herald.final_event(answer["orderId"].as_str().unwrap()).await;

    let tries: Vec<(&str, u16)> = all.iter().take(5).map(|r| (r.status(), r.answered)).collect();
    assert_eq!(tries, [("pending", 503), ("pending", 503), ("pending", 201), ("routing", 503), ("routing", 201)]);
    let events = accepted(&all);
    assert_eq!(events.len(), 7, "each event was taken once: {:?}", steps(&events));
    assert_eq!(events.last().map(|r| r.status()), Some("confirmed"));
    assert_well_formed(&events);
    // A retry sends the same event again, with the key.
    assert_eq!(all[0].body, all[2].body);
    assert_eq!(all[3].body, all[4].body);
    assert!(all.iter().all(|r| r.authorization.as_deref() == Some("Bearer test-key")));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_4xx_and_publishes_nothing() {
    let app = spawn_app(|_| {}).await;
    let bad = [
        ("not json".to_owned(), 400),
        (json!({"tokenIn": "SOL", "tokenOut": "USDC"}).to_string(), 400),
        (json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "10"}).to_string(), 400),
        (json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 0}).to_string(), 422),
        (json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": -5}).to_string(), 422),
        (json!({"tokenIn": "", "tokenOut": "USDC", "amount": 1}).to_string(), 422),
        (json!({"tokenIn": "SOL", "tokenOut": "A_VERY_LONG_TOKEN", "amount": 1}).to_string(), 422),
        (json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": 51}).to_string(), 422),
        (json!({"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1, "slippage": -1}).to_string(), 422),
    ];
    for (body, expected) in bad {
        let (status, answer) = app.execute_raw(body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert_eq!(answer["success"], false, "{body}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{body}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    assert!(app.herald.received().is_empty(), "{:?}", app.herald.received());
    assert_eq!(app.health().await, json!({"status": "ok", "inFlight": 0}));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_api_key_gets_502_without_retries() {
    let app = spawn_app(|_| {}).await;
    app.herald.answer_next(&[401]);
    let (status, answer) = app.execute(sol_usdc()).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["success"], false);
    assert_eq!(answer["error"]["code"], "herald_unavailable");
    assert_eq!(app.herald.received().len(), 1, "a bad key is not retried");
    assert_eq!(app.health().await["inFlight"], 0, "no order runs");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_herald_that_is_down_gets_502() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let app = spawn_app(|c| {
        c.herald_url = url;
        c.herald_retry = Retry { retries: 2, first_backoff: Duration::from_millis(1) };
    })
    .await;
    let (status, answer) = app.execute(sol_usdc()).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "herald_unavailable");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("3 attempts")), "{answer}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn orders_beyond_the_slots_get_503() {
    // At speed 1 the first order takes about a second, so it still holds the only slot.
    let app = spawn_app(|c| {
        c.max_in_flight = 1;
        c.simulation = Simulation::new(1.0, 0.0).unwrap();
    })
    .await;
    let (status, first) = app.execute(sol_usdc()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(app.health().await["inFlight"], 1);
    let (status, second) = app.execute(sol_usdc()).await;
    assert_eq!(status, 503, "{second}");
    assert_eq!(second["error"]["code"], "too_many_orders");
    let published: Vec<String> = app.herald.received().iter().map(|r| r.topic.clone()).collect();
    assert!(published.iter().all(|t| *t == format!("order:{}", first["orderId"].as_str().unwrap())));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_fails_the_orders_in_flight_and_waits_for_them() {
    let app = spawn_app(|c| c.simulation = Simulation::new(1.0, 0.0).unwrap()).await;
    let (status, answer) = app.execute(sol_usdc()).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["orderId"].as_str().unwrap().to_owned();
    let herald = app.herald.clone();
    app.stop().await.unwrap();

    // `serve` has returned, so the order's last event is already there.
    let events = herald.received();
    let last = events.iter().rfind(|r| r.topic == format!("order:{id}")).unwrap();
    assert_eq!(last.status(), "failed", "{events:?}");
    assert!(last.data("error").as_str().is_some_and(|e| e.contains("shut down")), "{last:?}");
}
