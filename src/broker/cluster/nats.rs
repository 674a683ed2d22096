//! The cluster broker's link to NATS: core NATS subjects over one client connection (`async-nats`), which
//! reconnects by itself and subscribes again to every live subscription before sending anything else.
//!
//! No JetStream: what a node missed while away is found by the audit (see the module above), from the store,
//! so nothing needs keeping in the broker.
//!
//! - **Subjects**: `herald.<cluster>.control`, `herald.<cluster>.node.<node>`,
//!   `herald.<cluster>.user.<user>` and `herald.<cluster>.topic.<topic>`, the user id or topic escaped (`%XX` for every byte but letters, digits, `-` and
//!   `_`), so that no user id can name a wildcard or another subject.
//! - **When a subscription is active.** A `SUB` is only sent; NATS does not acknowledge it. The server reads a
//!   connection's commands in order, so once a marker this node publishes to its own barrier subject after
//!   its `SUB`s comes back, the server has them all (the *barrier*). `subscribe` returns after it, and
//!   [`Incoming::Up`] is reported after it on every (re)connect. On a NATS cluster the interest reaches the
//!   other servers shortly after; an event missed in that moment is caught as a gap.
//! - **Connection events can be missed** (the client drops them when its event queue is full), so a tick
//!   every second also compares the client's state and its count of connects with what was last reported.
//! - **Publishing** counts as done only once a barrier after the batch came back: the client answers a publish
//!   once it is queued, and a connection lost with it queued loses it. A batch whose barrier fails is sent
//!   again (the receivers drop repeats by `seq`); a message over the server's payload limit is dropped alone
//!   (and every node audits).
//! - **While NATS is away** a subscription is only recorded, and made on the next connect, before its barrier.
//! - **A subscription dropping messages** (a slow consumer) or a server error reports [`Incoming::Lost`]:
//!   every user here is checked against the store.
//! - Credentials come from the URL's user part, decoded, and go to the client only as options (the client
//!   logs the address it connects to at debug level).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{Channel, Incoming, Link};
use crate::broker::BrokerError;
use crate::config::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a batch of publishes, a subscribe, or a barrier may take before the link is taken to be away.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages a subscription holds before NATS's client drops them (and reports a slow consumer).
const SUBSCRIPTION_CAPACITY: usize = 256;
/// How often the link compares the client's state with what it last reported.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Subscriptions {
    /// Subjects subscribed on the client, each with what stops its forwarding task.
    live: HashMap<String, CancellationToken>,
    /// Subjects wanted while the client was away: subscribed at the next connect.
    pending: HashSet<String>,
    /// Whether the client was connected when the link last looked (set before the connect's barrier).
    connected: bool,
}

pub struct NatsLink {
    client: Client,
    prefix: String,
    barrier_subject: async_nats::Subject,
    /// This node's own barrier subscription; one barrier at a time.
    barrier: Mutex<Subscriber>,
    /// Markers start with this start's nonce: another process with the same node id cannot answer them.
    nonce: u64,
    next_marker: AtomicU64,
    subscriptions: Mutex<Subscriptions>,
    incoming: mpsc::Sender<Incoming>,
    up: AtomicBool,
    /// Asks the follower to run a barrier and report up again (one after a subscribe failed).
    recheck: Notify,
    /// A `Lost` was reported within the current check interval (a slow consumer reports every drop).
    lost_reported: AtomicBool,
    closing: CancellationToken,
}

