//! The NestJS services' metric names, for DogStatsD: a recorder layer in front of the DogStatsD exporter that
//! sends the metrics those services reported under the names and tags their dashboards and alerts know
//! (`email.sent{email_type,status}`, `queue.message.consumed{queue_name}`, …), with durations in
//! milliseconds as their `timing` calls sent them. Every other metric goes under its own name; Prometheus
//! is not behind this layer and keeps Herald's names.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};

/// How one Herald metric is sent under a NestJS name.
struct Alias {
    from: &'static str,
    /// Only the series whose label has this value (e.g. `outcome="consumed"`); `None` for all.
    only: Option<(&'static str, &'static str)>,
    to: &'static str,
    /// Herald's label names → NestJS's tag names; labels not named here are dropped.
    tags: &'static [(&'static str, &'static str)],
    /// Tags NestJS always sent with this metric.
    fixed: &'static [(&'static str, &'static str)],
    /// Seconds → milliseconds (NestJS timings).
    millis: bool,
}

const ALIASES: &[Alias] = &[
    Alias {
        from: "herald_emails_sent_total",
        only: None,
        to: "email.sent",
        tags: &[("type", "email_type")],
        fixed: &[("status", "success")],
        millis: false,
    },
    Alias {
        from: "herald_emails_failed_total",
        only: None,
        to: "email.failed",
        tags: &[("type", "email_type"), ("reason", "reason")],
        fixed: &[("status", "failed")],
        millis: false,
    },
    Alias {
        from: "herald_email_template_renders_total",
        only: None,
        to: "email.template.used",
        tags: &[("type", "email_type"), ("type", "template")],
        fixed: &[],
        millis: false,
    },
    Alias {
        from: "herald_email_send_duration_seconds",
        only: None,
        to: "email.processing.duration",
        tags: &[("type", "email_type")],
        fixed: &[],
        millis: true,
    },
    Alias {
        from: "herald_amqp_messages_total",
        only: Some(("outcome", "consumed")),
        to: "queue.message.consumed",
        tags: &[("queue", "queue_name")],
        fixed: &[],
        millis: false,
    },
    Alias {
        from: "herald_amqp_messages_total",
        only: Some(("outcome", "dead_lettered")),
        to: "queue.message.failed",
        tags: &[("queue", "queue_name")],
        fixed: &[],
        millis: false,
    },
    Alias {
        from: "herald_amqp_processing_seconds",
        only: None,
        to: "queue.message.processing.duration",
        tags: &[("queue", "queue_name")],
        fixed: &[],
        millis: true,
    },
    Alias {
        from: "herald_sync_users_total",
        only: Some(("result", "created")),
        to: "sync.user.created",
        tags: &[("operation", "operation")],
        fixed: &[("status", "success"), ("sync_type", "user_creation")],
        millis: false,
    },
    Alias {
        from: "herald_sync_users_total",
        only: Some(("result", "created_by_update")),
        to: "sync.user.created",
        tags: &[("operation", "operation")],
        fixed: &[("status", "success"), ("sync_type", "user_creation")],
        millis: false,
    },
    Alias {
        from: "herald_sync_users_total",
        only: Some(("result", "updated")),
        to: "sync.user.updated",
        tags: &[("operation", "operation")],
        fixed: &[("status", "success"), ("sync_type", "user_update")],
        millis: false,
    },
    Alias {
        from: "herald_sync_duration_seconds",
        only: None,
        to: "sync.duration",
        tags: &[("operation", "operation"), ("status", "status")],
        fixed: &[],
        millis: true,
    },
    Alias {
        from: "herald_sync_errors_total",
        only: None,
        to: "sync.errors",
        tags: &[("operation", "operation"), ("reason", "reason")],
        fixed: &[],
        millis: false,
    },
    Alias {
        from: "herald_notifications_created_total",
        only: None,
        to: "notification.created",
        tags: &[],
        fixed: &[("status", "success")],
        millis: false,
    },
];

/// The NestJS name and tags of `key`, when it has one, and whether its values are to be scaled to ms.
fn alias(key: &Key) -> Option<(Key, bool)> {
    let label = |name: &str| key.labels().find(|l| l.key() == name).map(|l| l.value().to_owned());
    let alias = ALIASES
        .iter()
        .find(|a| a.from == key.name() && a.only.is_none_or(|(name, value)| label(name).as_deref() == Some(value)))?;
    let mut labels: Vec<Label> =
        alias.tags.iter().filter_map(|(from, to)| label(from).map(|value| Label::new(*to, value))).collect();
    labels.extend(alias.fixed.iter().map(|(name, value)| Label::new(*name, *value)));
    Some((Key::from_parts(alias.to, labels), alias.millis))
}

/// The layer: wraps the DogStatsD recorder.
pub struct NestNames<R>(pub R);

struct Millis(Histogram);

impl HistogramFn for Millis {
    fn record(&self, value: f64) {
        self.0.record(value * 1000.0);
    }
}

impl<R: Recorder> Recorder for NestNames<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match alias(key) {
            Some((nest, _)) => self.0.register_counter(&nest, metadata),
            None => self.0.register_counter(key, metadata),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match alias(key) {
            Some((nest, true)) => Histogram::from_arc(Arc::new(Millis(self.0.register_histogram(&nest, metadata)))),
            Some((nest, false)) => self.0.register_histogram(&nest, metadata),
            None => self.0.register_histogram(key, metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, *v)).collect::<Vec<_>>())
    }

    fn tags(key: &Key) -> Vec<(String, String)> {
        let mut tags: Vec<_> = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        tags.sort();
        tags
    }

    #[test]
    fn the_nestjs_names_and_tags_replace_heralds() {
        let (sent, millis) = alias(&key("herald_emails_sent_total", &[("type", "create-account")])).unwrap();
        assert_eq!((sent.name(), millis), ("email.sent", false));
        assert_eq!(tags(&sent), [("email_type".into(), "create-account".into()), ("status".into(), "success".into())]);
        let (used, _) = alias(&key("herald_email_template_renders_total", &[("type", "welcome-message")])).unwrap();
        assert_eq!(
            tags(&used),
            [("email_type".into(), "welcome-message".into()), ("template".into(), "welcome-message".into())]
        );
        let (duration, millis) = alias(&key("herald_amqp_processing_seconds", &[("queue", "email_queue")])).unwrap();
        assert_eq!((duration.name(), millis), ("queue.message.processing.duration", true));
        assert_eq!(tags(&duration), [("queue_name".into(), "email_queue".into())]);
        let consumed = key("herald_amqp_messages_total", &[("queue", "q"), ("outcome", "consumed")]);
        assert_eq!(alias(&consumed).unwrap().0.name(), "queue.message.consumed");
        let acked = key("herald_amqp_messages_total", &[("queue", "q"), ("outcome", "acked")]);
        assert!(alias(&acked).is_none(), "no NestJS name: sent as Herald's");
        assert!(alias(&key("herald_connections_open", &[])).is_none());
        let created = key("herald_sync_users_total", &[("operation", "updateUser"), ("result", "created_by_update")]);
        let (nest, _) = alias(&created).unwrap();
        assert_eq!(nest.name(), "sync.user.created");
        assert_eq!(
            tags(&nest),
            [
                ("operation".into(), "updateUser".into()),
                ("status".into(), "success".into()),
                ("sync_type".into(), "user_creation".into())
            ]
        );
        let same = key("herald_sync_users_total", &[("operation", "createUser"), ("result", "already_exists")]);
        assert!(alias(&same).is_none(), "the original had no name for it");
    }
}
