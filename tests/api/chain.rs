//! Chain events matched to intents: a domain event on `mints.domain` (`upserted.*`) carrying a chain id and a
//! transaction hash takes the intent's topic to `ready`, whether the intent is found by a registered
//! correlation or by the minting system's own lookup in PostgreSQL, and whether the event arrives before or
//! after the intent is known. Real RabbitMQ (a vhost per test), real PostgreSQL (a schema per test).

use reqwest::Method;
use serde_json::{json, Value};

use crate::amqp::{messages, spawn_consuming, wait_for_count};
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::postgres::{Schema, POSTGRES};
use crate::helpers::{assert_error, status_and_json, wait_until, TestApp, WsClient, WAIT};

const QUEUE: &str = "herald.mints";
const EXCHANGE: &str = "mints.domain";

/// One chain consumer as the defaults have it, with retries fast enough for a test: `attempts` in all, the
/// first after 100 ms, then doubling up to 400 ms.
fn config(attempts: u32) -> String {
    format!(
        r#"
[amqp]
[[amqp.consumers]]
queue = "{QUEUE}"
exchange = "{EXCHANGE}"
binding_keys = ["upserted.*"]
shape = "chain"
prefetch = 20
[amqp.consumers.retry]
attempts = {attempts}
initial_delay_ms = 100
max_delay_ms = 400
jitter = 0.0
"#
    )
}

/// Attempts enough (about 8 s of retries) that a test registering the intent meanwhile never runs out.
const PATIENT: u32 = 24;

async fn spawn(vhost: &Vhost, attempts: u32, lookup: Option<&Schema>) -> TestApp {
    let (app, config) = spawn_consuming(vhost, Some(&config(attempts)), |s| {
        if let Some(schema) = lookup {
            s.env("HERALD_CORRELATION_DATABASE_URL", POSTGRES);
            s.env("HERALD_CORRELATION_QUERY", schema.query());
        }
    })
    .await;
    // The server has read its config file; the directory may go.
    drop(config);
    app
}

/// A chain event as the catalog publishes it.
fn minted(chain_id: u64, tx_hash: &str, token_ids: Value) -> Value {
    json!({"chain_id": chain_id, "tx_hash": tx_hash, "contract": "0xC0FFEE", "tokenIds": token_ids, "owner": "0x1"})
}

async fn correlate(app: &TestApp, body: &Value, bearer: &str) -> (u16, Value) {
    status_and_json(app.request(Method::POST, "/api/v1/correlations", Some(bearer)).json(body).send().await.unwrap())
        .await
}

async fn correlate_ok(app: &TestApp, chain_id: Value, tx_hash: &str, topic: &str) -> Value {
    let (status, body) =
        correlate(app, &json!({"key": {"chain_id": chain_id, "tx_hash": tx_hash}, "topic": topic}), &app.api_key).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn state(app: &TestApp, topic: &str) -> (u16, Value) {
    app.get_json(&format!("/api/v1/topics/{topic}"), Some(&app.api_key)).await
}

async fn wait_for_status(app: &TestApp, topic: &str, status: &str) -> Value {
    wait_until(&format!("{topic} to be {status}"), WAIT * 2, || async {
        let (code, state) = state(app, topic).await;
        (code == 200 && state["status"] == status).then_some(state)
    })
    .await
}

/// The statuses of a topic's history, with whether each was inferred.
async fn history(app: &TestApp, topic: &str) -> Vec<(String, bool)> {
    let (code, body) = app.get_json(&format!("/api/v1/topics/{topic}/events?since=0"), Some(&app.api_key)).await;
    assert_eq!(code, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["status"].as_str().unwrap_or_default().to_owned(), e["data"]["inferred"] == true))
        .collect()
}

async fn chain_events(app: &TestApp, outcome: &str) -> f64 {
    app.metrics().await.counter(&format!("herald_chain_events_total{{outcome=\"{outcome}\"}}"))
}

async fn wait_for_chain_events(app: &TestApp, outcome: &str, at_least: f64) {
    wait_until(&format!("{at_least} chain event(s) {outcome}"), WAIT * 2, || async {
        (chain_events(app, outcome).await >= at_least).then_some(())
    })
    .await
}

async fn subscribe(app: &TestApp, topic: &str) -> WsClient {
    let token = app.topic_token("minter", &[topic]);
    let mut ws = app.connect_ws_query(&format!("?token={token}")).await;
    ws.send_json(&json!({"type": "subscribe", "topic": topic})).await;
    let subscribed = ws.next_json().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    ws
}

async fn next_event(ws: &mut WsClient) -> Value {
    let frame = ws.next_json().await;
    assert_eq!(frame["type"], "event", "expected a topic event, got {frame}");
    frame["event"].clone()
}

