//! Shares of a run, and the protocol between the parent and each share.
//!
//! One process may hold at most 20,000 open files on these machines, so a large run is split
//! into shares of at most `--conns-per-worker` connections, each in a worker process: this
//! same binary, re-executed as `herald-bench worker`. A small run keeps its one share in
//! process. Either way the share goes through the same steps:
//!
//! 1. it receives its [`SharePlan`] (a worker: as the first line on stdin);
//! 2. it connects its users and says `ready` (`{"event":"ready"}` on stdout);
//! 3. it waits for `go` (a line on stdin), so that every share starts publishing — or, in
//!    idle mode, closes — at the same moment, after the parent has read the server's RSS;
//! 4. it sends its [`ShareReport`] (`{"event":"result","report":…}` on stdout) and exits.
//!
//! A worker's stdout carries nothing but these lines; its progress goes to stderr, which it
//! shares with the parent. Secrets travel only over the stdin pipe, never in argv.

use std::io::Write as _;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::BenchError;
use crate::modes;
use crate::plan::SharePlan;
use crate::share::ShareReport;

const GO: &str = "go";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("starting worker process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("talking to worker {index}: {source}")]
    Pipe {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("worker {index} exited before {expected}")]
    Vanished { index: usize, expected: &'static str },
    #[error("worker {index} sent an unexpected line: {line:?}")]
    Unexpected { index: usize, line: String },
    #[error("worker {index} failed: {message}")]
    Failed { index: usize, message: String },
    #[error("the parent went away before saying go")]
    Orphaned,
    #[error("reading the plan from stdin: {0}")]
    Plan(String),
}

/// A line from a worker to its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WorkerMessage {
    Ready,
    Result { report: Box<ShareReport> },
    Error { message: String },
}

/// The share's side of the protocol.
pub enum Control {
    Local { ready: Option<oneshot::Sender<()>>, go: Option<oneshot::Receiver<()>> },
    Stdio { stdin: Lines<BufReader<Stdin>> },
}

impl Control {
    /// Tells the parent that every connection attempt has finished.
    pub async fn ready(&mut self) -> Result<(), BenchError> {
        match self {
            Control::Local { ready, .. } => {
                if let Some(ready) = ready.take() {
                    // The parent holds the receiver for the whole run.
                    let _ = ready.send(());
                }
                Ok(())
            }
            Control::Stdio { .. } => write_line(&WorkerMessage::Ready),
        }
    }

    /// Waits until the parent says go.
    pub async fn wait_go(&mut self) -> Result<(), BenchError> {
        match self {
            Control::Local { go, .. } => match go.take() {
                Some(go) => go.await.map_err(|_| WorkerError::Orphaned.into()),
                None => Ok(()),
            },
            Control::Stdio { stdin } => match stdin.next_line().await {
                Ok(Some(line)) if line.trim() == GO => Ok(()),
                _ => Err(WorkerError::Orphaned.into()),
            },
        }
    }
}

fn write_line(message: &WorkerMessage) -> Result<(), BenchError> {
    let line = serde_json::to_string(message).map_err(|e| WorkerError::Plan(e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|source| WorkerError::Pipe { index: 0, source }.into())
}

/// The entry point of `herald-bench worker`.
pub async fn worker_main() -> Result<(), BenchError> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin
        .next_line()
        .await
        .map_err(|e| WorkerError::Plan(e.to_string()))?
        .ok_or_else(|| WorkerError::Plan("stdin closed".to_owned()))?;
    let plan: SharePlan = serde_json::from_str(&line).map_err(|e| WorkerError::Plan(e.to_string()))?;
    let message = match modes::run_share(plan, Control::Stdio { stdin }).await {
        Ok(report) => WorkerMessage::Result { report: Box::new(report) },
        Err(e) => WorkerMessage::Error { message: e.to_string() },
    };
    write_line(&message)
}