impl NatsLink {
    /// Starts the link: the client connects (and reconnects) in the background, reporting to `incoming`.
    /// Fails only on a URL the client refuses; an unreachable NATS is reported as down.
    pub async fn start(
        url: &Secret,
        cluster: &str,
        node: &str,
        always: &[Channel],
        incoming: mpsc::Sender<Incoming>,
        closing: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let (addr, credentials) = server(url)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let options = match credentials {
            Credentials::UserPassword(user, password) => ConnectOptions::with_user_and_password(user, password),
            Credentials::Token(token) => ConnectOptions::with_token(token),
            Credentials::None => ConnectOptions::new(),
        }
        .name(format!("herald {cluster}/{node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_EVERY)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6) as u64)).min(Duration::from_secs(5))
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
        let client = options.connect(addr).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let prefix = format!("herald.{cluster}.");
        let barrier_subject = async_nats::Subject::from(format!("{prefix}barrier.{node}"));
        let barrier =
            client.subscribe(barrier_subject.clone()).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let link = Arc::new(Self {
            client,
            prefix,
            barrier_subject,
            barrier: Mutex::new(barrier),
            nonce: rand::random(),
            next_marker: AtomicU64::new(1),
            subscriptions: Mutex::new(Subscriptions::default()),
            incoming,
            up: AtomicBool::new(false),
            recheck: Notify::new(),
            lost_reported: AtomicBool::new(false),
            closing,
        });
        {
            // Made at the first connect, before its barrier.
            let subjects: Vec<String> = always.iter().map(|c| link.subject(c)).collect();
            link.subscriptions.lock().await.pending.extend(subjects);
        }
        tokio::spawn(link.clone().follow(events_rx));
        Ok(link)
    }

    fn subject(&self, channel: &Channel) -> String {
        let mut subject = self.prefix.clone();
        match channel {
            Channel::Control => subject.push_str("control"),
            Channel::Node(node) => {
                subject.push_str("node.");
                escape_into(&mut subject, node);
            }
            Channel::User(user) => {
                subject.push_str("user.");
                escape_into(&mut subject, user.as_str());
            }
            Channel::Topic(topic) => {
                subject.push_str("topic.");
                escape_into(&mut subject, topic.as_str());
            }
        }
        subject
    }

    async fn report(&self, report: Incoming) {
        let _ = self.incoming.send(report).await;
    }

    fn lost(&self) -> bool {
        !self.lost_reported.swap(true, Ordering::Relaxed)
    }

    /// Follows the client: up (after subscribing what is pending, and a barrier) on each connect, down on
    /// each loss, lost on dropped messages; and every [`CHECK_EVERY`], the same from the client's state, for
    /// the events the client could not queue.
    async fn follow(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut check = tokio::time::interval(CHECK_EVERY);
        // The client's count of connects when up was last reported.
        let mut reported_connects = 0;
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return,
                event = events.recv() => match event {
                    Some(Event::Connected) => self.establish(&mut reported_connects).await,
                    Some(Event::Disconnected) => self.went_down().await,
                    Some(Event::SlowConsumer(_)) => {
                        if self.lost() {
                            tracing::warn!("this node read too slowly from NATS, which dropped messages; checking its users");
                            self.report(Incoming::Lost).await;
                        }
                    }
                    Some(Event::ServerError(e)) => {
                        tracing::warn!(error = %e, "NATS reported an error; checking this node's users");
                        if self.lost() {
                            self.report(Incoming::Lost).await;
                        }
                    }
                    Some(other) => tracing::debug!(event = %other, "NATS client event"),
                    None => return,
                },
                _ = check.tick() => {
                    self.lost_reported.store(false, Ordering::Relaxed);
                    let connected = self.client.connection_state() == State::Connected;
                    let connects = self.client.statistics().connects.load(Ordering::Relaxed);
                    if connected && (!self.up.load(Ordering::Relaxed) || connects != reported_connects) {
                        self.establish(&mut reported_connects).await;
                    } else if !connected && self.up.load(Ordering::Relaxed) {
                        self.went_down().await;
                    }
                }
                () = self.recheck.notified() => self.establish(&mut reported_connects).await,
            }
        }
    }

    /// On a connect: subscribes what was wanted meanwhile, runs a barrier, reports up. A barrier that fails
    /// leaves the link down; the next check tries again.
    async fn establish(&self, reported_connects: &mut u64) {
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        if self.client.connection_state() != State::Connected {
            return;
        }
        let subscribed = {
            let mut subscriptions = self.subscriptions.lock().await;
            subscriptions.connected = true;
            let pending: Vec<String> = subscriptions.pending.drain().collect();
            self.add(&mut subscriptions, pending).await;
            subscriptions.connected
        };
        if !subscribed {
            // Gone again while subscribing: the next check tries again.
            self.up.store(false, Ordering::Relaxed);
            return;
        }
        match self.barrier().await {
            Ok(()) => {
                *reported_connects = connects;
                self.up.store(true, Ordering::Relaxed);
                self.report(Incoming::Up).await;
            }
            Err(e) => {
                tracing::warn!(error = e, "connected to the cluster broker (NATS), but it did not answer; retrying");
                self.up.store(false, Ordering::Relaxed);
            }
        }
    }

