//! The auth matrix: every HTTP endpoint, live route and GraphQL operation, called with every kind of bad
//! credential, against a server that verifies RS256 tokens with an issuer and an audience. Each cell is
//! checked against the rule for its column (refused, and how), and everything any refused or foreign call
//! received is searched for the owner's secrets: 0 leaks. The table in RELIABILITY.md is this test's output:
//! it fails when the committed table differs, and `HERALD_UPDATE_RELIABILITY=1` writes it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::helpers::{now, unsigned_token, TestApp, WAIT};

const RS256_PRIVATE: &str = include_str!("../fixtures/rs256-private.pem");
const RS256_PUBLIC: &str = include_str!("../fixtures/rs256-public.pem");
const ES256_OTHER_PRIVATE: &str = include_str!("../fixtures/es256-other-private.pem");
const ISSUER: &str = "https://idp.herald.test";
const AUDIENCE: &str = "herald";

/// What only alice (and the publisher) may ever see.
const SECRET_TITLE: &str = "LEAK-alice-inbox-5f1c";
const SECRET_TOPIC: &str = "LEAK-alice-topic-9a2e";
const ALICE_TOPIC: &str = "order:alice-1";
const BOB_TOPIC: &str = "order:bob-1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Column {
    Valid,
    None,
    Expired,
    NotYetValid,
    WrongSignature,
    AlgNone,
    HsRsConfusion,
    WrongIssuer,
    WrongAudience,
    OtherUser,
    OtherKind,
    TopicNotGranted,
}

const COLUMNS: [(Column, &str); 12] = [
    (Column::Valid, "valid"),
    (Column::None, "none"),
    (Column::Expired, "expired"),
    (Column::NotYetValid, "not yet valid"),
    (Column::WrongSignature, "wrong signature"),
    (Column::AlgNone, "`alg: none`"),
    (Column::HsRsConfusion, "HS/RS confusion"),
    (Column::WrongIssuer, "wrong `iss`"),
    (Column::WrongAudience, "wrong `aud`"),
    (Column::OtherUser, "another user"),
    (Column::OtherKind, "other kind"),
    (Column::TopicNotGranted, "topic not granted"),
];

/// Who may call a row's endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    User,
    Publisher,
    /// A topic: a publisher key, or a user token that grants it.
    TopicReader,
}

