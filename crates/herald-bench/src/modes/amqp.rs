//! Amqp mode: U connected users; M notifications, each to one random connected user,
//! published as messages to one RabbitMQ queue that the server under test consumes (Herald
//! with `HERALD_AMQP_URL`, the floor with `--amqp-url`); every delivery checked and timed.
//!
//! Each message's body is exactly what targeted mode posts to `/api/v1/notifications`, so
//! the server treats it as a call to its publish API: the figure is consumed → stored →
//! delivered, end to end from the moment the message was built.

use std::sync::Arc;

use bytes::BytesMut;

use super::fleet::ShareContext;
use super::users;
use crate::amqp::publish::{AmqpJob, Publisher};
use crate::error::BenchError;
use crate::plan::AmqpLoad;
use crate::share::ShareReport;
use crate::tally::Tally;
use crate::workers::Control;

pub async fn run(ctx: &Arc<ShareContext>, load: &AmqpLoad, control: &mut Control) -> Result<ShareReport, BenchError> {
    let publisher = Publisher::open(load.url.expose(), &load.queue).await?;
    users::run(ctx, load.messages, control, |deliveries| async move {
        let run_id = ctx.plan.run_id.clone();
        let first_user = ctx.plan.first_user;
        let for_body = Arc::clone(&deliveries);
        let job = AmqpJob {
            total: deliveries.tally().map_or(0, Tally::len),
            in_flight: load.in_flight,
            rate: load.rate,
            // The run id is unique per run and the share's first user per share, so the
            // message ids of every share of every run differ.
            message_id_prefix: format!("hb-{run_id}-{first_user}"),
            transient: load.transient,
            body: move |seq: u64, now_us: u64, buf: &mut BytesMut| {
                if let Some(tally) = for_body.tally() {
                    users::write_body(buf, false, &run_id, first_user, tally, seq..seq + 1, now_us);
                }
            },
        };
        let on_ack = move |seqs| {
            if let Some(tally) = deliveries.tally() {
                tally.ack(seqs);
            }
        };
        Ok(publisher.run(job, on_ack).await)
    })
    .await
}