    async fn went_down(&self) {
        tracing::warn!("lost the cluster broker (NATS); reconnecting");
        self.up.store(false, Ordering::Relaxed);
        self.subscriptions.lock().await.connected = false;
        self.report(Incoming::Down).await;
    }

    /// Publishes a marker to this node's barrier subject and waits for it to come back: then the server has
    /// every command this client sent before it.
    async fn barrier(&self) -> Result<(), String> {
        let mut barrier = self.barrier.lock().await;
        let marker = format!("{:016x}-{}", self.nonce, self.next_marker.fetch_add(1, Ordering::Relaxed));
        let wait = async {
            self.client
                .publish(self.barrier_subject.clone(), Bytes::from(marker.clone()))
                .await
                .map_err(|e| e.to_string())?;
            while let Some(message) = barrier.next().await {
                // Markers of an earlier barrier that timed out are passed over.
                if message.payload == marker.as_bytes() {
                    return Ok(());
                }
            }
            Err("the client closed".to_owned())
        };
        tokio::time::timeout(SEND_TIMEOUT, wait).await.map_err(|_| "NATS did not answer in time".to_owned())?
    }

    /// Sends a `SUB` for each subject not yet subscribed, each read by a task of its own. One that cannot be
    /// sent in time (the client is away after all) waits, with the rest, for the next connect.
    async fn add(&self, subscriptions: &mut Subscriptions, subjects: Vec<String>) {
        let mut subjects = subjects.into_iter();
        while let Some(subject) = subjects.next() {
            if subscriptions.live.contains_key(&subject) {
                continue;
            }
            match tokio::time::timeout(SEND_TIMEOUT, self.client.subscribe(subject.clone())).await {
                Ok(Ok(subscriber)) => {
                    let stop = self.closing.child_token();
                    tokio::spawn(forward(subscriber, self.incoming.clone(), stop.clone()));
                    subscriptions.live.insert(subject, stop);
                }
                failed => {
                    if let Ok(Err(e)) = failed {
                        tracing::warn!(error = %e, "could not subscribe on NATS");
                    }
                    subscriptions.connected = false;
                    subscriptions.pending.insert(subject);
                    subscriptions.pending.extend(subjects);
                    return;
                }
            }
        }
    }
}

/// How the URL's user part authenticates.
enum Credentials {
    None,
    Token(String),
    UserPassword(String, String),
}

/// The server's address without its user part, and the credentials that part held, percent-decoded.
fn server(url: &Secret) -> Result<(ServerAddr, Credentials), BrokerError> {
    let invalid = |what: &str| BrokerError::Unavailable(format!("the NATS URL is not valid: {what}"));
    let mut parsed = url::Url::parse(url.expose()).map_err(|e| invalid(&e.to_string()))?;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| invalid("its user part is not UTF-8"))
    };
    let user = decode(parsed.username())?;
    let password = parsed.password().map(decode).transpose()?;
    let credentials = match (user.is_empty(), password) {
        (true, None) => Credentials::None,
        (false, None) => Credentials::Token(user),
        (_, Some(password)) => Credentials::UserPassword(user, password),
    };
    parsed.set_username("").map_err(|()| invalid("it has no host"))?;
    parsed.set_password(None).map_err(|()| invalid("it has no host"))?;
    let addr = ServerAddr::from_url(parsed).map_err(|e| invalid(&e.to_string()))?;
    Ok((addr, credentials))
}

