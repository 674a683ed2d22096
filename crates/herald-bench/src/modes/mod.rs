//! Running a mode: the parent's orchestration of the shares, and each share's dispatch to its
//! mode.

mod amqp;
mod broadcast;
mod fleet;
mod idle;
mod reconnect;
mod targeted;
mod users;

use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::plan::{ModePlan, RunPlan, SharePlan};
use crate::report::{Memory, Report};
use crate::share::ShareReport;
use crate::workers::{Control, Share};

use fleet::ShareContext;

/// How often a draining share looks at its counters.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Runs a whole mode and returns its report. Shares start together: the parent waits until
/// every one has connected, reads the server's RSS in idle mode, then says go to all.
pub async fn run(plan: RunPlan) -> Result<Report, BenchError> {
    let started = Instant::now();
    let read_rss = || plan.rss.map(|probe| probe.read_kb()).transpose();
    let mut memory = Memory { before_kb: read_rss()?, ..Memory::default() };
    let progress = |message: &str| {
        if !plan.quiet {
            eprintln!("herald-bench: {message}");
        }
    };
    progress(&format!(
        "{} run {} against {}: {} connections in {} share(s)",
        plan.mode,
        plan.run_id,
        plan.server,
        plan.connections,
        plan.shares.len()
    ));

    let mut shares = Vec::with_capacity(plan.shares.len());
    for share in &plan.shares {
        shares.push(if plan.processes { Share::child(share).await? } else { Share::local(share.clone()) });
    }
    for share in &mut shares {
        share.ready().await?;
    }

    // Every share is ready only once each of its connection attempts has ended — with the hello frame, in
    // burst mode too — so this is the memory the open connections hold, not that of a burst in flight.
    if let Some(hold) = plan.hold {
        progress(&format!("holding for {:.1} s", hold.as_secs_f64()));
        tokio::time::sleep(hold).await;
        memory.after_kb = read_rss()?;
    }
    for share in &mut shares {
        share.go().await?;
    }
    let mut reports = Vec::with_capacity(shares.len());
    for share in shares {
        reports.push(share.finish().await?);
    }
    if memory.after_kb.is_none() {
        memory.after_kb = read_rss()?;
    }
    // Every share has closed its connections by the time its report is in.
    if let Some(settle) = plan.settle {
        progress(&format!("connections closed; reading the server's memory again in {:.1} s", settle.as_secs_f64()));
        tokio::time::sleep(settle).await;
        memory.settled_kb = read_rss()?;
    }
    Ok(Report::build(&plan, &reports, memory, started.elapsed()))
}

/// Runs one share of a mode, in this process or in a worker.
pub async fn run_share(plan: SharePlan, mut control: Control) -> Result<ShareReport, BenchError> {
    let mode = plan.mode.clone();
    let ctx = ShareContext::new(plan);
    let mut report = match &mode {
        ModePlan::Idle => idle::run(&ctx, &mut control).await?,
        ModePlan::Targeted(load) => targeted::run(&ctx, load, &mut control).await?,
        ModePlan::Amqp(load) => amqp::run(&ctx, load, &mut control).await?,
        ModePlan::Broadcast { topic, channel, events, concurrency, rate, publisher } => {
            let job = broadcast::Job {
                topic,
                channel: channel.as_ref(),
                events: *events,
                concurrency: *concurrency,
                rate: *rate,
                publisher: *publisher,
            };
            broadcast::run(&ctx, &job, &mut control).await?
        }
        ModePlan::Reconnect { load, drop_after_ms } => {
            reconnect::run(&ctx, load, Duration::from_millis(*drop_after_ms), &mut control).await?
        }
    };
    report.awaiting_hello_max = ctx.connector.awaiting_hello_max();
    for error in ctx.errors() {
        report.note_error(error);
    }
    Ok(report)
}

/// Waits until `done`, or until `progress` has not moved for `idle`: deliveries still on
/// their way keep the wait going, a server that lost them does not hold it forever.
async fn drain(done: impl Fn() -> bool, progress: impl Fn() -> u64, idle: Duration) {
    let mut last = progress();
    let mut moved = Instant::now();
    while !done() {
        tokio::time::sleep(DRAIN_POLL).await;
        let now = progress();
        if now != last {
            last = now;
            moved = Instant::now();
        } else if moved.elapsed() >= idle {
            return;
        }
    }
}
