//! What the user modes (targeted, amqp, reconnect) share: notifications published to random
//! connected users of the share, the per-connection handler that checks each delivery
//! against the [`Tally`], and the whole run of a mode that publishes and waits for delivery.

use std::fmt::Write as _;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use hyper::Uri;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::fleet::{self, ShareContext};
use crate::client::frame::Item;
use crate::client::session::{self, End, Handler};
use crate::error::BenchError;
use crate::histogram::{HistogramData, ShardedHistogram};
use crate::peer::Peer;
use crate::plan::UserLoad;
use crate::publish::{self, PublishError, PublishJob, PublishOutcome};
use crate::share::{DeliveryCounts, ShareReport};
use crate::tally::{Delivery, Tally};
use crate::workers::Control;

/// One run of a mode that connects the share's users, publishes `notifications` to random
/// ones of them with `publish` once the parent says go, and waits until everything
/// acknowledged has arrived (or the drain times out). Targeted and amqp differ only in how
/// they publish.
pub async fn run<P, Fut>(
    ctx: &Arc<ShareContext>,
    notifications: u64,
    control: &mut Control,
    publish: P,
) -> Result<ShareReport, BenchError>
where
    P: FnOnce(Arc<Deliveries>) -> Fut,
    Fut: Future<Output = Result<PublishOutcome, BenchError>>,
{
    let deliveries = Deliveries::new();
    let stop = CancellationToken::new();
    let (session_stop, session_deliveries) = (stop.clone(), Arc::clone(&deliveries));
    let peer = ctx.plan.peer;
    let (fleet, connects) = fleet::launch(ctx, "", move |local, mut ws| {
        let stop = session_stop.clone();
        let mut handler = UserHandler::new(local, Arc::clone(&session_deliveries), peer.has_ids());
        async move {
            if session::pump(peer, &mut ws, &stop, &mut handler).await == End::Lost {
                handler.counts.dropped += 1;
            }
            handler.counts
        }
    })
    .await;
    deliveries.draw_targets(notifications, &connects.connected);
    control.ready().await?;
    control.wait_go().await?;

    let outcome = publish(Arc::clone(&deliveries)).await;
    let tally = deliveries.tally();
    if outcome.is_ok() {
        super::drain(
            || tally.is_none_or(|t| t.fresh() >= t.acked()),
            || tally.map_or(0, Tally::fresh),
            ctx.plan.drain_timeout(),
        )
        .await;
    }
    // The sessions end either way, so that a failed setup does not leave them running.
    stop.cancel();
    let outcome = outcome?;

    let mut report = ShareReport::default();
    connects.write_to(&mut report);
    report.add_publish(&outcome);
    for counts in fleet.join().await {
        report.counts.add(&counts);
    }
    if let Some(tally) = tally {
        report.lost = tally.lost();
        report.unacked_delivered = tally.unacked_delivered();
    }
    report.last_delivery_us = deliveries.last_delivery();
    report.latency_us = HistogramData::from_histogram(&deliveries.latency.merged());
    Ok(report)
}

/// State every connection of a share updates.
pub struct Deliveries {
    /// Set once the connection phase is over and the targets are drawn from the users that
    /// connected; nothing is published, so nothing can be delivered, before that.
    pub tally: OnceLock<Tally>,
    pub latency: ShardedHistogram,
    pub last_delivery_us: AtomicU64,
}

impl Deliveries {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { tally: OnceLock::new(), latency: ShardedHistogram::new(), last_delivery_us: AtomicU64::new(0) })
    }

    /// Draws a target for each of `notifications` among the `connected` local users.
    pub fn draw_targets(&self, notifications: u64, connected: &[u32]) {
        let mut rng = rand::rng();
        let targets = if connected.is_empty() {
            Vec::new()
        } else {
            (0..notifications).map(|_| connected[rng.random_range(0..connected.len())]).collect()
        };
        // Only the share's own setup sets the tally, once.
        let _ = self.tally.set(Tally::new(targets));
    }

    pub fn tally(&self) -> Option<&Tally> {
        self.tally.get()
    }

    pub fn last_delivery(&self) -> Option<u64> {
        Some(self.last_delivery_us.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }
}

/// Checks what one user's connection receives.
pub struct UserHandler {
    local: u32,
    deliveries: Arc<Deliveries>,
    /// Whether items carry ids to check the order by (Herald's do, nchan's messages do not).
    ordered_ids: bool,
    pub counts: DeliveryCounts,
    /// The highest notification id received, for ordering checks and for `since`.
    pub last_id: String,
}

impl UserHandler {
    pub fn new(local: u32, deliveries: Arc<Deliveries>, ordered_ids: bool) -> Self {
        Self { local, deliveries, ordered_ids, counts: DeliveryCounts::default(), last_id: String::new() }
    }

    pub fn local(&self) -> u32 {
        self.local
    }
}

