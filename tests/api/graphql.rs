//! GraphQL at `/graphql`: queries and mutations over HTTP, subscriptions over WebSocket, driven by a client we
//! did not write (the `graphql-ws` npm package, from Node) and, for the legacy `graphql-ws` subprotocol, by
//! hand.

use std::path::PathBuf;
use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{status_and_json, TestApp, WAIT};

/// `POST /graphql` with `bearer`; the status and the JSON body.
async fn graphql(app: &TestApp, bearer: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let request =
        app.request(Method::POST, "/graphql", bearer).json(&json!({ "query": query, "variables": variables }));
    status_and_json(request.send().await.expect("POST /graphql")).await
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

/// One subscription through the `graphql-ws` npm client, read line by line.
struct NodeSubscriber {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeSubscriber {
    async fn start(app: &TestApp, token: &str, query: &str, variables: Value) -> NodeSubscriber {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            dir.join("node_modules/graphql-ws").is_dir(),
            "the JavaScript test clients are not installed: run scripts/ensure-js-deps (scripts/test does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("graphql-subscribe.mjs"))
            .arg(format!("ws://{}/graphql", app.addr))
            .arg(token)
            .arg(query)
            .arg(variables.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (Node.js ≥ 20 is needed: scripts/ensure-js-deps installs it)");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        NodeSubscriber { child, lines }
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the graphql-ws client printed nothing within the wait")
            .expect("read the client's output")
            .expect("the graphql-ws client exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The next `next` payload's `data`, skipping `connected`.
    async fn next_data(&mut self) -> Value {
        loop {
            let line = self.next_line().await;
            if line.get("connected").is_some() {
                continue;
            }
            let payload = line.get("next").unwrap_or_else(|| panic!("expected a result, got {line}"));
            assert!(payload.get("errors").is_none(), "{payload}");
            return payload["data"].clone();
        }
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

#[tokio::test]
async fn on_mint_status_streams_an_intent_from_pending_to_ready_with_its_tokens() {
    let app = TestApp::spawn().await;
    app.append_ok("intent:42", &json!({"type": "status", "status": "pending"})).await;
    let token = app.topic_token("minter", &["intent:42"]);
    let query = "subscription($id: String!) { onMintStatus(intentId: $id) { intentId status contract tokenIds txHash chainId error seq } }";
    let mut sub = NodeSubscriber::start(&app, &token, query, json!({"id": "42"})).await;
    let first = sub.next_data().await;
    assert_eq!(first["onMintStatus"]["status"], "pending", "the current state comes first: {first}");
    assert_eq!(first["onMintStatus"]["intentId"], "42");

    app.append_ok("intent:42", &json!({"type": "status", "status": "broadcast", "data": {"txHash": "0xabc"}})).await;
    app.append_ok("intent:42", &json!({"type": "status", "status": "confirming"})).await;
    let ready = json!({"contract": "0xC0FFEE", "tokenIds": ["7", "8"], "chainId": 1});
    app.append_ok("intent:42", &json!({"type": "chain", "status": "ready", "data": ready})).await;

    let mut statuses = Vec::new();
    let last = loop {
        let data = sub.next_data().await;
        statuses.push(data["onMintStatus"]["status"].as_str().unwrap().to_owned());
        if statuses.last().map(String::as_str) == Some("ready") {
            break data["onMintStatus"].clone();
        }
    };
    assert_eq!(statuses, ["broadcast", "confirming", "ready"]);
    assert_eq!(
        last,
        json!({"intentId": "42", "status": "ready", "contract": "0xC0FFEE", "tokenIds": ["7", "8"],
               "txHash": "0xabc", "chainId": 1, "error": null, "seq": 4})
    );
    sub.stop().await;
}

#[tokio::test]
async fn on_topic_and_on_notification_over_graphql_transport_ws() {
    let app = TestApp::spawn().await;
    let token = app.topic_token("alice", &["job:*"]);
    let mut topic = NodeSubscriber::start(
        &app,
        &token,
        r#"subscription { onTopic(topic: "job:1") { topic seq status data } }"#,
        json!({}),
    )
    .await;
    let mut inbox = NodeSubscriber::start(
        &app,
        &token,
        "subscription { onNotification { kind ids notification { id type title read } } }",
        json!({}),
    )
    .await;
    // Both are in place once the inbox stream holds a connection and the topic has a subscriber.
    crate::helpers::wait_until("both subscriptions to be registered", WAIT, || async {
        let health = app.health().await;
        (health["topics"]["subscribers"] == 1 && health["connections"]["total"] == 1).then_some(())
    })
    .await;
    app.append_ok("job:1", &json!({"type": "tick", "status": "running", "data": {"n": 1}})).await;
    let data = topic.next_data().await;
    assert_eq!(data["onTopic"], json!({"topic": "job:1", "seq": 1, "status": "running", "data": {"n": 1}}));

    let created = app.notify("alice", "refund.approved", "Refund approved").await;
    let change = inbox.next_data().await;
    assert_eq!(change["onNotification"]["kind"], "CREATED");
    assert_eq!(change["onNotification"]["notification"]["title"], "Refund approved");
    let id = created["id"].as_str().unwrap();
    app.mark_read("alice", id).await;
    let change = inbox.next_data().await;
    assert_eq!(change["onNotification"], json!({"kind": "READ", "ids": [id], "notification": null}));
    topic.stop().await;
    inbox.stop().await;
}

#[tokio::test]
async fn queries_and_mutations_work_on_the_callers_own_inbox() {
    let app = TestApp::spawn().await;
    let token = app.token("alice");
    let first = app.notify("alice", "deal", "One").await;
    app.notify("alice", "deal", "Two").await;
    app.notify("bob", "deal", "Not yours").await;

    let (status, body) = graphql(
        &app,
        Some(&token),
        "{ unreadCount notifications(limit: 10) { total unreadCount items { title read } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["unreadCount"], 2, "{body}");
    assert_eq!(
        body["data"]["notifications"]["items"],
        json!([{"title": "Two", "read": false}, {"title": "One", "read": false}])
    );

    let (_, body) = graphql(
        &app,
        Some(&token),
        "mutation($ids: [ID!]!) { markRead(ids: $ids) { id read } }",
        json!({"ids": [first["id"]]}),
    )
    .await;
    assert_eq!(body["data"]["markRead"], json!([{"id": first["id"], "read": true}]), "{body}");
    let (_, body) = graphql(&app, Some(&token), "mutation { markAllRead }", json!({})).await;
    assert_eq!(body["data"]["markAllRead"], 1, "{body}");
    assert_eq!(app.unread_count("alice").await, 0);
    assert_eq!(app.unread_count("bob").await, 1);

    // Bad input and missing rights get coded errors; a bad token is refused before anything runs.
    let (_, body) = graphql(&app, Some(&token), "mutation { markRead(ids: [\"nope\"]) { id } }", json!({})).await;
    assert_eq!(error_code(&body), "invalid_request");
    let (_, body) = graphql(&app, None, "{ unreadCount }", json!({})).await;
    assert_eq!(error_code(&body), "unauthorized");
    let (_, body) = graphql(&app, Some(&app.api_key.clone()), "{ unreadCount }", json!({})).await;
    assert_eq!(error_code(&body), "forbidden");
    let (status, _) = graphql(&app, Some("not.a.token"), "{ unreadCount }", json!({})).await;
    assert_eq!(status, 401);
    let (status, body) =
        status_and_json(app.request(Method::POST, "/graphql", Some(&token)).body("{").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")));
    let deep = format!("{{ {}__typename{} }}", "notifications { items { ".repeat(8), " } }".repeat(8));
    let (_, body) = graphql(&app, Some(&token), &deep, json!({})).await;
    assert!(body["errors"].is_array() && body["data"].is_null(), "a query past the limits runs nothing: {body}");
}

#[tokio::test]
async fn nobody_reads_or_subscribes_to_a_topic_they_may_not_watch_over_graphql() {
    let app = TestApp::spawn().await;
    app.append_ok("intent:7", &json!({"type": "status", "status": "pending"})).await;
    let other = app.topic_token("mallory", &["intent:8"]);
    let allowed = app.topic_token("minter", &["intent:7"]);

    let (_, body) = graphql(&app, Some(&other), r#"{ topic(topic: "intent:7") { seq } }"#, json!({})).await;
    assert_eq!(error_code(&body), "forbidden");
    let (_, body) = graphql(&app, None, r#"{ mintStatus(intentId: "7") { status } }"#, json!({})).await;
    assert_eq!(error_code(&body), "forbidden");
    let (_, body) = graphql(&app, Some(&allowed), r#"{ mintStatus(intentId: "7") { status } }"#, json!({})).await;
    assert_eq!(body["data"]["mintStatus"]["status"], "pending", "{body}");
    let publisher = app.api_key.clone();
    let (_, body) = graphql(&app, Some(&publisher), r#"{ topic(topic: "intent:7") { seq status } }"#, json!({})).await;
    assert_eq!(body["data"]["topic"], json!({"seq": 1, "status": "pending"}));

    let mut sub =
        NodeSubscriber::start(&app, &other, r#"subscription { onMintStatus(intentId: "7") { status } }"#, json!({}))
            .await;
    let line = loop {
        let line = sub.next_line().await;
        if line.get("connected").is_none() {
            break line;
        }
    };
    // async-graphql answers a refused subscription with one result carrying the error, then completes it.
    let errors =
        line["next"]["errors"].as_array().unwrap_or_else(|| panic!("expected the subscription refused: {line}"));
    assert_eq!(errors[0]["extensions"]["code"], "forbidden", "{line}");
    assert!(line["next"]["data"].is_null(), "{line}");
    assert_eq!(sub.next_line().await, json!({"complete": true}));
    sub.stop().await;

    // A forged token is refused at connection_init: the socket closes, naming why.
    let mut forged = NodeSubscriber::start(
        &app,
        "forged.token.value",
        r#"subscription { onTopic(topic: "intent:7") { seq } }"#,
        json!({}),
    )
    .await;
    let closed = loop {
        let line = forged.next_line().await;
        if let Some(closed) = line.get("closed") {
            break closed.clone();
        }
    };
    // async-graphql closes a refused connection_init with 1002 and the reason (the protocol suggests 4403).
    assert_eq!(
        (closed["code"].as_u64(), closed["reason"].as_str()),
        (Some(1002), Some("the token is invalid or expired"))
    );
    forged.stop().await;
}

#[tokio::test]
async fn the_legacy_graphql_ws_subprotocol_streams_too() {
    let app = TestApp::spawn().await;
    let token = app.topic_token("old-client", &["job:9"]);
    let mut request = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-ws".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-ws");
    ws.send(Message::text(json!({"type": "connection_init", "payload": {"token": token}}).to_string())).await.unwrap();
    let ack = read_frame(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let start = json!({"id": "1", "type": "start", "payload": {"query": r#"subscription { onTopic(topic: "job:9") { seq status } }"#}});
    ws.send(Message::text(start.to_string())).await.unwrap();
    crate::helpers::wait_until("the legacy subscription to be registered", WAIT, || async {
        (app.health().await["topics"]["subscribers"] == 1).then_some(())
    })
    .await;
    app.append_ok("job:9", &json!({"type": "tick", "status": "queued"})).await;
    let data = read_frame(&mut ws).await;
    assert_eq!(
        data,
        json!({"id": "1", "type": "data", "payload": {"data": {"onTopic": {"seq": 1, "status": "queued"}}}})
    );
}

async fn read_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time").expect("open").expect("ok");
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame["type"] != "ka" {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn the_schema_is_printed_and_a_browser_gets_the_query_page() {
    let app = TestApp::spawn().await;
    let output = crate::helpers::run_herald(&["graphql-schema"], &crate::helpers::Settings::default()).await;
    let sdl = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "onMintStatus(intentId: String!): MintStatus!",
        "onTopic(topic: String!)",
        "onNotification",
        "markRead(ids: [ID!]!)",
        "markAllRead",
        "unreadCount",
    ] {
        assert!(sdl.contains(needle), "{needle} missing from:\n{sdl}");
    }
    let page = app.request(Method::GET, "/graphql", None).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Herald GraphQL") && !html.contains("http://") && !html.contains("https://"),
        "no CDN: {html}"
    );
}
