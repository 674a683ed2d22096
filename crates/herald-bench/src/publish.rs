//! Publishing over Herald's HTTP API (or nchan's `POST /pub/{channel}`): a fixed number of numbered messages, sent by
//! `concurrency` tasks that each keep one HTTP/1.1 connection alive and have one request in
//! flight, optionally paced to a target rate.
//!
//! Messages are numbered 0..total (the `seq` in their payload) and sent in requests of
//! `per_request` consecutive numbers. A request answered 2xx acknowledges all of its numbers;
//! anything else acknowledges none of them, and they are never retried, since a retry could
//! create a second copy that the receivers would then count as a duplicate.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::clock;
use crate::histogram::{self, new_histogram};
use crate::server_url::ServerUrl;

/// A publisher gives up after this many connection failures in a row; the others carry on.
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// The start of an error answer kept for the report.
const ERROR_BODY_LIMIT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("building request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the API key is not a valid header value")]
    ApiKey,
    #[error("publish path: {0}")]
    Channel(#[from] crate::peer::ChannelError),
    #[error("publish path: {0}")]
    Uri(#[from] hyper::http::uri::InvalidUri),
}

impl PublishError {
    /// Whether the connection is unusable afterwards and must be opened again.
    fn breaks_connection(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Http(_))
    }
}

/// What to publish, and how.
pub struct PublishJob<B, P> {
    /// The request path for a range of sequence numbers, e.g. always `/api/v1/notifications/batch`, or
    /// (nchan) the channel of the user the range is for.
    pub path: P,
    /// Messages to send, numbered 0..total.
    pub total: u64,
    pub per_request: u64,
    pub concurrency: usize,
    /// Messages per second to pace to; `None` sends as fast as the server answers.
    pub rate: Option<f64>,
    /// Writes the JSON body for a range of sequence numbers stamped with `now_us`.
    pub body: B,
}

/// What publishing achieved.
pub struct PublishOutcome {
    pub requests: u64,
    /// Messages sent in a request (whatever the answer).
    pub published: u64,
    pub acked: u64,
    /// Request round-trip times in microseconds.
    pub rtt: Histogram<u64>,
    pub started_us: u64,
    pub finished_us: u64,
    /// Ranges not acknowledged: failed requests, or never sent because publishers gave up.
    pub unacked: Vec<Range<u64>>,
    pub first_error: Option<String>,
}

/// Publishes `job` to `server`, calling `on_ack` with each acknowledged range.
pub async fn run<B, P, A>(
    server: &ServerUrl,
    api_key: &str,
    job: PublishJob<B, P>,
    on_ack: A,
) -> Result<PublishOutcome, PublishError>
where
    B: Fn(Range<u64>, u64, &mut BytesMut) + Send + Sync + 'static,
    P: Fn(Range<u64>) -> Result<Uri, PublishError> + Send + Sync + 'static,
    A: Fn(Range<u64>) + Send + Sync + 'static,
{
    let mut auth = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| PublishError::ApiKey)?;
    auth.set_sensitive(true);
    let host = HeaderValue::from_str(server.authority()).map_err(hyper::http::Error::from)?;
    let shared = Arc::new(Shared {
        addr: server.addr(),
        host,
        auth,
        next_chunk: AtomicU64::new(0),
        start: Instant::now(),
        job,
        on_ack,
    });
    let started_us = clock::unix_micros();
    let mut tasks = JoinSet::new();
    for _ in 0..shared.job.concurrency.max(1) {
        tasks.spawn(publisher_task(Arc::clone(&shared)));
    }
    let mut outcome = PublishOutcome {
        requests: 0,
        published: 0,
        acked: 0,
        rtt: new_histogram(),
        started_us,
        finished_us: started_us,
        unacked: Vec::new(),
        first_error: None,
    };
    while let Some(joined) = tasks.join_next().await {
        // A publisher task only ends by returning; a panic in one is a bug worth surfacing.
        let task = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        outcome.requests += task.requests;
        outcome.published += task.published;
        outcome.acked += task.acked;
        histogram::add(&mut outcome.rtt, &task.rtt);
        outcome.unacked.extend(task.unacked);
        if outcome.first_error.is_none() {
            outcome.first_error = task.first_error;
        }
    }
    // Chunks nobody claimed, because every publisher gave up, were never sent.
    let claimed = (shared.next_chunk.load(Ordering::Relaxed) * shared.job.per_request).min(shared.job.total);
    if claimed < shared.job.total {
        outcome.unacked.push(claimed..shared.job.total);
    }
    outcome.finished_us = clock::unix_micros();
    Ok(outcome)
}

