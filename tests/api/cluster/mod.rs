//! Several Herald nodes on one PostgreSQL schema and one broker, each test a cluster of its own (a fresh
//! schema, a cluster name of its own on the machine's Redis or NATS, so tests run in parallel): a
//! notification published on one node reaches the user's tabs on the others once each and in order,
//! read-state follows, presence counts every node, two nodes publishing to one user at once keep the user's
//! order for a tab on a third, and with the broker killed and back a client following the protocol loses
//! nothing. Every scenario runs once over Redis (`cluster::redis::…`) and once over NATS (`cluster::nats::…`).

mod private_nats;

use std::collections::HashSet;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::postgres::StoreSchema;
use crate::helpers::{id, wait_until, TestApp, WAIT};

/// The cluster broker a scenario runs over.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Redis,
    Nats,
}

impl Backend {
    /// The machine's own server.
    fn shared_url(self) -> &'static str {
        match self {
            Backend::Redis => "redis://127.0.0.1:6379",
            Backend::Nats => "nats://127.0.0.1:4222",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Nats => "nats",
        }
    }
}

/// Each scenario as a test per broker.
macro_rules! on_each_broker {
    ($($scenario:ident),* $(,)?) => {
        mod redis {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Backend::Redis).await
            })*
        }
        mod nats {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Backend::Nats).await
            })*
        }
    };
}

on_each_broker!(
    a_notification_published_on_one_node_reaches_tabs_on_the_others_once_each_in_order,
    two_nodes_publishing_to_one_user_at_once_keep_the_users_order_on_a_third,
    with_the_broker_down_each_node_serves_its_own_and_a_client_following_the_protocol_loses_nothing,
    a_topics_events_appended_on_two_nodes_at_once_reach_its_watchers_on_every_node_once_each_in_order,
    an_event_stream_on_one_node_gets_what_other_nodes_commit,
);

struct Cluster {
    nodes: Vec<TestApp>,
    _schema: StoreSchema,
}

async fn cluster(size: usize, backend: Backend) -> Cluster {
    cluster_on(size, backend.shared_url()).await
}

