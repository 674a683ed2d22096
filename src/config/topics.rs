//! The `[topics]` section: per-namespace policies (lifecycle, TTL, history, public, Redis mirror), the
//! subscription limit, and the route aliases that serve a design's own URLs (`/api/orders/status/{id}`).
//!
//! The built-in `intent` and `order` namespaces are always there; a `[topics.namespaces.<name>]` table
//! changes the keys it sets, and `lifecycle = "none"` removes a built-in lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::topics::namespace::{Policy, MAX_HISTORY_EVENTS};
use crate::topics::{Lifecycle, Namespaces};

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsLayer {
    /// Topics one `/ws` connection may watch at once (default 64).
    pub max_per_connection: Option<usize>,
    pub namespaces: Option<BTreeMap<String, NamespaceLayer>>,
    /// Replaces the default alias (the order-streaming design's URLs) when given; `[]` for none.
    pub routes: Option<Vec<RouteLayer>>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceLayer {
    pub lifecycle: Option<LifecycleLayer>,
    pub ttl_secs: Option<u64>,
    pub history_events: Option<usize>,
    pub history_secs: Option<u64>,
    pub public: Option<bool>,
    pub redis_key: Option<String>,
    pub redis_ttl_secs: Option<u64>,
}

/// `"intent"`, `"order"`, `"none"`, or `{ initial = [...], next = { status = [...] } }`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum LifecycleLayer {
    Named(String),
    Custom { initial: Vec<String>, next: BTreeMap<String, Vec<String>> },
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLayer {
    /// The WebSocket path, with `{id}` for the topic id, e.g. `/api/orders/status/{id}`. A plain GET (no
    /// upgrade) on it answers the topic's state, as the design's REST poll does.
    pub ws: String,
    /// Another path answering the state, e.g. `/api/orders/{id}`.
    pub state: Option<String>,
    pub namespace: String,
    /// The key that names the id in every frame, e.g. `orderId`.
    pub id_key: String,
    /// What the `connection` frame's message says.
    pub label: Option<String>,
}

/// A route alias, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAlias {
    pub ws: String,
    pub state: Option<String>,
    pub namespace: String,
    pub id_key: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct TopicSettings {
    pub max_per_connection: usize,
    pub namespaces: Namespaces,
    pub routes: Vec<RouteAlias>,
}

impl Default for TopicSettings {
    fn default() -> Self {
        resolve(TopicsLayer::default()).unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

/// The order-streaming design's URLs.
fn default_routes() -> Vec<RouteLayer> {
    vec![RouteLayer {
        ws: "/api/orders/status/{id}".into(),
        state: Some("/api/orders/{id}".into()),
        namespace: "order".into(),
        id_key: "orderId".into(),
        label: Some("order".into()),
    }]
}

const RESERVED_PREFIXES: &[&str] = &["/", "/inbox", "/api/v1", "/ws", "/health", "/metrics", "/graphql"];

fn check_path(path: &str) -> Result<(), ConfigError> {
    let ok = path.starts_with('/')
        && path.matches("{id}").count() == 1
        && !path.contains("//")
        && path.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.{}".contains(c))
        && path.replace("{id}", "").chars().all(|c| c != '{' && c != '}');
    if !ok {
        return Err(invalid("topics.routes", format!("{path:?} must start with / and hold {{id}} exactly once")));
    }
    if RESERVED_PREFIXES.iter().any(|p| path == *p || path.starts_with(&format!("{p}/"))) {
        return Err(invalid("topics.routes", format!("{path:?} would shadow one of Herald's own routes")));
    }
    Ok(())
}

fn lifecycle(name: &str, layer: LifecycleLayer) -> Result<Option<Lifecycle>, ConfigError> {
    match layer {
        LifecycleLayer::Named(named) => match named.as_str() {
            "intent" => Ok(Some(Lifecycle::intent())),
            "order" => Ok(Some(Lifecycle::order())),
            "none" => Ok(None),
            other => Err(invalid(
                "topics.namespaces",
                format!("{name}: lifecycle {other:?} is not intent, order, none or a table"),
            )),
        },
        LifecycleLayer::Custom { initial, next } => {
            if initial.is_empty() {
                return Err(invalid("topics.namespaces", format!("{name}: a lifecycle needs an initial status")));
            }
            let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
            Ok(Some(Lifecycle {
                initial: set(initial),
                next: next.into_iter().map(|(from, to)| (from, set(to))).collect(),
            }))
        }
    }
}

fn positive(name: &str, key: &str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 {
        return Err(invalid("topics.namespaces", format!("{name}: {key} must be at least 1")));
    }
    Ok(Duration::from_secs(secs))
}

fn policy(name: &str, base: Policy, layer: NamespaceLayer) -> Result<Policy, ConfigError> {
    let mut p = base;
    if let Some(l) = layer.lifecycle {
        p.lifecycle = lifecycle(name, l)?;
    }
    if let Some(secs) = layer.ttl_secs {
        p.ttl = positive(name, "ttl_secs", secs)?;
        if layer.history_secs.is_none() {
            p.history_age = p.ttl;
        }
    }
    if let Some(secs) = layer.history_secs {
        p.history_age = positive(name, "history_secs", secs)?;
    }
    if let Some(n) = layer.history_events {
        if n > MAX_HISTORY_EVENTS {
            return Err(invalid(
                "topics.namespaces",
                format!("{name}: history_events is at most {MAX_HISTORY_EVENTS}"),
            ));
        }
        p.history_events = n;
    }
    if let Some(public) = layer.public {
        p.public = public;
    }
    if let Some(key) = layer.redis_key {
        p.redis_key = if key.is_empty() { None } else { Some(key) };
    }
    if let Some(secs) = layer.redis_ttl_secs {
        p.redis_ttl = positive(name, "redis_ttl_secs", secs)?;
    }
    Ok(p)
}

pub fn resolve(layer: TopicsLayer) -> Result<TopicSettings, ConfigError> {
    let max_per_connection = layer.max_per_connection.unwrap_or(64);
    if max_per_connection == 0 || max_per_connection > 10_000 {
        return Err(invalid("topics.max_per_connection", "must be 1..=10000"));
    }
    let mut configured: HashMap<String, Policy> = Namespaces::built_in();
    let mut default = Policy::default();
    for (name, ns) in layer.namespaces.unwrap_or_default() {
        if name == "*" {
            default = policy(&name, default, ns)?;
            continue;
        }
        crate::topics::TopicName::from_parts(&name, "x")
            .map_err(|_| invalid("topics.namespaces", format!("{name:?} is not a valid namespace")))?;
        let base = configured.remove(&name).unwrap_or_default();
        configured.insert(name.clone(), policy(&name, base, ns)?);
    }
    let mut routes = Vec::new();
    let mut shapes = BTreeSet::new();
    for route in layer.routes.unwrap_or_else(default_routes) {
        check_path(&route.ws)?;
        let mut paths = vec![route.ws.clone()];
        if let Some(state) = &route.state {
            check_path(state)?;
            paths.push(state.clone());
        }
        for path in paths {
            if !shapes.insert(path.replace("{id}", "{}")) {
                return Err(invalid("topics.routes", format!("{path:?} is routed twice")));
            }
        }
        crate::topics::TopicName::from_parts(&route.namespace, "x")
            .map_err(|_| invalid("topics.routes", format!("{:?} is not a valid namespace", route.namespace)))?;
        if route.id_key.is_empty() || route.id_key.len() > 64 {
            return Err(invalid("topics.routes", "id_key must be 1..=64 characters"));
        }
        let label = route.label.unwrap_or_else(|| route.namespace.clone());
        routes.push(RouteAlias {
            ws: route.ws,
            state: route.state,
            namespace: route.namespace,
            id_key: route.id_key,
            label,
        });
    }
    Ok(TopicSettings { max_per_connection, namespaces: Namespaces::new(configured, default), routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TopicSettings, ConfigError> {
        #[derive(Deserialize)]
        struct Wrap {
            topics: TopicsLayer,
        }
        resolve(toml::from_str::<Wrap>(text).map_err(|e| invalid("topics", e.to_string()))?.topics)
    }

    #[test]
    fn built_ins_and_the_order_alias_are_there_by_default() {
        let s = TopicSettings::default();
        assert_eq!(s.namespaces.policy("intent").lifecycle, Some(Lifecycle::intent()));
        assert_eq!(s.namespaces.policy("order").lifecycle, Some(Lifecycle::order()));
        assert_eq!(s.namespaces.policy("other").lifecycle, None);
        assert_eq!(s.routes[0].ws, "/api/orders/status/{id}");
    }

    #[test]
    fn namespaces_change_what_they_set() {
        let s = parse(
            r#"
            [topics.namespaces.intent]
            ttl_secs = 60
            [topics.namespaces.order]
            lifecycle = "none"
            public = true
            [topics.namespaces.job]
            lifecycle = { initial = ["queued"], next = { queued = ["done"] } }
            history_events = 5
            "#,
        )
        .unwrap();
        let intent = s.namespaces.policy("intent");
        assert_eq!((intent.ttl, intent.history_age), (Duration::from_secs(60), Duration::from_secs(60)));
        assert!(intent.lifecycle.is_some() && intent.redis_key.is_some());
        assert!(s.namespaces.policy("order").lifecycle.is_none() && s.namespaces.policy("order").public);
        assert_eq!(s.namespaces.policy("job").history_events, 5);
    }

    #[test]
    fn bad_topics_config_is_refused() {
        for bad in [
            "[topics]\nmax_per_connection = 0",
            "[topics.namespaces.x]\nlifecycle = \"dance\"",
            "[topics.namespaces.x]\nttl_secs = 0",
            "[topics.namespaces.X]\npublic = true",
            "[[topics.routes]]\nws = \"/ws/{id}\"\nnamespace = \"order\"\nid_key = \"orderId\"",
            "[[topics.routes]]\nws = \"/orders\"\nnamespace = \"order\"\nid_key = \"orderId\"",
            "[[topics.routes]]\nws = \"/o/{id}\"\nstate = \"/o/{id}\"\nnamespace = \"order\"\nid_key = \"orderId\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