fn ready_data(tx_hash: &str, chain_id: u64, token_ids: Value) -> Value {
    json!({"contract": "0xC0FFEE", "tokenIds": token_ids, "txHash": tx_hash, "chainId": chain_id})
}

#[tokio::test]
async fn a_registered_correlation_takes_the_intent_to_ready_live_with_the_inferred_steps() {
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, None).await;
    let topic = "intent:42";
    app.append_ok(topic, &json!({"type": "status", "status": "pending"})).await;
    let mut ws = subscribe(&app, topic).await;
    // Registered in capitals, published in lowercase: a 0x-hex hash is the same hash in any case.
    let registered = correlate_ok(&app, json!(1), "0xAB12CD", topic).await;
    assert_eq!(registered, json!({"key": {"chain_id": 1, "tx_hash": "0xab12cd", "kind": "mint"}, "topic": topic}));

    let producer = Producer::connect(&vhost.url()).await;
    producer.publish(EXCHANGE, "upserted.mint", &minted(1, "0xab12cd", json!(["7", "8"]))).await;

    for inferred in ["broadcast", "confirming"] {
        let event = next_event(&mut ws).await;
        assert_eq!((event["type"].as_str(), event["status"].as_str()), (Some("chain"), Some(inferred)), "{event}");
        assert_eq!(event["data"], json!({"inferred": true}));
    }
    let ready = next_event(&mut ws).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let mut expected = ready_data("0xab12cd", 1, json!(["7", "8"]));
    expected["inferred"] = Value::Null;
    assert_eq!(ready["data"], expected);

    let (_, state) = state(&app, topic).await;
    assert_eq!((state["status"].as_str(), state["seq"].as_u64()), (Some("ready"), Some(4)));
    assert_eq!(state["data"], ready_data("0xab12cd", 1, json!(["7", "8"])), "the merged state keeps no inferred mark");
    assert_eq!(chain_events(&app, "matched").await, 1.0);
    wait_until("the event to be acked", WAIT, || async { (messages(&app, QUEUE, "acked").await == 1.0).then_some(()) })
        .await;
}

#[tokio::test]
async fn a_correlate_inside_a_topic_event_is_enough_to_match() {
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, None).await;
    let topic = "intent:43";
    app.append_ok(topic, &json!({"type": "status", "status": "pending"})).await;
    let broadcast = json!({"type": "status", "status": "broadcast", "data": {"txHash": "0xfeed"},
                           "correlate": {"chain_id": "137", "tx_hash": "0xFEED", "kind": "mint"}});
    assert_eq!(app.append_ok(topic, &broadcast).await, 2);

    let producer = Producer::connect(&vhost.url()).await;
    producer.publish(EXCHANGE, "upserted.mint", &minted(137, "0xfeed", json!([1]))).await;
    let state = wait_for_status(&app, topic, "ready").await;
    assert_eq!(state["data"], ready_data("0xfeed", 137, json!([1])));
    assert_eq!(
        history(&app, topic).await,
        [("pending".into(), false), ("broadcast".into(), false), ("confirming".into(), true), ("ready".into(), false)]
    );
}