async fn cluster_on(size: usize, broker: &str) -> Cluster {
    let schema = StoreSchema::create();
    let name = format!("t{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut nodes = Vec::with_capacity(size);
    for n in 0..size {
        let (url, name, broker) = (schema.url(), name.clone(), broker.to_owned());
        nodes.push(
            TestApp::spawn_with(|s| {
                s.env("HERALD_DATABASE_URL", url)
                    .env("HERALD_BROKER", broker)
                    .env("HERALD_CLUSTER_NAME", name)
                    .env("HERALD_NODE_ID", format!("node-{}", n + 1));
            })
            .await,
        );
    }
    // Every node has heard every other (heartbeats): presence asks them all.
    for node in &nodes {
        wait_until("every node to see the others", WAIT, || async {
            let health = node.health().await;
            (health["broker"]["status"] == "ok"
                && health["broker"]["peers"].as_array().is_some_and(|p| p.len() == size - 1))
            .then_some(())
        })
        .await;
    }
    Cluster { nodes, _schema: schema }
}

fn user() -> String {
    format!("u-{}", ulid::Ulid::new())
}

async fn presence(node: &TestApp, user: &str) -> Value {
    let (status, body) = node.get_json(&format!("/api/v1/users/{user}/presence"), Some(&node.api_key)).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn a_notification_published_on_one_node_reaches_tabs_on_the_others_once_each_in_order(backend: Backend) {
    let c = cluster(3, backend).await;
    let alice = user();
    let mut tab1 = c.nodes[0].connect_ws(&alice).await;
    let mut tab3 = c.nodes[2].connect_ws(&alice).await;
    let health = c.nodes[0].health().await;
    assert_eq!((&health["node"], &health["broker"]["backend"]), (&json!("node-1"), &json!(backend.name())), "{health}");

    let published = c.nodes[1].notify_many(&alice, "n", 20).await;
    let want: Vec<&str> = published.iter().map(id).collect();
    for tab in [&mut tab1, &mut tab3] {
        let got = tab.next_notifications(20).await;
        assert_eq!(got.iter().map(id).collect::<Vec<_>>(), want);
        // Nothing more: each arrived once.
        tab.assert_alive().await;
    }

    // Read on node 1 (over the socket) reaches the tab on node 3, and the count on node 2.
    tab1.send_json(&json!({"type": "mark_read", "ids": [want[0]]})).await;
    let read = tab3.next_of_type("read").await;
    assert_eq!(read["ids"], json!([want[0]]));
    assert_eq!(c.nodes[1].unread_count(&alice).await, 19);
    assert_eq!(c.nodes[2].read_all(&alice).await.status(), 200);
    tab1.next_of_type("read_all").await;
    // Node 2 holds none of Alice's connections: none of her events (nor anything else) was sent to it.
    assert_eq!(c.nodes[1].metrics().await.counter("herald_cluster_messages_received_total"), 0.0);
    assert!(c.nodes[2].metrics().await.counter("herald_cluster_messages_received_total") >= 21.0);

    // Presence counts the tabs on every node, asked of any node.
    let mut tab3b = c.nodes[2].connect_ws(&alice).await;
    for node in &c.nodes {
        let p = presence(node, &alice).await;
        assert_eq!((&p["online"], &p["connections"], &p["nodes"]), (&json!(true), &json!(3), &json!(3)), "{p}");
    }
    tab3b.assert_alive().await;
    // Publishers only: a user's token is refused, and a bad user id is a clear error.
    let (status, _) =
        c.nodes[0].get_json(&format!("/api/v1/users/{alice}/presence"), Some(&c.nodes[0].token(&alice))).await;
    assert_eq!(status, 403);
    let (status, body) = c.nodes[0].get_json("/api/v1/users/a%0Ab/presence", Some(&c.nodes[0].api_key)).await;
    assert_eq!((status, &body["error"]["code"]), (422, &json!("invalid_request")), "{body}");
    drop(tab1);
    drop(tab3);
    drop(tab3b);
    wait_until("the tabs to be gone from presence", WAIT, || async {
        (presence(&c.nodes[1], &alice).await["connections"] == 0).then_some(())
    })
    .await;
    assert_eq!(presence(&c.nodes[1], &alice).await["online"], false);
}

/// SSE is a connection like a socket: a stream on node 3 gets, once each and in order with their ids, the
/// notifications published on node 2 and the read made on node 1, and presence counts it.
async fn an_event_stream_on_one_node_gets_what_other_nodes_commit(backend: Backend) {
    let c = cluster(3, backend).await;
    let alice = user();
    let mut tab1 = c.nodes[0].connect_ws(&alice).await;
    let (mut stream, _, _) = c.nodes[2].connect_sse(&alice, "").await;
    let p = presence(&c.nodes[1], &alice).await;
    assert_eq!((&p["connections"], &p["nodes"]), (&json!(2), &json!(3)), "{p}");

    let published = c.nodes[1].notify_many(&alice, "n", 10).await;
    let mut got = Vec::new();
    for _ in 0..10 {
        let event = stream.expect("notification").await;
        assert_eq!(event.id.as_deref(), event.data["data"]["id"].as_str());
        got.push(event.id.unwrap());
    }
    assert_eq!(got, published.iter().map(|n| id(n).to_owned()).collect::<Vec<_>>());
    assert_eq!(tab1.next_notifications(10).await.len(), 10);
    tab1.send_json(&json!({"type": "mark_read", "ids": [got[3]]})).await;
    assert_eq!(stream.expect("read").await.data["ids"], json!([got[3]]));
}

async fn two_nodes_publishing_to_one_user_at_once_keep_the_users_order_on_a_third(backend: Backend) {
    let c = cluster(3, backend).await;
    let bob = user();
    let mut tab = c.nodes[2].connect_ws(&bob).await;
    let per_node = 150;
    let publish = |node: &TestApp| {
        let (http, url, key, bob) =
            (node.http.clone(), node.url("/api/v1/notifications"), node.api_key.clone(), bob.clone());
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_node);
            for i in 0..per_node {
                let body = json!({"user_id": bob, "type": "race", "title": format!("{i}")});
                let r = http.post(&url).bearer_auth(&key).json(&body).send().await.expect("publish");
                assert_eq!(r.status(), 201);
                let v: Value = r.json().await.expect("JSON");
                ids.push(v["id"].as_str().expect("an id").to_owned());
            }
            ids
        })
    };
    let (a, b) = (publish(&c.nodes[0]), publish(&c.nodes[1]));
    let published: HashSet<String> = a.await.unwrap().into_iter().chain(b.await.unwrap()).collect();
    let got = tab.next_notifications(2 * per_node).await;
    let ids: Vec<String> = got.iter().map(|n| id(n).to_owned()).collect();
    // Once each, in commit order (ids rise per user in commit order), and every one of them.
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order or repeated");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), published);
    tab.assert_alive().await;

    // A reconnect with `since` from the middle gets exactly the rest, in order.
    let middle = &ids[per_node];
    let again = c.nodes[0].connect_ws_since(&bob, middle).await;
    assert_eq!(again.backlog_ids(), ids[per_node + 1..].to_vec());
}