struct Shared<B, P, A> {
    addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
    /// The next chunk of `per_request` sequence numbers to send.
    next_chunk: AtomicU64,
    start: Instant,
    job: PublishJob<B, P>,
    on_ack: A,
}

struct TaskOutcome {
    requests: u64,
    published: u64,
    acked: u64,
    rtt: Histogram<u64>,
    unacked: Vec<Range<u64>>,
    first_error: Option<String>,
}

async fn publisher_task<B, P, A>(shared: Arc<Shared<B, P, A>>) -> TaskOutcome
where
    B: Fn(Range<u64>, u64, &mut BytesMut) + Send + Sync + 'static,
    P: Fn(Range<u64>) -> Result<Uri, PublishError> + Send + Sync + 'static,
    A: Fn(Range<u64>) + Send + Sync + 'static,
{
    let job = &shared.job;
    let mut out = TaskOutcome {
        requests: 0,
        published: 0,
        acked: 0,
        rtt: new_histogram(),
        unacked: Vec::new(),
        first_error: None,
    };
    let mut connection: Option<Connection> = None;
    let mut consecutive_failures = 0;
    // The body buffer is reused: once the previous request's `Bytes` is dropped, `reserve`
    // reclaims the same allocation.
    let mut buf = BytesMut::with_capacity(256 * job.per_request as usize);
    loop {
        let chunk = shared.next_chunk.fetch_add(1, Ordering::Relaxed);
        let first = chunk.saturating_mul(job.per_request);
        if first >= job.total {
            break;
        }
        let range = first..(first + job.per_request).min(job.total);
        if let Some(rate) = job.rate {
            let due = shared.start + Duration::from_secs_f64(first as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(shared.addr).await {
                Ok(conn) => connection.insert(conn),
                Err(e) => {
                    note(&mut out.first_error, &e);
                    out.unacked.push(range);
                    consecutive_failures += 1;
                    if consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                        break;
                    }
                    continue;
                }
            },
        };
        let path = match (job.path)(range.clone()) {
            Ok(path) => path,
            Err(e) => {
                note(&mut out.first_error, &e);
                out.unacked.push(range);
                continue;
            }
        };
        buf.clear();
        buf.reserve(256 * job.per_request as usize);
        (job.body)(range.clone(), clock::unix_micros(), &mut buf);
        let body = buf.split().freeze();
        let sent = Instant::now();
        out.requests += 1;
        out.published += range.end - range.start;
        match conn.post(path, &shared.host, &shared.auth, body).await {
            Ok(()) => {
                consecutive_failures = 0;
                out.rtt.saturating_record(sent.elapsed().as_micros() as u64);
                out.acked += range.end - range.start;
                (shared.on_ack)(range);
            }
            Err(e) => {
                note(&mut out.first_error, &e);
                out.unacked.push(range);
                if e.breaks_connection() {
                    connection = None;
                    consecutive_failures += 1;
                    if consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                        break;
                    }
                }
            }
        }
    }
    out
}

fn note(first_error: &mut Option<String>, e: &PublishError) {
    if first_error.is_none() {
        *first_error = Some(e.to_string());
    }
}

/// One kept-alive HTTP/1.1 connection to the server.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self, PublishError> {
        let connect_error = |source| PublishError::Connect { addr, source };
        let stream = TcpStream::connect(addr).await.map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // hyper's connection future does the I/O; it ends when the `SendRequest` is dropped
        // or the server closes, so this task needs no other owner.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    async fn post(
        &mut self,
        path: Uri,
        host: &HeaderValue,
        auth: &HeaderValue,
        body: Bytes,
    ) -> Result<(), PublishError> {
        self.sender.ready().await?;
        let request = Request::post(path)
            .header(HOST, host.clone())
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if status.is_success() {
            // The answer (the stored notifications) is not needed: drain it frame by frame
            // without collecting, so the connection can carry the next request.
            while let Some(frame) = body.frame().await {
                frame?;
            }
            return Ok(());
        }
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if text.len() < ERROR_BODY_LIMIT {
                    text.extend_from_slice(&data);
                }
            }
        }
        text.truncate(ERROR_BODY_LIMIT);
        Err(PublishError::Status { status: status.as_u16(), body: String::from_utf8_lossy(&text).into_owned() })
    }
}
