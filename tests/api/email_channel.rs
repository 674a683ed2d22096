//! The email channel end to end: requests over HTTP and RabbitMQ, stored in the outbox, sent over SMTP to a
//! real server on loopback (aiosmtpd, see `helpers::smtp`), which captures what arrives. Each test has its own
//! SMTP server, Herald and (where it uses one) RabbitMQ vhost.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::smtp::{free_port, SmtpServer, TestCert};
use crate::helpers::{assert_error_response, status_and_json, wait_until, Settings, TestApp, API_KEY, WAIT};

/// The built-in email types.
pub const SEVEN: [&str; 7] = [
    "create-account",
    "welcome-message",
    "fingerprint-verify",
    "forgot-password-verify",
    "username-change-verify",
    "email-change-verify",
    "new-email-change-verify",
];

/// Herald sending through the SMTP server on `port`, plain, retrying quickly.
pub fn smtp_settings(s: &mut Settings, port: u16) {
    s.env("HERALD_SMTP_HOST", "127.0.0.1")
        .env("HERALD_SMTP_PORT", port.to_string())
        .env("HERALD_SMTP_TLS", "none")
        .env("HERALD_SMTP_FROM", "Herald <no-reply@herald.test>")
        .env("HERALD_SMTP_TIMEOUT_MS", "5000")
        .env("HERALD_EMAIL_RETRY_INITIAL_MS", "100")
        .env("HERALD_EMAIL_RETRY_MAX_MS", "300");
}

async fn spawn_sending_to(port: u16, configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(|s| {
        smtp_settings(s, port);
        configure(s);
    })
    .await
}

async fn submit(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app.request(Method::POST, "/api/v1/emails", Some(API_KEY)).json(body).send().await.expect("POST");
    status_and_json(response).await
}