async fn a_topics_events_appended_on_two_nodes_at_once_reach_its_watchers_on_every_node_once_each_in_order(
    backend: Backend,
) {
    let c = cluster(3, backend).await;
    let topic = format!("notes:{}", ulid::Ulid::new().to_string().to_lowercase());
    let token = c.nodes[2].topic_token("watcher", &[&topic]);
    let mut ws = c.nodes[2].connect_ws_query(&format!("?token={token}")).await;
    ws.send_json(&json!({"type": "subscribe", "topic": topic})).await;
    let subscribed = ws.next_json().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let mut socket =
        c.nodes[2].connect_path(&format!("/ws/topics/{topic}?token={token}")).await.expect("a topic socket");
    // A watcher on a node that appends too.
    let token1 = c.nodes[0].topic_token("watcher", &[&topic]);
    let mut on_first = c.nodes[0].connect_path(&format!("/ws/topics/{topic}?token={token1}")).await.expect("a socket");

    let per_node = 40;
    futures_util::future::join(append_many(&c.nodes[0], &topic, per_node), append_many(&c.nodes[1], &topic, per_node))
        .await;
    let mut seqs = Vec::new();
    while seqs.len() < 2 * per_node {
        let frame = ws.next_json().await;
        assert_eq!(frame["type"], "event", "{frame}");
        seqs.push(frame["seq"].as_u64().expect("a seq"));
    }
    assert_eq!(seqs, (1..=2 * per_node as u64).collect::<Vec<_>>(), "every event once, in the topic's order");
    for socket in [&mut on_first, &mut socket] {
        // A socket reads its recovery once the topic's stream has started, which may be after the first
        // appends: the state it starts from covers those, and the events follow it, every one once in order.
        let subscribed = socket.next_json().await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        let from = subscribed["state"]["seq"].as_u64().unwrap_or(0);
        let mut on_socket = Vec::new();
        while on_socket.len() < (2 * per_node as u64 - from) as usize {
            let frame = socket.next_json().await;
            assert_eq!(frame["type"], "event", "{frame}");
            on_socket.push(frame["seq"].as_u64().expect("a seq"));
        }
        assert_eq!(on_socket, (from + 1..=2 * per_node as u64).collect::<Vec<_>>());
    }
    ws.assert_alive().await;
    // Node 2 watches nothing and holds no one's connections: nothing was sent to it.
    assert_eq!(c.nodes[1].metrics().await.counter("herald_cluster_messages_received_total"), 0.0);
    // The state is one for the cluster: any node has it.
    let (status, body) = c.nodes[0].get_json(&format!("/api/v1/topics/{topic}"), Some(&c.nodes[0].api_key)).await;
    assert_eq!((status, body["seq"].as_u64()), (200, Some(2 * per_node as u64)), "{body}");
}