#[tokio::test]
async fn the_chain_event_that_arrives_before_its_correlation_is_retried_and_holds_up_no_other() {
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, None).await;
    let producer = Producer::connect(&vhost.url()).await;
    for topic in ["intent:50", "intent:51"] {
        app.append_ok(topic, &json!({"type": "status", "status": "pending"})).await;
    }

    // The event races ahead of the intent's registration: nothing knows 0xa1 yet.
    producer.publish(EXCHANGE, "upserted.mint", &minted(1, "0xa1", json!(["1"]))).await;
    wait_for_chain_events(&app, "retried", 1.0).await;
    assert!(messages(&app, QUEUE, "retried").await >= 1.0);

    // Meanwhile an event for an intent that is known is matched at once, not behind the waiting one.
    correlate_ok(&app, json!(1), "0xb2", "intent:51").await;
    producer.publish(EXCHANGE, "upserted.mint", &minted(1, "0xb2", json!(["2"]))).await;
    wait_for_status(&app, "intent:51", "ready").await;
    assert_eq!(state(&app, "intent:50").await.1["status"], "pending", "the early event is still waiting");

    // The registration comes; the next retry matches.
    correlate_ok(&app, json!("1"), "0xA1", "intent:50").await;
    let matched = wait_for_status(&app, "intent:50", "ready").await;
    assert_eq!(matched["data"], ready_data("0xa1", 1, json!(["1"])));
    let retried = chain_events(&app, "retried").await;
    assert!(retried >= 1.0, "{retried}");
    assert_eq!(chain_events(&app, "matched").await, 2.0);
    assert_eq!(producer.count("herald.mints.dlq").await, 0, "nothing was given up on");
    wait_until("every delivery acked", WAIT, || async {
        let retried = messages(&app, QUEUE, "retried").await;
        (messages(&app, QUEUE, "acked").await == retried + 2.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_chain_event_that_arrives_before_its_tx_intents_row_is_matched_by_the_lookup_once_the_row_is_there() {
    let schema = Schema::create("bigint").await;
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, Some(&schema)).await;
    let producer = Producer::connect(&vhost.url()).await;

    producer.publish(EXCHANGE, "upserted.mint", &minted(8453, "0xC3D4", json!(["11", "12"]))).await;
    wait_for_chain_events(&app, "retried", 1.0).await;
    let (code, _) = state(&app, "intent:77").await;
    assert_eq!(code, 404, "nothing knows the intent yet");

    // The orchestrator writes its row (hashes in lowercase, as Herald compares 0x-hex).
    schema.insert("77", 8453, "0xc3d4", "mint").await;
    let ready = wait_for_status(&app, "intent:77", "ready").await;
    assert_eq!(ready["data"], ready_data("0xc3d4", 8453, json!(["11", "12"])));
    // The intent was unknown to Herald: its whole way to ready was inferred, in one append.
    assert_eq!(
        history(&app, "intent:77").await,
        [("pending".into(), true), ("broadcast".into(), true), ("confirming".into(), true), ("ready".into(), false)]
    );
    // A row of another kind matches nothing.
    schema.insert("78", 1, "0xe5", "burn").await;
    let before = chain_events(&app, "retried").await;
    producer.publish(EXCHANGE, "upserted.mint", &minted(1, "0xe5", json!(["1"]))).await;
    wait_for_chain_events(&app, "retried", before + 1.0).await;
    assert_eq!(state(&app, "intent:78").await.0, 404);
    assert_eq!(chain_events(&app, "matched").await, 1.0);
}

#[tokio::test]
async fn a_chain_event_never_matched_is_dead_lettered_after_its_attempts_with_the_reason() {
    let schema = Schema::create("text").await;
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, 3, Some(&schema)).await;
    let producer = Producer::connect(&vhost.url()).await;
    producer.publish(EXCHANGE, "upserted.mint", &minted(1, "0xdead", json!(["1"]))).await;

    wait_for_count(&producer, "herald.mints.dlq", 1, WAIT * 2).await;
    let dead = producer.peek("herald.mints.dlq").await;
    assert_eq!(dead[0].header("x-herald-attempt").as_deref(), Some("3"));
    let reason = dead[0].header("x-herald-reason").unwrap_or_default();
    assert!(
        reason.starts_with("gave up after 3 attempts: no intent found yet for chain 1 tx 0xdead (mint)")
            && reason.contains("PostgreSQL lookup found no row"),
        "{reason}"
    );
    assert_eq!(dead[0].header("x-herald-original-exchange").as_deref(), Some(EXCHANGE));
    assert_eq!(dead[0].header("x-herald-original-routing-key").as_deref(), Some("upserted.mint"));
    assert_eq!(chain_events(&app, "retried").await, 2.0);
    assert_eq!(chain_events(&app, "not_found_dead_lettered").await, 1.0);
    assert_eq!(producer.count(QUEUE).await, 0);

    // The operator sees it, with its reason, in the dead-letter listing.
    let listing = crate::helpers::run_herald(&["dlq", "list", "--queue", QUEUE, "--json"], &vhost.settings()).await;
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{stdout} {}", String::from_utf8_lossy(&listing.stderr));
    assert!(stdout.contains("no intent found yet"), "{stdout}");
}

#[tokio::test]
async fn poison_is_dead_lettered_at_once_and_bad_or_conflicting_correlations_are_refused() {
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, None).await;
    let producer = Producer::connect(&vhost.url()).await;

    // No tx_hash: it can never be matched, so it is not retried.
    producer.publish(EXCHANGE, "upserted.mint", &json!({"chain_id": 1, "contract": "0xC0", "tokenIds": []})).await;
    assert!(producer.publish_with(EXCHANGE, "upserted.mint", b"not json", Default::default()).await);
    wait_for_count(&producer, "herald.mints.dlq", 2, WAIT).await;
    let dead = producer.peek("herald.mints.dlq").await;
    assert!(dead[0].header("x-herald-reason").unwrap_or_default().contains("\"tx_hash\""), "{dead:?}");
    assert!(dead[1].header("x-herald-reason").unwrap_or_default().contains("not JSON"), "{dead:?}");
    for m in &dead {
        assert_eq!(m.header("x-herald-attempt").as_deref(), Some("1"), "poison is not retried");
    }
    assert_eq!(chain_events(&app, "poison").await, 2.0);
    assert_eq!(messages(&app, QUEUE, "retried").await, 0.0);

    // Bad correlations: 422, and nothing is bound (binding the key elsewhere afterwards is no conflict).
    let key = json!({"chain_id": 1, "tx_hash": "0xabc"});
    for bad in [
        json!({"key": key, "topic": "intent:"}),
        json!({"key": key, "topic": "intent:60", "extra": 1}),
        json!({"key": {"chain_id": -1, "tx_hash": "0xabc"}, "topic": "intent:60"}),
        json!({"key": {"chain_id": 1, "tx_hash": "0x abc"}, "topic": "intent:60"}),
        json!({"key": {"chain_id": 1, "tx_hash": "0xabc", "kind": ""}, "topic": "intent:60"}),
        json!({"key": {"chain_id": 1}, "topic": "intent:60"}),
    ] {
        let (status, body) = correlate(&app, &bad, &app.api_key).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_error(&body, "invalid_request");
    }
    let (status, _) = correlate(&app, &json!({"key": key, "topic": "intent:60"}), &app.token("mallory")).await;
    assert_eq!(status, 403, "a user token cannot register correlations");
    correlate_ok(&app, json!(1), "0xabc", "intent:61").await;
    correlate_ok(&app, json!(1), "0xABC", "intent:61").await;

    // The key is bound to intent:61 now: binding it to another intent is a conflict, over both routes.
    let (status, body) = correlate(&app, &json!({"key": key, "topic": "intent:60"}), &app.api_key).await;
    assert_eq!(status, 409, "{body}");
    let error = assert_error(&body, "correlation_conflict");
    assert!(error["message"].as_str().unwrap().contains("intent:61"), "{error}");
    app.append_ok("intent:60", &json!({"type": "status", "status": "pending"})).await;
    let with_conflict = json!({"type": "status", "status": "broadcast", "correlate": key});
    let (status, body) = status_and_json(app.append("intent:60", &with_conflict).await).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "correlation_conflict");
    let batch = json!({"events": [
        {"topic": "intent:62", "type": "status", "status": "pending"},
        {"topic": "intent:60", "type": "status", "status": "broadcast", "correlate": key},
    ]});
    let response =
        app.request(Method::POST, "/api/v1/topics/events/batch", Some(&app.api_key)).json(&batch).send().await.unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!((status, body["error"]["index"].as_u64()), (409, Some(1)), "{body}");
    assert_eq!(state(&app, "intent:60").await.1["seq"], 1, "the refused event stored nothing");
    assert_eq!(state(&app, "intent:62").await.0, 404, "nor did the rest of its batch");
}