pub async fn status(app: &TestApp, id: &str) -> Value {
    let (code, body) = app.get_json(&format!("/api/v1/emails/{id}"), Some(API_KEY)).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Waits until the email's status is `want`, and returns it.
pub async fn wait_status(app: &TestApp, id: &str, want: &str) -> Value {
    wait_until(&format!("email {id} to be {want}"), WAIT, || async {
        let body = status(app, id).await;
        (body["status"] == want).then_some(body)
    })
    .await
}

fn otp(to: &str, code: &str) -> Value {
    json!({"email": to, "otpCode": code})
}

#[tokio::test]
async fn each_of_the_seven_types_arrives_as_proper_mime_with_both_parts() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port, |_| {}).await;
    let mut ids = Vec::new();
    for (i, kind) in SEVEN.iter().enumerate() {
        let to = format!("user{i}@example.org");
        let (code, body) = submit(&app, &json!({"type": kind, "data": otp(&to, &format!("{i}{i}{i}{i}{i}{i}"))})).await;
        assert_eq!(code, 202, "{body}");
        assert_eq!(
            (body["status"].as_str(), body["type"].as_str(), body["to"].as_str()),
            (Some("queued"), Some(*kind), Some(to.as_str()))
        );
        ids.push(body["id"].as_str().expect("an id").to_owned());
    }
    let got = smtp.wait_for(SEVEN.len()).await;
    for (i, (kind, id)) in SEVEN.iter().zip(&ids).enumerate() {
        let sent = wait_status(&app, id, "sent").await;
        assert_eq!(sent["attempts"], 1, "{sent}");
        assert!(
            sent["sent_at"].is_string() && sent.get("next_attempt_at").is_none() && sent.get("last_error").is_none(),
            "{sent}"
        );
        let to = format!("user{i}@example.org");
        let mail =
            got.iter().find(|m| m["rcpt_tos"][0] == to.as_str()).unwrap_or_else(|| panic!("no mail to {to}: {got:#?}"));
        assert_eq!(mail["mail_from"], "no-reply@herald.test");
        assert_eq!(mail["from"], "Herald <no-reply@herald.test>");
        assert_eq!(mail["to"], to.as_str());
        assert_eq!(mail["message_id"], sent["message_id"], "{kind}");
        assert_eq!(mail["message_id"].as_str().unwrap(), format!("<{id}@herald.test>"));
        assert_ne!(mail["date"], "None", "{kind}: a Date header");
        assert_eq!(mail["mime_version"], "1.0");
        assert_eq!(mail["content_type"], "multipart/alternative", "{kind}");
        assert!(!mail["subject"].as_str().unwrap().is_empty(), "{kind}");
        let parts = mail["parts"].as_array().unwrap();
        let types: Vec<&str> = parts.iter().map(|p| p["content_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["text/plain", "text/html"], "{kind}");
        let code = format!("{i}{i}{i}{i}{i}{i}");
        if *kind != "welcome-message" {
            for part in parts {
                assert!(part["content"].as_str().unwrap().contains(&code), "{kind}: {part}");
            }
        }
        assert!(parts.iter().all(|p| p["charset"] == "utf-8"), "{kind}: {parts:?}");
    }
    let metrics = app.metrics().await;
    assert_eq!(metrics.counter("herald_emails_sent_total{type=\"create-account\"}"), 1.0);
    assert_eq!(metrics.counter("herald_emails_queued_total{type=\"welcome-message\"}"), 1.0);
    assert!(metrics.text().contains("herald_email_send_duration_seconds"), "a send-duration histogram");
    let health = app.health().await;
    assert_eq!(health["email"]["smtp"]["status"], "ok", "{health}");
    assert_eq!(health["email"]["status"], "ok", "{health}");
}

#[tokio::test]
async fn hostile_variables_are_escaped_in_html_and_utf8_subjects_are_encoded() {
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("greeting.toml"),
        "subject = \"Grüße, {{ name }} ✓\"\nrequired = [\"name\"]\n",
    )
    .unwrap();
    std::fs::write(templates.path().join("greeting.html"), "<p>Hallo {{ name }}</p>").unwrap();
    std::fs::write(templates.path().join("greeting.txt"), "Hallo {{ name }}").unwrap();
    let smtp = SmtpServer::start().await;
    let dir = templates.path().to_str().unwrap().to_owned();
    let app = spawn_sending_to(smtp.port, |s| {
        s.env("HERALD_EMAIL_TEMPLATES", dir);
    })
    .await;
    let hostile = "<script>alert(1)</script>";
    let (code, body) =
        submit(&app, &json!({"type": "greeting", "to": "ana@example.org", "data": {"name": format!("Zoë {hostile}")}}))
            .await;
    assert_eq!(code, 202, "{body}");
    let (code, _) =
        submit(&app, &json!({"type": "create-account", "data": {"email": "bo@example.org", "otpCode": hostile}})).await;
    assert_eq!(code, 202);
    let got = smtp.wait_for(2).await;
    let greeting = got.iter().find(|m| m["rcpt_tos"][0] == "ana@example.org").unwrap();
    assert_eq!(greeting["subject"], format!("Grüße, Zoë {hostile} ✓"), "decoded as sent");
    let raw = greeting["raw_headers"].as_str().unwrap();
    assert!(raw.contains("Subject: =?utf-8?"), "an encoded word, 7-bit on the wire: {raw}");
    let html = greeting["parts"][1]["content"].as_str().unwrap();
    assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
    let text = greeting["parts"][0]["content"].as_str().unwrap();
    assert!(text.contains(hostile), "plain text is not HTML: {text}");
    let account = got.iter().find(|m| m["rcpt_tos"][0] == "bo@example.org").unwrap();
    let html = account["parts"][1]["content"].as_str().unwrap();
    assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_code_and_store_nothing() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port, |_| {}).await;
    let post = |body: Value, key: Option<&'static str>| {
        let request = app.request(Method::POST, "/api/v1/emails", key).json(&body);
        async move { request.send().await.expect("POST") }
    };
    let good = json!({"type": "create-account", "data": otp("a@example.org", "1")});
    assert_error_response(post(good.clone(), None).await, 401, "unauthorized").await;
    let user = app.token("someone");
    let response = app.request(Method::POST, "/api/v1/emails", Some(&user)).json(&good).send().await.unwrap();
    assert_error_response(response, 403, "forbidden").await;
    let k = Some(API_KEY);
    let error = assert_error_response(
        post(json!({"type": "no-such-type", "data": otp("a@example.org", "1")}), k).await,
        422,
        "unknown_email_type",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("no-such-type"), "{error}");
    let error = assert_error_response(
        post(json!({"type": "create-account", "data": {"email": "a@example.org"}}), k).await,
        422,
        "missing_variable",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("otpCode"), "{error}");
    assert_error_response(
        post(json!({"type": "create-account", "data": {"otpCode": "1"}}), k).await,
        422,
        "invalid_recipient",
    )
    .await;
    assert_error_response(
        post(json!({"type": "create-account", "data": otp("not an address", "1")}), k).await,
        422,
        "invalid_recipient",
    )
    .await;
    assert_error_response(
        post(
            json!({"type": "create-account", "to": "a@example.org, b@example.org", "data": otp("a@example.org", "1")}),
            k,
        )
        .await,
        422,
        "invalid_recipient",
    )
    .await;
    assert_error_response(
        post(json!({"type": "create-account", "data": otp("a@example.org", "1"), "cc": "x"}), k).await,
        422,
        "invalid_request",
    )
    .await;
    assert_error_response(
        post(json!({"type": "create-account", "data": otp("a@example.org", "1"), "idempotency_key": ""}), k).await,
        422,
        "invalid_request",
    )
    .await;
    let response = app.request(Method::POST, "/api/v1/emails", k).body("{not json").send().await.unwrap();
    assert_error_response(response, 400, "invalid_json").await;

    let (code, body) = app.get_json("/api/v1/emails/01HZZZZZZZZZZZZZZZZZZZZZZZ", Some(API_KEY)).await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = app.get_json("/api/v1/emails/../../etc", Some(API_KEY)).await;
    assert_eq!(code, 404);
    let (code, _) = app.get_json("/api/v1/emails/01HZZZZZZZZZZZZZZZZZZZZZZZ", None).await;
    assert_eq!(code, 401);

    // Nothing was queued or sent by any of them.
    let metrics = app.metrics().await;
    assert_eq!(metrics.sum("herald_emails_queued_total"), 0.0, "{}", metrics.text());
    let (code, body) = submit(&app, &good).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(smtp.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn without_an_smtp_server_the_channel_is_off() {
    let app = TestApp::spawn().await;
    let body = json!({"type": "create-account", "data": otp("a@example.org", "1")});
    let response = app.request(Method::POST, "/api/v1/emails", Some(API_KEY)).json(&body).send().await.unwrap();
    assert_error_response(response, 503, "email_disabled").await;
    assert!(app.health().await.get("email").is_none_or(Value::is_null));
}

#[tokio::test]
async fn smtp_down_is_retried_with_backoff_and_delivered_once_it_is_back() {
    let port = free_port();
    let app = spawn_sending_to(port, |s| {
        s.env("HERALD_EMAIL_ATTEMPTS", "50");
    })
    .await;
    let (code, body) = submit(&app, &json!({"type": "welcome-message", "data": {"email": "late@example.org"}})).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let retrying = wait_until("the email to be retried at least twice", WAIT, || async {
        let s = status(&app, &id).await;
        (s["status"] == "retrying" && s["attempts"].as_u64() >= Some(2)).then_some(s)
    })
    .await;
    assert!(retrying["next_attempt_at"].is_string() && retrying["last_error"].is_string(), "{retrying}");
    // Down is a warning: the node stays healthy, the email section says so.
    let health = app.health().await;
    assert_eq!(
        (health["status"].as_str(), health["email"]["smtp"]["status"].as_str()),
        (Some("ok"), Some("down")),
        "{health}"
    );
    assert_eq!(health["email"]["status"], "degraded");

    let smtp = SmtpServer::start_with(port, "none", None).await;
    let sent = wait_status(&app, &id, "sent").await;
    assert!(sent.get("last_error").is_none(), "{sent}");
    let got = smtp.wait_for(1).await;
    assert_eq!(got[0]["rcpt_tos"][0], "late@example.org");
    let metrics = app.metrics().await;
    assert!(metrics.counter("herald_emails_retried_total{type=\"welcome-message\"}") >= 1.0);
    assert_eq!(metrics.counter("herald_emails_sent_total{type=\"welcome-message\"}"), 1.0);
    wait_until("SMTP to show as up", WAIT, || async {
        (app.health().await["email"]["smtp"]["status"] == "ok").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_550_is_dead_lettered_at_once_and_a_451_after_its_attempts() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port, |s| {
        s.env("HERALD_EMAIL_ATTEMPTS", "3");
    })
    .await;
    let (_, refused) =
        submit(&app, &json!({"type": "welcome-message", "data": {"email": "reject550@example.org"}})).await;
    let (_, deferred) =
        submit(&app, &json!({"type": "welcome-message", "data": {"email": "tempfail@example.org"}})).await;
    let refused = wait_status(&app, refused["id"].as_str().unwrap(), "dead_lettered").await;
    assert_eq!(refused["attempts"], 1, "a 5xx is not retried: {refused}");
    assert!(refused["last_error"].as_str().unwrap().contains("550"), "{refused}");
    let deferred = wait_status(&app, deferred["id"].as_str().unwrap(), "dead_lettered").await;
    assert_eq!(deferred["attempts"], 3, "{deferred}");
    let error = deferred["last_error"].as_str().unwrap();
    assert!(error.contains("3 attempts") && error.contains("451"), "{error}");
    assert!(smtp.messages().is_empty());
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.counter("herald_emails_dead_lettered_total{type=\"welcome-message\",reason=\"permanent\"}"),
        1.0
    );
    assert_eq!(
        metrics.counter("herald_emails_dead_lettered_total{type=\"welcome-message\",reason=\"transient\"}"),
        1.0
    );
    assert_eq!(metrics.counter("herald_emails_retried_total{type=\"welcome-message\"}"), 2.0);
    // A 4xx or 5xx reply means the server is there.
    assert_eq!(app.health().await["email"]["smtp"]["status"], "ok");
}

#[tokio::test]
async fn a_repeated_request_sends_one_email_and_status_survives_a_restart() {
    let smtp = SmtpServer::start().await;
    let mut app = spawn_sending_to(smtp.port, |_| {}).await;
    let body =
        json!({"type": "create-account", "data": otp("once@example.org", "777777"), "idempotency_key": "signup-42"});
    let (first, created) = submit(&app, &body).await;
    assert_eq!(first, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    wait_status(&app, &id, "sent").await;
    let (again, existing) = submit(&app, &body).await;
    assert_eq!((again, existing["id"].as_str(), existing["status"].as_str()), (200, Some(id.as_str()), Some("sent")));
    assert_eq!(app.metrics().await.counter("herald_emails_queued_total{type=\"create-account\"}"), 1.0);
    assert_eq!(smtp.wait_for(1).await.len(), 1);

    app.kill9().await;
    app.restart().await;
    let after = status(&app, &id).await;
    assert_eq!((after["status"].as_str(), after["attempts"].as_u64()), (Some("sent"), Some(1)), "{after}");
    let (again, existing) = submit(&app, &body).await;
    assert_eq!((again, existing["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(app.metrics().await.sum("herald_emails_queued_total"), 0.0, "nothing new was queued after the restart");
}

#[tokio::test]
async fn starttls_and_implicit_tls_verify_the_server_certificate() {
    let cert = TestCert::generate().await;
    let starttls = SmtpServer::start_with(0, "starttls", Some(&cert)).await;
    let tls = SmtpServer::start_with(0, "tls", Some(&cert)).await;
    let ca = cert.ca.display().to_string();
    for (server, mode) in [(&starttls, "starttls"), (&tls, "tls")] {
        let ca = ca.clone();
        let app = spawn_sending_to(server.port, |s| {
            s.env("HERALD_SMTP_TLS", mode).env("HERALD_SMTP_CA_FILE", ca);
        })
        .await;
        let (code, body) =
            submit(&app, &json!({"type": "welcome-message", "data": {"email": format!("{mode}@example.org")}})).await;
        assert_eq!(code, 202, "{body}");
        wait_status(&app, body["id"].as_str().unwrap(), "sent").await;
        let got = server.wait_for(1).await;
        assert_eq!(got[0]["tls"], true, "{mode}: {got:?}");
    }
    // Without the CA the certificate is not trusted: nothing is sent in the clear instead.
    let app = spawn_sending_to(starttls.port, |s| {
        s.env("HERALD_SMTP_TLS", "starttls").env("HERALD_EMAIL_ATTEMPTS", "50");
    })
    .await;
    let (_, body) = submit(&app, &json!({"type": "welcome-message", "data": {"email": "untrusted@example.org"}})).await;
    let retrying = wait_status(&app, body["id"].as_str().unwrap(), "retrying").await;
    assert!(retrying["last_error"].is_string(), "{retrying}");
    assert_eq!(app.health().await["email"]["smtp"]["status"], "down");
    assert_eq!(starttls.messages().len(), 1, "only the trusted run's email");
}

#[tokio::test]
async fn email_queue_messages_are_sent_once_however_often_they_arrive() {
    let smtp = SmtpServer::start().await;
    let vhost = Vhost::create().await;
    let url = vhost.url();
    let app = spawn_sending_to(smtp.port, |s| {
        s.env("HERALD_AMQP_URL", url);
    })
    .await;
    wait_until("the email_queue consumer", WAIT * 2, || async {
        let health = app.health().await;
        let consumers = health["amqp"]["consumers"].as_array()?.clone();
        consumers.iter().any(|c| c["queue"] == "email_queue" && c["state"] == "consuming").then_some(())
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    let nest = json!({"pattern": "email_request", "data": {"type": "create-account", "data": otp("nest@example.org", "246810")}});
    // The same message three times (a redelivery, a replay): one email.
    for _ in 0..3 {
        producer.publish("", "email_queue", &nest).await;
    }
    // One with its own key, twice; and the bare request shape.
    let keyed = json!({"pattern": "email_request", "data": {"type": "welcome-message", "data": {"email": "keyed@example.org"}, "idempotency_key": "welcome-7"}});
    producer.publish("", "email_queue", &keyed).await;
    producer.publish("", "email_queue", &keyed).await;
    producer
        .publish("", "email_queue", &json!({"type": "welcome-message", "data": {"email": "bare@example.org"}}))
        .await;
    // Requests that can never be sent go to the dead-letter queue at once, with the reason.
    producer
        .publish(
            "",
            "email_queue",
            &json!({"pattern": "email_request", "data": {"type": "no-such-type", "data": {"email": "x@example.org"}}}),
        )
        .await;
    producer.publish("", "email_queue", &json!({"pattern": "email_request", "data": {"type": "create-account", "data": {"email": "x@example.org"}}})).await;
    producer.publish("", "email_queue", &json!({"pattern": "something_else", "data": {}})).await;

    let got = smtp.wait_for(3).await;
    let mut to: Vec<&str> = got.iter().map(|m| m["rcpt_tos"][0].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(to, ["bare@example.org", "keyed@example.org", "nest@example.org"]);
    crate::amqp::wait_for_count(&producer, "email_queue.dlq", 3, WAIT).await;
    let dead = producer.peek("email_queue.dlq").await;
    let reasons: Vec<String> = dead.iter().map(|m| m.header("x-herald-reason").unwrap_or_default()).collect();
    assert!(reasons[0].contains("unknown email type"), "{reasons:?}");
    assert!(reasons[1].contains("otpCode"), "{reasons:?}");
    assert!(reasons[2].contains("pattern"), "{reasons:?}");
    wait_until("every message acked", WAIT, || async {
        (crate::amqp::messages(&app, "email_queue", "acked").await == 9.0).then_some(())
    })
    .await;
    // Every delivery is settled, and only three requests were ever stored: nothing else can be sent.
    let metrics = app.metrics().await;
    assert_eq!(metrics.sum("herald_emails_queued_total"), 3.0, "{}", metrics.text());
    assert_eq!(metrics.sum("herald_emails_sent_total"), 3.0);
}
