//! Idle mode: every user connects and then just listens, until the parent has read the
//! server's memory and says go; then the connections close.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::fleet::{self, ShareContext};
use crate::client::frame::Item;
use crate::client::session::{self, End, Handler};
use crate::error::BenchError;
use crate::share::{DeliveryCounts, ShareReport};
use crate::workers::Control;

/// Counts what arrives on an idle connection; nothing is expected but the backlog frame.
#[derive(Default)]
struct Listener {
    counts: DeliveryCounts,
}

impl Handler for Listener {
    fn item(&mut self, _item: &Item<'_>, _live: bool, _now_us: u64) {
        self.counts.foreign += 1;
    }

    fn bad_frame(&mut self) {
        self.counts.bad_frames += 1;
    }
}

pub async fn run(ctx: &Arc<ShareContext>, control: &mut Control) -> Result<ShareReport, BenchError> {
    let stop = CancellationToken::new();
    let session_stop = stop.clone();
    let peer = ctx.plan.peer;
    let (fleet, connects) = fleet::launch(ctx, "", move |_local, mut ws| {
        let stop = session_stop.clone();
        async move {
            let mut listener = Listener::default();
            if session::pump(peer, &mut ws, &stop, &mut listener).await == End::Lost {
                listener.counts.dropped += 1;
            }
            listener.counts
        }
    })
    .await;
    control.ready().await?;
    control.wait_go().await?;

    stop.cancel();
    let mut report = ShareReport::default();
    connects.write_to(&mut report);
    for counts in fleet.join().await {
        report.counts.add(&counts);
    }
    Ok(report)
}