async fn append_many(node: &TestApp, topic: &str, count: usize) {
    for n in 0..count {
        node.append_ok(topic, &json!({"type": "note", "data": {"n": n}})).await;
    }
}

/// `deploy/grafana/herald.json` queries only metrics that a cluster's `/metrics` has (once each has had
/// something to count: a delivery, a topic event, an error).
#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/herald.json")).expect("the dashboard is JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            let mut rest = expr;
            while let Some(at) = rest.find("herald_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "the dashboard queries {queried:?}");

    let c = cluster(2, Backend::Redis).await;
    let alice = user();
    let mut tab = c.nodes[0].connect_ws(&alice).await;
    c.nodes[0].notify(&alice, "dashboard", "one").await;
    tab.next_notification().await;
    c.nodes[1]
        .append_ok(&format!("notes:{}", ulid::Ulid::new().to_string().to_lowercase()), &json!({"type": "n"}))
        .await;
    let bad = c.nodes[0]
        .http
        .post(c.nodes[0].url("/api/v1/notifications"))
        .bearer_auth(&c.nodes[0].api_key)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("a request");
    assert_eq!(bad.status(), 400);
    let mut scraped = String::new();
    for node in &c.nodes {
        scraped.push_str(&node.metrics().await.0);
    }
    let scraped = crate::helpers::Metrics(scraped);
    for name in &queried {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        let kind = scraped.kind(family);
        assert!(kind.is_some(), "the dashboard queries {name}, which /metrics does not have");
        if name.ends_with("_bucket") {
            assert_eq!(kind, Some("histogram"), "{family}");
        }
    }
}

#[tokio::test]
async fn a_cluster_needs_postgres_and_a_known_broker() {
    for (broker, database, want) in [
        ("redis://127.0.0.1:6379", None, "postgres"),
        ("nats://127.0.0.1:4222", None, "postgres"),
        ("kafka://x", Some("postgres://127.0.0.1/test"), "expected memory, redis"),
        ("tls://127.0.0.1:4222", Some("postgres://127.0.0.1/test"), "no TLS for NATS"),
    ] {
        let mut settings = crate::helpers::Settings::default();
        settings.env("HERALD_BROKER", broker);
        if let Some(url) = database {
            settings.env("HERALD_DATABASE_URL", url);
        }
        let out = crate::helpers::run_herald(&["serve"], &settings).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("broker") && stderr.contains(want), "{stderr}");
    }
}

/// Follows the protocol as a client must: reads live notifications; on a close (4009 resync, or any other)
/// reconnects with `since` the last one it has, and takes the backlog. Returns once it has `count`.
async fn follow(node: &TestApp, user: &str, mut tab: crate::helpers::WsClient, count: usize) -> (Vec<String>, u32) {
    let mut got: Vec<String> = Vec::new();
    let mut resyncs = 0;
    while got.len() < count {
        let frame = match tokio::time::timeout(WAIT, tab.socket().next()).await {
            Ok(frame) => frame,
            Err(_) => panic!("stuck at {} of {count} notifications", got.len()),
        };
        match frame {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                match frame["type"].as_str() {
                    Some("notification") => got.push(id(&frame["data"]).to_owned()),
                    Some("resync") => resyncs += 1,
                    _ => {}
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(close))) => {
                let code = close.map(|c| u16::from(c.code));
                assert_eq!(code, Some(4009), "only a resync closes the tab here");
                tab = match got.last() {
                    Some(last) => node.connect_ws_since(user, last).await,
                    None => node.connect_ws(user).await,
                };
                got.extend(tab.backlog_ids());
            }
            Some(Ok(_)) => {}
            other => panic!("the tab failed: {other:?}"),
        }
    }
    (got, resyncs)
}

