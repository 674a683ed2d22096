//! The limits that protect the service from one client: frames per second per connection (close 4029),
//! calls per second per API key (429 `rate_limited`), connection attempts per second per address and the
//! descriptor budget at the door (429 / 503 before HTTP starts). Each refusal leaves the other clients
//! alone and is counted in `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{assert_error, assert_error_response, status_and_json, wait_until, TestApp, WsClient, WAIT};

/// Frames sent in a burst by a flooding client: at 5 a second, refilling them would take a 40-second stall.
const FLOOD: usize = 200;

#[tokio::test]
async fn a_connection_over_its_frame_rate_is_closed_with_4029_and_nobody_else_is() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_LIMIT_FRAMES_PER_SECOND", "5").env("HERALD_LIMIT_FRAMES_BURST", "5");
    })
    .await;
    let mut calm = app.connect_ws("calm").await;
    let mut flood = app.connect_ws("flood").await;
    let mut calm_tab = app.connect_ws("flood").await;

    // Within the burst, every frame is answered (the fifth is `assert_alive`'s, below).
    for _ in 0..4 {
        calm.send_json(&json!({"type": "ping"})).await;
        assert_eq!(calm.next_json().await["type"], "pong");
    }
    for _ in 0..FLOOD {
        if flood.socket().send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    let (code, reason) = flood.expect_close().await;
    assert_eq!((code, reason.as_str()), (4029, "too many frames"));

    // The flooder's other tab, and another user, are served as before.
    let sent = app.notify("flood", "t", "still here").await;
    assert_eq!(calm_tab.next_notification().await["id"], sent["id"]);
    calm.assert_alive().await;
    let metrics = app.metrics().await;
    assert_eq!(metrics.counter(r#"herald_rate_limited_total{limit="frames"}"#), 1.0, "{}", metrics.text());

    // The topic socket and GraphQL's socket are held to the same rate.
    let token = app.topic_token("watcher", &["order:*"]);
    let mut topic = app.connect_path(&format!("/ws/topics/order:flood?token={token}")).await.expect("upgrade");
    for _ in 0..FLOOD {
        if topic.socket().send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    assert_eq!(topic.expect_close().await.0, 4029);

    let mut request = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    let mut graphql = WsClient::from_socket(ws);
    graphql.send_json(&json!({"type": "connection_init", "payload": {"token": token}})).await;
    assert_eq!(graphql.next_json().await["type"], "connection_ack");
    for _ in 0..FLOOD {
        if graphql.socket().send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    assert_eq!(graphql.expect_close().await, (4029, "too many frames".to_owned()));
    assert_eq!(app.metrics().await.counter(r#"herald_rate_limited_total{limit="frames"}"#), 3.0);
}

#[tokio::test]
async fn a_publisher_key_over_its_rate_gets_429_and_stores_nothing_while_other_keys_publish() {
    let second_key = "second-publisher-key-0123456789";
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_API_KEYS", format!("{},{second_key}", crate::helpers::API_KEY))
            .env("HERALD_LIMIT_PUBLISHES_PER_SECOND", "1")
            .env("HERALD_LIMIT_PUBLISHES_BURST", "3");
    })
    .await;
    let first_key = crate::helpers::API_KEY;
    let publish = |key: &str, title: &str| {
        app.request(Method::POST, "/api/v1/notifications", Some(key))
            .json(&json!({"user_id": "u1", "type": "t", "title": title}))
            .send()
    };
    for i in 0..3 {
        assert_eq!(publish(first_key, &format!("ok {i}")).await.unwrap().status(), 201);
    }
    let refused = publish(first_key, "refused").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_error_response(refused, 429, "rate_limited").await;
    // A GraphQL call with the same key is the same key's call.
    let graphql = app
        .request(Method::POST, "/graphql", Some(first_key))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_error_response(graphql, 429, "rate_limited").await;

    // Another key has a bucket of its own.
    assert_eq!(publish(second_key, "other key").await.unwrap().status(), 201);
    let titles: Vec<Value> = app.whole_inbox("u1").await.iter().map(|n| n["title"].clone()).collect();
    assert_eq!(titles.len(), 4, "{titles:?}");
    assert!(!titles.contains(&json!("refused")));
    assert_eq!(app.metrics().await.counter(r#"herald_rate_limited_total{limit="publishes"}"#), 2.0);

    // The key gets a token back each second.
    wait_until("the key's bucket to refill", WAIT, || async {
        (publish(first_key, "later").await.unwrap().status() == 201).then_some(())
    })
    .await;
}

/// One HTTP/1.1 request on a new TCP connection from `from` (a loopback address of the test's choosing);
/// the status and the JSON body (`Null` when there is none).
async fn fresh_request(server: SocketAddr, from: [u8; 4], path: &str) -> (u16, Option<String>, Value) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut tcp = socket.connect(server).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: herald\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut tcp).await
}

async fn read_response(tcp: &mut TcpStream) -> (u16, Option<String>, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw)).await.expect("the response in time").expect("read");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head}"));
    let retry_after =
        head.lines().find_map(|line| line.to_ascii_lowercase().strip_prefix("retry-after: ").map(str::to_owned));
    (status, retry_after, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn connection_attempts_over_an_addresss_rate_get_429_and_other_addresses_do_not() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_LIMIT_CONNECTS_PER_SECOND", "1").env("HERALD_LIMIT_CONNECTS_BURST", "3");
    })
    .await;
    // The harness's own readiness checks may have spent tokens of 127.0.0.1: use addresses of our own.
    let limited = [127, 0, 0, 2];
    for _ in 0..3 {
        assert_eq!(fresh_request(app.addr, limited, "/health").await.0, 200);
    }
    let (status, retry_after, body) = fresh_request(app.addr, limited, "/health").await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")), "{body}");
    assert_error(&body, "rate_limited");
    // Another address is not held to this one's rate.
    assert_eq!(fresh_request(app.addr, [127, 0, 0, 3], "/health").await.0, 200);
    // And the address gets a token back each second.
    wait_until("the address's bucket to refill", WAIT, || async {
        (fresh_request(app.addr, limited, "/health").await.0 == 200).then_some(())
    })
    .await;
    let (status, _, _) = fresh_request(app.addr, [127, 0, 0, 4], "/metrics").await;
    assert_eq!(status, 200);
    let metrics = app.metrics().await;
    assert!(metrics.counter(r#"herald_rate_limited_total{limit="connects"}"#) >= 1.0, "{}", metrics.text());
}

/// A keep-alive HTTP/1.1 connection used request after request.
struct KeepAlive(TcpStream);

impl KeepAlive {
    async fn open(server: SocketAddr) -> KeepAlive {
        KeepAlive(TcpStream::connect(server).await.expect("connect"))
    }

    /// Sends a request and reads its response (which must carry a content-length).
    async fn send(&mut self, method: &str, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: herald\r\nauthorization: Bearer {bearer}\r\ncontent-type: \
             application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.0.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(WAIT, self.0.read(&mut chunk)).await.expect("in time").expect("read");
            assert!(n > 0, "the server closed a kept-alive connection");
            raw.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                    .expect("content-length")
                    .trim()
                    .parse()
                    .unwrap();
                if rest.len() >= length {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, serde_json::from_str(&rest[..length]).unwrap_or(Value::Null));
                }
            }
        }
    }
}

