//! The GraphQL schema: queries and mutations over the inbox and topics, and subscriptions to topics, mint
//! intents and the user's own inbox.
//!
//! Every resolver asks who is calling ([`Caller`], put in the request's data by the transport) and checks it
//! the way the REST routes do: the inbox is the user's own; a topic is readable by a publisher key, by a
//! token whose `topics` claim grants it, or by anyone when its namespace is public.

use async_graphql::{Context, Enum, ErrorExtensions, Json, Object, Schema, SchemaBuilder, SimpleObject, ID};
use futures_util::Stream;
use serde_json::{Map, Value};

use super::streams;
use crate::auth::User;
use crate::domain::{Notification, NotificationId};
use crate::state::AppState;
use crate::store::ListQuery;
use crate::topics::{TopicName, TopicState};
use crate::transport::http::inbox::{MAX_LIMIT, MAX_OFFSET};

/// Who is calling, as the transport verified it.
#[derive(Clone)]
pub enum Caller {
    User(User),
    Publisher,
    /// No credential: only public namespaces' topics.
    Anonymous,
}

pub type HeraldSchema = Schema<Query, Mutation, Subscription>;

/// The most nested selection a query may have, and how much it may ask for: a bound on what one request
/// costs.
const MAX_DEPTH: usize = 12;
const MAX_COMPLEXITY: usize = 2_000;

/// The schema without its data (enough to print the SDL); the transport adds the state.
pub fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query, Mutation, Subscription).limit_depth(MAX_DEPTH).limit_complexity(MAX_COMPLEXITY)
}

/// `herald graphql-schema`: the SDL.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// A GraphQL error with a stable `extensions.code`, as Herald's REST codes are.
pub fn error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

pub fn caller<'a>(ctx: &'a Context<'_>) -> &'a Caller {
    ctx.data_opt::<Caller>().unwrap_or(&Caller::Anonymous)
}

pub fn state<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a AppState> {
    ctx.data::<AppState>().map_err(|_| error("internal", "the server is not ready"))
}

pub fn user<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a User> {
    match caller(ctx) {
        Caller::User(user) => Ok(user),
        Caller::Publisher => Err(error("forbidden", "a publisher key cannot read a user's inbox")),
        Caller::Anonymous => Err(error("unauthorized", "a user token is required")),
    }
}

pub fn topic_name(topic: &str) -> async_graphql::Result<TopicName> {
    TopicName::parse(topic).map_err(|e| error("invalid_request", e.to_string()))
}

/// Checks that the caller may read `topic`.
pub fn authorize_topic(ctx: &Context<'_>, topic: &TopicName) -> async_graphql::Result<()> {
    let state = state(ctx)?;
    let allowed = match caller(ctx) {
        Caller::Publisher => true,
        Caller::User(user) => state.may_watch(Some(user), topic),
        Caller::Anonymous => state.may_watch(None, topic),
    };
    if allowed {
        Ok(())
    } else {
        Err(error("forbidden", "this caller may not watch this topic"))
    }
}

fn store_error(e: crate::store::StoreError) -> async_graphql::Error {
    tracing::error!(error = %e, "a GraphQL request failed in the store");
    error("store_unavailable", "the request could not be completed; try again")
}

/// A topic's latest state.
#[derive(SimpleObject, Clone)]
pub struct Topic {
    pub topic: String,
    pub seq: u64,
    pub status: Option<String>,
    pub progress: Option<u8>,
    /// The merged `data` of every event, a JSON object.
    pub data: Json<Map<String, Value>>,
    pub updated_at: String,
    pub expires_at: String,
}

impl From<&TopicState> for Topic {
    fn from(s: &TopicState) -> Self {
        Self {
            topic: s.topic.to_string(),
            seq: s.seq,
            status: s.status.clone(),
            progress: s.progress,
            data: Json(s.data.clone()),
            updated_at: s.updated_at.to_rfc3339(),
            expires_at: s.expires_at.to_rfc3339(),
        }
    }
}

/// A mint intent's status, as the minting design's `onMintStatus` returns it: from the topic `intent:{id}`'s
/// state, whose data carries what the chain event brought.
#[derive(SimpleObject, Clone)]
pub struct MintStatus {
    pub intent_id: String,
    pub status: Option<String>,
    pub progress: Option<u8>,
    pub contract: Option<String>,
    pub token_ids: Option<Vec<String>>,
    pub tx_hash: Option<String>,
    pub chain_id: Option<i64>,
    pub error: Option<String>,
    pub seq: u64,
    pub updated_at: String,
}

fn text(data: &Map<String, Value>, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl From<&TopicState> for MintStatus {
    fn from(s: &TopicState) -> Self {
        let d = &s.data;
        let token_ids = d
            .get("tokenIds")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().map(|id| id.as_str().map_or_else(|| id.to_string(), str::to_owned)).collect());
        let chain_id = d.get("chainId").and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
        Self {
            intent_id: s.topic.id().to_owned(),
            status: s.status.clone(),
            progress: s.progress,
            contract: text(d, "contract"),
            token_ids,
            tx_hash: text(d, "txHash"),
            chain_id,
            error: text(d, "error"),
            seq: s.seq,
            updated_at: s.updated_at.to_rfc3339(),
        }
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "Notification")]
pub struct NotificationItem {
    pub id: ID,
    #[graphql(name = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub message: Option<String>,
    pub data: Json<Value>,
    pub created_at: String,
    pub delivered: bool,
    pub read: bool,
    pub read_at: Option<String>,
}