#[tokio::test]
async fn a_redelivered_chain_event_for_an_intent_already_ready_appends_nothing() {
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, None).await;
    let producer = Producer::connect(&vhost.url()).await;
    let topic = "intent:70";
    app.append_ok(topic, &json!({"type": "status", "status": "pending"})).await;
    correlate_ok(&app, json!(10), "0x70", topic).await;
    let event = minted(10, "0x70", json!(["5"]));
    producer.publish(EXCHANGE, "upserted.mint", &event).await;
    let ready = wait_for_status(&app, topic, "ready").await;
    let seq = ready["seq"].as_u64().unwrap();

    producer.publish(EXCHANGE, "upserted.mint", &event).await;
    wait_for_chain_events(&app, "duplicate", 1.0).await;
    wait_until("both deliveries acked", WAIT, || async { (messages(&app, QUEUE, "acked").await == 2.0).then_some(()) })
        .await;
    let (_, after) = state(&app, topic).await;
    assert_eq!(after["seq"].as_u64(), Some(seq), "nothing was appended: {after}");
    assert_eq!(after["updated_at"], ready["updated_at"]);
    assert_eq!(chain_events(&app, "matched").await, 1.0);
    assert_eq!(producer.count("herald.mints.dlq").await, 0);
}

#[tokio::test]
async fn an_intent_that_failed_is_never_made_ready() {
    let vhost = Vhost::create().await;
    let app = spawn(&vhost, PATIENT, None).await;
    let producer = Producer::connect(&vhost.url()).await;
    let topic = "intent:80";
    for status in ["pending", "failed"] {
        app.append_ok(topic, &json!({"type": "status", "status": status})).await;
    }
    correlate_ok(&app, json!(1), "0x80", topic).await;
    producer.publish(EXCHANGE, "upserted.mint", &minted(1, "0x80", json!([]))).await;
    wait_for_count(&producer, "herald.mints.dlq", 1, WAIT).await;
    let dead = producer.peek("herald.mints.dlq").await;
    let reason = dead[0].header("x-herald-reason").unwrap_or_default();
    assert!(reason.contains("intent:80 is failed, a final status"), "{reason}");
    assert_eq!(state(&app, topic).await.1["status"], "failed");
}
