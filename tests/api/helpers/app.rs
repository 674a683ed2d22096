//! `TestApp`: one `herald serve` child process with its own data dir, and typed helpers to drive it.

use std::{net::SocketAddr, process::ExitStatus, time::Duration};

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::process::{Server, Settings};
use super::{auth, status_and_json, wait_until, Metrics, SseClient, WsClient, WAIT};

/// A running Herald server owned by one test, with its own data dir; the process is killed when the
/// `TestApp` is dropped, and its logs are printed if the test failed.
pub struct TestApp {
    pub addr: SocketAddr,
    pub data_dir: TempDir,
    pub api_key: String,
    pub jwt_secret: String,
    pub http: reqwest::Client,
    settings: Settings,
    server: Option<Server>,
    earlier_logs: String,
    /// With `HERALD_TEST_STORE=postgres`: the schema the server's inbox lives in.
    _schema: Option<super::postgres::StoreSchema>,
}

impl TestApp {
    /// Starts a server with the test defaults (a known JWT secret and API key).
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Starts a server with the test defaults changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = Settings::default();
        configure(&mut settings);
        TestApp::try_spawn(settings).await.unwrap_or_else(|logs| panic!("{logs}"))
    }

    /// Starts a server, or returns why it did not start with its logs.
    pub async fn try_spawn(mut settings: Settings) -> Result<TestApp, String> {
        let data_dir = tempfile::tempdir().expect("create a temp data dir");
        // A test that names its database keeps it; the others get the backend the suite runs against.
        let schema = (super::postgres::store_backend() == "postgres"
            && !settings.sqlite_only
            && settings.value_of("HERALD_DATABASE_URL").is_none())
        .then(super::postgres::StoreSchema::create);
        if let Some(schema) = &schema {
            settings.env("HERALD_DATABASE_URL", schema.url());
        }
        let server = Server::start(data_dir.path(), &settings).await?;
        Ok(TestApp {
            addr: server.addr,
            data_dir,
            api_key: settings.value_of("HERALD_API_KEYS").unwrap_or_default(),
            jwt_secret: settings.value_of("HERALD_JWT_SECRET").unwrap_or_default(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("build the HTTP client"),
            settings,
            server: Some(server),
            earlier_logs: String::new(),
            _schema: schema,
        })
    }

    // ---- process control -------------------------------------------------------------------------

    fn server(&mut self) -> &mut Server {
        self.server.as_mut().expect("the server is running")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.server.as_ref().and_then(|s| s.child.id()).expect("the server is running")
    }

    /// Everything the current server process printed so far.
    pub fn logs(&self) -> String {
        self.server.as_ref().map(Server::logs).unwrap_or_default()
    }

    /// Sends SIGTERM to the server.
    pub fn sigterm(&self) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid this test spawned and still owns (not yet reaped).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM {pid}");
    }

    /// Waits for the server process to exit, failing the test after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.server().child;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.expect("wait for herald"),
            Err(_) => panic!("herald did not exit within {timeout:?}"),
        }
    }

    /// Kills the server with SIGKILL (`kill -9`) and reaps it.
    pub async fn kill9(&mut self) {
        let child = &mut self.server().child;
        child.start_kill().expect("kill -9 herald");
        child.wait().await.expect("reap herald");
    }

    /// Starts the server again on the same data dir with the same settings (after `kill9`, `sigterm` or
    /// while it still runs, in which case it is killed first). The address changes.
    pub async fn restart(&mut self) {
        if let Some(mut old) = self.server.take() {
            let _ = old.child.start_kill();
            let _ = old.child.wait().await;
            self.earlier_logs.push_str(&old.logs());
        }
        let server = Server::start(self.data_dir.path(), &self.settings)
            .await
            .unwrap_or_else(|logs| panic!("{}{logs}", self.earlier_logs));
        self.addr = server.addr;
        self.server = Some(server);
    }

    // ---- addresses and tokens --------------------------------------------------------------------

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// A valid HS256 user token for `user`, signed with this server's secret.
    pub fn token(&self, user: &str) -> String {
        auth::token_with_secret(&self.jwt_secret, user)
    }

    // ---- raw HTTP ------------------------------------------------------------------------------------

    /// A request to `path`, with `Authorization: Bearer <bearer>` when given.
    pub fn request(&self, method: Method, path: &str, bearer: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match bearer {
            Some(bearer) => request.bearer_auth(bearer),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        request.send().await.expect("send the HTTP request")
    }

    // ---- publisher API -------------------------------------------------------------------------------

    /// `POST /api/v1/notifications` with the publisher key.
    pub async fn publish(&self, body: &Value) -> Response {
        self.send(self.request(Method::POST, "/api/v1/notifications", Some(&self.api_key)).json(body)).await
    }

    /// `POST /api/v1/notifications/batch` with the publisher key and `{"notifications": items}`.
    pub async fn publish_batch(&self, items: &[Value]) -> Response {
        self.send(
            self.request(Method::POST, "/api/v1/notifications/batch", Some(&self.api_key))
                .json(&json!({ "notifications": items })),
        )
        .await
    }

    /// Publishes one notification of `kind` titled `title` for `user`, asserts 201 and returns it.
    pub async fn notify(&self, user: &str, kind: &str, title: &str) -> Value {
        self.notify_with(&json!({ "user_id": user, "type": kind, "title": title })).await
    }

    /// Publishes `body`, asserts 201 and returns the created notification.
    pub async fn notify_with(&self, body: &Value) -> Value {
        let (status, created) = status_and_json(self.publish(body).await).await;
        assert_eq!(status, 201, "publish {body} answered {created}");
        created
    }

    /// Publishes `count` notifications for `user` in one batch (titles `"{prefix} 0"`, …), asserts 201 and
    /// returns them in order.
    pub async fn notify_many(&self, user: &str, prefix: &str, count: usize) -> Vec<Value> {
        let items: Vec<Value> =
            (0..count).map(|i| json!({ "user_id": user, "type": "test", "title": format!("{prefix} {i}") })).collect();
        let (status, body) = status_and_json(self.publish_batch(&items).await).await;
        assert_eq!(status, 201, "batch publish answered {body}");
        let created = body["items"].as_array().unwrap_or_else(|| panic!("no items in {body}")).clone();
        assert_eq!(created.len(), count, "batch answered {} items", created.len());
        created
    }

    // ---- user API ----------------------------------------------------------------------------------

    /// `GET /api/v1/notifications{query}` with `token`.
    pub async fn list(&self, token: &str, query: &str) -> Response {
        self.send(self.request(Method::GET, &format!("/api/v1/notifications{query}"), Some(token))).await
    }

    /// `user`'s inbox page for `query` (e.g. `?page=0&limit=10`); asserts 200.
    pub async fn inbox(&self, user: &str, query: &str) -> Value {
        let (status, body) = status_and_json(self.list(&self.token(user), query).await).await;
        assert_eq!(status, 200, "listing {query} answered {body}");
        body
    }

    /// Every notification of `user`, newest first, read page by page with `limit=100`, following the cursor
    /// (`next_before`) to its end.
    pub async fn whole_inbox(&self, user: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut query = "?limit=100".to_owned();
        loop {
            let body = self.inbox(user, &query).await;
            let items = body["items"].as_array().unwrap_or_else(|| panic!("no items in {body}")).clone();
            all.extend(items);
            match body["next_before"].as_str() {
                Some(next) => query = format!("?limit=100&before={next}"),
                None => break,
            }
        }
        all
    }

    /// `GET /api/v1/notifications/unread-count` for `user`; asserts 200.
    pub async fn unread_count(&self, user: &str) -> u64 {
        let response =
            self.send(self.request(Method::GET, "/api/v1/notifications/unread-count", Some(&self.token(user)))).await;
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 200, "unread-count answered {body}");
        body["unread_count"].as_u64().unwrap_or_else(|| panic!("bad unread-count body {body}"))
    }

    /// `POST /api/v1/notifications/{id}/read` as `user`.
    pub async fn mark_read(&self, user: &str, id: &str) -> Response {
        self.send(self.request(Method::POST, &format!("/api/v1/notifications/{id}/read"), Some(&self.token(user))))
            .await
    }

    /// `POST /api/v1/notifications/read-all` as `user`.
    pub async fn read_all(&self, user: &str) -> Response {
        self.send(self.request(Method::POST, "/api/v1/notifications/read-all", Some(&self.token(user)))).await
    }

    // ---- WebSocket ---------------------------------------------------------------------------------

    /// Connects `user` to `/ws?token=…`, and reads the `hello` and the first `notifications` frame.
    pub async fn connect_ws(&self, user: &str) -> WsClient {
        self.connect_ws_query(&format!("?token={}", self.token(user))).await
    }

    /// Connects `user` to `/ws?token=…&since=ID`, and reads the `hello` and the `notifications` frame.
    pub async fn connect_ws_since(&self, user: &str, since: &str) -> WsClient {
        self.connect_ws_query(&format!("?token={}&since={since}", self.token(user))).await
    }

    /// Connects to `/ws{query}`, and reads the `hello` and the first `notifications` frame.
    pub async fn connect_ws_query(&self, query: &str) -> WsClient {
        WsClient::connect(&self.ws_url(query)).await.unwrap_or_else(|e| panic!("connect to /ws: {e}"))
    }

    /// Tries to open `/ws{query}`; `Err` carries the HTTP status and body of a refused upgrade.
    pub async fn try_connect_ws(&self, query: &str) -> Result<WsClient, (u16, Option<Value>)> {
        WsClient::try_connect(&self.ws_url(query)).await
    }

    /// Asserts the upgrade to `/ws{query}` is refused with HTTP `status` and the JSON error `code`.
    pub async fn assert_ws_refused(&self, query: &str, status: u16, code: &str) {
        match self.try_connect_ws(query).await {
            Ok(_) => panic!("the WebSocket upgrade /ws{query} was accepted"),
            Err((got, body)) => {
                assert_eq!(got, status, "the upgrade /ws{query} answered {body:?}");
                let body = body.unwrap_or_else(|| panic!("the refused upgrade /ws{query} has no JSON body"));
                super::assert_error(&body, code);
            }
        }
    }

    // ---- Server-Sent Events --------------------------------------------------------------------------

    /// Opens `/api/v1/stream{query}` with the given headers; `Err` carries the status and JSON body of a refusal.
    pub async fn try_connect_sse(&self, query: &str, headers: &[(&str, &str)]) -> Result<SseClient, (u16, Value)> {
        // A client of its own: the shared one's 30 s limit on a whole request would cut a stream.
        let client = reqwest::Client::builder().no_proxy().build().expect("build the HTTP client");
        let mut request = client.get(self.url(&format!("/api/v1/stream{query}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.send(request).await;
        if response.status().as_u16() == 200 {
            return Ok(SseClient::new(response));
        }
        Err(super::status_and_json(response).await)
    }

    /// Opens `user`'s event stream (`?token=…` and `extra`, e.g. `&since=ID`) and reads `hello` and the
    /// backlog; returns them with the client.
    pub async fn connect_sse(&self, user: &str, extra: &str) -> (SseClient, Value, Value) {
        let query = format!("?token={}{extra}", self.token(user));
        let mut client = self.try_connect_sse(&query, &[]).await.unwrap_or_else(|e| panic!("open the stream: {e:?}"));
        let hello = client.expect("hello").await.data;
        let backlog = client.expect("notifications").await.data;
        (client, hello, backlog)
    }

    /// Connects `user` over a socket with a 4 KiB receive buffer, to play a client that falls behind.
    pub async fn connect_ws_slow(&self, user: &str) -> WsClient {
        WsClient::connect_slow(self.addr, &self.ws_url(&format!("?token={}", self.token(user)))).await
    }

    // ---- topics ----------------------------------------------------------------------------------------

    /// A user token whose `topics` claim grants `topics`.
    pub fn topic_token(&self, user: &str, topics: &[&str]) -> String {
        auth::topic_token_with_secret(&self.jwt_secret, user, topics)
    }

    /// `POST /api/v1/topics/{topic}/events` with the publisher key.
    pub async fn append(&self, topic: &str, event: &Value) -> Response {
        self.send(
            self.request(Method::POST, &format!("/api/v1/topics/{topic}/events"), Some(&self.api_key)).json(event),
        )
        .await
    }

    /// Appends an event, asserts 201 and returns its seq.
    pub async fn append_ok(&self, topic: &str, event: &Value) -> u64 {
        let (status, body) = status_and_json(self.append(topic, event).await).await;
        assert_eq!(status, 201, "append to {topic} answered {body}");
        body["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {body}"))
    }

    /// `GET {path}` with `bearer`: the status and the JSON body.
    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        status_and_json(self.send(self.request(Method::GET, path, bearer)).await).await
    }

    /// Opens a socket on `path` (e.g. `/ws/topics/order:1?token=…`) without reading anything.
    pub async fn connect_path(&self, path: &str) -> Result<WsClient, (u16, Option<Value>)> {
        WsClient::try_connect_raw(&format!("ws://{}{path}", self.addr)).await
    }

    // ---- operations ----------------------------------------------------------------------------------

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Metrics {
        let response = self.send(self.request(Method::GET, "/metrics", None)).await;
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        Metrics(response.text().await.expect("read /metrics"))
    }

    /// `GET /health`; asserts 200.
    pub async fn health(&self) -> Value {
        let (status, body) = status_and_json(self.send(self.request(Method::GET, "/health", None)).await).await;
        assert_eq!(status, 200, "GET /health answered {body}");
        body
    }

    /// Waits until `/health` reports exactly `total` open connections.
    pub async fn wait_for_connections(&self, total: u64) -> Value {
        wait_until(&format!("/health to report {total} connections"), WAIT, || async {
            let health = self.health().await;
            (health["connections"]["total"] == total).then_some(health)
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}{}", self.earlier_logs, self.logs());
        }
    }
}