impl Handler for UserHandler {
    fn item(&mut self, item: &Item<'_>, live: bool, now_us: u64) {
        let (Some((seq, sent_us)), Some(tally)) = (item.stamp(), self.deliveries.tally()) else {
            self.counts.foreign += 1;
            return;
        };
        match tally.deliver(seq, self.local) {
            Delivery::Fresh => {
                self.counts.delivered += 1;
                if live {
                    self.deliveries.latency.record(u64::from(self.local), now_us.saturating_sub(sent_us));
                } else {
                    self.counts.backlog += 1;
                }
                self.deliveries.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
                // Ids sort by creation and a user's notifications arrive in creation order,
                // so each fresh id must be above every one before it. (nchan's messages carry
                // no id, and requests in flight together may be stored in either order.)
                if self.ordered_ids {
                    if item.id.as_ref() <= self.last_id.as_str() {
                        self.counts.reordered += 1;
                    } else {
                        self.last_id.clear();
                        self.last_id.push_str(&item.id);
                    }
                }
            }
            Delivery::Duplicate => self.counts.duplicated += 1,
            Delivery::Misrouted => self.counts.misrouted += 1,
            Delivery::Unknown => self.counts.foreign += 1,
        }
    }

    fn bad_frame(&mut self) {
        self.counts.bad_frames += 1;
    }
}

/// Publishes `load` to the share's users as the tally's targets say, acknowledging into it.
pub async fn publish(
    ctx: &Arc<ShareContext>,
    deliveries: &Arc<Deliveries>,
    load: &UserLoad,
) -> Result<PublishOutcome, PublishError> {
    let total = deliveries.tally().map_or(0, Tally::len);
    let batch = load.batch > 1;
    let run_id = ctx.plan.run_id.clone();
    let first_user = ctx.plan.first_user;
    let for_body = Arc::clone(deliveries);
    let for_path = Arc::clone(deliveries);
    let plan = ctx.plan.clone();
    let path = move |seqs: Range<u64>| -> Result<Uri, PublishError> {
        match plan.peer {
            Peer::Herald if batch => Ok(Uri::from_static("/api/v1/notifications/batch")),
            Peer::Herald => Ok(Uri::from_static("/api/v1/notifications")),
            // One notification per request (the planner refuses batches): to its user's channel.
            Peer::Nchan => {
                let local = for_path.tally().map_or(0, |tally| tally.target(seqs.start));
                let channel = plan.user_channel(first_user + u64::from(local))?;
                Ok(Uri::try_from(channel.publish_path())?)
            }
        }
    };
    let job = PublishJob {
        path,
        total,
        per_request: load.batch.max(1),
        concurrency: load.concurrency,
        rate: load.rate,
        body: move |seqs: Range<u64>, now_us: u64, buf: &mut BytesMut| {
            let Some(tally) = for_body.tally() else { return };
            write_body(buf, batch, &run_id, first_user, tally, seqs, now_us);
        },
    };
    let for_ack = Arc::clone(deliveries);
    let server = load.publish_to.as_ref().unwrap_or(&ctx.plan.server);
    publish::run(server, ctx.plan.api_key.expose(), job, move |seqs| {
        if let Some(tally) = for_ack.tally() {
            tally.ack(seqs);
        }
    })
    .await
}

/// `{"user_id":…,"type":"bench","data":{"t":…,"seq":…}}` per notification, wrapped in
/// `{"notifications":[…]}` for the batch endpoint.
pub fn write_body(
    buf: &mut BytesMut,
    batch: bool,
    run_id: &str,
    first_user: u64,
    tally: &Tally,
    seqs: Range<u64>,
    now_us: u64,
) {
    if batch {
        buf.extend_from_slice(br#"{"notifications":["#);
    }
    for seq in seqs.clone() {
        if seq != seqs.start {
            buf.extend_from_slice(b",");
        }
        let user = first_user + u64::from(tally.target(seq));
        // Writing into a BytesMut cannot fail: it grows as needed.
        let _ = write!(buf, r#"{{"user_id":"hb-{run_id}-{user}","type":"bench","data":{{"t":{now_us},"seq":{seq}}}}}"#);
    }
    if batch {
        buf.extend_from_slice(b"]}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json() {
        let tally = Tally::new(vec![3, 1]);
        let mut buf = BytesMut::new();
        write_body(&mut buf, true, "abc", 10, &tally, 0..2, 99);
        let value: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(value["notifications"][0]["user_id"], "hb-abc-13");
        assert_eq!(value["notifications"][1]["data"]["seq"], 1);
        assert_eq!(value["notifications"][1]["data"]["t"], 99);

        let mut buf = BytesMut::new();
        write_body(&mut buf, false, "abc", 0, &tally, 1..2, 5);
        let value: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(value["user_id"], "hb-abc-1");
    }
}
