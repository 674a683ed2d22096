//! Finding the intent a chain transaction belongs to, the two ways the minting designs do it: a correlation
//! a publisher registered (`POST /api/v1/correlations`, or `correlate` inside a topic event), kept in the
//! topic store; else, when configured, a query in the producer's own PostgreSQL (`postgres.rs`), whose one
//! column is the intent id and so the topic `<correlation_namespace>:<id>`.
//!
//! Not finding one is not an error: the event may have raced ahead of the intent's registration or its
//! row, and the consumer retries it later.

pub mod postgres;

use std::sync::Arc;

use thiserror::Error;

use crate::config::CorrelationSettings;
use crate::store::topics::TopicStore;
use crate::store::StoreError;
use crate::topics::{CorrelationKey, TopicName};
pub use postgres::PostgresLookup;

/// How a topic was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Registered,
    Lookup,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Registered => "correlation",
            Via::Lookup => "lookup",
        }
    }
}

#[derive(Debug, Error)]
pub enum FindError {
    /// The topic store could not be read: try again later.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The lookup failed (PostgreSQL down, a bad query, a column of the wrong type): try again later.
    #[error("the correlation lookup failed: {0}")]
    Lookup(String),
    /// The lookup answered an id that cannot name a topic: asking again gives the same answer.
    #[error("the correlation lookup answered {id:?}, which is not a topic id: {reason}")]
    BadId { id: String, reason: String },
}

pub struct Finder {
    topics: Arc<dyn TopicStore>,
    lookup: Option<PostgresLookup>,
    namespace: String,
}

impl Finder {
    /// Builds the lookup's pool without connecting: PostgreSQL being down never stops Herald from starting.
    pub fn new(topics: Arc<dyn TopicStore>, settings: &CorrelationSettings) -> anyhow::Result<Self> {
        let lookup = settings.lookup.as_ref().map(PostgresLookup::new).transpose()?;
        Ok(Self { topics, lookup, namespace: settings.namespace.clone() })
    }

    pub fn has_lookup(&self) -> bool {
        self.lookup.is_some()
    }

    /// The topic `key` belongs to: a registered correlation first, then the lookup. `None`: not (yet) known.
    pub async fn find(&self, key: &CorrelationKey) -> Result<Option<(TopicName, Via)>, FindError> {
        if let Some(topic) = self.topics.find_correlation(key).await? {
            return Ok(Some((topic, Via::Registered)));
        }
        let Some(lookup) = &self.lookup else { return Ok(None) };
        let Some(id) = lookup.find(key).await.map_err(FindError::Lookup)? else { return Ok(None) };
        let topic = TopicName::from_parts(&self.namespace, &id)
            .map_err(|e| FindError::BadId { id: id.clone(), reason: e.reason })?;
        Ok(Some((topic, Via::Lookup)))
    }
}
