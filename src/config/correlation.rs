//! Where the chain-event consumer looks for the intent a transaction belongs to, besides the correlations
//! publishers register: a query in the producer's own PostgreSQL (`correlation_database_url`,
//! `correlation_query`), as the minting system's worker does, and the namespace of the topics it names
//! (`correlation_namespace`, `intent`: the topic is `intent:{id}`).

use std::collections::BTreeSet;

use super::{invalid, ConfigError, Secret};
use crate::topics::TopicName;

/// The namespace of the topics a lookup's ids name, unless configured.
pub const DEFAULT_NAMESPACE: &str = "intent";

/// The lookup in the producer's database, checked.
#[derive(Debug, Clone)]
pub struct LookupSettings {
    /// A `postgres://` URL; it may hold a password (log it only through `config::amqp::redact_url`).
    pub url: Secret,
    /// Run as given, as a prepared statement: `$1` chain id (bigint), `$2` tx hash (text), `$3` kind (text);
    /// one row of one column, the intent id.
    pub query: String,
    /// The highest placeholder the query uses (2 or 3): that many values are bound.
    pub params: usize,
}

#[derive(Debug, Clone)]
pub struct CorrelationSettings {
    pub namespace: String,
    pub lookup: Option<LookupSettings>,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self { namespace: DEFAULT_NAMESPACE.to_owned(), lookup: None }
    }
}

/// Checks the three keys together: the URL and the query come as a pair.
pub fn resolve(
    url: Option<String>,
    query: Option<String>,
    namespace: Option<String>,
) -> Result<CorrelationSettings, ConfigError> {
    let namespace = namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if let Err(e) = TopicName::from_parts(&namespace, "1") {
        return Err(invalid("correlation_namespace", e.reason));
    }
    let url = url.filter(|u| !u.trim().is_empty());
    let query = query.filter(|q| !q.trim().is_empty());
    let lookup = match (url, query) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "correlation_query",
                "correlation_database_url is set, so a query is needed too, e.g. SELECT intent_id FROM tx_intents \
                 WHERE chain_id = $1 AND tx_hash = $2 AND kind = $3",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "correlation_database_url",
                "correlation_query is set, so the database URL is needed too",
            ))
        }
        (Some(url), Some(query)) => {
            let url = check_url("correlation_database_url", url)?;
            let params = check_query(&query).map_err(|m| invalid("correlation_query", m))?;
            Some(LookupSettings { url, query, params })
        }
    };
    Ok(CorrelationSettings { namespace, lookup })
}

/// A `postgres://` URL the client can read, for setting `key`. Messages never repeat the URL: it may hold a
/// password.
pub(super) fn check_url(key: &'static str, url: String) -> Result<Secret, ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(key, "expected a URL like postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"));
    }
    if ["sslmode=require", "sslmode=verify-ca", "sslmode=verify-full"].iter().any(|m| url.contains(m)) {
        return Err(invalid(key, "this build has no TLS for PostgreSQL: use sslmode=disable or prefer (over a private network or a TLS tunnel)"));
    }
    if url.parse::<sqlx::postgres::PgConnectOptions>().is_err() {
        return Err(invalid(key, "not a valid PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"));
    }
    Ok(Secret::new(url))
}

/// The placeholders a query uses must include `$2` (the hash: without it nothing is matched) and go no
/// higher than `$3`. Returns the highest used.
fn check_query(query: &str) -> Result<usize, String> {
    let used = placeholders(query);
    if let Some(high) = used.iter().find(|n| **n > 3 || **n == 0) {
        return Err(format!("${high} has no value: the query gets $1 (chain id), $2 (tx hash) and $3 (kind)"));
    }
    if !used.contains(&2) {
        return Err(
            "the query must use $2, the transaction hash (and usually $1, the chain id, and $3, the kind)".into()
        );
    }
    Ok(used.last().copied().unwrap_or(2))
}

/// The numbers of the `$N` placeholders in a query, in order.
fn placeholders(query: &str) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            found.insert(n);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "SELECT intent_id FROM tx_intents WHERE chain_id = $1 AND tx_hash = $2 AND kind = $3";

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn the_lookup_needs_a_url_and_a_query_together() {
        let none = resolve(None, None, None).unwrap();
        assert!(none.lookup.is_none());
        assert_eq!(none.namespace, "intent");
        let s = resolve(some("postgres://herald:hunter2-pw@db:5432/orchestrator"), some(QUERY), some("mint")).unwrap();
        let lookup = s.lookup.unwrap();
        assert_eq!((lookup.params, s.namespace.as_str()), (3, "mint"));
        assert!(!format!("{lookup:?}").contains("hunter2"));
        let no_query = resolve(some("postgres://db/x"), None, None).unwrap_err().to_string();
        assert!(no_query.contains("HERALD_CORRELATION_QUERY"), "{no_query}");
        let no_url = resolve(None, some(QUERY), None).unwrap_err().to_string();
        assert!(no_url.contains("HERALD_CORRELATION_DATABASE_URL"), "{no_url}");
    }

    #[test]
    fn bad_urls_queries_and_namespaces_are_named_without_the_password() {
        for bad in
            ["mysql://u:hunter2@db/x", "postgres://u:hunter2@db:port/x", "postgres://u:hunter2@db/x?sslmode=require"]
        {
            let err = resolve(some(bad), some(QUERY), None).unwrap_err().to_string();
            assert!(err.contains("correlation_database_url") && !err.contains("hunter2"), "{bad}: {err}");
        }
        for bad in ["SELECT 1", "SELECT id FROM t WHERE a = $1", "SELECT id FROM t WHERE h = $2 AND x = $4"] {
            let err = resolve(some("postgres://db/x"), some(bad), None).unwrap_err().to_string();
            assert!(err.contains("correlation_query"), "{bad}: {err}");
        }
        let two = resolve(some("postgres://db/x"), some("SELECT id FROM t WHERE c = $1 AND h = $2"), None).unwrap();
        assert_eq!(two.lookup.unwrap().params, 2);
        let err = resolve(None, None, some("Intent")).unwrap_err().to_string();
        assert!(err.contains("HERALD_CORRELATION_NAMESPACE"), "{err}");
    }
}
