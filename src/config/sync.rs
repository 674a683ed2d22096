//! The user-sync worker's settings: the graph database (`graph_url`, `HERALD_GRAPH_URL`: `redis://host:port`
//! of a FalkorDB server; `graph_name`, `HERALD_GRAPH_NAME`, default `social`) and where each profile field
//! is read from in a user document (`[sync.fields]`, or `HERALD_SYNC_FIELDS=username=handle,role=kind`).
//! The worker runs when both the graph URL and the AMQP URL are set.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{invalid, ConfigError, Layer, Secret};
use crate::workers::sync::user::FieldMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncLayer {
    /// Profile field → document path (a key, or a dotted path into nested objects).
    pub fields: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `redis://host:port` (it may hold a password).
    pub graph_url: Secret,
    pub graph_name: String,
    pub fields: FieldMap,
}

/// Parses `HERALD_SYNC_FIELDS`: `field=path` pairs separated by commas.
pub fn parse_fields(value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut fields = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, path) = pair
            .split_once('=')
            .ok_or_else(|| invalid("sync_fields", format!("expected field=path pairs, got {pair:?}")))?;
        fields.insert(field.trim().to_owned(), path.trim().to_owned());
    }
    Ok(fields)
}

pub fn resolve(layer: &Layer) -> Result<Option<SyncSettings>, ConfigError> {
    let overrides = layer.sync.as_ref().and_then(|s| s.fields.clone()).unwrap_or_default();
    let fields = FieldMap::with(&overrides).map_err(|e| invalid("sync_fields", e))?;
    let name = layer.graph_name.clone().unwrap_or_else(|| "social".to_owned());
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
        return Err(invalid("graph_name", "expected 1 to 64 letters, digits, _ and -"));
    }
    let Some(url) = layer.graph_url.clone().filter(|u| !u.is_empty()) else { return Ok(None) };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid("graph_url", "expected redis://host:port (a FalkorDB server)"));
    }
    redis::Client::open(url.as_str()).map_err(|e| invalid("graph_url", e.to_string()))?;
    Ok(Some(SyncSettings { graph_url: Secret::new(url), graph_name: name, fields }))
}