/// A broker of the test's own, to kill and start again.
enum PrivateBroker {
    Redis(crate::topics::redis::PrivateRedis),
    Nats(private_nats::PrivateNats),
}

impl PrivateBroker {
    fn reserve(backend: Backend) -> Option<Self> {
        Some(match backend {
            Backend::Redis => PrivateBroker::Redis(crate::topics::redis::PrivateRedis::reserve()?),
            Backend::Nats => PrivateBroker::Nats(private_nats::PrivateNats::reserve()?),
        })
    }

    fn url(&self) -> String {
        match self {
            PrivateBroker::Redis(redis) => redis.url(),
            PrivateBroker::Nats(nats) => nats.url(),
        }
    }

    async fn start(&mut self) {
        match self {
            PrivateBroker::Redis(redis) => drop(redis.start().await),
            PrivateBroker::Nats(nats) => nats.start().await,
        }
    }

    async fn kill(&mut self) {
        match self {
            PrivateBroker::Redis(redis) => redis.kill().await,
            PrivateBroker::Nats(nats) => nats.kill().await,
        }
    }

    fn password(&self) -> &str {
        match self {
            PrivateBroker::Redis(redis) => redis.password,
            PrivateBroker::Nats(nats) => nats.password,
        }
    }
}

async fn with_the_broker_down_each_node_serves_its_own_and_a_client_following_the_protocol_loses_nothing(
    backend: Backend,
) {
    let Some(mut broker) = PrivateBroker::reserve(backend) else { return };
    broker.start().await;
    let c = cluster_on(2, &broker.url()).await;
    let carol = user();
    let tab = c.nodes[1].connect_ws(&carol).await;
    let mut published: Vec<String> = Vec::new();
    for node in [0, 1] {
        published.extend(c.nodes[node].notify_many(&carol, "before", 3).await.iter().map(|n| id(n).to_owned()));
    }

    broker.kill().await;
    wait_until("node 2 to see the broker down", WAIT, || async {
        (c.nodes[1].health().await["broker"]["status"] == "down").then_some(())
    })
    .await;
    // Both nodes take publishes; node 2's own reach its tab at once, node 1's must wait for the broker.
    let mut own = c.nodes[1].connect_ws(&carol).await;
    let mine = c.nodes[1].notify(&carol, "during", "on node 2").await;
    assert_eq!(id(&own.next_notification().await), id(&mine));
    published.push(id(&mine).to_owned());
    published.extend(c.nodes[0].notify_many(&carol, "during", 3).await.iter().map(|n| id(n).to_owned()));
    published.extend(c.nodes[0].notify_many(&carol, "during-2", 2).await.iter().map(|n| id(n).to_owned()));
    let health = c.nodes[1].health().await;
    assert_eq!((&health["status"], &health["broker"]["status"]), (&json!("degraded"), &json!("down")), "{health}");
    let (status, body) =
        c.nodes[1].get_json(&format!("/api/v1/users/{carol}/presence"), Some(&c.nodes[1].api_key)).await;
    assert_eq!((status, &body["error"]["code"]), (503, &json!("broker_unavailable")), "{body}");

    broker.start().await;
    published.extend(c.nodes[0].notify_many(&carol, "after", 3).await.iter().map(|n| id(n).to_owned()));
    let (got, resyncs) = follow(&c.nodes[1], &carol, tab, published.len()).await;
    // Everything, once, in the user's commit order: whether by late delivery or by resync and `since`.
    assert_eq!(got, published, "resyncs: {resyncs}");
    for node in &c.nodes {
        assert!(!node.logs().contains(broker.password()), "the broker's password reached the logs");
    }
}