#[derive(Clone)]
enum Call {
    Http(Method, &'static str, Option<&'static str>),
    Ws(&'static str),
    Sse,
    GraphqlPost(&'static str),
    GraphqlWs(&'static str),
}

struct Row {
    name: &'static str,
    who: Who,
    call: Call,
}

fn rows() -> Vec<Row> {
    use Call::*;
    use Who::*;
    let r = |name, who, call| Row { name, who, call };
    vec![
        r("GET /api/v1/notifications", User, Http(Method::GET, "/api/v1/notifications", None)),
        r(
            "GET /api/v1/notifications/unread-count",
            User,
            Http(Method::GET, "/api/v1/notifications/unread-count", None),
        ),
        r(
            "POST /api/v1/notifications/{alice's id}/read",
            User,
            Http(Method::POST, "/api/v1/notifications/{id}/read", None),
        ),
        r("POST /api/v1/notifications/read-all", User, Http(Method::POST, "/api/v1/notifications/read-all", None)),
        r("GET /api/v1/preferences", User, Http(Method::GET, "/api/v1/preferences", None)),
        r(
            "PUT /api/v1/preferences",
            User,
            Http(Method::PUT, "/api/v1/preferences", Some(r#"{"email":{"enabled":false}}"#)),
        ),
        r("GET /ws", User, Ws("/ws")),
        r("GET /api/v1/stream (SSE)", User, Sse),
        r(
            "POST /api/v1/notifications",
            Publisher,
            Http(Method::POST, "/api/v1/notifications", Some(r#"{"user_id":"carol","type":"t","title":"x"}"#)),
        ),
        r(
            "POST /api/v1/notifications/batch",
            Publisher,
            Http(
                Method::POST,
                "/api/v1/notifications/batch",
                Some(r#"{"notifications":[{"user_id":"carol","type":"t","title":"x"}]}"#),
            ),
        ),
        r(
            "POST /api/v1/topics/{topic}/events",
            Publisher,
            Http(Method::POST, "/api/v1/topics/job:matrix/events", Some(r#"{"type":"tick","status":"queued"}"#)),
        ),
        r(
            "POST /api/v1/topics/events/batch",
            Publisher,
            Http(
                Method::POST,
                "/api/v1/topics/events/batch",
                Some(r#"{"events":[{"topic":"job:matrix-b","type":"tick"}]}"#),
            ),
        ),
        r(
            "POST /api/v1/correlations",
            Publisher,
            Http(
                Method::POST,
                "/api/v1/correlations",
                Some(r#"{"topic":"intent:m1","key":{"chain_id":1,"tx_hash":"0xab"}}"#),
            ),
        ),
        r("GET /api/v1/users/{id}/presence", Publisher, Http(Method::GET, "/api/v1/users/alice/presence", None)),
        r(
            "PUT /api/v1/users/{id}",
            Publisher,
            Http(Method::PUT, "/api/v1/users/carol", Some(r#"{"email":"carol@example.com"}"#)),
        ),
        r("GET /api/v1/users/{id}", Publisher, Http(Method::GET, "/api/v1/users/alice", None)),
        r("DELETE /api/v1/users/{id}", Publisher, Http(Method::DELETE, "/api/v1/users/dave", None)),
        r(
            "POST /api/v1/emails",
            Publisher,
            Http(Method::POST, "/api/v1/emails", Some(r#"{"type":"welcome","to":"a@example.com"}"#)),
        ),
        r("GET /api/v1/emails/{id}", Publisher, Http(Method::GET, "/api/v1/emails/01J0000000000000000000000", None)),
        r("POST /api/v1/sync/users/{id}", Publisher, Http(Method::POST, "/api/v1/sync/users/alice", Some("{}"))),
        r("GET /api/v1/topics/{topic}", TopicReader, Http(Method::GET, "/api/v1/topics/{topic}", None)),
        r(
            "GET /api/v1/topics/{topic}/events",
            TopicReader,
            Http(Method::GET, "/api/v1/topics/{topic}/events?since=0", None),
        ),
        r("GET /ws/topics/{topic}", TopicReader, Ws("/ws/topics/{topic}")),
        r("GET /api/orders/status/{id} (alias)", TopicReader, Http(Method::GET, "/api/orders/status/{topic-id}", None)),
        r("GraphQL query notifications", User, GraphqlPost("{ notifications { items { title } } }")),
        r("GraphQL query unreadCount", User, GraphqlPost("{ unreadCount }")),
        r("GraphQL mutation markAllRead", User, GraphqlPost("mutation { markAllRead }")),
        r("GraphQL query topic", TopicReader, GraphqlPost(r#"{ topic(topic: "{topic}") { status data } }"#)),
        r("GraphQL subscription onNotification", User, GraphqlWs("subscription { onNotification { __typename } }")),
        r(
            "GraphQL subscription onTopic",
            TopicReader,
            GraphqlWs(r#"subscription { onTopic(topic: "{topic}") { status data } }"#),
        ),
    ]
}

/// Everything the tokens of the matrix are made from.
struct Keys {
    rs: EncodingKey,
}

impl Keys {
    fn claims(&self, user: &str) -> Value {
        json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600, "topics": ["order:alice-*"]})
    }

    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &self.rs).unwrap()
    }

    /// The credential a column sends to a row (`None`: the cell does not apply).
    fn credential(&self, column: Column, who: Who, api_key: &str) -> Option<Option<String>> {
        let alice = self.claims("alice");
        let with = |key: &str, value: Value| {
            let mut claims = alice.clone();
            claims[key] = value;
            claims
        };
        let user_token = self.sign(&alice);
        Some(Some(match column {
            Column::Valid if who == Who::Publisher => api_key.to_owned(),
            Column::Valid => user_token,
            Column::None => return Some(None),
            Column::Expired => self.sign(&with("exp", json!(now() - 600))),
            Column::NotYetValid => self.sign(&with("nbf", json!(now() + 600))),
            Column::WrongSignature => {
                let other = EncodingKey::from_ec_pem(ES256_OTHER_PRIVATE.as_bytes()).unwrap();
                let forged = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &alice, &other).unwrap();
                // alice's header and claims, another key's signature.
                let (head, _) = user_token.rsplit_once('.').unwrap();
                format!("{head}.{}", forged.rsplit_once('.').unwrap().1)
            }
            Column::AlgNone => unsigned_token(&json!({"alg": "none", "typ": "JWT"}), &alice),
            Column::HsRsConfusion => jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &alice,
                &EncodingKey::from_secret(RS256_PUBLIC.as_bytes()),
            )
            .unwrap(),
            Column::WrongIssuer => self.sign(&with("iss", json!("https://evil.test"))),
            Column::WrongAudience => self.sign(&with("aud", json!("someone-else"))),
            Column::OtherUser if who == Who::User => self.sign(&self.claims("bob")),
            Column::OtherUser => return None,
            Column::OtherKind if who == Who::Publisher => user_token,
            Column::OtherKind => api_key.to_owned(),
            Column::TopicNotGranted if who == Who::TopicReader => user_token,
            Column::TopicNotGranted => return None,
        }))
    }
}

/// What one call came to, and everything it received (searched for leaks).
struct Outcome {
    cell: String,
    /// The server let the caller in (a 2xx, an upgrade, GraphQL data without an auth error).
    admitted: bool,
    received: String,
}

async fn call(app: &TestApp, row: &Row, credential: Option<&str>, topic: &str, alice_id: &str) -> Outcome {
    let fill = |s: &str| {
        s.replace("{topic-id}", topic.split_once(':').unwrap().1).replace("{topic}", topic).replace("{id}", alice_id)
    };
    match row.call {
        Call::Http(ref method, path, body) => {
            let mut request = app.request(method.clone(), &fill(path), credential);
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body.to_owned());
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let code =
                serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            let cell = match code {
                Some(code) => format!("{status} `{code}`"),
                None => status.to_string(),
            };
            Outcome { cell, admitted: (200..300).contains(&status), received: text }
        }
        Call::Ws(path) => {
            let query = credential.map(|c| format!("?token={c}")).unwrap_or_default();
            let url = format!("ws://{}{}{query}", app.addr, fill(path));
            match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.expect("handshake in time") {
                Ok((mut ws, _)) => {
                    // The first frame: the hello (the inbox) or the state (a topic); for the inbox, the backlog too.
                    let mut received = String::new();
                    let frames = if path == "/ws" { 2 } else { 1 };
                    for _ in 0..frames {
                        if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(WAIT, ws.next()).await {
                            received.push_str(&text);
                        }
                    }
                    Outcome { cell: "101".into(), admitted: true, received }
                }
                Err(WsError::Http(response)) => {
                    let status = response.status().as_u16();
                    let body =
                        response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                    let code = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                    Outcome {
                        cell: format!("{status} `{}`", code.unwrap_or_default()),
                        admitted: false,
                        received: body,
                    }
                }
                Err(e) => panic!("{}: {e}", row.name),
            }
        }
        Call::Sse => {
            let path = match credential {
                Some(c) => format!("/api/v1/stream?token={c}"),
                None => "/api/v1/stream".to_owned(),
            };
            let mut response = app.request(Method::GET, &path, None).send().await.expect("SSE request");
            let status = response.status().as_u16();
            if status != 200 {
                let text = response.text().await.unwrap_or_default();
                let code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                return Outcome {
                    cell: format!("{status} `{}`", code.unwrap_or_default()),
                    admitted: false,
                    received: text,
                };
            }
            // Read until the backlog event has come.
            let mut received = String::new();
            while !received.contains("\"notifications\"") {
                match tokio::time::timeout(WAIT, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => received.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => break,
                }
            }
            Outcome { cell: "200".into(), admitted: true, received }
        }
        Call::GraphqlPost(query) => {
            let request = app.request(Method::POST, "/graphql", credential).json(&json!({"query": fill(query)}));
            let response = request.send().await.expect("POST /graphql");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let gql_code = body["errors"][0]["extensions"]["code"].as_str().map(str::to_owned);
            let http_code = body["error"]["code"].as_str().map(str::to_owned);
            let (cell, admitted) = match (status, http_code, gql_code) {
                (200, _, None) => ("200 data".to_owned(), true),
                (200, _, Some(code)) => (format!("200 error `{code}`"), false),
                (status, Some(code), _) => (format!("{status} `{code}`"), false),
                (status, None, _) => (status.to_string(), false),
            };
            Outcome { cell, admitted, received: text }
        }
        Call::GraphqlWs(query) => graphql_ws(app, credential, &fill(query)).await,
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Socket) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(WAIT, ws.next()).await.ok().flatten()
}

/// A subscription over graphql-transport-ws: `connection_init` with the credential, then `subscribe`.
async fn graphql_ws(app: &TestApp, credential: Option<&str>, query: &str) -> Outcome {
    let mut request = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    let payload = credential.map(|c| json!({"token": c})).unwrap_or(json!({}));
    ws.send(Message::text(json!({"type": "connection_init", "payload": payload}).to_string())).await.unwrap();
    let mut received = String::new();
    match next(&mut ws).await {
        Some(Ok(Message::Text(text))) if text.contains("connection_ack") => {}
        Some(Ok(Message::Close(Some(frame)))) => {
            return Outcome { cell: format!("close {}", u16::from(frame.code)), admitted: false, received };
        }
        other => panic!("after connection_init: {other:?}"),
    }
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    if query.contains("onNotification") {
        // Nothing is sent until a change: make one for alice, then one for the caller (bob in the other-user
        // column), and read until the caller's own arrives.
        publish(app, "alice", SECRET_TITLE).await;
        publish(app, "bob", "for bob").await;
    }
    loop {
        match next(&mut ws).await {
            Some(Ok(Message::Text(text))) => {
                received.push_str(&text);
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame["type"].as_str() {
                    Some("next") if frame["payload"]["errors"].is_array() => {
                        let code =
                            frame["payload"]["errors"][0]["extensions"]["code"].as_str().unwrap_or("?").to_owned();
                        return Outcome { cell: format!("error `{code}`"), admitted: false, received };
                    }
                    Some("next") => return Outcome { cell: "next".into(), admitted: true, received },
                    Some("error") => {
                        let code = frame["payload"][0]["extensions"]["code"].as_str().unwrap_or("?").to_owned();
                        return Outcome { cell: format!("error `{code}`"), admitted: false, received };
                    }
                    _ => continue,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                return Outcome { cell: format!("close {code}"), admitted: false, received };
            }
            Some(Ok(_)) => continue,
            other => panic!("subscription: {other:?}"),
        }
    }
}

async fn publish(app: &TestApp, user: &str, title: &str) -> Value {
    app.notify_with(&json!({"user_id": user, "type": "t", "title": title})).await
}

/// The rule a cell must meet.
fn check(row: &Row, column: Column, outcome: &Outcome) -> Result<(), String> {
    let refused_with = |codes: &[&str]| {
        if !outcome.admitted && codes.iter().any(|c| outcome.cell.contains(c)) {
            Ok(())
        } else {
            Err(format!("expected a refusal ({codes:?}), got {}", outcome.cell))
        }
    };
    match column {
        // Admitted, or past auth to the endpoint's own answer (email and sync are off on this server).
        Column::Valid if outcome.admitted || outcome.cell.contains("_disabled") || outcome.cell.contains("404") => {
            Ok(())
        }
        Column::Valid => Err(format!("the owner was refused: {}", outcome.cell)),
        Column::None if matches!(row.call, Call::GraphqlPost(_) | Call::GraphqlWs(_)) => {
            refused_with(&["unauthorized", "forbidden"])
        }
        Column::None
        | Column::Expired
        | Column::NotYetValid
        | Column::WrongSignature
        | Column::AlgNone
        | Column::HsRsConfusion
        | Column::WrongIssuer
        | Column::WrongAudience => refused_with(&["401", "close 1002", "unauthorized"]),
        // A publisher key may read any topic (but not open a watcher's socket).
        Column::OtherKind if row.who == Who::TopicReader => Ok(()),
        Column::OtherKind | Column::TopicNotGranted => refused_with(&["403", "forbidden"]),
        // Bob is let in to his own inbox and nothing else; alice's notification is not his to mark.
        Column::OtherUser if row.name.contains("{alice's id}") => refused_with(&["404"]),
        Column::OtherUser => Ok(()),
    }
}

#[tokio::test]
async fn every_route_refuses_every_bad_credential_and_nothing_leaks() {
    let app = TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET")
            .env("HERALD_JWT_PUBLIC_KEY", RS256_PUBLIC)
            .env("HERALD_JWT_ISSUER", ISSUER)
            .env("HERALD_JWT_AUDIENCE", AUDIENCE);
    })
    .await;
    let keys = Keys { rs: EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap() };
    let alice_id = publish(&app, "alice", SECRET_TITLE).await["id"].as_str().unwrap().to_owned();
    app.append_ok(ALICE_TOPIC, &json!({"type": "created", "status": "pending", "data": {"note": SECRET_TOPIC}})).await;
    app.append_ok(BOB_TOPIC, &json!({"type": "created", "status": "pending", "data": {"note": SECRET_TOPIC}})).await;

    let mut table = String::from("| route | ");
    table.push_str(&COLUMNS.iter().map(|(_, name)| *name).collect::<Vec<_>>().join(" | "));
    table.push_str(" |\n|---|");
    table.push_str(&"---|".repeat(COLUMNS.len()));
    table.push('\n');
    let (mut cells, mut failures) = (0, Vec::new());
    for row in rows() {
        let mut line = format!("| {} |", row.name);
        for (column, name) in COLUMNS {
            let Some(credential) = keys.credential(column, row.who, &app.api_key) else {
                line.push_str(" — |");
                continue;
            };
            let topic = if column == Column::TopicNotGranted { BOB_TOPIC } else { ALICE_TOPIC };
            let outcome = tokio::time::timeout(
                Duration::from_secs(30),
                call(&app, &row, credential.as_deref(), topic, &alice_id),
            )
            .await
            .unwrap_or_else(|_| panic!("{} with {name}: no answer", row.name));
            cells += 1;
            if let Err(why) = check(&row, column, &outcome) {
                failures.push(format!("{} × {name}: {why}", row.name));
            }
            // A leak: the owner's secrets in anything a refused or foreign caller received.
            let may_see = column == Column::Valid || (column == Column::OtherKind && row.who == Who::TopicReader);
            if !may_see && (outcome.received.contains(SECRET_TITLE) || outcome.received.contains(SECRET_TOPIC)) {
                failures.push(format!("{} × {name}: LEAK in {}", row.name, outcome.received));
            }
            let _ = write!(line, " {} |", outcome.cell);
        }
        table.push_str(&line);
        table.push('\n');
    }
    assert!(failures.is_empty(), "{} of {cells} cells failed:\n{}\n\n{table}", failures.len(), failures.join("\n"));
    let _ = write!(table, "\n{cells} calls, 0 refusals missed, 0 leaks.\n");

    // The committed table is this output.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RELIABILITY.md");
    let document = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = ("<!-- auth-matrix:begin -->\n", "<!-- auth-matrix:end -->");
    let committed = document.split_once(begin).and_then(|(_, rest)| rest.split_once(end)).map(|(t, _)| t);
    if std::env::var_os("HERALD_UPDATE_RELIABILITY").is_some() {
        let (before, after) = match (document.split_once(begin), document.split_once(end)) {
            (Some((before, _)), Some((_, after))) => (before.to_owned(), after.to_owned()),
            _ => (document.clone(), "\n".to_owned()),
        };
        std::fs::write(&path, format!("{before}{begin}{table}{end}{after}")).unwrap();
    } else {
        assert_eq!(
            committed,
            Some(table.as_str()),
            "RELIABILITY.md's auth matrix is not this test's output: run it with HERALD_UPDATE_RELIABILITY=1"
        );
    }
}
