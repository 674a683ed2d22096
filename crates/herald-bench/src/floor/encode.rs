//! The floor's JSON: notifications and events in Herald's shape, and the frames around them.
//! Each item is encoded once; the same bytes go into the HTTP answer, the replay buffer and
//! (wrapped once more) every connection's frame.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize)]
pub struct Notification<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub title: Option<&'a str>,
    pub message: Option<&'a str>,
    pub data: &'a RawValue,
    pub created_at: &'a str,
    pub delivered: bool,
    pub delivered_at: Option<&'a str>,
    pub read: bool,
    pub read_at: Option<&'a str>,
}

/// A topic event as Herald streams it.
#[derive(Serialize)]
pub struct Event<'a> {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: Option<&'a str>,
    pub progress: Option<u8>,
    pub data: &'a RawValue,
    pub at: &'a str,
}

#[derive(Serialize)]
struct Hello<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    connection_id: String,
    unread_count: u64,
}

/// `{}`, for items published without `data`.
pub fn empty_object() -> &'static RawValue {
    // A borrowed RawValue of a static string: parsing it cannot fail and allocates nothing.
    serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("`{{}}` is valid JSON"))
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    // These structs hold only strings, booleans and raw JSON: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("serializing: {e}"))
}

pub fn notification_frame(json: &str) -> String {
    format!(r#"{{"type":"notification","data":{json}}}"#)
}

pub fn event_frame(topic: &str, seq: u64, event: &str) -> String {
    // Topic names are validated to namespace:id in [A-Za-z0-9._:-], which needs no escaping.
    format!(r#"{{"type":"event","topic":"{topic}","seq":{seq},"event":{event}}}"#)
}

/// The answer to an append: `{"topic","seq"}`.
pub fn appended(topic: &str, seq: u64) -> String {
    format!(r#"{{"topic":"{topic}","seq":{seq}}}"#)
}

/// `{"type":"subscribed","topic",…,"state":null}`: the floor keeps no topic state.
pub fn subscribed_frame(topic: &str) -> String {
    format!(r#"{{"type":"subscribed","topic":"{topic}","state":null}}"#)
}

/// An error frame on a live connection.
pub fn error_frame(code: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'a str,
        message: &'a str,
    }
    to_json(&Frame { kind: "error", code, message })
}

pub fn hello_frame(user_id: &str, connection: u64) -> String {
    to_json(&Hello { kind: "hello", user_id, connection_id: format!("c{connection}"), unread_count: 0 })
}

/// `{"type":"notifications","items":[…],"more":false}`.
pub fn backlog_frame<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut frame = String::from(r#"{"type":"notifications","items":["#);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(item);
    }
    frame.push_str(r#"],"more":false}"#);
    frame
}

/// `{"items":[…]}`, the batch endpoint's answer.
pub fn items<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from(r#"{"items":["#);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    body
}

/// `{"error":{"code":…,"message":…}}`, Herald's error shape.
pub fn error(code: &str, message: &str) -> String {
    #[derive(Serialize)]
    struct Inner<'a> {
        code: &'a str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    to_json(&Outer { error: Inner { code, message } })
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-05-01T12:00:00.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm: the proleptic Gregorian date of a day count
/// since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn frames_are_json() {
        let n = to_json(&Notification {
            id: "01J",
            user_id: "u\"x",
            kind: "bench",
            title: None,
            message: Some("hi"),
            data: empty_object(),
            created_at: "2024-01-01T00:00:00.000Z",
            delivered: false,
            delivered_at: None,
            read: false,
            read_at: None,
        });
        for frame in [
            notification_frame(&n),
            event_frame("t:1", 3, &n),
            appended("t:1", 3),
            subscribed_frame("t:1"),
            error_frame("invalid_request", "bad \"topic\""),
            hello_frame("u\"x", 7),
            backlog_frame([n.as_str(), n.as_str()]),
            items([]),
            error("bad_json", "line \"1\""),
        ] {
            serde_json::from_str::<serde_json::Value>(&frame).expect("valid JSON");
        }
    }
}
