//! Broadcast mode: S subscribers on one topic, M events published to it; every subscriber
//! must receive every event exactly once.
//!
//! Herald's topic protocol, which the floor speaks too:
//! - subscribe: `GET /ws?token=JWT` (the token's `topics` claim grants the topic), then
//!   `{"type":"subscribe","topic":NAME}` → `{"type":"subscribed","topic",…}`;
//! - publish: `POST /api/v1/topics/{name}/events` with `{"type","data"}` → 201 `{"seq"}`;
//! - receive: `{"type":"event","topic":NAME,"seq":N,"event":{…,"data":{"t","seq"}}}`.
//!
//! Publishing starts only once every connected subscriber's `subscribed` has arrived.
//!
//! nchan: subscribe with `GET /sub/{channel}` (the topic's channel: its name with ':' as '-'), subscribed at
//! HTTP 101; publish with `POST /pub/{channel}`, the same body; receive the body as it was posted.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::SinkExt;
use hyper::Uri;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::fleet::{self, ShareContext};
use crate::client::frame::Item;
use crate::client::session::{self, End, Handler};
use crate::error::BenchError;
use crate::histogram::{HistogramData, ShardedHistogram};
use crate::peer::{Channel, Peer};
use crate::publish::{self, PublishError, PublishJob};
use crate::share::{DeliveryCounts, ShareReport};
use crate::workers::Control;

pub struct Job<'a> {
    pub topic: &'a str,
    /// nchan: the topic's channel.
    pub channel: Option<&'a Channel>,
    pub events: u64,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub publisher: bool,
}

/// State all subscribers of a share update.
struct Topic {
    events: u64,
    latency: ShardedHistogram,
    last_delivery_us: AtomicU64,
    /// Deliveries so far, to tell a slow drain from a stalled one.
    delivered: AtomicU64,
    /// Subscribers that have received every event.
    complete: AtomicU64,
    /// Subscribers whose subscription is confirmed.
    subscribed: AtomicU64,
    /// Per event, the subscribers that never received it; filled in as sessions end.
    missing: Box<[AtomicU32]>,
}

/// One subscriber's view: a bit per event, so duplicates and gaps are exact.
struct Subscriber {
    local: u32,
    topic: Arc<Topic>,
    seen: Vec<u64>,
    received: u64,
    counts: DeliveryCounts,
}

impl Subscriber {
    fn new(local: u32, topic: Arc<Topic>) -> Self {
        let words = topic.events.div_ceil(64) as usize;
        Self { local, topic, seen: vec![0; words], received: 0, counts: DeliveryCounts::default() }
    }

