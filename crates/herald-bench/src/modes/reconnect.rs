//! Reconnect mode: U connected users while notifications are published at a steady rate;
//! partway through, every connection drops at once and reconnects with `since` = the last id
//! it saw. A user has caught up when its reconnect's backlog frame has arrived (and, if the
//! server said `more`, the pages after it). Nothing may be lost or duplicated across the gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::fleet::{self, ShareContext};
use super::users::{self, Deliveries, UserHandler};
use crate::client::frame::{Item, SINCE_START};
use crate::client::session::{self, End, Flow, Handler};
use crate::client::ws::{ConnectError, Ws};
use crate::clock;
use crate::error::BenchError;
use crate::histogram::{HistogramData, ShardedHistogram};
use crate::plan::UserLoad;
use crate::share::{DeliveryCounts, ShareReport};
use crate::tally::Tally;
use crate::workers::Control;

/// Backoff between failed reconnect attempts (refused at capacity, timed out, …).
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// When the connections dropped, and when each user caught up.
struct CatchUp {
    dropped_at_us: AtomicU64,
    after_drop_us: ShardedHistogram,
    users: AtomicU64,
}

/// A user's handler, plus catch-up tracking around the drop.
struct Reconnecting {
    user: UserHandler,
    shared: Arc<Shared>,
    /// Set on every reconnect: the next backlog frame is the one that closes the gap.
    awaiting_backlog: bool,
    caught_up: bool,
}

impl Handler for Reconnecting {
    fn item(&mut self, item: &Item<'_>, live: bool, now_us: u64) {
        self.user.item(item, live, now_us);
    }

    fn backlog_done(&mut self, more: bool, now_us: u64) -> Flow {
        if !self.awaiting_backlog {
            return Flow::Continue;
        }
        if more {
            // The server capped the backlog: reconnect from the last id for the next page.
            return Flow::Reconnect;
        }
        self.awaiting_backlog = false;
        if !self.caught_up {
            self.caught_up = true;
            let catch_up = &self.shared.catch_up;
            let dropped_at = catch_up.dropped_at_us.load(Ordering::Relaxed);
            catch_up.after_drop_us.record(u64::from(self.user.local()), now_us.saturating_sub(dropped_at));
            catch_up.users.fetch_add(1, Ordering::Relaxed);
        }
        Flow::Continue
    }

    fn bad_frame(&mut self) {
        self.user.bad_frame();
    }
}

/// What one user's session reports.
struct Session {
    counts: DeliveryCounts,
    reconnects: u64,
}

pub async fn run(
    ctx: &Arc<ShareContext>,
    load: &UserLoad,
    drop_after: Duration,
    control: &mut Control,
) -> Result<ShareReport, BenchError> {
    let shared = Arc::new(Shared {
        ctx: Arc::clone(ctx),
        deliveries: Deliveries::new(),
        catch_up: CatchUp {
            dropped_at_us: AtomicU64::new(0),
            after_drop_us: ShardedHistogram::new(),
            users: AtomicU64::new(0),
        },
        drop_signal: CancellationToken::new(),
        stop: CancellationToken::new(),
    });
    let for_sessions = Arc::clone(&shared);
    let (fleet, connects) =
        fleet::launch(ctx, "", move |local, ws| session(Arc::clone(&for_sessions), local, ws)).await;
    let (deliveries, catch_up) = (&shared.deliveries, &shared.catch_up);
    deliveries.draw_targets(load.notifications, &connects.connected);
    control.ready().await?;
    control.wait_go().await?;

    let dropping = async {
        tokio::time::sleep(drop_after).await;
        catch_up.dropped_at_us.store(clock::unix_micros(), Ordering::Relaxed);
        shared.drop_signal.cancel();
        ctx.progress("dropped every connection");
    };
    let (outcome, ()) = tokio::join!(users::publish(ctx, deliveries, load), dropping);
    let outcome = outcome?;
    let tally = deliveries.tally();
    let connected = connects.accepted;
    super::drain(
        || tally.is_none_or(|t| t.fresh() >= t.acked()) && catch_up.users.load(Ordering::Relaxed) >= connected,
        || tally.map_or(0, Tally::fresh) + catch_up.users.load(Ordering::Relaxed),
        ctx.plan.drain_timeout(),
    )
    .await;
    shared.stop.cancel();

    let mut report = ShareReport::default();
    connects.write_to(&mut report);
    report.add_publish(&outcome);
    for session in fleet.join().await {
        report.counts.add(&session.counts);
        report.reconnects += session.reconnects;
    }
    if let Some(tally) = tally {
        report.lost = tally.lost();
        report.unacked_delivered = tally.unacked_delivered();
    }
    report.caught_up = catch_up.users.load(Ordering::Relaxed);
    report.not_caught_up = connected.saturating_sub(report.caught_up);
    report.catch_up_us = HistogramData::from_histogram(&catch_up.after_drop_us.merged());
    report.last_delivery_us = deliveries.last_delivery();
    report.latency_us = HistogramData::from_histogram(&deliveries.latency.merged());
    Ok(report)
}

/// What every session of a share is handed.
struct Shared {
    ctx: Arc<ShareContext>,
    deliveries: Arc<Deliveries>,
    catch_up: CatchUp,
    /// Fires when every connection is to drop.
    drop_signal: CancellationToken,
    /// Fires when the run is over.
    stop: CancellationToken,
}

/// One user: live until the drop, then reconnecting with `since` until the run stops.
async fn session(shared: Arc<Shared>, local: u32, mut ws: Ws) -> Session {
    let mut handler = Reconnecting {
        user: UserHandler::new(local, Arc::clone(&shared.deliveries), shared.ctx.plan.peer.has_ids()),
        shared: Arc::clone(&shared),
        awaiting_backlog: false,
        caught_up: false,
    };
    let (ctx, stop) = (&shared.ctx, &shared.stop);
    let mut reconnects = 0;
    if session::pump(shared.ctx.plan.peer, &mut ws, &shared.drop_signal, &mut handler).await == End::Lost {
        handler.user.counts.dropped += 1;
    }
    // Dropped without a close handshake, as when a network goes away.
    drop(ws);

    let mut backoff = FIRST_BACKOFF;
    while !stop.is_cancelled() {
        let since = if handler.user.last_id.is_empty() { SINCE_START } else { handler.user.last_id.as_str() };
        let extra = format!("&since={since}");
        handler.awaiting_backlog = true;
        let attempt = tokio::select! {
            _ = stop.cancelled() => break,
            attempt = ctx.connect(local, &extra) => attempt,
        };
        match attempt {
            Ok(connected) => {
                reconnects += 1;
                backoff = FIRST_BACKOFF;
                let mut ws = connected.ws;
                match session::pump(ctx.plan.peer, &mut ws, stop, &mut handler).await {
                    End::Stopped => break,
                    End::Reconnect => {}
                    End::Lost => handler.user.counts.dropped += 1,
                }
            }
            Err(e) => {
                if !matches!(e, ConnectError::Refused) {
                    ctx.note_error(format!("reconnect: {e}"));
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    Session { counts: handler.user.counts, reconnects }
}
