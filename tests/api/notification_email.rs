//! Notifications that also go by email (`"channels": ["inbox", "email"]`), end to end against a real SMTP
//! server (aiosmtpd): recipients from the user directory, per-user preferences, "email only if still unread
//! after N seconds" cancelled by a read (REST, WebSocket, read-all) or by opting out, repeats and
//! redeliveries sending one email, and bad input refused with nothing stored.

use reqwest::Method;
use serde_json::{json, Value};

use crate::email_channel::{smtp_settings, status, wait_status};
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::smtp::SmtpServer;
use crate::helpers::{assert_error_response, status_and_json, wait_until, TestApp, API_KEY, WAIT};

async fn spawn_sending_to(port: u16) -> TestApp {
    TestApp::spawn_with(|s| smtp_settings(s, port)).await
}

async fn send(app: &TestApp, method: Method, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
    status_and_json(app.request(method, path, Some(bearer)).json(body).send().await.expect("request")).await
}

async fn put_user(app: &TestApp, user: &str, body: Value) -> Value {
    let (code, body) = send(app, Method::PUT, &format!("/api/v1/users/{user}"), API_KEY, &body).await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn publish(app: &TestApp, body: Value) -> (u16, Value) {
    status_and_json(app.publish(&body).await).await
}

fn email_id(published: &Value) -> String {
    published["email"]["id"].as_str().unwrap_or_else(|| panic!("an email id in {published}")).to_owned()
}

/// Sends one transactional email to `to` and waits until it is sent: everything the sender had due before
/// it has been taken by then.
async fn sentinel(app: &TestApp, to: &str) {
    let (code, body) =
        send(app, Method::POST, "/api/v1/emails", API_KEY, &json!({"type": "welcome-message", "data": {"email": to}}))
            .await;
    assert_eq!(code, 202, "{body}");
    wait_status(app, body["id"].as_str().unwrap(), "sent").await;
}

fn recipients(mail: &[Value]) -> Vec<String> {
    let mut to: Vec<String> = mail.iter().map(|m| m["rcpt_tos"][0].as_str().unwrap().to_owned()).collect();
    to.sort();
    to
}

#[tokio::test]
async fn a_notification_is_stored_pushed_and_emailed_to_the_directory_address_once() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port).await;
    let entry = put_user(&app, "ana", json!({"email": "ana@example.org", "display_name": "Ana <b>"})).await;
    assert_eq!((entry["user_id"].as_str(), entry["email"].as_str()), (Some("ana"), Some("ana@example.org")));
    let (code, got) = app.get_json("/api/v1/users/ana", Some(API_KEY)).await;
    assert_eq!((code, got["display_name"].as_str()), (200, Some("Ana <b>")));
    let mut ws = app.connect_ws("ana").await;
    let body = json!({
        "user_id": "ana", "type": "deal.new", "title": "Price drop on the blue kettle",
        "message": "Now 19 € instead of 25 €.", "data": {"deal": 7},
        "channels": ["inbox", "email"], "idempotency_key": "deal-7",
    });
    let (code, published) = publish(&app, body.clone()).await;
    assert_eq!(code, 201, "{published}");
    assert_eq!(published["email"]["status"], "queued", "{published}");
    assert_eq!(published["type"], "deal.new", "the notification itself, as always: {published}");
    let pushed = ws.next_notification().await;
    assert_eq!(pushed["id"], published["id"]);
    assert!(pushed.get("email").is_none(), "the push is the notification alone: {pushed}");

    let email = email_id(&published);
    let sent = wait_status(&app, &email, "sent").await;
    assert_eq!(sent["notification_id"], published["id"], "{sent}");
    assert_eq!((sent["user_id"].as_str(), sent["type"].as_str()), (Some("ana"), Some("notification")), "{sent}");
    let mail = smtp.wait_for(1).await;
    assert_eq!(mail[0]["to"], "ana@example.org");
    assert_eq!(mail[0]["subject"], "Price drop on the blue kettle");
    let text = mail[0]["parts"][0]["content"].as_str().unwrap();
    assert!(text.contains("Hi Ana <b>,") && text.contains("Now 19 € instead of 25 €."), "{text}");
    let html = mail[0]["parts"][1]["content"].as_str().unwrap();
    assert!(html.contains("Hi Ana &lt;b&gt;,") && !html.contains("Ana <b>"), "escaped: {html}");
    assert!(html.contains("\"deal.new\""), "the footer names the type to opt out of: {html}");

    // The same publish again (a retry): the original notification and the email it queued, not a second.
    let (code, again) = publish(&app, body).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!((again["id"].clone(), email_id(&again)), (published["id"].clone(), email.clone()));
    assert_eq!(again["email"]["status"], "sent");
    sentinel(&app, "sentinel@example.org").await;
    assert_eq!(recipients(&smtp.messages()), ["ana@example.org", "sentinel@example.org"]);

    // `email.to` wins over the directory, and a template of the publisher's sees the data's fields.
    let (code, custom) = publish(
        &app,
        json!({"user_id": "ana", "type": "order.shipped", "data": {"email": "data@example.org", "otpCode": "4711"},
               "channels": ["inbox", "email"], "email": {"template": "create-account", "to": "Ana B <other@example.org>"}}),
    )
    .await;
    assert_eq!(code, 201, "{custom}");
    wait_status(&app, &email_id(&custom), "sent").await;
    let mail = smtp.wait_for(3).await;
    let other = mail.iter().find(|m| m["rcpt_tos"][0] == "other@example.org").expect("the email to other@");
    assert!(other["parts"][0]["content"].as_str().unwrap().contains("4711"), "{other}");
    // A user with no address: stored and pushed, the email skipped with the reason.
    let (code, nobody) =
        publish(&app, json!({"user_id": "nobody", "type": "deal.new", "channels": ["inbox", "email"]})).await;
    assert_eq!(code, 201, "{nobody}");
    assert_eq!(nobody["email"], json!({"status": "skipped", "reason": "no_address"}));
    assert_eq!(app.inbox("nobody", "").await["total"], 1);
    let metrics = app.metrics().await;
    assert_eq!(metrics.counter("herald_emails_skipped_total{reason=\"no_address\",type=\"notification\"}"), 1.0);
    assert_eq!(metrics.counter("herald_emails_queued_total{type=\"notification\"}"), 1.0);
    // One per email stored: the check at the door renders too, and is not counted.
    assert_eq!(metrics.counter("herald_email_template_renders_total{type=\"notification\"}"), 1.0);
}