#[tokio::test]
async fn idle_sockets_count_against_the_descriptor_budget_and_the_next_gets_503_while_users_keep_working() {
    // 460 descriptors: the server keeps 400 back, so 60 sockets in all.
    let app = TestApp::spawn_with(|s| {
        s.open_files = Some(460);
        s.env("HERALD_MAX_CONNECTIONS", "10");
    })
    .await;
    let mut user = app.connect_ws("alice").await;
    let mut publisher = KeepAlive::open(app.addr).await;
    let (status, _) = publisher
        .send("POST", "/api/v1/notifications", &app.api_key, &json!({"user_id": "alice", "type": "t", "title": "a"}))
        .await;
    assert_eq!(status, 201);
    user.next_notification().await;

    // A crowd of idle sockets, never sending a byte: more than the budget.
    let mut crowd = Vec::new();
    for _ in 0..70 {
        crowd.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    // A refused socket is answered at once and closed; an admitted one hears nothing.
    let (mut idle, mut refused) = (Vec::new(), Vec::new());
    for mut tcp in crowd {
        let mut answer = Vec::new();
        match tokio::time::timeout(Duration::from_millis(100), tcp.read_to_end(&mut answer)).await {
            Err(_) => idle.push(tcp),
            Ok(_) => refused.push(String::from_utf8_lossy(&answer).into_owned()),
        }
    }
    assert!((50..=58).contains(&idle.len()), "{} idle sockets were admitted", idle.len());
    assert_eq!(idle.len() + refused.len(), 70);
    for answer in &refused {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains(r#""code":"at_capacity""#), "{answer}");
    }

    // The users already in keep working: the kept-alive publisher publishes, the live one receives.
    let (status, body) = publisher
        .send("POST", "/api/v1/notifications", &app.api_key, &json!({"user_id": "alice", "type": "t", "title": "b"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(user.next_notification().await["title"], "b");

    // Closing idle sockets gives their places back.
    idle.clear();
    wait_until("a place at the door", WAIT, || async {
        match app.http.get(app.url("/metrics")).send().await {
            Ok(response) => (response.status() == 200).then_some(()),
            Err(_) => None,
        }
    })
    .await;
    let metrics = app.metrics().await;
    assert!(metrics.counter("herald_connections_refused_total") >= 1.0);
    let (status, _) = status_and_json(app.request(Method::GET, "/health", None).send().await.unwrap()).await;
    assert_eq!(status, 200);
}