    /// Adds the events this subscriber never received to the topic's `missing` counts.
    fn settle(&self) {
        for seq in 0..self.topic.events {
            if self.seen[(seq / 64) as usize] & (1 << (seq % 64)) == 0 {
                self.topic.missing[seq as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Handler for Subscriber {
    fn item(&mut self, item: &Item<'_>, live: bool, now_us: u64) {
        let Some((seq, sent_us)) = item.stamp().filter(|&(seq, _)| seq < self.topic.events) else {
            self.counts.foreign += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.counts.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        self.counts.delivered += 1;
        if live {
            self.topic.latency.record(u64::from(self.local), now_us.saturating_sub(sent_us));
        } else {
            self.counts.backlog += 1;
        }
        self.topic.delivered.fetch_add(1, Ordering::Relaxed);
        self.topic.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
        if self.received == self.topic.events {
            self.topic.complete.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn subscribed(&mut self) {
        self.topic.subscribed.fetch_add(1, Ordering::Relaxed);
    }

    fn bad_frame(&mut self) {
        self.counts.bad_frames += 1;
    }
}

pub async fn run(ctx: &Arc<ShareContext>, job: &Job<'_>, control: &mut Control) -> Result<ShareReport, BenchError> {
    let topic = Arc::new(Topic {
        events: job.events,
        latency: ShardedHistogram::new(),
        last_delivery_us: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        complete: AtomicU64::new(0),
        subscribed: AtomicU64::new(0),
        missing: (0..job.events).map(|_| AtomicU32::new(0)).collect(),
    });
    let stop = CancellationToken::new();
    let (session_stop, session_topic) = (stop.clone(), Arc::clone(&topic));
    let subscribe: Arc<str> = format!(r#"{{"type":"subscribe","topic":"{}"}}"#, job.topic).into();
    let peer = ctx.plan.peer;
    let (fleet, connects) = fleet::launch(ctx, "", move |local, mut ws| {
        let stop = session_stop.clone();
        let mut subscriber = Subscriber::new(local, Arc::clone(&session_topic));
        let subscribe = Arc::clone(&subscribe);
        async move {
            let sent = match peer {
                Peer::Herald => ws.send(Message::text(subscribe.as_ref())).await.is_ok(),
                // nchan subscribes by the URL: the subscription is there once the upgrade is done.
                Peer::Nchan => {
                    subscriber.subscribed();
                    true
                }
            };
            if !sent || session::pump(peer, &mut ws, &stop, &mut subscriber).await == End::Lost {
                subscriber.counts.dropped += 1;
            }
            subscriber.settle();
            subscriber.counts
        }
    })
    .await;
    // Every connected subscriber must be subscribed before the first event, or it would miss some.
    let accepted = connects.accepted;
    super::drain(
        || topic.subscribed.load(Ordering::Relaxed) >= accepted,
        || topic.subscribed.load(Ordering::Relaxed),
        ctx.plan.connect_timeout(),
    )
    .await;
    let subscribed = topic.subscribed.load(Ordering::Relaxed);
    if subscribed < accepted {
        ctx.note_error(format!("only {subscribed} of {accepted} subscriptions were confirmed"));
    }
    ctx.progress(&format!("{subscribed} of {accepted} subscribed to {}", job.topic));
    control.ready().await?;
    control.wait_go().await?;

    let mut report = ShareReport::default();
    if job.publisher {
        let outcome = publish_events(ctx, job).await?;
        report.add_publish(&outcome);
    }
    let subscribers = connects.accepted;
    super::drain(
        || job.events == 0 || topic.complete.load(Ordering::Relaxed) >= subscribers,
        || topic.delivered.load(Ordering::Relaxed),
        ctx.plan.drain_timeout(),
    )
    .await;
    stop.cancel();

    connects.write_to(&mut report);
    for counts in fleet.join().await {
        report.counts.add(&counts);
    }
    report.missing = topic
        .missing
        .iter()
        .enumerate()
        .map(|(seq, n)| (seq as u64, u64::from(n.load(Ordering::Relaxed))))
        .filter(|&(_, n)| n > 0)
        .collect();
    let last = topic.last_delivery_us.load(Ordering::Relaxed);
    report.last_delivery_us = (last > 0).then_some(last);
    report.latency_us = HistogramData::from_histogram(&topic.latency.merged());
    Ok(report)
}

async fn publish_events(ctx: &Arc<ShareContext>, job: &Job<'_>) -> Result<publish::PublishOutcome, PublishError> {
    let path: Uri = match (ctx.plan.peer, job.channel) {
        (Peer::Herald, _) => format!("/api/v1/topics/{}/events", job.topic).parse()?,
        (Peer::Nchan, Some(channel)) => channel.publish_path().parse()?,
        // The planner sets the channel; a plan without one (from an older parent) derives it.
        (Peer::Nchan, None) => Channel::for_topic(job.topic)?.publish_path().parse()?,
    };
    let publish_job = PublishJob {
        path: move |_: Range<u64>| Ok(path.clone()),
        total: job.events,
        per_request: 1,
        concurrency: job.concurrency,
        rate: job.rate,
        body: |seqs: Range<u64>, now_us: u64, buf: &mut BytesMut| {
            // Writing into a BytesMut cannot fail: it grows as needed.
            let _ = write!(buf, r#"{{"type":"bench","data":{{"t":{now_us},"seq":{}}}}}"#, seqs.start);
        },
    };
    publish::run(&ctx.plan.server, ctx.plan.api_key.expose(), publish_job, |_| {}).await
}