#[tokio::test]
async fn preferences_opt_a_user_out_of_email_by_type_or_altogether() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port).await;
    let bo = app.token("bo");
    put_user(&app, "bo", json!({"email": "bo@example.org"})).await;
    let (code, prefs) = app.get_json("/api/v1/preferences", Some(&bo)).await;
    assert_eq!(code, 200);
    assert_eq!(prefs, json!({"email": {"enabled": true, "opt_out": []}, "updated_at": null}));

    let (code, prefs) =
        send(&app, Method::PUT, "/api/v1/preferences", &bo, &json!({"email": {"opt_out": ["deal.new", "deal.new"]}}))
            .await;
    assert_eq!(code, 200, "{prefs}");
    assert_eq!(prefs["email"], json!({"enabled": true, "opt_out": ["deal.new"]}));
    assert!(prefs["updated_at"].is_string(), "{prefs}");
    let (_, read_back) = app.get_json("/api/v1/preferences", Some(&bo)).await;
    assert_eq!(read_back["email"], prefs["email"]);

    let email = |kind: &str| json!({"user_id": "bo", "type": kind, "title": kind, "channels": ["inbox", "email"]});
    let (code, deal) = publish(&app, email("deal.new")).await;
    assert_eq!(code, 201);
    assert_eq!(deal["email"], json!({"status": "skipped", "reason": "opted_out"}));
    let (_, refund) = publish(&app, email("refund.approved")).await;
    wait_status(&app, &email_id(&refund), "sent").await;

    let (code, _) = send(&app, Method::PUT, "/api/v1/preferences", &bo, &json!({"email": {"enabled": false}})).await;
    assert_eq!(code, 200);
    let (_, off) = publish(&app, email("refund.approved")).await;
    assert_eq!(off["email"]["reason"], "opted_out", "{off}");
    // Transactional emails are not notifications: preferences do not stop a verification code.
    sentinel(&app, "bo@example.org").await;
    let mail = smtp.messages();
    let subjects: Vec<&str> = mail.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.contains(&"refund.approved"), "{subjects:?}");
    // Each user's preferences are their own, and only theirs to read.
    let (_, cy) = app.get_json("/api/v1/preferences", Some(&app.token("cy"))).await;
    assert_eq!(cy["email"]["enabled"], true);
    assert_eq!(app.inbox("bo", "").await["total"], 3, "opted out of email, never of the inbox");

    // Bad input changes nothing.
    let put = |body: Value, bearer: Option<String>| {
        let request = app.request(Method::PUT, "/api/v1/preferences", bearer.as_deref()).json(&body);
        async move { request.send().await.expect("PUT") }
    };
    assert_error_response(
        put(json!({"email": {"opt_out": ["has space"]}}), Some(bo.clone())).await,
        422,
        "invalid_request",
    )
    .await;
    assert_error_response(put(json!({"email": {"enabled": "no"}}), Some(bo.clone())).await, 422, "invalid_request")
        .await;
    assert_error_response(put(json!({"sms": {}}), Some(bo.clone())).await, 422, "invalid_request").await;
    let many: Vec<String> = (0..257).map(|i| format!("t{i}")).collect();
    assert_error_response(put(json!({"email": {"opt_out": many}}), Some(bo.clone())).await, 422, "invalid_request")
        .await;
    assert_error_response(put(json!({}), None).await, 401, "unauthorized").await;
    assert_error_response(put(json!({}), Some(API_KEY.to_owned())).await, 403, "forbidden").await;
    let (_, still) = app.get_json("/api/v1/preferences", Some(&bo)).await;
    assert_eq!(still["email"], json!({"enabled": false, "opt_out": []}));
}

