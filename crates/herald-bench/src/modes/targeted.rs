//! Targeted mode: U connected users; M notifications, each to one random connected user,
//! published over the HTTP API; every delivery checked and timed.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::fleet::{self, ShareContext};
use super::users::{self, Deliveries, UserHandler};
use crate::client::session::{self, End};
use crate::error::BenchError;
use crate::histogram::HistogramData;
use crate::plan::UserLoad;
use crate::share::ShareReport;
use crate::tally::Tally;
use crate::workers::Control;

pub async fn run(ctx: &Arc<ShareContext>, load: &UserLoad, control: &mut Control) -> Result<ShareReport, BenchError> {
    let deliveries = Deliveries::new();
    let stop = CancellationToken::new();
    let (session_stop, session_deliveries) = (stop.clone(), Arc::clone(&deliveries));
    let (fleet, connects) = fleet::launch(ctx, "", move |local, mut ws| {
        let stop = session_stop.clone();
        let mut handler = UserHandler::new(local, Arc::clone(&session_deliveries));
        async move {
            if session::pump(&mut ws, &stop, &mut handler).await == End::Lost {
                handler.counts.dropped += 1;
            }
            handler.counts
        }
    })
    .await;
    deliveries.draw_targets(load.notifications, &connects.connected);
    control.ready().await?;
    control.wait_go().await?;

    let outcome = users::publish(ctx, &deliveries, load).await?;
    let tally = deliveries.tally();
    super::drain(
        || tally.is_none_or(|t| t.fresh() >= t.acked()),
        || tally.map_or(0, Tally::fresh),
        ctx.plan.drain_timeout(),
    )
    .await;
    stop.cancel();

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