/// Hands a subscription's messages on until told to stop; dropping the subscriber unsubscribes.
async fn forward(mut subscriber: Subscriber, incoming: mpsc::Sender<Incoming>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            message = subscriber.next() => match message {
                Some(message) => {
                    if incoming.send(Incoming::Message(message.payload)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

/// Appends `word` as one subject token: letters, digits, `-` and `_` as they are, every other byte `%XX`.
fn escape_into(subject: &mut String, word: &str) {
    for byte in word.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            subject.push(char::from(byte));
        } else {
            let _ = write!(subject, "%{byte:02X}");
        }
    }
}

#[async_trait]
impl Link for NatsLink {
    async fn publish(&self, messages: &[(Channel, Bytes)]) -> Result<usize, BrokerError> {
        // While the client reconnects its queue only grows: the cluster keeps the messages and retries.
        if self.client.connection_state() != State::Connected {
            return Err(BrokerError::Unavailable("NATS is away".into()));
        }
        let max = self.client.max_payload();
        let mut dropped = 0;
        let send = async {
            for (channel, payload) in messages {
                let subject = self.subject(channel);
                if payload.len() + subject.len() > max {
                    tracing::warn!(bytes = payload.len(), max, "a message is over NATS's payload limit; dropped");
                    dropped += 1;
                    continue;
                }
                self.client
                    .publish(subject, payload.clone())
                    .await
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
            }
            Ok::<(), BrokerError>(())
        };
        tokio::time::timeout(SEND_TIMEOUT, send)
            .await
            .map_err(|_| BrokerError::Unavailable("publishing to NATS timed out".into()))??;
        // Sent only once the server has it: a connection lost with the batch queued loses it.
        self.barrier().await.map_err(BrokerError::Unavailable)?;
        Ok(dropped)
    }

    async fn subscribe(&self, channels: &[Channel]) {
        let subjects: Vec<String> = channels.iter().map(|c| self.subject(c)).collect();
        let subscribed = {
            let mut subscriptions = self.subscriptions.lock().await;
            if !subscriptions.connected {
                // Made at the next connect, before the barrier that reports up.
                subscriptions.pending.extend(subjects);
                return;
            }
            self.add(&mut subscriptions, subjects).await;
            subscriptions.connected
        };
        let barrier = if subscribed { self.barrier().await } else { Err("a subscribe timed out".to_owned()) };
        if let Err(e) = barrier {
            // Not sure the subscriptions are active: down now, and up after a barrier that passes.
            tracing::warn!(error = e, "no barrier after subscribing on NATS; checking again");
            if self.up.swap(false, Ordering::Relaxed) {
                self.report(Incoming::Down).await;
            }
            self.recheck.notify_one();
        }
    }

    async fn unsubscribe(&self, channels: &[Channel]) {
        let mut subscriptions = self.subscriptions.lock().await;
        for channel in channels {
            let subject = self.subject(channel);
            subscriptions.pending.remove(&subject);
            if let Some(stop) = subscriptions.live.remove(&subject) {
                stop.cancel();
            }
        }
    }

    fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed) && self.client.connection_state() == State::Connected
    }

    fn backend(&self) -> &'static str {
        "nats"
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_into, server, Credentials};
    use crate::config::Secret;

    #[test]
    fn credentials_are_decoded_and_kept_out_of_the_address() {
        let (addr, credentials) = server(&Secret::new("nats://tok%3Den%3D%3D@10.0.0.1:4222")).unwrap();
        assert!(matches!(credentials, Credentials::Token(t) if t == "tok=en=="));
        assert!(!format!("{addr:?}").contains("tok"), "{addr:?}");
        let (addr, credentials) = server(&Secret::new("nats://herald:p%3Dss%3Bw@h:4222")).unwrap();
        assert!(matches!(credentials, Credentials::UserPassword(u, p) if u == "herald" && p == "p=ss;w"));
        assert!(!format!("{addr:?}").contains("p%3Dss"), "{addr:?}");
        assert!(matches!(server(&Secret::new("nats://h:4222")).unwrap().1, Credentials::None));
    }

    fn escaped(word: &str) -> String {
        let mut subject = String::new();
        escape_into(&mut subject, word);
        subject
    }

    #[test]
    fn user_ids_become_one_plain_token() {
        assert_eq!(escaped("alice-1_B"), "alice-1_B");
        assert_eq!(escaped("a.b"), "a%2Eb");
        assert_eq!(escaped("*"), "%2A");
        assert_eq!(escaped(">"), "%3E");
        assert_eq!(escaped("a b"), "a%20b");
        assert_eq!(escaped("%2E"), "%252E");
        assert_eq!(escaped("é"), "%C3%A9");
    }
}