#[tokio::test]
async fn an_email_if_unread_after_is_cancelled_by_a_read_and_sent_when_unread() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port).await;
    put_user(&app, "cy", json!({"email": "cy@example.org", "display_name": "Cy"})).await;
    let later = |title: &str, kind: &str, seconds: u64| {
        json!({"user_id": "cy", "type": kind, "title": title, "channels": ["inbox", "email"],
               "email_if_unread_after": seconds})
    };
    // Read before their time: over REST, over the WebSocket, by read-all; and one the user opts out of.
    let (code, rest) = publish(&app, later("read over REST", "deal.new", 5)).await;
    assert_eq!(code, 201, "{rest}");
    let created = crate::helpers::assert_rfc3339_utc(&rest["created_at"]);
    let due = crate::helpers::assert_rfc3339_utc(&rest["email"]["next_attempt_at"]);
    assert_eq!((due - created).whole_milliseconds(), 5000, "{rest}");
    let (_, ws_read) = publish(&app, later("read over the WebSocket", "deal.new", 5)).await;
    let (_, all) = publish(&app, later("read by read-all", "deal.new", 5)).await;
    let (_, digest) = publish(&app, later("opted out of", "digest", 5)).await;
    // Left unread: sent once its second has passed.
    let (_, unread) = publish(&app, later("left unread", "deal.new", 1)).await;

    assert_eq!(app.mark_read("cy", rest["id"].as_str().unwrap()).await.status(), 200);
    assert_eq!(wait_status(&app, &email_id(&rest), "cancelled").await["cancel_reason"], "read");
    let mut ws = app.connect_ws("cy").await;
    ws.send_json(&json!({"type": "mark_read", "ids": [ws_read["id"]]})).await;
    assert_eq!(wait_status(&app, &email_id(&ws_read), "cancelled").await["cancel_reason"], "read");
    let (code, prefs) =
        send(&app, Method::PUT, "/api/v1/preferences", &app.token("cy"), &json!({"email": {"opt_out": ["digest"]}}))
            .await;
    assert_eq!((code, prefs["cancelled_emails"].as_u64()), (200, Some(1)), "{prefs}");
    assert_eq!(status(&app, &email_id(&digest)).await["cancel_reason"], "opted_out");

    let sent = wait_status(&app, &email_id(&unread), "sent").await;
    let sent_at = crate::helpers::assert_rfc3339_utc(&sent["sent_at"]);
    let unread_created = crate::helpers::assert_rfc3339_utc(&unread["created_at"]);
    assert!((sent_at - unread_created).whole_milliseconds() >= 1000, "not before its time: {sent}");
    // Read-all after the unread one was sent: it cancels what is still pending, and a sent email stays sent.
    assert_eq!(app.read_all("cy").await.status(), 200);
    assert_eq!(wait_status(&app, &email_id(&all), "cancelled").await["cancel_reason"], "read");
    assert_eq!(status(&app, &email_id(&unread)).await["status"], "sent");

    // Past the cancelled emails' time, nothing more goes out than the unread one and a sentinel.
    wait_until("the cancelled emails' time to pass", WAIT * 2, || async {
        (time::OffsetDateTime::now_utc() > due).then_some(())
    })
    .await;
    sentinel(&app, "sentinel@example.org").await;
    let mail = smtp.messages();
    assert_eq!(recipients(&mail), ["cy@example.org", "sentinel@example.org"]);
    assert!(mail.iter().any(|m| m["subject"] == "left unread"), "{mail:#?}");
    for cancelled in [&rest, &ws_read, &all, &digest] {
        assert_eq!(status(&app, &email_id(cancelled)).await["status"], "cancelled");
    }
    let metrics = app.metrics().await;
    assert_eq!(metrics.counter("herald_emails_cancelled_total{reason=\"read\"}"), 3.0, "{}", metrics.text());
    assert_eq!(metrics.counter("herald_emails_cancelled_total{reason=\"opted_out\"}"), 1.0);
}