impl From<&Notification> for NotificationItem {
    fn from(n: &Notification) -> Self {
        Self {
            id: ID(n.id.to_string()),
            kind: n.kind.clone(),
            title: n.title.clone(),
            message: n.message.clone(),
            data: Json(serde_json::from_str(n.data.get()).unwrap_or(Value::Null)),
            created_at: n.created_at.to_rfc3339(),
            delivered: n.delivered,
            read: n.read,
            read_at: n.read_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(SimpleObject)]
pub struct NotificationPage {
    pub items: Vec<NotificationItem>,
    pub page: u32,
    pub limit: u32,
    pub total: u64,
    pub unread_count: u64,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum InboxChangeKind {
    /// A new notification.
    Created,
    /// Notifications were marked read (on any connection, or over REST).
    Read,
    /// Every notification was marked read.
    ReadAll,
}

/// A change to the user's inbox, as `/ws` pushes it.
#[derive(SimpleObject, Clone)]
pub struct InboxChange {
    pub kind: InboxChangeKind,
    pub notification: Option<NotificationItem>,
    pub ids: Vec<ID>,
}

pub struct Query;

#[Object]
impl Query {
    /// A topic's latest state; null when it is unknown or expired.
    async fn topic(&self, ctx: &Context<'_>, topic: String) -> async_graphql::Result<Option<Topic>> {
        let name = topic_name(&topic)?;
        authorize_topic(ctx, &name)?;
        let state = state(ctx)?.topics.state(&name).await.map_err(store_error)?;
        Ok(state.as_ref().map(Topic::from))
    }

    /// A mint intent's status (topic `intent:{intentId}`); null when unknown.
    async fn mint_status(&self, ctx: &Context<'_>, intent_id: String) -> async_graphql::Result<Option<MintStatus>> {
        let name = TopicName::from_parts("intent", &intent_id).map_err(|e| error("invalid_request", e.to_string()))?;
        authorize_topic(ctx, &name)?;
        let state = state(ctx)?.topics.state(&name).await.map_err(store_error)?;
        Ok(state.as_ref().map(MintStatus::from))
    }

    /// The caller's inbox, newest first (as `GET /api/v1/notifications`).
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] page: u32,
        #[graphql(default = 10)] limit: u32,
        #[graphql(default = false)] unread: bool,
    ) -> async_graphql::Result<NotificationPage> {
        let user = user(ctx)?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(error("invalid_query", format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        if u64::from(page) * u64::from(limit) > MAX_OFFSET {
            return Err(error("invalid_query", format!("page × limit must be at most {MAX_OFFSET}")));
        }
        let query = ListQuery { page, limit, unread_only: unread, before: None };
        let result = state(ctx)?.store.list(&user.id, query).await.map_err(store_error)?;
        Ok(NotificationPage {
            items: result.items.iter().map(NotificationItem::from).collect(),
            page,
            limit,
            total: result.total,
            unread_count: result.unread_count,
        })
    }

    async fn unread_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let user = user(ctx)?;
        state(ctx)?.store.unread_count(&user.id).await.map_err(store_error)
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Marks the caller's notifications read; returns those found (others' and unknown ids are left out).
    async fn mark_read(&self, ctx: &Context<'_>, ids: Vec<ID>) -> async_graphql::Result<Vec<NotificationItem>> {
        let user = user(ctx)?;
        if ids.is_empty() || ids.len() > crate::protocol::MAX_MARK_READ_IDS {
            return Err(error(
                "invalid_request",
                format!("ids must hold 1 to {} ids", crate::protocol::MAX_MARK_READ_IDS),
            ));
        }
        let ids = ids
            .iter()
            .map(|id| {
                NotificationId::parse(id)
                    .map_err(|_| error("invalid_request", format!("{:?} is not a notification id", id.as_str())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = state(ctx)?.mark_read(&user.id, ids).await.map_err(store_error)?;
        Ok(outcome.found.iter().map(NotificationItem::from).collect())
    }

    /// Marks every notification of the caller read; returns how many changed.
    async fn mark_all_read(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let user = user(ctx)?;
        state(ctx)?.mark_all_read(&user.id).await.map_err(store_error)
    }
}

pub struct Subscription;

#[async_graphql::Subscription]
impl Subscription {
    /// A topic's state now (when it exists), then after each event.
    async fn on_topic(
        &self,
        ctx: &Context<'_>,
        topic: String,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Topic>>> {
        let name = topic_name(&topic)?;
        authorize_topic(ctx, &name)?;
        let stream = streams::topic(state(ctx)?.clone(), name, expiry(ctx)).await?;
        Ok(futures_util::StreamExt::map(stream, |item| item.map(|s| Topic::from(&s))))
    }

    /// A mint intent's status now (when it exists), then after each change: the minting design's
    /// `onMintStatus(intentId)`.
    async fn on_mint_status(
        &self,
        ctx: &Context<'_>,
        intent_id: String,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<MintStatus>>> {
        let name = TopicName::from_parts("intent", &intent_id).map_err(|e| error("invalid_request", e.to_string()))?;
        authorize_topic(ctx, &name)?;
        let stream = streams::topic(state(ctx)?.clone(), name, expiry(ctx)).await?;
        Ok(futures_util::StreamExt::map(stream, |item| item.map(|s| MintStatus::from(&s))))
    }

    /// The caller's inbox as it changes: new notifications, and read marks from any connection.
    async fn on_notification(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<InboxChange>>> {
        let user = user(ctx)?.clone();
        streams::inbox(state(ctx)?.clone(), user)
    }
}

/// When the caller's token expires: its subscriptions end then.
fn expiry(ctx: &Context<'_>) -> Option<u64> {
    match caller(ctx) {
        Caller::User(user) => Some(user.expires_at),
        _ => None,
    }
}