/// The parent's side of one share.
pub enum Share {
    Local {
        ready: Option<oneshot::Receiver<()>>,
        go: Option<oneshot::Sender<()>>,
        task: JoinHandle<Result<ShareReport, BenchError>>,
    },
    Child(Box<ChildShare>),
}

/// A worker process and its pipes.
pub struct ChildShare {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Share {
    /// Runs the share as a task of this process.
    pub fn local(plan: SharePlan) -> Self {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        let control = Control::Local { ready: Some(ready_tx), go: Some(go_rx) };
        Share::Local { ready: Some(ready_rx), go: Some(go_tx), task: tokio::spawn(modes::run_share(plan, control)) }
    }

    /// Runs the share in a worker process. The child is killed if the parent drops it.
    pub async fn child(plan: &SharePlan) -> Result<Self, WorkerError> {
        let index = plan.index;
        let exe = std::env::current_exe().map_err(WorkerError::Spawn)?;
        let mut child = Command::new(exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(WorkerError::Spawn)?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(WorkerError::Vanished { index, expected: "its pipes were set up" });
        };
        let mut line = serde_json::to_string(plan).map_err(|e| WorkerError::Plan(e.to_string()))?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.map_err(|source| WorkerError::Pipe { index, source })?;
        Ok(Share::Child(Box::new(ChildShare { index, child, stdin, stdout: BufReader::new(stdout).lines() })))
    }

    /// Waits until the share has finished connecting.
    pub async fn ready(&mut self) -> Result<(), BenchError> {
        match self {
            Share::Local { ready, .. } => {
                if let Some(ready) = ready.take() {
                    // An error means the share ended before getting ready; finish() reports why.
                    let _ = ready.await;
                }
                Ok(())
            }
            Share::Child(share) => {
                let index = share.index;
                match read_message(index, &mut share.stdout, "ready").await? {
                    WorkerMessage::Ready => Ok(()),
                    WorkerMessage::Error { message } => Err(WorkerError::Failed { index, message }.into()),
                    WorkerMessage::Result { .. } => {
                        Err(WorkerError::Unexpected { index, line: "a result before go".to_owned() }.into())
                    }
                }
            }
        }
    }

    /// Tells the share to start.
    pub async fn go(&mut self) -> Result<(), BenchError> {
        match self {
            Share::Local { go, .. } => {
                if let Some(go) = go.take() {
                    // A share that already ended has dropped its receiver; finish() reports why.
                    let _ = go.send(());
                }
                Ok(())
            }
            Share::Child(share) => {
                let index = share.index;
                let line = format!("{GO}\n");
                share
                    .stdin
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|source| WorkerError::Pipe { index, source }.into())
            }
        }
    }

    /// Waits for the share's report.
    pub async fn finish(self) -> Result<ShareReport, BenchError> {
        match self {
            Share::Local { task, .. } => match task.await {
                Ok(result) => result,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            Share::Child(share) => {
                let ChildShare { index, mut child, mut stdout, .. } = *share;
                let message = read_message(index, &mut stdout, "its result").await?;
                // The worker exits right after its result line; reap it.
                let _ = child.wait().await;
                match message {
                    WorkerMessage::Result { report } => Ok(*report),
                    WorkerMessage::Error { message } => Err(WorkerError::Failed { index, message }.into()),
                    WorkerMessage::Ready => {
                        Err(WorkerError::Unexpected { index, line: "ready twice".to_owned() }.into())
                    }
                }
            }
        }
    }
}

async fn read_message(
    index: usize,
    stdout: &mut Lines<BufReader<ChildStdout>>,
    expected: &'static str,
) -> Result<WorkerMessage, WorkerError> {
    let line = stdout
        .next_line()
        .await
        .map_err(|source| WorkerError::Pipe { index, source })?
        .ok_or(WorkerError::Vanished { index, expected })?;
    serde_json::from_str(&line).map_err(|_| WorkerError::Unexpected { index, line })
}
