//! A share's connections: one task per user, opened with bounded concurrency, each then
//! running the mode's session until the mode stops it.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::ws::{ConnectError, Connected, Connector, Opening, Ws};
use crate::clock;
use crate::histogram::{new_histogram, HistogramData};
use crate::peer::{Channel, Peer};
use crate::plan::{ModePlan, SharePlan};
use crate::share::ShareReport;
use crate::token::TokenMinter;

/// How often connection progress is printed while a share connects.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Everything the tasks of one share have in common.
pub struct ShareContext {
    pub plan: SharePlan,
    pub connector: Connector,
    minter: TokenMinter,
    errors: Mutex<Vec<String>>,
}

impl ShareContext {
    pub fn new(plan: SharePlan) -> Arc<Self> {
        let opening = match (plan.peer.sends_hello(), plan.burst) {
            (false, _) => Opening::Upgrade,
            (true, true) => Opening::Burst,
            (true, false) => Opening::Paced,
        };
        let connector = Connector::new(
            plan.server.clone(),
            plan.sources.clone(),
            plan.connect_concurrency,
            plan.connect_timeout(),
            opening,
        );
        let minter = TokenMinter::new(plan.jwt_secret.expose().as_bytes());
        Arc::new(Self { plan, connector, minter, errors: Mutex::new(Vec::new()) })
    }

    /// Global user number of local user `local`.
    pub fn global(&self, local: u32) -> u64 {
        self.plan.first_user + u64::from(local)
    }

    /// The WebSocket path and query for local user `local`. Herald: `/ws?token=…` with a fresh token, then
    /// `extra` (e.g. `&since=…`). nchan: the user's channel, or in broadcast mode the topic's (`extra` is
    /// Herald's alone: the planner refuses the modes that need it).
    pub fn target(&self, local: u32, extra: &str) -> Result<String, ConnectError> {
        let global = self.global(local);
        match (self.plan.peer, &self.plan.mode) {
            (Peer::Nchan, ModePlan::Broadcast { channel, topic, .. }) => match channel {
                Some(channel) => Ok(channel.subscribe_path()),
                None => Ok(Channel::for_topic(topic)?.subscribe_path()),
            },
            (Peer::Nchan, _) => Ok(self.plan.user_channel(global)?.subscribe_path()),
            (Peer::Herald, mode) => {
                let user = self.plan.user_id(global);
                // A broadcast subscriber's token must grant its topic: Herald checks the `topics` claim.
                let token = match mode {
                    ModePlan::Broadcast { topic, .. } => self.minter.mint_for_topic(&user, clock::unix_secs(), topic),
                    _ => self.minter.mint(&user, clock::unix_secs()),
                };
                Ok(format!("/ws?token={token}{extra}"))
            }
        }
    }

    /// Opens local user `local`'s connection.
    pub async fn connect(&self, local: u32, extra: &str) -> Result<Connected, ConnectError> {
        self.connector.connect(self.global(local), &self.target(local, extra)?).await
    }

    /// Keeps the first few distinct error messages for the report.
    pub fn note_error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        crate::share::note_error(&mut errors, message);
    }

    /// The errors noted so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn progress(&self, message: &str) {
        if self.plan.progress {
            eprintln!("herald-bench[{}]: {message}", self.plan.index);
        }
    }
}

/// How the connection phase went.
pub struct Connects {
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    pub took_us: Histogram<u64>,
    /// Local indices of the users that connected, ascending.
    pub connected: Vec<u32>,
}

impl Connects {
    pub fn write_to(&self, report: &mut ShareReport) {
        report.accepted = self.accepted;
        report.refused = self.refused;
        report.failed = self.failed;
        report.connect_us = HistogramData::from_histogram(&self.took_us);
    }
}

/// A share's running sessions. Each ends when its mode's stop token fires.
pub struct Fleet<S> {
    tasks: JoinSet<Option<S>>,
}

impl<S: 'static> Fleet<S> {
    /// Waits for every session and returns the results of those that connected.
    pub async fn join(mut self) -> Vec<S> {
        let mut results = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            // A session only ends by returning; a panic in one is a bug worth surfacing.
            match joined {
                Ok(Some(result)) => results.push(result),
                Ok(None) => {}
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        results
    }
}

/// Connects every user of the share, each from its own task, and runs `session` on each
/// connection. Returns once every connection attempt has finished; the sessions go on.
pub async fn launch<S, F, Fut>(ctx: &Arc<ShareContext>, extra_query: &str, session: F) -> (Fleet<S>, Connects)
where
    F: Fn(u32, Ws) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send + 'static,
    S: Send + 'static,
{
    let users = ctx.plan.users as u32;
    let session = Arc::new(session);
    let extra: Arc<str> = extra_query.into();
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for local in 0..users {
        let ctx = Arc::clone(ctx);
        let session = Arc::clone(&session);
        let extra = Arc::clone(&extra);
        let outcomes_tx = outcomes_tx.clone();
        tasks.spawn(async move {
            match ctx.connect(local, &extra).await {
                Ok(connected) => {
                    let _ = outcomes_tx.send((local, Ok(connected.took)));
                    Some(session(local, connected.ws).await)
                }
                Err(e) => {
                    let _ = outcomes_tx.send((local, Err(e)));
                    None
                }
            }
        });
    }
    drop(outcomes_tx);

    let mut connects = Connects {
        accepted: 0,
        refused: 0,
        failed: 0,
        took_us: new_histogram(),
        connected: Vec::with_capacity(users as usize),
    };
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let mut finished = 0;
    while finished < users {
        tokio::select! {
            outcome = outcomes.recv() => {
                let Some((local, outcome)) = outcome else { break };
                finished += 1;
                match outcome {
                    Ok(took) => {
                        connects.accepted += 1;
                        connects.took_us.saturating_record(took.as_micros() as u64);
                        connects.connected.push(local);
                    }
                    Err(ConnectError::Refused) => connects.refused += 1,
                    Err(e) => {
                        connects.failed += 1;
                        ctx.note_error(format!("connect: {e}"));
                    }
                }
            }
            _ = progress.tick() => ctx.progress(&format!(
                "{} of {users} connected, {} refused, {} failed",
                connects.accepted, connects.refused, connects.failed,
            )),
        }
    }
    connects.connected.sort_unstable();
    ctx.progress(&format!(
        "{} of {users} connected, {} refused, {} failed",
        connects.accepted, connects.refused, connects.failed,
    ));
    (Fleet { tasks }, connects)
}
