//! Email mode: M email requests posted to Herald's `POST /api/v1/emails` by C kept-alive connections, and
//! received by this tool's own SMTP sink (`sink`), which Herald must be configured to send to
//! (`HERALD_SMTP_HOST`/`HERALD_SMTP_PORT` = `--smtp-listen`, `HERALD_SMTP_TLS=none`).
//!
//! The figure is end to end: each email's request is stored in Herald's outbox (202), leased by its sender,
//! rendered already, and sent over Herald's pool of SMTP connections. Reported: requests accepted per
//! second, emails arrived per second (first request to last arrival), request → arrival latency, the SMTP
//! connections the sink accepted (pooling: at most `HERALD_SMTP_CONCURRENCY`, not one per email), and lost
//! (accepted, never arrived) and duplicated emails — either fails the run (exit 1).

pub mod sink;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hyper::Uri;
use serde::Serialize;

use crate::cli::EmailArgs;
use crate::clock;
use crate::error::BenchError;
use crate::histogram::Quantiles;
use crate::publish::{self, PublishJob};
use sink::Arrivals;

#[derive(Debug, Serialize)]
pub struct EmailReport {
    mode: &'static str,
    run: String,
    server: String,
    smtp: String,
    emails: u64,
    concurrency: usize,
    sink_delay_ms: u64,
    quickack: bool,
    accepted: u64,
    refused: u64,
    accepted_per_sec: Option<f64>,
    request_p50_ms: Option<f64>,
    request_p99_ms: Option<f64>,
    arrived: u64,
    lost: u64,
    duplicates: u64,
    foreign: u64,
    emails_per_sec: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    smtp_connections: u64,
    elapsed_ms: u64,
    ok: bool,
    first_error: Option<String>,
}

pub async fn run(args: EmailArgs) -> Result<EmailReport, BenchError> {
    let started = Instant::now();
    let total = args.emails.unwrap_or(if args.smoke { 50 } else { 5000 });
    let api_key = args.api_key.clone().ok_or(BenchError::Usage("--api-key (HERALD_BENCH_API_KEY) is required"))?;
    let run_id = format!("{:x}", clock::unix_micros() % 0xffff_ffff);
    let listener = tokio::net::TcpListener::bind(args.smtp_listen)
        .await
        .map_err(|e| BenchError::Setup(format!("binding the SMTP sink on {}: {e}", args.smtp_listen)))?;
    let arrivals = Arc::new(Arrivals::new(run_id.clone(), total));
    let options = sink::SinkOptions { delay: Duration::from_millis(args.sink_delay_ms), quickack: args.quickack };
    let sink = tokio::spawn(sink::serve(listener, arrivals.clone(), options));
    let progress = |message: &str| {
        if !args.quiet {
            eprintln!("herald-bench: {message}");
        }
    };
    progress(&format!(
        "email run {run_id}: {total} requests to {} (×{}), SMTP sink on {}",
        args.server, args.concurrency, args.smtp_listen
    ));

    let path: Uri = Uri::from_static("/api/v1/emails");
    let body_run = run_id.clone();
    let job = PublishJob {
        path: move |_| Ok(path.clone()),
        total,
        per_request: 1,
        concurrency: args.concurrency,
        rate: (args.rate > 0.0).then_some(args.rate),
        body: move |seqs: std::ops::Range<u64>, now_us: u64, buf: &mut BytesMut| {
            let to = Arrivals::recipient(&body_run, seqs.start, now_us);
            buf.extend_from_slice(format!(r#"{{"type":"welcome-message","data":{{"email":"{to}"}}}}"#).as_bytes());
        },
    };
    let outcome = publish::run(&args.server, &api_key, job, |_| {}).await?;
    progress(&format!("{} of {total} accepted; waiting for them to arrive", outcome.acked));

    // Wait for every accepted email, or until arrivals stop for the drain timeout.
    let idle = Duration::from_secs_f64(args.drain_timeout);
    let mut last = arrivals.arrived.load(Ordering::Relaxed);
    let mut moved = Instant::now();
    while arrivals.arrived.load(Ordering::Relaxed) < outcome.acked {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = arrivals.arrived.load(Ordering::Relaxed);
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() >= idle {
            break;
        }
    }
    // A short look for duplicates arriving after the last email: a repeat would come from a retry.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sink.abort();

    let arrived = arrivals.arrived.load(Ordering::Relaxed);
    let duplicates = arrivals.duplicates.load(Ordering::Relaxed);
    let lost = outcome.acked.saturating_sub(arrived);
    let secs = |from: u64, to: u64| (to > from).then(|| (to - from) as f64 / 1e6);
    let last_us = arrivals.last_us.load(Ordering::Relaxed);
    let latency = Quantiles::of(&arrivals.latency());
    let rtt = Quantiles::of(&outcome.rtt);
    Ok(EmailReport {
        mode: "email",
        run: run_id,
        server: args.server.to_string(),
        smtp: args.smtp_listen.to_string(),
        emails: total,
        concurrency: args.concurrency,
        sink_delay_ms: args.sink_delay_ms,
        quickack: args.quickack,
        accepted: outcome.acked,
        refused: total - outcome.acked,
        accepted_per_sec: secs(outcome.started_us, outcome.finished_us).map(|s| outcome.acked as f64 / s),
        request_p50_ms: rtt.map(|q| q.p50),
        request_p99_ms: rtt.map(|q| q.p99),
        arrived,
        lost,
        duplicates,
        foreign: arrivals.foreign.load(Ordering::Relaxed),
        emails_per_sec: secs(outcome.started_us, last_us).map(|s| arrived as f64 / s),
        latency_p50_ms: latency.map(|q| q.p50),
        latency_p99_ms: latency.map(|q| q.p99),
        latency_max_ms: latency.map(|q| q.max),
        smtp_connections: arrivals.connections.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis() as u64,
        ok: lost == 0 && duplicates == 0 && outcome.acked == total && arrivals.missing() == 0,
        first_error: outcome.first_error,
    })
}

impl EmailReport {
    pub fn ok(&self) -> bool {
        self.ok
    }

    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
        let per_s = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}/s"));
        let mut t = String::new();
        let _ = writeln!(t, "\nemail run {} against {} (SMTP sink {})", self.run, self.server, self.smtp);
        let mut row = |name: &str, value: String| {
            let _ = writeln!(t, "  {name:<13} {value}");
        };
        row(
            "params",
            format!(
                "{} emails, {} in flight, sink delay {} ms{}",
                self.emails,
                self.concurrency,
                self.sink_delay_ms,
                if self.quickack { ", quick ACKs" } else { "" }
            ),
        );
        row(
            "requests",
            format!(
                "{} accepted ({}), {} refused, rtt p50 {} p99 {}",
                self.accepted,
                per_s(self.accepted_per_sec),
                self.refused,
                ms(self.request_p50_ms),
                ms(self.request_p99_ms)
            ),
        );
        row(
            "arrived",
            format!(
                "{} ({}), {} lost, {} duplicated, over {} SMTP connection(s)",
                self.arrived,
                per_s(self.emails_per_sec),
                self.lost,
                self.duplicates,
                self.smtp_connections
            ),
        );
        row(
            "latency",
            format!(
                "request → arrival p50 {} p99 {} max {}",
                ms(self.latency_p50_ms),
                ms(self.latency_p99_ms),
                ms(self.latency_max_ms)
            ),
        );
        if let Some(error) = &self.first_error {
            row("first error", error.clone());
        }
        row("result", if self.ok { "ok".into() } else { "FAILED".into() });
        t
    }
}