#[tokio::test]
async fn bad_channel_requests_are_refused_and_store_nothing() {
    let smtp = SmtpServer::start().await;
    let app = spawn_sending_to(smtp.port).await;
    let base = |extra: Value| {
        let mut body = json!({"user_id": "dee", "type": "deal.new", "title": "t"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (json!({"channels": ["inbox", "sms"]}), "invalid_request"),
        (json!({"channels": ["email"]}), "invalid_request"),
        (json!({"channels": "email"}), "invalid_request"),
        (json!({"email_if_unread_after": 60}), "invalid_request"),
        (json!({"channels": ["inbox"], "email": {"to": "a@example.org"}}), "invalid_request"),
        (json!({"channels": ["inbox", "email"], "email_if_unread_after": -1}), "invalid_request"),
        (json!({"channels": ["inbox", "email"], "email_if_unread_after": 99_999_999}), "invalid_request"),
        (json!({"channels": ["inbox", "email"], "email": {"template": "no-such"}}), "unknown_email_type"),
        (json!({"channels": ["inbox", "email"], "email": {"template": "create-account"}}), "missing_variable"),
        (json!({"channels": ["inbox", "email"], "email": {"to": "not an address"}}), "invalid_recipient"),
        (json!({"channels": ["inbox", "email"], "email": {"bcc": "x@example.org"}}), "invalid_request"),
    ];
    for (extra, code) in cases {
        let body = base(extra);
        let error = assert_error_response(app.publish(&body).await, 422, code).await;
        assert!(!error["message"].as_str().unwrap_or_default().is_empty(), "{body}: {error}");
    }
    // A batch with one bad item stores none of it.
    let good = base(json!({"channels": ["inbox", "email"], "email": {"to": "dee@example.org"}}));
    let bad = base(json!({"channels": ["inbox", "email"], "email": {"template": "no-such"}}));
    let error = assert_error_response(app.publish_batch(&[good.clone(), bad]).await, 422, "unknown_email_type").await;
    assert!(error["message"].as_str().unwrap().contains("notifications[1]"), "{error}");
    assert_eq!(app.inbox("dee", "").await["total"], 0, "nothing stored");
    // The batch form emails too, item by item.
    let response = app.publish_batch(&[good, base(json!({}))]).await;
    let (code, batch) = status_and_json(response).await;
    assert_eq!(code, 201, "{batch}");
    assert_eq!(batch["items"][0]["email"]["status"], "queued", "{batch}");
    assert!(batch["items"][1].get("email").is_none(), "{batch}");
    wait_status(&app, &email_id(&batch["items"][0]), "sent").await;

    // The directory's input is checked, and it is the publishers'.
    let put = |user: &str, body: Value, bearer: &str| {
        let request = app.request(Method::PUT, &format!("/api/v1/users/{user}"), Some(bearer)).json(&body);
        async move { request.send().await.expect("PUT") }
    };
    assert_error_response(put("dee", json!({"email": "nope"}), API_KEY).await, 422, "invalid_request").await;
    assert_error_response(put("dee", json!({"display_name": "a\nb"}), API_KEY).await, 422, "invalid_request").await;
    assert_error_response(put("dee", json!({"display_name": "x".repeat(257)}), API_KEY).await, 422, "invalid_request")
        .await;
    assert_error_response(put("dee", json!({"phone": "1"}), API_KEY).await, 422, "invalid_request").await;
    assert_error_response(put("dee", json!({"email": "d@example.org"}), &app.token("dee")).await, 403, "forbidden")
        .await;
    let (code, _) = app.get_json("/api/v1/users/dee", Some(API_KEY)).await;
    assert_eq!(code, 404, "nothing stored");
    let (code, _) = app.get_json("/api/v1/users/dee", Some(&app.token("dee"))).await;
    assert_eq!(code, 403, "a user cannot read the directory");
    put_user(&app, "dee", json!({"email": "d@example.org"})).await;
    let deleted = app.request(Method::DELETE, "/api/v1/users/dee", Some(API_KEY)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let (code, _) = app.get_json("/api/v1/users/dee", Some(API_KEY)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn without_smtp_a_notification_asking_for_email_is_refused_and_the_directory_still_works() {
    let app = TestApp::spawn().await;
    let body = json!({"user_id": "eve", "type": "deal.new", "channels": ["inbox", "email"]});
    assert_error_response(app.publish(&body).await, 503, "email_disabled").await;
    assert_eq!(app.inbox("eve", "").await["total"], 0);
    put_user(&app, "eve", json!({"email": "eve@example.org", "display_name": "Eve"})).await;
    let (code, got) = app.get_json("/api/v1/users/eve", Some(API_KEY)).await;
    assert_eq!((code, got["email"].as_str()), (200, Some("eve@example.org")));
    let (code, _) =
        send(&app, Method::PUT, "/api/v1/preferences", &app.token("eve"), &json!({"email": {"enabled": false}})).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn notification_queue_messages_asking_for_email_send_one_email_however_often_they_arrive() {
    let smtp = SmtpServer::start().await;
    let vhost = Vhost::create().await;
    let url = vhost.url();
    let app = TestApp::spawn_with(|s| {
        smtp_settings(s, smtp.port);
        s.env("HERALD_AMQP_URL", url);
    })
    .await;
    put_user(&app, "fay", json!({"email": "fay@example.org"})).await;
    wait_until("the notification_queue consumer", WAIT * 2, || async {
        let health = app.health().await;
        let consumers = health["amqp"]["consumers"].as_array()?.clone();
        consumers.iter().any(|c| c["queue"] == "notification_queue" && c["state"] == "consuming").then_some(())
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    let message = json!({"pattern": "create_notification", "data": {
        "user_id": "fay", "type": "comment.new", "title": "Someone replied", "channels": ["inbox", "email"]}});
    for _ in 0..3 {
        producer.publish("", "notification_queue", &message).await;
    }
    let poison = json!({"pattern": "create_notification", "data": {
        "user_id": "fay", "type": "comment.new", "channels": ["inbox", "email"], "email": {"template": "no-such"}}});
    producer.publish("", "notification_queue", &poison).await;
    crate::amqp::wait_for_count(&producer, "notification_queue.dlq", 1, WAIT).await;
    let dead = producer.peek("notification_queue.dlq").await;
    assert!(dead[0].header("x-herald-reason").unwrap_or_default().contains("unknown_email_type"), "{:?}", dead[0]);
    wait_until("every message acked", WAIT, || async {
        (crate::amqp::messages(&app, "notification_queue", "acked").await == 4.0).then_some(())
    })
    .await;
    let mail = smtp.wait_for(1).await;
    assert_eq!(mail[0]["subject"], "Someone replied");
    sentinel(&app, "sentinel@example.org").await;
    assert_eq!(recipients(&smtp.messages()), ["fay@example.org", "sentinel@example.org"]);
    assert_eq!(app.inbox("fay", "").await["total"], 1);
}
