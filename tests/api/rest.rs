//! The inbox over REST: paging newest first, the unread filter, counts, and marking read.

use serde_json::json;

use crate::helpers::{assert_error_response, assert_notification_shape, id, ids, status_and_json, TestApp};

#[tokio::test]
async fn the_inbox_pages_newest_first() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "n", 25).await;
    app.notify_many("bob", "other", 3).await;
    let newest_first: Vec<String> = ids(&published).into_iter().rev().collect();

    let page0 = app.inbox("alice", "?page=0&limit=10").await;
    assert_eq!(page0["page"], 0);
    assert_eq!(page0["limit"], 10);
    assert_eq!(page0["total"], 25);
    assert_eq!(page0["unread_count"], 25);
    let items = page0["items"].as_array().unwrap();
    assert_eq!(ids(items), newest_first[..10]);
    items.iter().for_each(assert_notification_shape);
    assert!(items.iter().all(|n| n["user_id"] == "alice"));

    let page2 = app.inbox("alice", "?page=2&limit=10").await;
    assert_eq!(ids(page2["items"].as_array().unwrap()), newest_first[20..]);
    assert_eq!(page2["page"], 2);

    let beyond = app.inbox("alice", "?page=3&limit=10").await;
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(beyond["total"], 25);

    let all = app.inbox("alice", "?page=0&limit=100").await;
    assert_eq!(ids(all["items"].as_array().unwrap()), newest_first);
}

/// Cursor paging: `next_before` leads from page to page, the pages stay put while notifications arrive, and
/// it is null at the end; the cursor cannot be combined with `page`, and a malformed one is refused.
#[tokio::test]
async fn the_inbox_pages_by_cursor_without_shifting() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "n", 12).await;
    let newest_first: Vec<String> = ids(&published).into_iter().rev().collect();

    let first = app.inbox("alice", "?limit=5").await;
    assert_eq!(ids(first["items"].as_array().unwrap()), newest_first[..5]);
    assert_eq!(first["next_before"], newest_first[4]);
    assert_eq!((first["page"].clone(), first["total"].clone()), (json!(0), json!(12)));
    // Two more arrive: offset page 1 would now repeat two; the cursor's next page does not.
    app.notify_many("alice", "late", 2).await;
    let second = app.inbox("alice", &format!("?limit=5&before={}", newest_first[4])).await;
    assert_eq!(ids(second["items"].as_array().unwrap()), newest_first[5..10]);
    assert!(second.get("page").is_none(), "no page number with a cursor: {second}");
    assert_eq!(second["total"], 14);
    let last = app.inbox("alice", &format!("?limit=5&before={}", second["next_before"].as_str().unwrap())).await;
    assert_eq!(ids(last["items"].as_array().unwrap()), newest_first[10..]);
    assert_eq!(last["next_before"], json!(null), "the end: {last}");
    // Unread only, by cursor.
    app.mark_read("alice", &newest_first[1]).await;
    let unread = app.inbox("alice", &format!("?limit=2&unread=true&before={}", newest_first[0])).await;
    assert_eq!(ids(unread["items"].as_array().unwrap()), [newest_first[2].clone(), newest_first[3].clone()]);
    assert_eq!(unread["next_before"], newest_first[3]);
    // The whole inbox by cursor: every one once.
    assert_eq!(app.whole_inbox("alice").await.len(), 14);

    let token = app.token("alice");
    let both = app.list(&token, &format!("?page=1&before={}", newest_first[0])).await;
    assert_error_response(both, 400, "invalid_query").await;
    assert_error_response(app.list(&token, "?before=nope").await, 400, "invalid_query").await;
}

#[tokio::test]
async fn the_unread_filter_lists_only_unread() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "n", 5).await;
    for n in [&published[1], &published[3]] {
        assert_eq!(app.mark_read("alice", id(n)).await.status(), 200);
    }

    let unread = app.inbox("alice", "?page=0&limit=10&unread=true").await;
    assert_eq!(ids(unread["items"].as_array().unwrap()), vec![id(&published[4]), id(&published[2]), id(&published[0])]);
    assert_eq!(unread["total"], 3);
    assert_eq!(unread["unread_count"], 3);

    let everything = app.inbox("alice", "?page=0&limit=10").await;
    assert_eq!(everything["total"], 5);
    assert_eq!(everything["unread_count"], 3);
    assert_eq!(app.unread_count("alice").await, 3);
}

#[tokio::test]
async fn marking_read_answers_the_notification_and_counts_drop() {
    let app = TestApp::spawn().await;
    let n = app.notify("alice", "comment", "hello").await;
    assert_eq!(app.unread_count("alice").await, 1);

    let (status, body) = status_and_json(app.mark_read("alice", id(&n)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_notification_shape(&body);
    assert_eq!(body["id"], n["id"]);
    assert_eq!(body["read"], true);
    assert_eq!(app.unread_count("alice").await, 0);
}

#[tokio::test]
async fn an_unknown_or_foreign_notification_is_not_found() {
    let app = TestApp::spawn().await;
    let bobs = app.notify("bob", "comment", "bob's").await;

    let unknown = ulid::Ulid::new().to_string();
    assert_error_response(app.mark_read("alice", &unknown).await, 404, "not_found").await;
    assert_error_response(app.mark_read("alice", id(&bobs)).await, 404, "not_found").await;
    assert_eq!(app.unread_count("bob").await, 1, "bob's notification is untouched");
}

#[tokio::test]
async fn read_all_reports_how_many_it_marked() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "n", 3).await;
    assert_eq!(app.mark_read("alice", id(&published[0])).await.status(), 200);

    let (status, body) = status_and_json(app.read_all("alice").await).await;
    assert_eq!((status, body), (200, json!({ "updated": 2 })));
    assert_eq!(app.inbox("alice", "?page=0&limit=10&unread=true").await["total"], 0);
}
